"""Batched image operations on tensors, the building blocks of the corruption suites.

Each reproduces the operation the reference corruption code (Hendrycks & Dietterich's `make_*_c.py`, and the
`imagecorruptions` package) takes from SciPy, scikit-image or OpenCV, for a whole batch (N, C, H, W) of float
images in [0, 1], on whatever device the batch is on. Randomness comes only from a `SampleRNG`, one stream per
image, so results do not depend on batch composition.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from dstbench.corruption import SampleRNG, cpu_forms


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1]."""
    return images.to(torch.float32).div_(255)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] → uint8 the reference's way: np.uint8(np.clip(x, 0, 1) * 255), which truncates."""
    return x.clamp(0, 1).mul_(255).to(torch.uint8)


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """float32 convolutions and matrix products in full precision on CUDA, restoring the settings found. PyTorch lets
    cuDNN convolve float32 in TF32 by default (and cuBLAS too after `set_float32_matmul_precision('high')`): its
    10-bit mantissa moves a blurred value by up to a tenth of a level, enough to change the truncated uint8 result
    of a few per cent of the pixels, against the CPU's and the reference's."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def conv2d(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """F.conv2d in full float32 on every device."""
    with ieee_float32(x.device):
        return F.conv2d(x, weight, groups=groups)


def separable(rows: torch.Tensor, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows @ x @ columns.T over the last two dims of x (a linear map of each (H, W) map), in full float32."""
    with ieee_float32(x.device):
        return rows @ x @ columns.T


def filter2d(x: torch.Tensor, kernel: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """Correlate every channel with a (kh, kw) kernel, or each image with its own (N, kh, kw) kernel, keeping the
    size. border: 'reflect' (OpenCV's default BORDER_REFLECT_101) or 'replicate' (SciPy's 'nearest')."""
    n, c, h, w = x.shape
    kernel = kernel.to(dtype=x.dtype)  # build kernels on x's device: a copy from the host would wait for the GPU
    kh, kw = kernel.shape[-2:]
    padded = F.pad(x, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode=border)
    # Every (image, channel) map is a group of one depthwise convolution: on the CPU that is 10-20× faster than a
    # batch of single-channel maps (oneDNN's depthwise kernel against im2col and a matrix product per map).
    if kernel.ndim == 2:
        weight = kernel.expand(n * c, 1, kh, kw)
    else:
        weight = kernel[:, None].repeat_interleave(c, dim=0)  # one kernel per image, for each of its channels
    maps = padded.reshape(1, n * c, *padded.shape[-2:])
    # A lone map would be an ordinary convolution (groups = 1), which sums in another order than the depthwise one:
    # its image would then depend on whether it came alone. Convolved beside a copy of itself, it does not.
    lone = n * c == 1
    if lone:
        maps, weight = maps.expand(1, 2, -1, -1), weight.expand(2, -1, -1, -1)
    groups = maps.shape[1]
    if cpu_forms(x.device) and groups <= _FEW_MAPS and kh * kw <= _SMALL_KERNEL:
        maps = maps.contiguous(memory_format=torch.channels_last)
    filtered = conv2d(maps, weight, groups=groups)
    return (filtered[:, :1] if lone else filtered).contiguous().view(n, c, h, w)


# oneDNN convolves a few maps (large images in small pieces) with a kernel of up to 11 × 11 about 2x faster in
# channels-last layout, the same sums in the same order; with many maps, or from 15 × 15, the usual layout is faster.
_FEW_MAPS, _SMALL_KERNEL = 16, 11 * 11


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, device: torch.device | None = None) -> torch.Tensor:
    """SciPy's gaussian_filter1d weights: radius int(truncate · sigma + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * (t / sigma) ** 2)
    return (weights / weights.sum()).to(torch.float32)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian over the two spatial axes (mode 'nearest', truncate 4), separably."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate, x.device)
    return filter2d(filter2d(x, k[None, :], "replicate"), k[:, None], "replicate")


def opencv_gaussian_kernel(ksize: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """cv2.getGaussianKernel as a 2-D kernel: the weights cv2.GaussianBlur uses for an odd ksize."""
    t = torch.arange(ksize, dtype=torch.float64, device=device) - (ksize - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :]).to(torch.float32)


def disk_kernel(radius: float, alias_blur: float, device: torch.device | None = None) -> torch.Tensor:
    """The references' defocus kernel: a normalised disk on a 17×17 grid (wider past radius 8), anti-aliased by
    cv2.GaussianBlur with a 3×3 (5×5 past radius 8) kernel and OpenCV's default reflect-101 border; cropped to the
    blurred disk's support, as the zeros around it cost convolution time and change no sum (3×3 instead of 17×17
    for a radius below 1)."""
    half = 8 if radius <= 8 else int(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float32, device=device)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).to(torch.float32)
    disk = disk / disk.sum()
    ksize = 3 if radius <= 8 else 5
    kernel = filter2d(disk[None, None], opencv_gaussian_kernel(ksize, alias_blur, device))[0, 0]
    extent = min(half, math.floor(radius) + ksize // 2)
    return kernel[half - extent : half + extent + 1, half - extent : half + extent + 1]


@functools.lru_cache(maxsize=256)
def _zoom_matrix(size: int, factor: float, device: torch.device) -> torch.Tensor:
    """clipped_zoom along one axis as a (size, size) matrix: SciPy's order-1 zoom (ends aligned) of the centred
    crop of ceil(size / factor) samples to round(crop · factor), trimmed back to size around its centre."""
    crop = math.ceil(size / factor)
    zoomed = round(crop * factor)
    trim = (zoomed - size) // 2
    position = torch.arange(trim, trim + size, dtype=torch.float64) * ((crop - 1) / max(zoomed - 1, 1))
    low = position.floor().clamp_(max=crop - 1)
    weight = position - low
    columns = (size - crop) // 2 + torch.stack([low, (low + 1).clamp_(max=crop - 1)]).long()
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.scatter_add_(1, columns.T, torch.stack([1 - weight, weight], dim=1))
    return matrix.to(device=device, dtype=torch.float32)


_ZOOM_BY_PRODUCTS = 64  # sides up to this zoom by matrix products; beyond, their O(side³) cost outgrows interpolation


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre: crop ceil(size / factor), resize by `factor` with SciPy's order-1 zoom (corners
    aligned), and trim the result back to the original size around its centre. Small images take two small matrix
    products: CUDA interpolates with one thread per output pixel, looping over every image and channel, which
    starves the GPU when the images are small and many."""
    h, w = x.shape[-2:]
    if max(h, w) <= _ZOOM_BY_PRODUCTS:
        return separable(_zoom_matrix(h, factor, x.device), x, _zoom_matrix(w, factor, x.device))
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[:, :, top : top + ch, left : left + cw]
    zoomed = F.interpolate(crop, size=(round(ch * factor), round(cw * factor)), mode="bilinear", align_corners=True)
    trim_top, trim_left = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[:, :, trim_top : trim_top + h, trim_left : trim_left + w]


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur as `imagecorruptions` reimplements it: a one-sided Gaussian of 2·radius + 1 taps
    along the direction `angles` (degrees, one per image), each tap the image shifted with edge replication."""
    n, c, h, w = x.shape
    width = int(2 * radius + 1)
    weights = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(x.dtype).tolist()  # on the host: the alphas of the taps' adds
    taps = torch.arange(width, dtype=torch.float64, device=x.device)
    theta = torch.deg2rad(angles.to(torch.float64))[:, None]
    # the reference's offsets: -ceil(i · sin θ - 0.5) rows and -ceil(i · cos θ - 0.5) columns for tap i
    dy = -torch.ceil(taps * torch.sin(theta) - 0.5).long()
    dx = -torch.ceil(taps * torch.cos(theta) - 0.5).long()
    if cpu_forms(x.device) and h * w > _GATHER_MAX_PIXELS:
        return _sum_shifted_slices(x, weights, dy, dx)
    # Each tap's source rows (N, taps, H) and columns (N, taps, W): shifts with edge replication.
    row_starts = (torch.arange(h, device=x.device) - dy[:, :, None]).clamp_(0, h - 1).mul_(w)
    cols = (torch.arange(w, device=x.device) - dx[:, :, None]).clamp_(0, w - 1)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i, weight in enumerate(weights):
        sources = (row_starts[:, i, :, None] + cols[:, i, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, sources), alpha=weight)
    return out.view(n, c, h, w)


# Above this many pixels per image, a CPU sums motion blur's taps as slices of each image (one operation per image
# and tap) rather than gathers over the batch (one per tap): 2.4x faster at 224 px, slower at 64 px and below.
_GATHER_MAX_PIXELS = 64 * 64


def _sum_shifted_slices(x: torch.Tensor, weights: list[float], dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Σ_i weights[i] · (image k shifted by dy[k, i] rows and dx[k, i] columns, edges replicated), as windows of
    the edge-padded images: the sums of the gathers, in the same order and the same operations."""
    n, c, h, w = x.shape
    pad_y, pad_x = int(dy.abs().max()), int(dx.abs().max())
    padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    out = torch.zeros_like(x)
    for k in range(n):
        for weight, top, left in zip(weights, (pad_y - dy[k]).tolist(), (pad_x - dx[k]).tolist(), strict=True):
            out[k].add_(padded[k, :, top : top + h, left : left + w], alpha=weight)
    return out


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv for (N, 3, H, W) in [0, 1]: hue in [0, 1), saturation 0 where the value is 0."""
    r, g, b = x.unbind(1)
    value, argmax = x.max(1)
    delta = value - x.amin(1)
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), 0.0)
    safe = delta.clamp_min(1e-12)
    hue = torch.stack([(g - b) / safe, 2 + (b - r) / safe, 4 + (r - g) / safe], 1).gather(1, argmax[:, None])[:, 0]
    hue = torch.where(delta > 0, (hue / 6) % 1.0, 0.0)
    return torch.stack([hue, saturation, value], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb for (N, 3, H, W)."""
    h, s, v = x.unbind(1)
    h6 = h * 6
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sources = _hsv_sources(x.device)[:, sector.long() % 6].transpose(0, 1)  # (N, 3, H, W): indices into v, p, q, t
    return torch.stack([v, p, q, t], 1).gather(1, sources)


@functools.lru_cache(maxsize=8)
def _hsv_sources(device: torch.device) -> torch.Tensor:
    """Which of (v, p, q, t) each of r, g, b takes in each of the six hue sectors, (3, 6), on `device` (cached: a
    copy from the host would make it wait for the device)."""
    return torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=device)


def plasma_fractal(rng: SampleRNG, mapsize: int, wibbledecay: float, stream: int = 0) -> torch.Tensor:
    """The references' diamond-square height map, (N, mapsize, mapsize) in [0, 1], one per stream of `rng`.
    `mapsize` must be a power of two."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    steps = [mapsize >> level for level in range(mapsize.bit_length() - 1)]  # mapsize, ..., 2
    # Each step draws three (mapsize/step)² noise fields, on streams stream · 1024 + 0, 1, 2, ...: all made at once.
    shapes = [(mapsize // step,) * 2 for step in steps for _ in range(3)]
    noises = iter(rng.uniforms([(shape, stream * 1024 + draw) for draw, shape in enumerate(shapes)]))
    wibble = 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:  # total / 4 + wibble · (2 · wibble · u − wibble), in place
        return total.div_(4).add_(next(noises).to(torch.float64).mul_(2 * wibble).sub_(wibble).mul_(wibble))

    # The grid's points at one step apart, level by level: each level's corners, centres and edge midpoints are
    # contiguous maps, interleaved into the next level's corners, rather than strided views of the whole grid.
    n = len(rng)
    corners = torch.zeros(n, 1, 1, dtype=torch.float64, device=rng.keys.device)
    for _ in steps:
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        centres = wibbled_mean(squares)
        across = wibbled_mean(centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2))
        down = wibbled_mean(centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1))
        side = 2 * corners.shape[-1]
        rows = torch.stack([torch.stack([corners, across], dim=-1), torch.stack([down, centres], dim=-1)], dim=-3)
        corners = rows.view(n, side, side)  # (corner, across) on even rows, (down, centre) on odd ones
        wibble /= wibbledecay
    grid = corners.sub_(corners.amin(dim=(1, 2), keepdim=True))
    return grid.div_(grid.amax(dim=(1, 2), keepdim=True)).to(torch.float32)


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
