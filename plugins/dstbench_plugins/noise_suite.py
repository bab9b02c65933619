"""`cifar-c-noise`: the four noise corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), severities 1-5.

The formulas are those of the authors' `make_cifar_c.py`, which scales an image to x in [0, 1], adds noise, clips
to [0, 1] and truncates `np.uint8(x * 255)`. Here the same values are computed in 0..255 units, one random draw
per element (channel of a pixel) as in the reference, for any number of channels and any image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from dstbench.corruption import CorruptionSuite, SampleRNG
from dstbench.errors import UserError, unknown_choice
from dstbench.hookspecs import hookimpl

# Elements per sub-batch on CPU: few enough that the intermediates stay in the caches (several times faster).
_CPU_CHUNK_ELEMENTS = 2**18


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_(0, 255).to(torch.uint8)  # truncates, like the reference's np.uint8


def gaussian_noise(images: torch.Tensor, scale: float, rng: SampleRNG) -> torch.Tensor:
    """clip(x + N(0, scale²))."""
    noise = rng.normal(images.shape[1:]).mul_(255 * scale)
    return _to_uint8(noise.add_(images))


def shot_noise(images: torch.Tensor, photons: float, rng: SampleRNG) -> torch.Tensor:
    """clip(Poisson(x · photons) / photons)."""
    counts = rng.poisson(images.to(torch.float32).mul_(photons / 255))
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


# Each maps uint8 images (N, C, H, W), one severity's parameter and one stream per image to uint8 images.
NOISES: dict[str, Callable[[torch.Tensor, float, SampleRNG], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}


class NoiseSuite(CorruptionSuite):
    """Noise corruptions with one parameter per severity, e.g. {"gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10)}."""

    def __init__(self, name: str, description: str, resolution: str, parameters: Mapping[str, tuple[float, ...]]):
        unknown = set(parameters) - set(NOISES)
        if unknown:
            raise ValueError(f"no noise function for {sorted(unknown)}; known: {sorted(NOISES)}")
        lengths = {len(row) for row in parameters.values()}
        if len(lengths) != 1:
            raise ValueError("every corruption needs one parameter per severity, the same number for all")
        self.name = name
        self.description = description
        self.resolution = resolution
        self.parameters = dict(parameters)
        self.corruptions = tuple(parameters)
        self.severities = tuple(range(1, lengths.pop() + 1))
        self.subsets = {"noise": self.corruptions}

    def corrupt(self, images: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        if corruption not in self.parameters:
            raise unknown_choice(f"{self.name} corruption", corruption, self.corruptions)
        if severity not in self.severities:
            raise UserError(
                f"suite '{self.name}' has no severity {severity}; choose from: {', '.join(map(str, self.severities))}"
            )
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(rng):
            raise ValueError(
                f"expected uint8 (N, C, H, W) images and N streams, got {images.dtype} "
                f"{tuple(images.shape)} and {len(rng)} streams"
            )
        noise, parameter = NOISES[corruption], self.parameters[corruption][severity - 1]
        if images.device.type != "cpu":
            return noise(images, parameter, rng)
        step = max(1, _CPU_CHUNK_ELEMENTS // max(1, math.prod(images.shape[1:])))
        out = torch.empty_like(images)
        for start in range(0, len(images), step):
            part = slice(start, start + step)
            out[part] = noise(images[part], parameter, rng[part])
        return out


CIFAR_C_NOISE = NoiseSuite(
    "cifar-c-noise",
    "Gaussian, shot, impulse and speckle noise of CIFAR-10-C (Hendrycks & Dietterich 2019), severities 1-5",
    "32 px (CIFAR-10-C parameters)",
    {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    },
)


@hookimpl
def register_suites(register):
    register(CIFAR_C_NOISE)
