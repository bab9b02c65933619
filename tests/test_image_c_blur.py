"""The five blur corruptions against their references: `imagecorruptions` at 224 px, and the formulas of
`make_cifar_c.py` (32 px) and `make_tinyimagenet_c.py` (64 px) built from the same helpers, on natural images.
Differences are mean absolute differences (MAD) of the uint8 outputs, in 0..255 units."""

import functools

import cv2
import imagecorruptions.corruptions as ic
import numpy as np
import pytest
import skimage.data
import skimage.transform
import skimage.util
import torch
from scipy.ndimage import zoom as scipy_zoom
from skimage.filters import gaussian as sk_gaussian

from dstbench import imageops
from dstbench.corruption import SampleRNG, TableSuite
from dstbench.errors import UserError
from dstbench_plugins.image_c import blur

SIZES = (32, 64, 224)
SEVERITIES = (1, 2, 3, 4, 5)
NAMES = tuple(blur.CORRUPTIONS)
SUITES = {size: TableSuite("blur-test", "the blur corruptions", size, blur.CORRUPTIONS) for size in SIZES}


@functools.cache
def photos(size: int) -> np.ndarray:
    """Astronaut, coffee and chelsea, resized with anti-aliasing: uint8 (3, size, size, 3)."""
    sources = (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea())
    resized = [skimage.transform.resize(image, (size, size), anti_aliasing=True) for image in sources]
    return np.stack([skimage.util.img_as_ubyte(image) for image in resized])


def parameter(name: str, size: int, severity: int):
    return blur.CORRUPTIONS[name].parameters[size][severity - 1]


def corrupt(images: np.ndarray, name: str, size: int, severity: int, rng: SampleRNG) -> np.ndarray:
    """Our corruption of (N, H, W, 3) uint8 images with one table's parameter, as (N, H, W, 3) uint8."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = blur.CORRUPTIONS[name].function(batch, parameter(name, size, severity), rng)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    return out.permute(0, 2, 3, 1).numpy()


def streams(count: int, *labels, seed: int = 0) -> SampleRNG:
    return SampleRNG.for_samples(seed, *labels, ids=torch.arange(count))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- The references, on one (H, W, 3) uint8 image ------------------------------------------------------------------


def truncate(x: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(x, 0, 1) * 255)


def reference_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return truncate(sk_gaussian(image / 255.0, sigma=sigma, channel_axis=-1))


def reference_defocus(image: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    kernel = ic.disk(radius=radius, alias_blur=alias_blur)
    return truncate(np.stack([cv2.filter2D(image[:, :, d] / 255.0, -1, kernel) for d in range(3)], -1))


def reference_motion(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    return np.uint8(np.clip(ic._motion_blur(image, radius=radius, sigma=sigma, angle=angle), 0, 255))


def centred_clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """The original scripts' clipped_zoom, which trims the zoomed crop around its centre."""
    size = image.shape[0]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = scipy_zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim : trim + size, trim : trim + size]


def reference_zoom(image: np.ndarray, factors) -> np.ndarray:
    x = (image / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += centred_clipped_zoom(x, factor)
    return truncate((x + out) / (len(factors) + 1))


def reference_glass(image: np.ndarray, size: int, severity: int, seed: int) -> np.ndarray:
    """imagecorruptions' glass_blur at 224 px; at 32 and 64 px the same code with that table's parameters."""
    if size == 224:
        return np.uint8(ic.glass_blur(image, severity, seed=seed))
    sigma, delta, iterations = parameter("glass_blur", size, severity)
    x = np.uint8(sk_gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255)
    x = ic._shuffle_pixels_njit_glass_blur(size, size, x, (sigma, delta, iterations), seed)
    return truncate(sk_gaussian(x / 255.0, sigma=sigma, channel_axis=-1))


def deterministic_reference(name: str, image: np.ndarray, size: int, severity: int, angle: float) -> np.ndarray:
    """imagecorruptions' function at 224 px, else its formula with the table's parameters; motion blur at `angle`.
    Zoom blur uses the original scripts' centred clipped_zoom at every size (imagecorruptions trims top-left)."""
    if size == 224 and name in ("gaussian_blur", "defocus_blur"):
        return np.uint8(getattr(ic, name)(image, severity))
    c = parameter(name, size, severity)
    if name == "gaussian_blur":
        return reference_gaussian(image, c)
    if name == "defocus_blur":
        return reference_defocus(image, *c)
    if name == "motion_blur":
        return reference_motion(image, *c, angle)
    return reference_zoom(image, c)


def deterministic_parity(name: str, size: int, severity: int) -> np.ndarray:
    """|ours - reference| over the photos, motion blur at the angles our streams drew."""
    rng = streams(3, name, severity)
    ours = corrupt(photos(size), name, size, severity, rng)
    angles = blur.motion_angles(rng).tolist()
    theirs = np.stack(
        [deterministic_reference(name, image, size, severity, a) for image, a in zip(photos(size), angles, strict=True)]
    )
    return np.abs(ours.astype(np.int16) - theirs)


# --- Parity -------------------------------------------------------------------------------------------------------

# MAD bounds per corruption; every difference is a single level, where float32 and float64 sums land on either side
# of an integer before truncation. Measured at most 0.0002 (gaussian), 0.023 (defocus, exact-integer disk sums on
# flat regions), 0.0001 (zoom) and 0.0035 (motion).
TOLERANCE = {"gaussian_blur": 0.005, "defocus_blur": 0.05, "zoom_blur": 0.005, "motion_blur": 0.01}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", tuple(TOLERANCE))
def test_matches_the_reference(name, size):
    for severity in SEVERITIES:
        difference = deterministic_parity(name, size, severity)
        assert difference.max() <= 1 and difference.mean() < TOLERANCE[name], (severity, difference.mean())


@pytest.mark.parametrize("severity", SEVERITIES)
def test_imagecorruptions_zoom_blur_equals_the_centred_original_at_224(severity):
    """imagecorruptions keeps the top-left of each zoomed crop, the originals its centre. ceil(h / f) · f < h + f, so
    for factors below 1.5 the zoomed crop is at most one pixel larger, both trims start at 0, and the two agree."""
    for image in photos(224):
        expected = reference_zoom(image, parameter("zoom_blur", 224, severity))
        assert np.array_equal(np.uint8(ic.zoom_blur(image, severity)), expected)


def test_tables_match_the_references():
    zoom = blur.CORRUPTIONS["zoom_blur"].parameters
    assert [len(factors) for factors in zoom[32]] == [7, 12, 16, 21, 26] and zoom[64] == zoom[32]
    assert zoom[32][0] == tuple(np.arange(1, 1.06, 0.01)) and zoom[224][4] == tuple(np.arange(1, 1.31, 0.03))
    assert [len(factors) for factors in zoom[224]] == [12, 16, 11, 13, 11]
    for name in NAMES:
        assert all(len(blur.CORRUPTIONS[name].parameters[size]) == 5 for size in SIZES)


# --- Glass blur -----------------------------------------------------------------------------------------------------


def reference_pass(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, delta: int) -> np.ndarray:
    """The references' shuffle loop on an (H, W, C) array, with given displacements."""
    x = x.copy()
    height, width = x.shape[:2]
    for h in range(height - delta, delta, -1):
        for w in range(width - delta, delta, -1):
            h_prime, w_prime = h + dy[h, w], w + dx[h, w]
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_glass_pass_equals_the_sequential_loop(delta):
    generator = torch.Generator().manual_seed(delta)
    x = torch.randint(0, 256, (3, 3, 19, 23), dtype=torch.uint8, generator=generator)
    dy, dx = torch.randint(-delta, delta, (2, 3, 19, 23), generator=generator)
    ours = blur.glass_pass(x, dy, dx, delta)
    for i in range(3):
        expected = reference_pass(x[i].permute(1, 2, 0).numpy(), dy[i].numpy(), dx[i].numpy(), delta)
        assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), expected)


def test_glass_pass_follows_chains_of_128_links():
    """Every pixel copying its right neighbour, which the loop visited just before: along each row of 129 visited
    pixels a chain of 128 links, the longest glass_pass promises to follow."""
    delta, height, width = 2, 6, 133
    x = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dy, dx = torch.zeros(1, height, width, dtype=torch.int64), torch.ones(1, height, width, dtype=torch.int64)
    expected = reference_pass(x[0].permute(1, 2, 0).numpy(), dy[0].numpy(), dx[0].numpy(), delta)
    assert np.array_equal(blur.glass_pass(x, dy, dx, delta)[0].permute(1, 2, 0).numpy(), expected)
    assert (expected[delta + 1, delta + 1] == x[0, :, delta + 1, width - 1].numpy()).all()


def test_glass_pass_reproduces_imagecorruptions_shuffle():
    """With the displacements imagecorruptions draws (Numba's np.random follows NumPy's legacy generator), passes
    reproduce its shuffle exactly: a chain of copies, not a permutation."""
    image = photos(64)[0][:29, :37]
    sigma, delta, iterations = 1.0, 3, 2
    expected = ic._shuffle_pixels_njit_glass_blur(29, 37, image.copy(), (sigma, delta, iterations), 7)
    np.random.seed(7)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    for _ in range(iterations):
        dy, dx = torch.zeros(2, 1, 29, 37, dtype=torch.int64)
        for h in range(29 - delta, delta, -1):
            for w in range(37 - delta, delta, -1):
                dx[0, h, w], dy[0, h, w] = map(int, np.random.randint(-delta, delta, size=(2,)))
        x = blur.glass_pass(x, dy, dx, delta)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), expected)
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) < len(np.unique(image.reshape(-1, 3), axis=0))


GLASS_DRAWS = {32: 16, 64: 4, 224: 1}  # random draws of each photo


@functools.cache
def glass_statistics(size: int, severity: int) -> tuple[float, float, float, float]:
    """MAD to the clean image and to the once-blurred image (before shuffling): ours, then the reference's, each
    over the photos and GLASS_DRAWS[size] random draws."""
    seeds = GLASS_DRAWS[size]
    clean = np.concatenate([photos(size)] * seeds)
    sigma = parameter("glass_blur", size, severity)[0]
    once = np.stack([np.uint8(sk_gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255) for image in clean])
    ours = corrupt(clean, "glass_blur", size, severity, streams(len(clean), "glass_blur", severity))
    theirs = np.stack([reference_glass(image, size, severity, seed=i) for i, image in enumerate(clean)])
    return mad(ours, clean), mad(ours, once), mad(theirs, clean), mad(theirs, once)


# The draws make these statistics fluctuate by about 1% (32 px) or less (larger images).
@pytest.mark.parametrize("size", SIZES)
def test_glass_blur_matches_the_reference_in_distribution(size):
    for severity in SEVERITIES:
        ours_clean, ours_once, their_clean, their_once = glass_statistics(size, severity)
        assert abs(ours_clean / their_clean - 1) < 0.04, (severity, ours_clean, their_clean)
        assert abs(ours_once / their_once - 1) < 0.04, (severity, ours_once, their_once)


# --- Motion blur's angle --------------------------------------------------------------------------------------------


def test_motion_angles_are_uniform_between_minus_and_plus_45():
    angles = blur.motion_angles(streams(20000, "motion_blur")).double().sort().values
    assert -45 < angles[0] and angles[-1] < 45
    expected = (angles + 45) / 90
    empirical = torch.arange(1, 20001, dtype=torch.float64) / 20000
    assert (empirical - expected).abs().max() < 0.015  # Kolmogorov-Smirnov: 0.0096 is the 5% critical value


@pytest.mark.parametrize("size", [32, 65, 224])
def test_motion_blurs_slices_and_gathers_agree(size, monkeypatch):
    """A CPU sums the taps of large images as slices of padded images, accelerators and small images by gathers:
    the same floats, shifts past every edge included (severity 5's 41 taps at 65 px)."""
    images = torch.from_numpy(photos(224)).permute(0, 3, 1, 2)[:, :, :size, :size].float()
    angles = torch.tensor([-44.9, 0.0, 37.0])
    sums = {}
    for path, limit in (("slices", 0), ("gathers", size * size)):
        monkeypatch.setattr(imageops, "_GATHER_MAX_PIXELS", limit)
        sums[path] = imageops.motion_blur(images, 20, 15, angles)
    assert torch.equal(sums["slices"], sums["gathers"])


# 96 draws at 32 px (32 per photo), 12 at 224 px; the MAD depends on the angle, so its estimates fluctuate by ~2%.
@pytest.mark.parametrize("size, copies", [(32, 32), (224, 4)])
def test_motion_blur_matches_the_reference_in_distribution(size, copies):
    clean = np.concatenate([photos(size)] * copies)
    np.random.seed(0)
    for severity in SEVERITIES:
        ours = corrupt(clean, "motion_blur", size, severity, streams(len(clean), "motion_blur", severity))
        if size == 224:
            theirs = np.stack([np.uint8(ic.motion_blur(image, severity)) for image in clean])
        else:
            c = parameter("motion_blur", size, severity)
            theirs = np.stack([reference_motion(image, *c, np.random.uniform(-45, 45)) for image in clean])
        assert abs(mad(ours, clean) / mad(theirs, clean) - 1) < 0.06, severity


# --- Contract -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur"])
def test_severity_increases_the_damage(name, size):
    """Damage (MAD to the clean photos) grows with severity; motion blur at fixed angles."""
    rng = streams(3, name)
    damage = [mad(corrupt(photos(size), name, size, s, rng), photos(size)) for s in SEVERITIES]
    if name == "motion_blur":  # at 32 px, severities 3 and 4 differ only in taps of weight < 1e-9
        assert damage[0] > 0 and (np.diff(damage) > -0.01).all(), damage
        assert damage[-1] > damage[0] + 5
    else:
        assert 0 < damage[0] and damage == sorted(set(damage)), damage


@pytest.mark.parametrize("size", SIZES)
def test_glass_blur_damage_follows_the_reference(size):
    """Glass blur's damage does not grow with every severity in the references either (32 px: 12.1, 12.2, 12.1,
    19.7, 19.0), since a stronger blur also smooths the shuffle: ours must rise and fall where theirs does."""
    damage, reference = zip(*(glass_statistics(size, s)[::2] for s in SEVERITIES), strict=True)
    assert max(damage) > min(damage) + 5
    for s in range(4):
        if abs(reference[s + 1] - reference[s]) > 0.5:
            assert (damage[s + 1] > damage[s]) == (reference[s + 1] > reference[s]), (damage, reference)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_any_size_from_the_minimum_keeps_dtype_shape_and_device(name, size):
    suite = TableSuite("blur-test", "one blur corruption", size, {name: blur.CORRUPTIONS[name]})
    smallest = blur.CORRUPTIONS[name].min_size
    for shape in [(2, 3, smallest, smallest), (2, 1, smallest + 3, smallest + 7), (1, 3, 45, 37), (0, 3, 32, 32)]:
        suite.check_input(shape[1], shape[2])
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        out = suite.corrupt(images, name, 5, streams(shape[0], name))
        assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    if smallest > 1:
        with pytest.raises(UserError, match=f"{name} needs images of at least {smallest} px"):
            suite.check_input(3, smallest - 1)


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_only_on_the_image_and_its_stream(name):
    """The same image gets the same output in any batch (across CPU sub-batches too), and on every call; another
    seed changes the random ones."""
    suite = SUITES[32]
    images = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(500, 700)

    def run(index, seed=0):
        return suite.corrupt(images[index], name, 4, SampleRNG.for_samples(seed, name, ids=ids[index]))

    whole = run(slice(None))
    assert torch.equal(run(slice(None)), whole)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(2))
    assert torch.equal(run(order), whole[order])
    for i in (0, 85, 199):
        assert torch.equal(run(slice(i, i + 1)), whole[i : i + 1])
    if name in ("glass_blur", "motion_blur"):
        assert not torch.equal(run(slice(None), seed=1), whole)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def photo_batch(name: str, size: int) -> tuple[torch.Tensor, SampleRNG]:
    """12 photos (N, 3, size, size) on the CPU, and their streams."""
    images = torch.from_numpy(photos(size)).permute(0, 3, 1, 2).repeat(4, 1, 1, 1).contiguous()
    return images, streams(len(images), name)


@needs_cuda
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, size):
    images, rng = photo_batch(name, size)
    on_cpu = SUITES[size].corrupt(images, name, 5, rng)
    on_gpu = SUITES[size].corrupt(images.cuda(), name, 5, SampleRNG(rng.keys.cuda()))
    assert on_gpu.device.type == "cuda"
    difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
    assert difference.max() <= 1 and difference.float().mean() < 0.05  # float rounding may differ by one level


@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_runs_without_host_syncs(name):
    for size in SIZES:
        images, rng = photo_batch(name, size)
        images, rng = images.cuda(), SampleRNG(rng.keys.cuda())
        SUITES[size].corrupt(images, name, 5, rng)  # warm-up: kernels and caches load outside the check
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            SUITES[size].corrupt(images, name, 5, rng)
        finally:
            torch.cuda.set_sync_debug_mode("default")
