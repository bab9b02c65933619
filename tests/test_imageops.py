"""The batched tensor image operations against the SciPy, scikit-image and OpenCV calls they reproduce."""

import cv2
import numpy as np
import pytest
import skimage
import torch
from scipy.ndimage import zoom as scipy_zoom
from skimage.filters import gaussian as sk_gaussian

from dstbench import imageops
from dstbench.corruption import SampleRNG


def _image(size=32):
    photo = skimage.transform.resize(skimage.data.astronaut(), (size, size), anti_aliasing=True)
    return photo.astype(np.float32)  # (H, W, 3) in [0, 1]


def _tensor(hwc):
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)[None].float()


def _numpy(nchw):
    return nchw[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.0])
def test_gaussian_blur_matches_skimage(sigma):
    x = _image(40)
    ours = _numpy(imageops.gaussian_blur(_tensor(x), sigma))
    assert np.abs(ours - sk_gaussian(x, sigma=sigma, channel_axis=-1)).max() < 1e-5


@pytest.mark.parametrize(
    "radius, alias, side",
    [(0.3, 0.4, 3), (1, 0.2, 5), (1.5, 0.1, 5), (3, 0.1, 9), (6, 0.5, 15), (8, 0.5, 17), (10, 0.5, 21)],
)
def test_disk_kernel_and_filter_match_opencv(radius, alias, side):
    """Ours is the reference's kernel cropped to its nonzero support; filtering with it is cv2.filter2D with theirs."""
    from imagecorruptions.corruptions import disk

    reference = disk(radius, alias)
    ours = imageops.disk_kernel(radius, alias).numpy()
    crop = (len(reference) - side) // 2
    inner = reference[crop : crop + side, crop : crop + side]
    assert ours.shape == (side, side) and np.abs(ours - inner).max() < 1e-6
    outside = np.ones_like(reference, dtype=bool)
    outside[crop : crop + side, crop : crop + side] = False
    assert not reference[outside].any()  # only zeros are left out
    x = _image(32)
    filtered = np.stack([cv2.filter2D(x[:, :, d], -1, reference) for d in range(3)], -1)
    assert np.abs(_numpy(imageops.filter2d(_tensor(x), torch.from_numpy(ours))) - filtered).max() < 1e-5


@pytest.mark.parametrize("kernel_shape", [(3, 3), (1, 9), (9, 1), (2, 5, 5)])  # (2, 5, 5): one kernel per image
@pytest.mark.parametrize("border", ["reflect", "replicate"])
def test_filter2d_gives_the_same_sums_in_either_layout(kernel_shape, border, monkeypatch):
    """The CPU convolves a few maps in channels-last layout, many in the usual one: the same floats."""
    photos = np.stack([_image(40), _image(40)[::-1]])  # the photo and its flip: two different images
    images = torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous()
    kernel = torch.rand(kernel_shape, generator=torch.Generator().manual_seed(0))
    filtered = {}
    for layout, few_maps in (("channels last", 6), ("usual", 0)):
        monkeypatch.setattr(imageops, "_FEW_MAPS", few_maps)
        filtered[layout] = imageops.filter2d(images, kernel, border)
    assert filtered["usual"].is_contiguous() and filtered["channels last"].is_contiguous()
    assert torch.equal(filtered["channels last"], filtered["usual"])


@pytest.mark.parametrize("kernel_shape", [(3, 3), (1, 9), (9, 1), (17, 17), (4, 5, 5)])  # (4, 5, 5): per image
def test_filter2d_filters_a_map_alike_whatever_comes_with_it(kernel_shape):
    """A single-channel image filtered alone (one map: groups = 1 would sum in another order) or with others."""
    maps = torch.rand(4, 1, 30, 40, generator=torch.Generator().manual_seed(1))
    kernel = torch.rand(kernel_shape, generator=torch.Generator().manual_seed(2))
    together = imageops.filter2d(maps, kernel)
    for i in range(4):
        alone = imageops.filter2d(maps[i : i + 1], kernel[i : i + 1] if kernel.ndim == 3 else kernel)
        assert torch.equal(alone, together[i : i + 1])


@pytest.mark.parametrize("factor", [1.01, 1.06, 1.3])
@pytest.mark.parametrize("size", [32, 37, 64, 65, 96])  # matrix products up to 64 px, interpolation beyond
def test_clipped_zoom_matches_scipy(factor, size):
    x = _image(size)
    ch = int(np.ceil(size / factor))
    top = (size - ch) // 2
    zoomed = scipy_zoom(x[top : top + ch, top : top + ch], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    reference = zoomed[trim : trim + size, trim : trim + size]
    assert np.abs(_numpy(imageops.clipped_zoom(_tensor(x), factor)) - reference).max() < 1e-5


@pytest.mark.parametrize("angle", [-45.0, -10.0, 0.0, 30.0, 44.0, -120.0])
def test_motion_blur_matches_imagecorruptions(angle):
    from imagecorruptions.corruptions import _motion_blur

    x = _image(48) * 255
    reference = _motion_blur(x, radius=6, sigma=2, angle=angle)
    ours = imageops.motion_blur(_tensor(x), 6, 2, torch.tensor([angle]))
    assert np.abs(_numpy(ours) - reference).max() < 1e-3


def test_motion_blur_takes_an_angle_per_image():
    x = _tensor(_image(32)).repeat(3, 1, 1, 1)
    angles = torch.tensor([-40.0, 0.0, 40.0])
    batch = imageops.motion_blur(x, 4, 1.5, angles)
    for i in range(3):
        assert torch.allclose(batch[i], imageops.motion_blur(x[i : i + 1], 4, 1.5, angles[i : i + 1])[0])


def test_hsv_round_trip_matches_skimage():
    x = _image(32)
    x[0, 0] = 0  # black: saturation 0
    x[1, 1] = 0.5  # grey: hue 0
    hsv = imageops.rgb_to_hsv(_tensor(x))
    assert np.abs(_numpy(hsv) - skimage.color.rgb2hsv(x)).max() < 1e-5
    assert np.abs(_numpy(imageops.hsv_to_rgb(hsv)) - x).max() < 1e-5
    shifted = skimage.color.rgb2hsv(x)
    shifted[..., 0] = (shifted[..., 0] + 0.3) % 1
    assert np.abs(_numpy(imageops.hsv_to_rgb(_tensor(shifted))) - skimage.color.hsv2rgb(shifted)).max() < 1e-5


def test_to_uint8_truncates_like_numpy():
    x = torch.tensor([0.0, 0.5, 0.99999, 1.2, -0.3])
    expected = np.uint8(np.clip(x.numpy(), 0, 1) * 255)
    assert imageops.to_uint8(x).numpy().tolist() == expected.tolist()


def test_plasma_fractal_shape_range_seeding_and_smoothness():
    ids = torch.arange(4)
    a = imageops.plasma_fractal(SampleRNG.for_samples(0, "fog", ids=ids), 64, 2.0)
    b = imageops.plasma_fractal(SampleRNG.for_samples(0, "fog", ids=ids[2:]), 64, 2.0)
    assert a.shape == (4, 64, 64) and a.amin() == 0 and a.amax() == 1
    assert torch.equal(a[2:], b)  # per-image streams
    assert not torch.equal(a[0], a[1])
    # larger wibble decay gives smoother maps: neighbouring differences shrink
    rough = imageops.plasma_fractal(SampleRNG.for_samples(0, "fog", ids=ids), 64, 1.4)
    smooth = imageops.plasma_fractal(SampleRNG.for_samples(0, "fog", ids=ids), 64, 3.0)
    assert (smooth.diff(dim=1).abs().mean()) < (rough.diff(dim=1).abs().mean())


def test_plasma_statistics_match_the_reference():
    from imagecorruptions.corruptions import plasma_fractal

    ours = imageops.plasma_fractal(SampleRNG.for_samples(0, "fog", ids=torch.arange(64)), 32, 2.0)
    np.random.seed(0)
    reference = np.stack([plasma_fractal(32, 2.0) for _ in range(64)])
    assert abs(ours.mean().item() - reference.mean()) < 0.03
    assert abs(ours.std().item() - reference.std()) < 0.03
    ours_rough = ours.diff(dim=2).abs().mean().item()
    assert abs(ours_rough - np.abs(np.diff(reference, axis=2)).mean()) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_convolutions_and_products_are_full_float32():
    """cuDNN may convolve float32 in TF32 (errors near 1e-3), cuBLAS too when asked to; blurs and zooms ask for
    IEEE float32 and then restore the settings they found."""
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.set_float32_matmul_precision("high")  # what a training script may have set
    try:
        before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
        blurred, zoomed = imageops.gaussian_blur(x.cuda(), 2.0).cpu(), imageops.clipped_zoom(x.cuda(), 1.17).cpu()
        assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before
    finally:
        torch.set_float32_matmul_precision("highest")
    assert (blurred - imageops.gaussian_blur(x, 2.0)).abs().max() < 1e-6
    assert (zoomed - imageops.clipped_zoom(x, 1.17)).abs().max() < 1e-6


def test_ieee_float32_sets_and_restores_the_cuda_precision_flags():
    """The flags alone (no GPU needed): IEEE inside, the caller's settings after, even on an exception."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        with pytest.raises(RuntimeError), imageops.ieee_float32(torch.device("cuda")):
            assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
            raise RuntimeError
        assert matmul.fp32_precision == "tf32" and conv.fp32_precision == before[0]
        with imageops.ieee_float32(torch.device("cpu")):
            assert matmul.fp32_precision == "tf32"  # nothing to change on the CPU
    finally:
        conv.fp32_precision, matmul.fp32_precision = before
