"""The five digital corruptions of Hendrycks & Dietterich (ICLR 2019), with the parameters of `make_cifar_c.py`
(32 px), `make_tinyimagenet_c.py` (64 px) and, at 224 px, `make_imagenet_c.py` as the `imagecorruptions` package
implements it (elastic_transform: `make_imagenet_c.py`'s own table, which `imagecorruptions` changed; see below).

Like the references, each works on x = image / 255 and truncates `np.uint8(clip(x) * 255)`, except pixelate and
jpeg_compression, which return PIL's uint8 results. Size-relative parameters (pixelate's scale, elastic_transform's
pixel amounts) are fractions of the image side, so every table works at any size; at its own resolution a table
gives the reference's numbers. Images are square, as everywhere in dstbench; where a reference uses one side, it is
the height.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dstbench.corruption import Corruption, SampleRNG, cpu_forms
from dstbench.imageops import gaussian_kernel1d, hsv_to_rgb, rgb_to_hsv, separable, to_float, to_uint8
from dstbench_plugins.image_c import jpeg

try:
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
except ImportError:  # deprecated since torchvision 0.29; without it the CPU computes libjpeg's arithmetic too
    encode_jpeg = None

__all__ = [
    "CORRUPTIONS",
    "affine_warp",
    "box_resize",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
    "pixelate",
    "reflect_remap",
    "reflect_smooth",
    "saturate",
]


JPEG_THREADS = os.cpu_count() or 1


def contrast(images: torch.Tensor, factor: float, rng: SampleRNG) -> torch.Tensor:
    """clip((x − m) · c + m), m the mean of each image channel over H and W."""
    x = to_float(images)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return to_uint8(x.sub_(mean).mul_(factor).add_(mean))


def saturate(images: torch.Tensor, scale_shift: tuple[float, float], rng: SampleRNG) -> torch.Tensor:
    """hsv2rgb(h, clip(s · c0 + c1, 0, 1), v) of rgb2hsv(x)."""
    # In float64 like the reference: many results are k/255 · 255 for integers k, which truncate to k or k − 1
    # depending on the last bit (in float32, up to 13% of the elements end one level off). The divisor is a device
    # tensor because CUDA divides by a Python number as x · (1/255), which puts 3% of them one level off.
    x = images.to(torch.float64)
    hsv = rgb_to_hsv(x / x.new_full((), 255))
    hsv[:, 1].mul_(scale_shift[0]).add_(scale_shift[1]).clamp_(0, 1)
    return to_uint8(hsv_to_rgb(hsv))


def jpeg_compression(images: torch.Tensor, quality: int, rng: SampleRNG) -> torch.Tensor:
    """PIL's `save(JPEG, quality)` and `open`: a libjpeg round trip, 4:2:0 chroma, byte-identical to PIL's."""
    if encode_jpeg is None or not cpu_forms(images.device):
        # libjpeg-turbo's arithmetic on the device (jpeg.py), the same bytes: torchvision's CUDA encoder (nvjpeg)
        # hard-codes 4:4:4 chroma, 3 to 7 levels from PIL's, and the CPU codec would make the host wait each batch
        return jpeg.round_trip(images, quality)

    # libjpeg releases the GIL, so chunks of the batch go through it in parallel
    def round_trip(chunk: torch.Tensor) -> torch.Tensor:
        return torch.stack(decode_jpeg(encode_jpeg(list(chunk), quality=quality), mode=ImageReadMode.RGB))

    chunks = images.chunk(JPEG_THREADS)
    with ThreadPoolExecutor(len(chunks)) as pool:
        return torch.cat(list(pool.map(round_trip, chunks)))


# --- pixelate ------------------------------------------------------------------------------------------------------

_PRECISION_BITS = 22  # Pillow's fixed-point resampling of 8-bit images: 32 - 8 - 2 bits for the weights


class _BoxWindows(NamedTuple):
    """Pillow's BOX windows of one pass: output pixel i sums input pixels first[i], first[i] + 1, ...; each later
    tap j = 1, 2, ... adds input pixel sources[i] times mask[i] (1 where window i is longer than j, else 0; None
    where every window is)."""

    first: torch.Tensor  # (out,) int64
    taps: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]  # (sources int64, mask uint8), (out,) each
    weight: torch.Tensor  # (out,) int32: Pillow's fixed-point 1/count


@functools.lru_cache(maxsize=64)
def _box_windows(in_size: int, out_size: int, device: torch.device) -> _BoxWindows:
    """Pillow's `precompute_coeffs` for the BOX filter: output pixel i averages the input pixels whose centres lie
    in ((i + ½) · scale ± support], support = ½ · max(scale, 1), scale = in/out. Worked out on the host and cached
    per device, like the other constants here, so that batches wait for no copies or read-backs."""
    scale = in_size / out_size
    support = 0.5 * max(scale, 1.0)
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    first = (centre - support + 0.5).trunc().clamp_min(0)  # Pillow's xmin and xmin + xmax: a window of pixels
    stop = (centre + support + 0.5).trunc().clamp_max(in_size)
    j = torch.arange(in_size, dtype=torch.float64)
    # Pillow's own arithmetic, which decides the pixels whose centres fall on a window's edge
    offset = (j[None, :] - centre[:, None] + 0.5) * (1.0 / max(scale, 1.0))
    inside = (j >= first[:, None]) & (j < stop[:, None]) & (offset > -0.5) & (offset <= 0.5)  # an interval per row
    count = inside.sum(1)
    start = inside.to(torch.int8).argmax(1)
    taps = []
    for tap in range(1, int(count.max())):
        longer = count > tap
        mask = None if longer.all() else longer.to(device=device, dtype=torch.uint8)
        taps.append(((start + tap).clamp_max(in_size - 1).to(device), mask))
    weight = torch.floor(0.5 + 2.0**_PRECISION_BITS / count.to(torch.float64)).to(torch.int32)
    return _BoxWindows(start.to(device), tuple(taps), weight.to(device))


def _box_pass(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One Pillow BOX pass along dim −1 or −2 of uint8 images, rounded to uint8 as Pillow does. Columns are gathered
    with an expanded index and rows selected whole: on a CPU both are several times faster than index_select along
    the last dim."""

    def pick(index: torch.Tensor) -> torch.Tensor:
        if dim == -2:
            return x.index_select(-2, index)
        return x.gather(-1, index.expand(*x.shape[:-1], out_size))

    def along(values: torch.Tensor) -> torch.Tensor:
        return values if dim == -1 else values[:, None]

    windows = _box_windows(x.shape[dim], out_size, x.device)
    if not windows.taps:  # each output pixel is one input pixel (weight 2**22, exact): copy them
        return pick(windows.first)
    sums = pick(windows.first).to(torch.int32)
    for sources, mask in windows.taps:
        pixels = pick(sources)
        if mask is not None:
            pixels.mul_(along(mask))
        sums += pixels.to(torch.int32)  # converted first: in-place adds across dtypes are 3x slower
    # Pillow multiplies the sums by its 22-bit weight 1/count and rounds, which for some counts rounds ties down, so
    # copy it rather than rounding sum / count. All exact in int32: at most 255 · 2**22 plus the rounding half.
    sums.mul_(along(windows.weight)).add_(1 << (_PRECISION_BITS - 1)).bitwise_right_shift_(_PRECISION_BITS)
    return sums.to(torch.uint8)


def box_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's `resize((w, h), Image.BOX)` of uint8 images (N, C, H, W) to size (h, w): a horizontal, then a vertical
    pass, each rounded to uint8 values."""
    return _box_pass(_box_pass(images, size[1], -1), size[0], -2)


def pixelate(images: torch.Tensor, factor: float, rng: SampleRNG) -> torch.Tensor:
    """x.resize((int(w · c), int(h · c)), BOX).resize((w, h), BOX), with PIL."""
    h, w = images.shape[-2:]
    return box_resize(box_resize(images, (int(h * factor), int(w * factor))), (h, w))


# --- elastic_transform ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _reflect_gaussian_matrix(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d(mode='reflect', truncate=3) on length-n signals as an (n, n) matrix; taps past
    an end fold back (half-sample reflection) as often as needed, so the kernel may be wider than the signal."""
    kernel = gaussian_kernel1d(sigma, truncate=3.0).to(torch.float64)
    radius = len(kernel) // 2
    taps = (torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None, :]) % (2 * n)
    source = torch.where(taps < n, taps, 2 * n - 1 - taps)
    weights = torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, source, kernel.expand(n, -1).contiguous())
    return weights.to(device=device, dtype=torch.float32)


def reflect_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian(x, sigma, mode='reflect', truncate=3) of each (H, W) map of x (N, ..., H, W)."""
    rows, columns = (_reflect_gaussian_matrix(n, sigma, x.device).to(x.dtype) for n in x.shape[-2:])
    return separable(rows, x, columns)


def reflect_remap(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.map_coordinates(x, (row + dy, column + dx), order=1, mode='reflect') for every channel, with
    displacements dx, dy of shape (N, H, W)."""
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    columns = torch.arange(w, device=x.device, dtype=x.dtype)
    # grid_sample's reflection without align_corners reflects about −½ and size − ½, like SciPy's 'reflect'
    grid = torch.stack([(2 * (columns + dx) + 1) / w - 1, (2 * (rows + dy) + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@functools.lru_cache(maxsize=64)
def _anchors(h: int, w: int, device: torch.device) -> torch.Tensor:
    """The references' three affine anchor points (3, 2) as (x, y), with x from the height: centre ± min(h, w) // 3."""
    centre_x, centre_y, half = h // 2, w // 2, min(h, w) // 3
    points = [
        [centre_x + half, centre_y + half],
        [centre_x + half, centre_y - half],
        [centre_x - half, centre_y - half],
    ]
    return torch.tensor(points, dtype=torch.float64, device=device)


def affine_warp(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """cv2.warpAffine(x, cv2.getAffineTransform(p, p + shifts), borderMode=BORDER_REFLECT_101), bilinear, with the
    references' three anchor points p and shifts (N, 3, 2) in pixels, as (x, y)."""
    n, _, h, w = x.shape
    anchors = _anchors(h, w, x.device)
    moved = torch.cat([anchors + shifts.to(torch.float64), anchors.new_ones(n, 3, 1)], dim=2)
    # warpAffine samples the source at M⁻¹ · (x, y): the affine map taking the moved anchors back to the anchors
    inverse = torch.linalg.solve_ex(moved, anchors.expand(n, 3, 2))[0]  # (N, 3, 2): [x, y, 1] @ inverse
    rows, columns = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    points = torch.stack([columns, rows, torch.ones_like(rows)], dim=-1).to(torch.float64)
    source = points @ inverse[:, None]  # (N, H, W, 2)
    grid = torch.stack([source[..., 0] * (2 / (w - 1)), source[..., 1] * (2 / (h - 1))], dim=-1) - 1
    # with align_corners, grid_sample's reflection is about pixel 0 and size − 1: OpenCV's BORDER_REFLECT_101
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=True)


def elastic_transform(images: torch.Tensor, fractions: tuple[float, float, float], rng: SampleRNG) -> torch.Tensor:
    """map_coordinates(warpAffine(x, random affine), (y + dy, x + dx), order=1, mode='reflect'), the anchors moved
    by uniform(−c2, c2) (rng stream 0) and (dx, dy) = c0 · gaussian(uniform(−1, 1) (stream 1), σ = c1,
    mode='reflect', truncate=3); c0, c1, c2 as fractions of the image side."""
    size = images.shape[-2]
    alpha, sigma, shift = (fraction * size for fraction in fractions)
    x = to_float(images)
    if shift > 0:
        x = affine_warp(x, rng.uniform((3, 2), stream=0).mul_(2 * shift).sub_(shift))
    if alpha > 0:
        noise = rng.uniform((2, *images.shape[-2:]), stream=1).mul_(2).sub_(1)
        dx, dy = reflect_smooth(noise, sigma).mul_(alpha).unbind(1)
        x = reflect_remap(x, dx, dy)
    return to_uint8(x)


# make_imagenet_c.py's table, whose constants are written with 244 where the image side is 224 ("ultimately nothing
# is incorrect", says its comment): they are the released ImageNet-C's, so they are kept, as fractions of 224.
# (imagecorruptions ships a different elastic_transform at 224 px, without the affine step.)
_ELASTIC_224 = tuple(
    (244 * a / 224, 244 * s / 224, 244 * f / 224)
    for a, s, f in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
)

CORRUPTIONS = {
    "contrast": Corruption(
        contrast, {32: (0.75, 0.5, 0.4, 0.3, 0.15), 64: (0.4, 0.3, 0.2, 0.1, 0.05), 224: (0.4, 0.3, 0.2, 0.1, 0.05)}
    ),
    "elastic_transform": Corruption(
        elastic_transform,
        {
            32: ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
            64: ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)),
            224: _ELASTIC_224,
        },
        min_size=3,  # the affine's anchors are min(H, W) // 3 pixels from the centre
    ),
    "pixelate": Corruption(
        pixelate,
        {32: (0.95, 0.9, 0.85, 0.75, 0.65), 64: (0.9, 0.8, 0.7, 0.6, 0.5), 224: (0.6, 0.5, 0.4, 0.3, 0.25)},
        min_size=4,  # int(size · c) must be at least one pixel
        cpu_piece_elements=2**20,  # 17% faster than in pieces of 2**19 at 224 px, the same at 32 px
    ),
    "jpeg_compression": Corruption(
        jpeg_compression,
        {32: (80, 65, 58, 50, 40), 64: (65, 58, 50, 40, 25), 224: (25, 18, 15, 10, 7)},
        cpu_piece_elements=None,  # on the CPU, chunks of the whole batch go through libjpeg in parallel threads
    ),
    "saturate": Corruption(
        saturate,
        {
            32: ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
            64: ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
            224: ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
        },
        cpu_piece_elements=2**18,  # its float64 HSV maps: 20% faster than in pieces of 2**19 at 32 and 224 px
    ),
}
