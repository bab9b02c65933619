"""The digital corruptions against their references: `imagecorruptions` at 224 px, the formulas of
`make_cifar_c.py` (32 px) and `make_tinyimagenet_c.py` (64 px) with PIL, scikit-image, OpenCV and SciPy."""

import dataclasses
import functools
import io

import cv2
import imagecorruptions
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.transform
import skimage.util
import torch
from PIL import Image
from scipy.ndimage import map_coordinates
from skimage.filters import gaussian

from dstbench.corruption import SampleRNG, TableSuite
from dstbench.errors import UserError
from dstbench_plugins.image_c import digital, jpeg

NAMES = tuple(digital.CORRUPTIONS)
SIZES = (32, 64, 224)
SUITES = {size: TableSuite(f"digital-{size}", "digital corruptions", size, digital.CORRUPTIONS) for size in SIZES}

# The tables of make_cifar_c.py and make_tinyimagenet_c.py, as their code writes them.
REFERENCE_TABLES = {
    32: {
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "elastic_transform": tuple(
            (32 * a, 32 * s, 32 * f)
            for a, s, f in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
        ),
    },
    64: {
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
        "jpeg_compression": (65, 58, 50, 40, 25),
        "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
        "elastic_transform": tuple(
            (64 * a, 64 * s, 64 * f)
            for a, s, f in ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))
        ),
    },
    # make_imagenet_c.py writes 244 for the 224-px side
    224: {
        "elastic_transform": tuple(
            (244 * a, 244 * s, 244 * f)
            for a, s, f in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
        ),
    },
}

# Mean |ours − reference| in 0..255 units, per severity, on the CPU. Measured: 0 everywhere. Contrast's float32
# mean may round the other way on another CPU (one level, rarely); JPEG needs the same libjpeg in PIL and
# torchvision (here libjpeg-turbo in both, byte-identical files).
TOLERANCE = {"contrast": 0.01, "saturate": 0.01, "pixelate": 0.0, "jpeg_compression": 0.05}


@functools.cache
def photos(size: int) -> np.ndarray:
    """Three natural RGB photos (3, size, size, 3) uint8."""
    return np.stack(
        [
            skimage.util.img_as_ubyte(
                skimage.transform.resize(getattr(skimage.data, name)(), (size, size), anti_aliasing=True)
            )
            for name in ("astronaut", "chelsea", "coffee")
        ]
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).cpu().numpy()


def corrupt(images: torch.Tensor, name: str, severity: int, size: int, ids=None, seed=0) -> torch.Tensor:
    ids = torch.arange(len(images), device=images.device) if ids is None else ids
    rng = SampleRNG.for_samples(seed, f"digital-{size}", name, severity, ids=ids)
    return SUITES[size].corrupt(images, name, severity, rng)


def reference_formula(image: np.ndarray, name: str, c) -> np.ndarray:
    """make_cifar_c.py's contrast, saturate, jpeg_compression or pixelate of one uint8 image, parameter c."""
    if name == "contrast":
        x = image / 255.0
        means = np.mean(x, axis=(0, 1), keepdims=True)
        return np.uint8(np.clip((x - means) * c + means, 0, 1) * 255)
    if name == "saturate":
        x = skimage.color.rgb2hsv(image / 255.0)
        x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
        return np.uint8(np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255)
    pil = Image.fromarray(image)
    if name == "jpeg_compression":
        output = io.BytesIO()
        pil.save(output, "JPEG", quality=c)
        return np.array(Image.open(output))
    size = image.shape[0]
    return np.array(pil.resize((int(size * c), int(size * c)), Image.BOX).resize((size, size), Image.BOX))


def reference(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    """The reference for a batch: imagecorruptions at 224 px, else the formula with make_*_c.py's parameter."""
    size = images.shape[1]
    if size == 224:
        return np.stack([imagecorruptions.corrupt(x, severity, corruption_name=name) for x in images])
    return np.stack([reference_formula(x, name, REFERENCE_TABLES[size][name][severity - 1]) for x in images])


def reference_elastic(image: np.ndarray, shifts: np.ndarray, noise: np.ndarray, alpha: float, sigma: float):
    """make_cifar_c.py's elastic_transform of one uint8 image with its random numbers given: the anchors' shifts
    (3, 2) and the two uniform(−1, 1) maps (2, H, W) for dx and dy."""
    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32(
        [
            center_square + square_size,
            [center_square[0] + square_size, center_square[1] - square_size],
            center_square - square_size,
        ]
    )
    pts2 = pts1 + shifts.astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(noise[0], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (gaussian(noise[1], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.uint8(np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- Tables --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_tables_are_the_references(size):
    for name, table in REFERENCE_TABLES[size].items():
        ours = digital.CORRUPTIONS[name].parameters[size]
        if name in ("pixelate", "elastic_transform"):  # fractions of the image side
            ours = tuple(np.multiply(c, size if name == "elastic_transform" else 1) for c in ours)
        np.testing.assert_allclose(np.array(ours, dtype=float), np.array(table, dtype=float), atol=1e-12)


# --- Parity: deterministic corruptions -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["contrast", "saturate", "pixelate", "jpeg_compression"])
def test_matches_the_reference(name, size):
    images = photos(size)
    for severity in range(1, 6):
        ours = to_numpy(corrupt(to_tensor(images), name, severity, size))
        difference = np.abs(ours.astype(int) - reference(images, name, severity))
        assert difference.mean() <= TOLERANCE[name] and difference.max() <= 1, (severity, difference.mean())


@pytest.mark.parametrize(
    "in_size, out_size",
    [(32, 30), (32, 27), (64, 57), (224, 67), (224, 56), (100, 10), (7, 3), (3, 2), (9, 6), (30, 32), (56, 224)]
    + [(3, 7), (19, 64), (67, 224), (134, 224), (57, 225)],
)
def test_box_resize_is_pils(in_size, out_size):
    """Exact, downscaling and upscaling (copies of single pixels), non-square. 100 → 10 averages ten pixels, where
    Pillow's 22-bit weight rounds ties down (51.5 → 51); at 3 → 2 and 9 → 6 pixel centres fall on the window's
    edges."""
    rng = np.random.default_rng(in_size * out_size)
    images = rng.integers(0, 256, (2, in_size, in_size + 3, 3), dtype=np.uint8)
    if in_size >= 10:
        images[0, :10, :10] = np.arange(10, dtype=np.uint8)[None, :, None] % 2 + 51  # row sums 515: a tie
    theirs = np.stack([np.array(Image.fromarray(x).resize((out_size + 1, out_size), Image.BOX)) for x in images])
    ours = digital.box_resize(to_tensor(images), (out_size, out_size + 1))
    assert ours.dtype == torch.uint8 and np.array_equal(to_numpy(ours), theirs)


# --- Parity: elastic_transform -------------------------------------------------------------------------------------


def test_reflect_smooth_is_skimage_gaussian_even_wider_than_the_map():
    noise = np.random.default_rng(0).uniform(-1, 1, (2, 9, 12))
    for sigma in (0.7, 3.0, 10.0):  # σ = 10: taps reach 30 px, folding back over a 9-px side three times
        ours = digital.reflect_smooth(torch.from_numpy(noise), sigma).numpy()
        for map_, our_map in zip(noise, ours, strict=True):
            np.testing.assert_allclose(our_map, gaussian(map_, sigma, mode="reflect", truncate=3), atol=1e-7)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_elastic_transform_is_the_formula_given_its_random_numbers(size, severity):
    """Ours against OpenCV's warpAffine and SciPy's map_coordinates fed the same random numbers (the shifts from
    stream 0, the noise maps from stream 1): equal up to float rounding before the truncation to uint8."""
    images = photos(size)
    rng = SampleRNG.for_samples(0, f"digital-{size}", "elastic_transform", severity, ids=torch.arange(3))
    alpha, sigma, shift = (f * size for f in digital.CORRUPTIONS["elastic_transform"].parameters[size][severity - 1])
    ours = to_numpy(digital.elastic_transform(to_tensor(images), (alpha / size, sigma / size, shift / size), rng))
    shifts = (rng.uniform((3, 2), stream=0) * 2 * shift - shift).numpy()
    noise = (rng.uniform((2, size, size), stream=1) * 2 - 1).double().numpy()
    theirs = np.stack([reference_elastic(x, s, u, alpha, sigma) for x, s, u in zip(images, shifts, noise, strict=True)])
    difference = np.abs(ours.astype(int) - theirs)
    assert difference.mean() < 0.01 and difference.max() <= 1


def their_elastic(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """The reference with its own random numbers: make_*_c.py's formula with that script's table."""
    size = images.shape[1]
    np.random.seed(seed)
    alpha, sigma, shift = REFERENCE_TABLES[size]["elastic_transform"][severity - 1]
    return np.stack(
        [
            reference_elastic(
                x, np.random.uniform(-shift, shift, (3, 2)), np.random.uniform(-1, 1, (2, size, size)), alpha, sigma
            )
            for x in images
        ]
    )


# Mean |corrupted − clean| (0..255 units) over 3 photos × `copies` random draws, ours against the reference's with
# its own NumPy random numbers; the draw-to-draw spread of this mean is about 2% (32, 64 px) and 1% (224 px).
ELASTIC_COPIES = {32: 48, 64: 32, 224: 2}


@pytest.mark.parametrize("size", SIZES)
def test_elastic_transform_matches_the_reference_in_distribution(size):
    copies = ELASTIC_COPIES[size]
    images = np.repeat(photos(size), copies, axis=0)
    for severity in range(1, 6):
        ours = to_numpy(corrupt(to_tensor(images), "elastic_transform", severity, size))
        theirs = their_elastic(images, severity, seed=severity)
        ours_change, their_change = mean_abs(ours, images), mean_abs(theirs, images)
        assert abs(ours_change / their_change - 1) < 0.1, (severity, ours_change, their_change)


# --- Contract ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (3, 1, 28, 28), (2, 3, 4, 4), (0, 3, 32, 32)])
def test_output_is_uint8_of_the_same_shape(name, shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    SUITES[32].check_input(shape[1], shape[2])
    out = corrupt(images, name, 5, 32)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    if images.numel() > 1000:
        assert not torch.equal(out, images)


@pytest.mark.parametrize("name, size", [("elastic_transform", 2), ("pixelate", 3)])
def test_too_small_images_are_refused(name, size):
    with pytest.raises(UserError, match=f"{name} needs images of at least {size + 1} px"):
        SUITES[32].check_input(3, size)


# Left out, as in the references: saturate (severities 1–2 desaturate, 3–5 saturate) and elastic_transform (its
# affine part, most of the pixel change, shrinks as the severity grows).
@pytest.mark.parametrize(
    "name, size", [(name, size) for name in ("contrast", "pixelate", "jpeg_compression") for size in SIZES]
)
def test_severity_increases_the_damage(name, size):
    images = to_tensor(np.repeat(photos(size), 4 if size < 224 else 1, axis=0))
    damage = [(corrupt(images, name, s, size).float() - images.float()).abs().mean().item() for s in range(1, 6)]
    assert 0 < damage[0] and damage == sorted(set(damage)), damage  # strictly increasing


def test_elastic_transform_depends_only_on_the_image_and_its_key():
    """Each image gets the same warp alone, in a shuffled batch, and across the CPU's sub-batches; the same keys
    give the same result, another seed another one."""
    images = to_tensor(np.repeat(photos(32), 40, axis=0))
    ids = torch.arange(500, 620)
    whole = corrupt(images, "elastic_transform", 3, 32, ids=ids)
    assert torch.equal(whole, corrupt(images, "elastic_transform", 3, 32, ids=ids))
    assert not torch.equal(whole, corrupt(images, "elastic_transform", 3, 32, ids=ids, seed=1))
    order = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    assert torch.equal(corrupt(images[order], "elastic_transform", 3, 32, ids=ids[order]), whole[order])
    for i in (0, 85, 119):
        assert torch.equal(corrupt(images[i : i + 1], "elastic_transform", 3, 32, ids=ids[i : i + 1]), whole[i : i + 1])
    assert not torch.equal(whole[0], whole[3])  # the same photo, another key


def test_jpeg_takes_whole_batches_on_the_cpu_where_the_others_take_pieces(monkeypatch):
    """The CPU cuts batches into cache-sized pieces for tensor work; JPEG spreads the whole batch over its threads."""
    batches = []

    def recording(function):
        return lambda images, parameter, rng: batches.append(len(images)) or function(images, parameter, rng)

    def four_a_piece(c):
        pieces = c.cpu_piece_elements and 3 * 64 * 64 * 4
        return dataclasses.replace(c, function=recording(c.function), cpu_piece_elements=pieces)

    suite = TableSuite("pieces", "test", 64, {name: four_a_piece(c) for name, c in digital.CORRUPTIONS.items()})
    images = to_tensor(np.repeat(photos(64), 4, axis=0))  # 12
    rng = SampleRNG.for_samples(0, "pieces", ids=torch.arange(12))
    whole = suite.corrupt(images, "jpeg_compression", 2, rng)
    assert batches == [12]
    batches.clear()
    suite.corrupt(images, "contrast", 2, rng)
    assert batches == [4, 4, 4]
    assert torch.equal(whole, corrupt(images, "jpeg_compression", 2, 64))


@pytest.mark.parametrize("name", ["contrast", "saturate", "pixelate", "jpeg_compression"])
def test_deterministic_corruptions_treat_each_image_alone(name):
    images = to_tensor(photos(64))
    whole = corrupt(images, name, 4, 64)
    for i in range(3):
        assert torch.equal(corrupt(images[i : i + 1], name, 4, 64, ids=torch.tensor([7])), whole[i : i + 1])


@pytest.mark.parametrize("threads", [1, 2, 5, 40])
def test_jpeg_threads_keep_the_batch_order(monkeypatch, threads):
    images = to_tensor(photos(32)).repeat(4, 1, 1, 1)
    images[3:] = images[3:].flip(-1)  # 12 images, no two neighbours alike
    one_by_one = torch.cat([corrupt(image[None], "jpeg_compression", 2, 32) for image in images])
    monkeypatch.setattr(digital, "JPEG_THREADS", threads)
    assert torch.equal(corrupt(images, "jpeg_compression", 2, 32), one_by_one)


# --- JPEG on accelerators: libjpeg-turbo's arithmetic in tensor operations (jpeg.py) -----------------------------

JPEG_QUALITIES = (1, 2, 7, 10, 25, 49, 50, 51, 75, 90, 100)


def test_device_jpeg_is_libjpeg_on_photos():
    """Byte for byte, at every quality of the three suites' tables and more."""
    for size in SIZES:
        images = to_tensor(photos(size))
        for quality in {*JPEG_QUALITIES, *digital.CORRUPTIONS["jpeg_compression"].parameters[size]}:
            assert torch.equal(jpeg.round_trip(images, quality), digital.jpeg_compression(images, quality, None))


@pytest.mark.parametrize("height, width", [(1, 1), (2, 3), (3, 50), (5, 7), (8, 8), (9, 9), (17, 23), (31, 16)])
def test_device_jpeg_is_libjpeg_at_any_size(height, width):
    """Sizes that are not whole blocks or whole chroma pairs (libjpeg pads them in three different ways), chroma
    too narrow for fancy upsampling, and noise and black-and-white images whose sums reach the range limits."""
    generator = torch.Generator().manual_seed(height * 100 + width)
    noise = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator)
    extremes = torch.randint(0, 2, (2, 3, height, width), dtype=torch.uint8, generator=generator) * 255
    images = torch.cat([noise, extremes])
    for quality in JPEG_QUALITIES:
        assert torch.equal(jpeg.round_trip(images, quality), digital.jpeg_compression(images, quality, None))


def test_jpeg_without_torchvisions_codec_computes_libjpegs_arithmetic(monkeypatch):
    images = to_tensor(photos(32))
    expected = corrupt(images, "jpeg_compression", 3, 32)
    monkeypatch.setattr(digital, "encode_jpeg", None)  # a torchvision that dropped its deprecated codecs
    assert torch.equal(corrupt(images, "jpeg_compression", 3, 32), expected)


def libjpeg_reciprocal(divisor: int) -> tuple[int, int, int]:
    """jcdctmgr.c's compute_reciprocal for 16-bit DCT elements: (reciprocal, correction, shift); a coefficient t is
    quantized to sign(t) · ((|t| + correction) · reciprocal >> shift)."""
    shift = 15 + divisor.bit_length()
    reciprocal, remainder = divmod(1 << shift, divisor)
    correction = divisor // 2
    if remainder == 0:  # a power of two: the reciprocal would not fit in 16 bits
        reciprocal, shift = reciprocal >> 1, shift - 1
    elif remainder <= divisor // 2:
        correction += 1
    else:
        reciprocal += 1
    return reciprocal, correction, shift


def test_jpeg_quantization_by_reciprocals_is_rounded_division():
    """libjpeg multiplies by reciprocals; jpeg.py divides: the same quotient for every 16-bit coefficient
    magnitude and every divisor of the islow DCT (8 × a baseline table entry, 1..255)."""
    t = torch.arange(1 << 15, dtype=torch.int64)
    for entry in range(1, 256):
        divisor = 8 * entry
        reciprocal, correction, shift = libjpeg_reciprocal(divisor)
        assert torch.equal((t + correction) * reciprocal >> shift, (t + divisor // 2) // divisor), entry
    coefficients = torch.tensor([-20, -12, -4, -3, 3, 4, 12, 20], dtype=torch.float64).repeat(8, 1)[None]
    ones = torch.ones(8, 8, dtype=torch.float64)  # divisors 8: halves round away from zero
    assert jpeg._requantize(coefficients, ones)[0, 0].tolist() == [-3, -2, -1, 0, 0, 1, 2, 3]
    assert jpeg._requantize(coefficients, 2 * ones)[0, 0].tolist() == [-2, -2, 0, 0, 0, 0, 2, 2]  # then × 2


def test_jpeg_inverse_dct_wraps_like_libjpegs_range_limit_table():
    """jidctint.c looks samples up in range_limit[x & 1023] (jdmaster.c's table), which clamps x within ±384 of the
    128 level and wraps beyond: a DC-only block of value 8x decodes to that table's entry for x everywhere."""
    dc = torch.tensor([0, 100, 127, 128, 300, 600, -128, -129, -600], dtype=torch.float64)
    blocks = torch.zeros(len(dc), 8, 8, dtype=torch.float64)
    blocks[:, 0, 0] = 8 * dc
    decoded = jpeg._idct(blocks)
    assert (decoded == decoded[:, :1, :1]).all()
    assert decoded[:, 0, 0].tolist() == [128, 228, 255, 255, 255, 0, 0, 0, 255]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("size", SIZES)
def test_cuda_jpeg_is_the_cpu_jpeg(size):
    images = to_tensor(np.repeat(photos(size), 8, axis=0))
    for severity in range(1, 6):
        on_gpu = corrupt(images.cuda(), "jpeg_compression", severity, size)
        assert on_gpu.device.type == "cuda" and torch.equal(
            on_gpu.cpu(), corrupt(images, "jpeg_compression", severity, size)
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, size):
    images = to_tensor(np.repeat(photos(size), 8, axis=0))
    for severity in (1, 3, 5):
        on_cpu = corrupt(images, name, severity, size)
        on_gpu = corrupt(images.cuda(), name, severity, size)
        assert on_gpu.device.type == "cuda"
        difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
        assert difference.max() <= 1 and difference.float().mean() < 0.01  # float rounding may differ by one level
