"""The four noise corruptions of Hendrycks & Dietterich (ICLR 2019), with the parameters of `make_cifar_c.py`
(32 px), `make_tinyimagenet_c.py` (64 px) and `make_imagenet_c.py` (224 px).

The references scale an image to x in [0, 1], add noise, clip to [0, 1] and truncate `np.uint8(x * 255)`. Here
the same values are computed in 0..255 units, one random draw per element (channel of a pixel) as in the
references, for any number of channels and any image size.
"""

from __future__ import annotations

import torch

from dstbench.corruption import Corruption, SampleRNG


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_(0, 255).to(torch.uint8)  # truncates, like the reference's np.uint8


def gaussian_noise(images: torch.Tensor, scale: float, rng: SampleRNG) -> torch.Tensor:
    """clip(x + N(0, scale²))."""
    noise = rng.normal(images.shape[1:]).mul_(255 * scale)
    return _to_uint8(noise.add_(images))


def shot_noise(images: torch.Tensor, photons: float, rng: SampleRNG) -> torch.Tensor:
    """clip(Poisson(x · photons) / photons)."""
    counts = rng.poisson(images, photons / 255)
    # (count · 255) / photons: exact product, one rounding, so truncation gives exactly floor(count · 255 / photons).
    return _to_uint8(counts.mul_(255).div_(photons))


def impulse_noise(images: torch.Tensor, amount: float, rng: SampleRNG) -> torch.Tensor:
    """skimage's random_noise(mode='s&p'): each element becomes 0 or 1, with probability amount / 2 each."""
    u = rng.uniform(images.shape[1:])
    black, white = images.new_zeros(()), images.new_full((), 255)
    return torch.where(u < amount / 2, black, torch.where(u < amount, white, images))


def speckle_noise(images: torch.Tensor, scale: float, rng: SampleRNG) -> torch.Tensor:
    """clip(x + x · N(0, scale²))."""
    gain = rng.normal(images.shape[1:]).mul_(scale).add_(1)
    return _to_uint8(gain.mul_(images))


CORRUPTIONS = {
    "gaussian_noise": Corruption(
        gaussian_noise,
        {32: (0.04, 0.06, 0.08, 0.09, 0.10), 64: (0.04, 0.08, 0.12, 0.15, 0.18), 224: (0.08, 0.12, 0.18, 0.26, 0.38)},
    ),
    "shot_noise": Corruption(
        shot_noise, {32: (500, 250, 100, 75, 50), 64: (250, 100, 50, 30, 15), 224: (60, 25, 12, 5, 3)}
    ),
    "impulse_noise": Corruption(
        impulse_noise,
        {32: (0.01, 0.02, 0.03, 0.05, 0.07), 64: (0.01, 0.02, 0.05, 0.08, 0.14), 224: (0.03, 0.06, 0.09, 0.17, 0.27)},
    ),
    "speckle_noise": Corruption(
        speckle_noise,
        {32: (0.06, 0.10, 0.12, 0.16, 0.20), 64: (0.15, 0.20, 0.25, 0.30, 0.35), 224: (0.15, 0.20, 0.35, 0.45, 0.60)},
    ),
}
