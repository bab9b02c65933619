"""The weather corruptions (snow, frost, fog, brightness, spatter): the OpenCV ports against OpenCV, parity with the
references in distribution, the output contract, per-image seeding and the shipped frost textures.

References: `imagecorruptions` at 224 px (except frost, below) and the formulas of `make_cifar_c.py` (32 px) and
`make_tinyimagenet_c.py` (64 px) with `imagecorruptions`' helpers. Frost follows `make_*_c.py` at every size:
`imagecorruptions` also draws the sixth frost image and enlarges the textures by 1.1 at 224 px.
"""

import functools
from importlib import resources
from pathlib import Path

import cv2
import imagecorruptions
import imagecorruptions.corruptions as ic
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.transform
import skimage.util
import torch
from PIL import Image
from skimage.filters import gaussian

from dstbench.corruption import SampleRNG, TableSuite
from dstbench.errors import UserError
from dstbench_plugins.image_c import weather

NAMES = ("snow", "frost", "fog", "brightness", "spatter")
SIZES = (32, 64, 224)
SUITES = {size: TableSuite(f"weather-{size}", "test", size, weather.CORRUPTIONS) for size in SIZES}
FROST_DIR = Path(imagecorruptions.__file__).parent / "frost"


def natural(size: int) -> np.ndarray:
    """Three natural photos, centre-cropped and resized to size × size: uint8 (3, H, W, 3)."""
    photos = []
    for photo in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()):
        side = min(photo.shape[:2])
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        square = photo[top : top + side, left : left + side]
        photos.append(skimage.util.img_as_ubyte(skimage.transform.resize(square, (size, size), anti_aliasing=True)))
    return np.stack(photos)


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def corrupt(images: torch.Tensor, name: str, severity: int, size: int, ids=None, seed=0) -> torch.Tensor:
    ids = torch.arange(len(images)) if ids is None else ids
    rng = SampleRNG.for_samples(seed, "weather", name, severity, ids=ids)
    return SUITES[size].corrupt(images, name, severity, rng)


# --- References ---------------------------------------------------------------------------------------------------


def _centred_zoom(layer: np.ndarray, factor: float) -> np.ndarray:
    """make_*_c.py's clipped_zoom: imagecorruptions' crop and zoom, trimmed back around the centre."""
    size = layer.shape[0]
    zoomed = ic.clipped_zoom(layer, factor)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim : trim + size, trim : trim + size]


def reference_snow(x: np.ndarray, c: tuple) -> np.ndarray:
    """make_*_c.py's snow with imagecorruptions' motion blur and rounding of the layer."""
    x = np.array(x, dtype=np.float32) / 255.0
    layer = np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _centred_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = ic._motion_blur(layer, radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[..., np.newaxis]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


@functools.cache
def reference_texture(name: str, scale: float) -> np.ndarray:
    frost = cv2.imread(str(FROST_DIR / name))
    return frost if scale == 1 else cv2.resize(frost, (0, 0), fx=scale, fy=scale)


def reference_frost(x: np.ndarray, c: tuple, scale: float) -> np.ndarray:
    """make_*_c.py's frost: one of the first five images, resized by `scale` (not at all at 224 px), cropped."""
    name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][np.random.randint(5)]
    frost = reference_texture(name, scale)
    h, w = x.shape[:2]
    top, left = np.random.randint(0, frost.shape[0] - h), np.random.randint(0, frost.shape[1] - w)
    frost = frost[top : top + h, left : left + w][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * frost, 0, 255)


def reference_fog(x: np.ndarray, c: tuple) -> np.ndarray:
    x = np.array(x) / 255.0
    peak = x.max()
    x += c[0] * ic.plasma_fractal(mapsize=x.shape[0], wibbledecay=c[1])[..., np.newaxis]
    return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


def reference_brightness(x: np.ndarray, c: float) -> np.ndarray:
    x = skimage.color.rgb2hsv(np.array(x) / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255


def reference_water(x: np.ndarray, liquid: np.ndarray, intensity: float) -> np.ndarray:
    """make_*_c.py's spatter for c5 = 0 on float images in [0, 1], from the thresholded liquid layer."""
    liquid = (liquid * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    m = liquid * cv2.blur(dist, (3, 3)).astype(np.float32)
    m = (m / np.max(m) * intensity)[..., np.newaxis]
    return np.clip(x + m * np.array([175, 238, 238], dtype=np.float32) / 255, 0, 1) * 255


def reference_mud(x: np.ndarray, liquid: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """make_*_c.py's spatter for c5 = 1."""
    m = gaussian(np.where(liquid > threshold, 1, 0).astype(np.float32), sigma=sigma)
    m[m < 0.8] = 0
    m = m[..., np.newaxis]
    return np.clip(x * (1 - m) + m * np.array([63, 42, 20], dtype=np.float32) / 255, 0, 1) * 255


def reference_spatter(x: np.ndarray, c: tuple) -> np.ndarray:
    x = np.array(x, dtype=np.float32) / 255.0
    liquid = gaussian(np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1]), sigma=c[2])
    liquid[liquid < c[3]] = 0
    return reference_mud(x, liquid, c[3], c[4]) if c[5] else reference_water(x, liquid, c[4])


_FROST_SCALES = {32: 0.2, 64: 0.3, 224: 1.0}


def reference(name: str, images: np.ndarray, severity: int, size: int, seed: int) -> np.ndarray:
    """The reference corruption of every image (K, H, W, 3), uint8, drawing from np.random seeded with `seed`."""
    np.random.seed(seed)
    c = weather.CORRUPTIONS[name].parameters[size][severity - 1]
    if size == 224 and name != "frost":
        inputs = [Image.fromarray(x) for x in images] if name == "spatter" else images
        return np.stack([np.uint8(getattr(ic, name)(x, severity)) for x in inputs])
    functions = {
        "snow": reference_snow,
        "fog": reference_fog,
        "brightness": reference_brightness,
        "spatter": reference_spatter,
        "frost": lambda x, c: reference_frost(x, c, _FROST_SCALES[size]),
    }
    return np.stack([np.uint8(functions[name](x, c)) for x in images])


def per_image_statistics(corrupted: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """(K, 3): each image's mean and standard deviation of the change, and its standard deviation (0..255 units)."""
    change = corrupted.astype(np.float64) - clean
    return np.stack([change.mean((1, 2, 3)), change.std((1, 2, 3)), corrupted.std((1, 2, 3), dtype=np.float64)], 1)


def liquid_layers(size: int, c: tuple, count: int, seed: int = 0) -> np.ndarray:
    """Thresholded spatter layers as the references make them, float32 (count, size, size)."""
    rs = np.random.RandomState(seed)
    layers = [gaussian(rs.normal(size=(size, size), loc=c[0], scale=c[1]), sigma=c[2]) for _ in range(count)]
    layers = np.stack(layers).astype(np.float32)
    layers[layers < c[3]] = 0
    return layers


def water_parameters() -> list[tuple[int, tuple]]:
    table = weather.CORRUPTIONS["spatter"].parameters
    return [(size, c) for size in SIZES for c in table[size] if c[5] == 0]


# --- OpenCV's algorithms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, c", water_parameters())
def test_canny_matches_opencv_exactly_on_spatter_layers(size, c):
    layers = (liquid_layers(size, c, 24 if size < 224 else 3) * 255).astype(np.uint8)
    ours = weather.canny(torch.from_numpy(layers)[:, None].float(), 50, 150)[:, 0].numpy()
    assert np.array_equal(ours, np.stack([cv2.Canny(layer, 50, 150) > 0 for layer in layers]))


def test_canny_runs_every_hysteresis_step_on_an_accelerator_with_the_same_edges(request):
    """The CPU stops growing edges once a step adds none and dilates by window maxima; an accelerator runs all
    _HYSTERESIS_STEPS, each one max_pool2d."""
    layers = torch.from_numpy((liquid_layers(224, water_parameters()[-1][1], 2) * 255).astype(np.uint8))[:, None]
    stopped = weather.canny(layers.float(), 50, 150)
    request.getfixturevalue("accelerator_forms")
    assert torch.equal(weather.canny(layers.float(), 50, 150), stopped)


def test_the_cpus_dilation_is_max_pool2d():
    """The CPU dilates by window maxima, accelerators by max_pool2d: the same maps, edges included."""
    maps = (torch.rand(3, 1, 23, 17, generator=torch.Generator().manual_seed(0)) > 0.8).float()
    maps[0, 0, 0, 0] = maps[1, 0, -1, -1] = 1
    assert torch.equal(weather._dilate(maps), torch.nn.functional.max_pool2d(maps, 3, stride=1, padding=1))


def test_canny_matches_opencv_on_a_photo():
    grey = skimage.util.img_as_ubyte(skimage.color.rgb2gray(natural(128)[0]))
    ours = weather.canny(torch.from_numpy(grey)[None, None].float(), 50, 150)[0, 0].numpy()
    assert np.array_equal(ours, cv2.Canny(grey, 50, 150) > 0)


@pytest.mark.parametrize("limit", [20, 60])
def test_chamfer_distance_matches_opencv_up_to_the_limit(limit):
    rs = np.random.RandomState(1)
    edges = np.stack([rs.random_sample((48, 64)) < p for p in (0.002, 0.01, 0.05)] + [np.zeros((48, 64), bool)])
    theirs = np.stack([cv2.distanceTransform(np.where(e, 0, 255).astype(np.uint8), cv2.DIST_L2, 5) for e in edges])
    assert 20 < theirs[0].max() < 60  # the limit of 20 truncates, that of 60 does not
    ours = weather.chamfer_distance(torch.from_numpy(edges)[:, None], limit)[:, 0].numpy()
    assert np.abs(ours - np.minimum(theirs, limit)).max() < 1e-5  # float sums in another order
    assert (ours[3] == limit).all()  # no edge at all: the limit everywhere


@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (2, 9), (9, 2), (3, 3), (31, 17)])
def test_chamfer_distance_keeps_its_paths_inside_the_image(shape):
    """Strips narrower than a knight's move, where a path may not leave the image to take a cheaper step."""
    rs = np.random.RandomState(sum(shape))
    edges = np.stack([rs.random_sample(shape) < p for p in (0.05, 0.2)])
    edges[0].flat[0] = edges[1].flat[-1] = True
    theirs = np.stack([cv2.distanceTransform(np.where(e, 0, 255).astype(np.uint8), cv2.DIST_L2, 5) for e in edges])
    ours = weather.chamfer_distance(torch.from_numpy(edges)[:, None], 60)[:, 0].numpy()
    assert np.abs(ours - np.minimum(theirs, 60)).max() < 1e-5


def test_box_blur_and_equalize_hist_match_opencv():
    rs = np.random.RandomState(2)
    distances = (rs.random_sample((3, 40, 50)) * 20).astype(np.float32)
    ours = weather.box_blur(torch.from_numpy(distances)[:, None])[:, 0].numpy()
    assert np.abs(ours - np.stack([cv2.blur(d, (3, 3)) for d in distances])).max() < 2e-6
    grey = np.stack([rs.randint(3, 17, (40, 50)), np.full((40, 50), 7), rs.randint(0, 256, (40, 50))]).astype(np.uint8)
    blurred = weather.box_blur(torch.from_numpy(grey)[:, None].float()).round()[:, 0].numpy()
    assert np.array_equal(blurred, np.stack([cv2.blur(g, (3, 3)) for g in grey]))
    equalized = weather.equalize_hist(torch.from_numpy(grey)[:, None].float())[:, 0].numpy()
    assert np.array_equal(equalized, np.stack([cv2.equalizeHist(g) for g in grey]))


@pytest.mark.parametrize("size, c", water_parameters())
def test_water_matches_opencv_exactly_given_the_same_layer(size, c):
    """All of the water branch (Canny to the final blend, filter2D included) on the reference's own layers."""
    layers = liquid_layers(size, c, 8 if size < 224 else 2)
    clean = natural(size)[np.arange(len(layers)) % 3].astype(np.float32) / 255
    ours = weather._water(nchw(clean), torch.from_numpy(layers)[:, None], c[4]).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([np.uint8(reference_water(x, layer, c[4])) for x, layer in zip(clean, layers, strict=True)])
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    assert (ours != theirs).mean() < 1e-3  # float32 products in another order, then truncation


def test_water_without_drops_leaves_the_image_as_it_is():
    """The references divide 0 by 0 here and return black; nothing to add is added instead."""
    clean = nchw(natural(32))
    assert torch.equal(weather._water(clean.float() / 255, torch.zeros(3, 1, 32, 32), 0.6), clean)


def test_mud_matches_the_reference_given_the_same_layer():
    c = weather.CORRUPTIONS["spatter"].parameters[224][4]
    layers = liquid_layers(64, c, 6)
    clean = natural(64)[np.arange(6) % 3].astype(np.float32) / 255
    ours = weather._mud(nchw(clean), torch.from_numpy(layers)[:, None], c[3], c[4]).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([np.uint8(reference_mud(x, layer, c[3], c[4])) for x, layer in zip(clean, layers, strict=True)])
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and (ours != theirs).mean() < 1e-3


# --- Frost textures ------------------------------------------------------------------------------------------------


def test_frost_assets_ship_with_the_package():
    folder = resources.files("dstbench_plugins.image_c").joinpath("frost")
    for name in (*weather.FROST_FILES, "NOTICE", "LICENSE"):
        assert folder.joinpath(name).is_file(), name
    notice = folder.joinpath("NOTICE").read_text()
    assert "hendrycks/robustness" in notice and "Apache License" in notice
    assert "Apache License" in folder.joinpath("LICENSE").read_text()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"dstbench_plugins" = ["image_c/frost/*"]' in pyproject


def test_frost_textures_are_the_references_pixels():
    textures = weather.frost_textures()
    assert len(textures) == weather.FROST_CHOICES == 5
    for name, texture in zip(weather.FROST_FILES, textures, strict=False):
        theirs = cv2.imread(str(FROST_DIR / name))[..., ::-1]
        assert texture.dtype == torch.uint8 and np.array_equal(texture.permute(1, 2, 0).numpy(), theirs), name


@pytest.mark.parametrize("scale", [0.2, 0.3, 0.45, 1.3348])
def test_resize_matches_opencv(scale):
    """Exact at the references' factors; elsewhere a few border pixels are 1 off."""
    for name, texture in zip(weather.FROST_FILES, weather.frost_textures(), strict=False):
        ours = weather.resize_linear(texture, scale).permute(1, 2, 0).numpy().astype(int)
        theirs = cv2.resize(cv2.imread(str(FROST_DIR / name)), (0, 0), fx=scale, fy=scale)[..., ::-1]
        assert ours.shape == theirs.shape, name
        if scale in (0.2, 0.3):
            assert np.array_equal(ours, theirs), name
        assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 0.005, name


def test_frost_scale_follows_the_references_and_generalises():
    sizes = [tuple(t.shape[1:]) for t in weather.frost_textures()]
    assert [weather.frost_scale(s, s, sizes) for s in (32, 64, 224)] == [0.2, 0.3, 1.0]
    assert weather.frost_scale(28, 28, sizes) == pytest.approx(0.175)
    assert weather.frost_scale(144, 144, sizes) == pytest.approx(0.65)
    assert weather.frost_scale(448, 448, sizes) == 2.0
    for h, w in ((1, 1), (5, 3), (500, 60), (60, 1000)):  # every texture keeps room for a random crop
        scale = weather.frost_scale(h, w, sizes)
        assert all(round(rows * scale) > h and round(cols * scale) > w for rows, cols in sizes)


# --- Parity with the references ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_brightness_matches_the_reference_exactly(size):
    """Deterministic: mean absolute difference below 0.001 (0..255 units), on photos and on random pixels."""
    rs = np.random.RandomState(size)
    images = np.concatenate([natural(size), rs.randint(0, 256, (1, size, size, 3)).astype(np.uint8)])
    for severity in range(1, 6):
        ours = corrupt(nchw(images), "brightness", severity, size).permute(0, 2, 3, 1).numpy().astype(int)
        assert np.abs(ours - reference("brightness", images, severity, size, seed=0)).mean() < 1e-3


@pytest.mark.parametrize("blend", [0.95, 0.8, 0.55])
def test_snows_brightening_matches_the_reference_exactly(blend):
    """With no flakes (the layer's mean far below its threshold), snow is the blend with max(x, 1.5 · grey + 0.5),
    grey by OpenCV's COLOR_RGB2GRAY (0.299, 0.587, 0.114): the same bytes (rgb2gray's 0.2989 moved up to 0.7%)."""
    rs = np.random.RandomState(7)
    images = np.concatenate([natural(64), rs.randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)])
    flakeless = (-10.0, 0.3, 2, 0.5, 10, 4, blend)
    rng = SampleRNG.for_samples(0, "weather", "snow", 1, ids=torch.arange(len(images)))
    ours = weather.snow(nchw(images), flakeless, rng).permute(0, 2, 3, 1).numpy()
    x = images.astype(np.float32) / 255
    grey = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in x])
    expected = np.uint8(np.clip(blend * x + (1 - blend) * np.maximum(x, grey[..., None] * 1.5 + 0.5), 0, 1) * 255)
    np.testing.assert_array_equal(ours, expected)


# Copies of the three photos per severity; statistics per image, compared in standard errors.
COPIES = {32: 60, 64: 20, 224: 5}
Z_LIMIT = 4.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["snow", "frost", "fog", "spatter"])
def test_matches_the_reference_in_distribution(name, size):
    """Each image's mean change, standard deviation of the change and standard deviation agree with the
    reference's within 4 standard errors (Welch), at every severity."""
    clean = np.repeat(natural(size), COPIES[size], axis=0)
    for severity in range(1, 6):
        ours = per_image_statistics(corrupt(nchw(clean), name, severity, size).permute(0, 2, 3, 1).numpy(), clean)
        theirs = per_image_statistics(reference(name, clean, severity, size, seed=severity), clean)
        error = np.sqrt((ours.var(0, ddof=1) + theirs.var(0, ddof=1)) / len(clean)) + 1e-9
        z = (ours.mean(0) - theirs.mean(0)) / error
        assert (np.abs(z) < Z_LIMIT).all(), (severity, z, ours.mean(0), theirs.mean(0))


@pytest.mark.parametrize("size", SIZES)
def test_frost_blends_the_references_crop_exactly(size):
    """Given the crop our random numbers pick, the result is make_*_c.py's formula on OpenCV's resized texture."""
    images = np.repeat(natural(size), 4, axis=0)
    ids = torch.arange(len(images))
    for severity in (1, 5):
        c = weather.CORRUPTIONS["frost"].parameters[size][severity - 1]
        ours = corrupt(nchw(images), "frost", severity, size, ids=ids).permute(0, 2, 3, 1).numpy()
        u = SampleRNG.for_samples(0, "weather", "frost", severity, ids=ids).uniform((3,)).double().numpy()
        for x, out, (pick, down, across) in zip(images, ours, u, strict=True):
            texture = reference_texture(weather.FROST_FILES[int(pick * 5)], _FROST_SCALES[size])
            top, left = int(down * (texture.shape[0] - size)), int(across * (texture.shape[1] - size))
            crop = texture[top : top + size, left : left + size][..., [2, 1, 0]]
            assert np.array_equal(out, np.uint8(np.clip(c[0] * x + c[1] * crop, 0, 255)))


def test_frost_adds_the_references_texture_brightness():
    """At 32 px, where the textures are resized, the brightness frost adds matches the reference's within 1.5
    (0..255 units; the standard error is about 0.5) and its spread within 10 %."""
    clean = np.zeros((600, 32, 32, 3), dtype=np.uint8)
    ours = corrupt(nchw(clean), "frost", 1, 32).numpy().astype(np.float64).mean((1, 2, 3))
    theirs = reference("frost", clean, 1, 32, seed=0).astype(np.float64).mean((1, 2, 3))
    assert abs(ours.mean() - theirs.mean()) < 1.5 and abs(ours.std() / theirs.std() - 1) < 0.1


# --- Contract -----------------------------------------------------------------------------------------------------


def damage(corrupted: torch.Tensor, clean: torch.Tensor, name: str) -> float:
    """Mean absolute change; for frost, whose mean change is not monotone in the references, its spread."""
    change = corrupted.float() - clean.float()
    return (change.std() if name == "frost" else change.abs().mean()).item()


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", ["snow", "frost", "fog", "brightness"])  # spatter turns from water to mud at 4
def test_severity_increases_the_damage(name, size):
    clean = nchw(np.repeat(natural(size), 8, axis=0))
    damages = [damage(corrupt(clean, name, s, size), clean, name) for s in range(1, 6)]
    assert damages == sorted(set(damages)), damages


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape", [(4, 3, 32, 32), (3, 1, 28, 28), (2, 3, 20, 36), (2, 3, 2, 2), (2, 3, 1, 1), (0, 3, 32, 32)]
)
def test_output_is_uint8_of_the_same_shape(name, shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    if shape[2] < weather.CORRUPTIONS[name].min_size:
        with pytest.raises(UserError, match="needs images of at least 2 px"):
            SUITES[32].check_input(shape[1], shape[2])
        return
    out = corrupt(images, name, 5, 32)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    if images.numel() > 1000:
        assert not torch.equal(out, images)


@pytest.mark.parametrize("name", NAMES)
def test_each_image_has_its_own_stream(name):
    """The same image corrupts the same way in any batch, at any position; different images differ; reruns repeat."""
    images = nchw(np.repeat(natural(64), 2, axis=0))
    ids = torch.arange(10, 16)
    full = corrupt(images, name, 3, 64, ids=ids)
    assert torch.equal(full, corrupt(images, name, 3, 64, ids=ids))
    part = corrupt(images[[4, 1]], name, 3, 64, ids=ids[[4, 1]])
    assert torch.equal(part, full[[4, 1]])
    if name != "brightness":
        assert not torch.equal(full[0], full[1])  # the same photo, another id


@pytest.mark.parametrize("size, count", [(32, 400), (224, 4)])
@pytest.mark.parametrize("name", NAMES)
def test_output_does_not_depend_on_the_batch(name, size, count):
    """A sample's image is the same alone, in a shuffled batch and across the CPU's pieces (400 images at 32 px span
    several of every corruption's), for spatter's water (severity 2) and mud (severity 5)."""
    images = nchw(np.resize(natural(size), (count, size, size, 3)))
    ids = torch.arange(1000, 1000 + count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(3))
    for severity in (2, 5):
        whole = corrupt(images, name, severity, size, ids=ids)
        assert torch.equal(corrupt(images[order], name, severity, size, ids=ids[order]), whole[order])
        for i in [*range(min(count, 24)), count - 1]:  # many alone: a float sum in another order flips few pixels
            assert torch.equal(corrupt(images[i : i + 1], name, severity, size, ids=ids[i : i + 1]), whole[i : i + 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, size):
    """Float sums in another order may move a blurred value across a threshold (spatter's layer, snow's flakes) and
    with it a few pixels by more than a level."""
    images = nchw(np.repeat(natural(size), 4, axis=0))
    for severity in (1, 3, 5):
        on_cpu = corrupt(images, name, severity, size)
        on_gpu = corrupt(images.cuda(), name, severity, size, ids=torch.arange(len(images)).cuda())
        assert on_gpu.device.type == "cuda"
        difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
        assert difference.float().mean() < 0.05 and (difference > 1).float().mean() < 0.005, severity
