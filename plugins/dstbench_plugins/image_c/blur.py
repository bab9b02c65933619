"""The five blur corruptions of Hendrycks & Dietterich (ICLR 2019), with the parameters of `make_cifar_c.py`
(32 px), `make_tinyimagenet_c.py` (64 px) and `make_imagenet_c.py` (224 px, as in `imagecorruptions`).

Each maps uint8 images (N, 3, H, W) to uint8 images on their device, whole batches at once, and quantises the way
the references do: np.uint8 of the clipped result, which truncates. Motion blur's angle and glass blur's pixel
displacements are the only random quantities, drawn from one stream per image.
"""

from __future__ import annotations

import numpy as np
import torch

from dstbench import imageops
from dstbench.corruption import Corruption, SampleRNG


def gaussian_blur(images: torch.Tensor, sigma: float, rng: SampleRNG) -> torch.Tensor:
    """clip(skimage.filters.gaussian(x, sigma))."""
    return imageops.to_uint8(imageops.gaussian_blur(imageops.to_float(images), sigma))


def glass_blur(images: torch.Tensor, parameter: tuple[float, int, int], rng: SampleRNG) -> torch.Tensor:
    """clip(gaussian(shuffle(uint8(gaussian(x, σ))), σ)), the shuffle being `iterations` passes of the references'
    local pixel shuffle with displacements in [-δ, δ)."""
    sigma, delta, iterations = parameter
    x = imageops.to_uint8(imageops.gaussian_blur(imageops.to_float(images), sigma))
    # the references' np.random.randint(-δ, δ, size=2): one (dy, dx) per pixel, shared by its channels; pass i draws
    # from stream i
    draws = rng.uniforms([((2, *x.shape[-2:]), iteration) for iteration in range(iterations)])
    for u in draws:
        dy, dx = (u * (2 * delta)).long().sub_(delta).unbind(1)
        x = glass_pass(x, dy, dx, delta)
    return imageops.to_uint8(imageops.gaussian_blur(imageops.to_float(x), sigma))


_CHAIN_ROUNDS = 7


def glass_pass(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, delta: int) -> torch.Tensor:
    """One pass of the references' shuffle loop, given its displacements dy, dx (int64 (N, H, W), in [-δ, δ)):
    for h from H - δ down to δ + 1 and, inside, w from W - δ down to δ + 1,
    `x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]`.

    On (H, W, C) arrays that statement copies rather than swaps: x[h, w] and x[h', w'] are views, so the first
    assignment overwrites x[h, w] with x[h', w'] and the second writes x[h', w'] back onto itself. Every visited
    pixel thus takes the value its source holds when the loop reaches it: the clean value if the loop visits the
    source later or never, else the value the source itself took. Each such chain leads to pixels the loop visited
    ever earlier (higher flat index h·W + w); pointer jumping resolves them, each gather doubling the links followed.

    A link continues a chain when the next pixel's own displacement points later in the loop: probability
    (δ - 1) / 2δ + (δ - 1) / 4δ² < 1/2 (none for δ = 1), independently for each link, each being another pixel's
    draw. _CHAIN_ROUNDS = 7 gathers resolve chains of up to 128 links, which gives exactly the loop's result unless
    some chain is longer, with probability below 2⁻¹²⁸ per pixel (the longest chain in 10⁷ random pixels at δ = 4
    had 17 links). The loop's own bound, log2(#visited) gathers, would take 16 at 224 px."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)
    own = (rows * w + cols).view(1, -1)
    visited = ((rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)).view(-1)
    source = torch.where(visited, own + (dy * w + dx).view(n, -1), own)
    if delta > 1:  # with dy, dx in {-1, 0} no source lies later in the loop: no chains
        chained = visited & (source > own) & visited.take(source)
        root = torch.where(chained, source, own)  # a chained pixel ends where its source does
        for _ in range(_CHAIN_ROUNDS):
            root = root.gather(1, root)
        source = source.gather(1, root)
    index = source[:, None].expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def defocus_blur(images: torch.Tensor, parameter: tuple[float, float], rng: SampleRNG) -> torch.Tensor:
    """clip(cv2.filter2D(x, disk(radius, alias_blur))), the references' anti-aliased disk kernel."""
    radius, alias_blur = parameter
    kernel = imageops.disk_kernel(radius, alias_blur, images.device)
    return imageops.to_uint8(imageops.filter2d(imageops.to_float(images), kernel))


def motion_blur(images: torch.Tensor, parameter: tuple[float, float], rng: SampleRNG) -> torch.Tensor:
    """clip(ImageMagick motion blur(x, radius, sigma, angle ~ U(-45, 45))), with `imagecorruptions`' port of it, in
    0..255 units as there."""
    radius, sigma = parameter
    blurred = imageops.motion_blur(images.to(torch.float32), radius, sigma, motion_angles(rng))
    return blurred.clamp_(0, 255).to(torch.uint8)


def motion_angles(rng: SampleRNG) -> torch.Tensor:
    """Each image's motion-blur angle in degrees, uniform on (-45, 45): float32 (N,)."""
    return rng.uniform((1,), stream=0).view(-1).mul_(90).sub_(45)


def zoom_blur(images: torch.Tensor, factors: tuple[float, ...], rng: SampleRNG) -> torch.Tensor:
    """clip((x + Σ_f clipped_zoom(x, f)) / (len(factors) + 1)), with the original scripts' centred clipped_zoom."""
    x = imageops.to_float(images)
    zoomed = sum(imageops.clipped_zoom(x, factor) for factor in factors)
    return imageops.to_uint8((x + zoomed) / (len(factors) + 1))


def _arange(stop: float, step: float) -> tuple[float, ...]:
    """np.arange(1, stop, step) as the references compute it (the stop can be included: 1.06 for (1.06, 0.01))."""
    return tuple(np.arange(1, stop, step).tolist())


_ZOOM_SMALL = tuple(_arange(stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26))  # both 32 and 64 px

CORRUPTIONS = {
    "gaussian_blur": Corruption(
        gaussian_blur, {32: (0.4, 0.6, 0.7, 0.8, 1.0), 64: (0.5, 0.75, 1.0, 1.25, 1.5), 224: (1, 2, 3, 4, 6)}
    ),
    "glass_blur": Corruption(
        glass_blur,
        {
            32: ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
            64: ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
            224: ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        },
        min_size=9,  # the shuffle visits rows and columns δ + 1 .. size - δ: none below 2δ + 1 = 9 for δ = 4
    ),
    "defocus_blur": Corruption(
        defocus_blur,
        {
            32: ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
            64: ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
            224: ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        },
        min_size=11,  # the reflected border of the 21×21 kernel (radius 10) needs 10 pixels past each edge
    ),
    "motion_blur": Corruption(
        motion_blur,
        {
            32: ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
            64: ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
            224: ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        },
    ),
    "zoom_blur": Corruption(
        zoom_blur,
        {
            32: _ZOOM_SMALL,
            64: _ZOOM_SMALL,
            224: (
                _arange(1.11, 0.01),
                _arange(1.16, 0.01),
                _arange(1.21, 0.02),
                _arange(1.26, 0.02),
                _arange(1.31, 0.03),
            ),
        },
    ),
}
