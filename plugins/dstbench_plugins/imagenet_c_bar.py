"""ImageNet-C̄ (Mintun, Kirillov & Xie, "On Interaction Between Augmentations and Corruptions in Natural Corruption
Robustness", NeurIPS 2021): ten corruptions chosen to be perceptually unlike ImageNet-C's, generated on the fly and
batched on the device, as the suite `imagenet-c-bar`.

Each corruption reproduces the generative process of the authors' `imagenet_c_bar/corrupt.py`: the same random
quantities with the same distributions, drawn from a `SampleRNG` (one stream per quantity, so an image's result
does not depend on its batch), the same per-pixel formulas, evaluated in float64 as NumPy does, and the reference's
quantisation `np.clip(x, 0, 255).astype(np.uint8)`, which truncates. A severity is one of the reference's levels in
[0, 10] (`imagenet_c_bar.csv`); the reference turns a level into a parameter as `level · maximum / 10`. One
deliberate difference: a zero Perlin gradient (chance 2⁻¹⁸ per lattice point) stays zero, where the reference
divides by its zero norm and writes NaNs.

Each corruption is a pair: `sample_<name>(rng, level, size)` draws what the reference draws (its
`sample_parameters`, and what it draws from the per-image seeds), and `render_<name>(images, **draws)` is the
deterministic rest, so tests can feed both halves the reference's own draws.

Sizes. The reference is written for square images of side `im_size` (224 here, 32 for CIFAR-10-C̄), and here
`im_size` is the batch's side S: every length the reference gives as a multiple of `im_size` (centres, radii, ring
widths, the plasma and caustic scales, the refraction strength, the Perlin lattice spacing 32 · S / 224, the checker
size) scales with S, and the spectral noises live on the S × S frequency grid. Quantities in pixels (the
single-frequency grating's radians per pixel, the caustics' 1-px softening and finite differences) stay in pixels,
as the reference leaves them at 32 px.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from dstbench.corruption import Corruption, CorruptionSuite, SampleRNG, TableSuite
from dstbench.hookspecs import hookimpl
from dstbench.imageops import conv2d, to_float, to_uint8

Draws = dict[str, Any]

PLASMA_ITERATIONS = 6  # np.random.randint(4, 7): the plasma swirl is iterated 4 to 6 times
SPARKLES = 5  # star bursts per image in `sparkles`
MAX_RAYS = 199  # np.random.randint(50, 200): a sparkle has 50 to 199 rays
LATTICE = 256  # the Perlin generator's B: lattice points per axis before it repeats
OCTAVES = (1, 2, 4, 8, 16)  # turbulence(x, y, 16) sums octaves f = 1, 2, 4, ... while f ≤ 16
CAUSTIC_ETA = 4.0  # refractive index of the caustic lens
SOFTENING = 1.0  # sigma of the gaussian_filter over the caustics, in pixels


def _scaled(level: float, maximum: float) -> float:
    """The reference's float_parameter: a level in [0, 10] as a fraction of `maximum`."""
    return level * maximum / 10


def _side(images: torch.Tensor) -> int:
    """The side S of square images (N, 3, S, S): the reference's `im_size`."""
    if images.shape[-2] != images.shape[-1]:
        raise ValueError(f"ImageNet-C̄ corruptions need square images, got {tuple(images.shape[-2:])}")
    return images.shape[-1]


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices y (S, 1) and column indices x (1, S): the reference's loop variables."""
    t = torch.arange(size, device=device, dtype=torch.float64)
    return t[:, None], t[None, :]


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """Per-image scalars (N,) as float64 (N, 1, 1), to broadcast over pixels."""
    return values.to(torch.float64).view(-1, 1, 1)


def _uniform(rng: SampleRNG, low: float, high: float, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """np.random.uniform(low, high): float32 (N, *shape)."""
    return rng.uniform(shape, stream).mul_(high - low).add_(low)


def _randint(rng: SampleRNG, low: int, high: int, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """np.random.randint(low, high): int64 (N, *shape), uniform on [low, high)."""
    return rng.uniform(shape, stream).to(torch.float64).mul_(high - low).floor_().to(torch.int64).add_(low)


def _truncate(values: torch.Tensor) -> torch.Tensor:
    """np.clip(values, 0, 255).astype(np.uint8), in 0..255 units."""
    return values.clamp_(0, 255).to(torch.uint8)


def _add(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """clip(image + noise), truncated; noise (N, 1 or 3, S, S) in 0..255 units."""
    return _truncate(noise + images)


# --- single_frequency_greyscale -------------------------------------------------------------------------------


def sample_single_frequency_greyscale(rng: SampleRNG, level: float, size: int) -> Draws:
    """SingleFrequencyGreyscale.sample_parameters: two frequencies in random order and a phase, per image."""
    magnitude = _uniform(rng, -math.pi, math.pi, (1,), 0)
    other = _uniform(rng, -1, 1, (1,), 1) * magnitude.abs()
    swap = rng.uniform((1,), 2) < 0.5  # np.random.permutation(2)
    frequency = torch.where(swap, torch.cat([other, magnitude], 1), torch.cat([magnitude, other], 1))
    phase = _uniform(rng, 0, 2 * math.pi, (1,), 3)[:, 0]
    return {"frequency": frequency, "phase": phase, "intensity": _scaled(level, 196)}


def render_single_frequency_greyscale(
    images: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, intensity: float
) -> torch.Tensor:
    """SingleFrequencyGreyscale.transform: image + intensity · sin(x · f₀ + y · f₁ + phase), in every channel."""
    y, x = _grid(_side(images), images.device)
    f0, f1 = (_per_image(f) for f in frequency.unbind(1))
    grating = torch.sin(x * f0 + y * f1 + _per_image(phase))
    return _add(images, grating.mul_(intensity)[:, None])


# --- cocentric_sine_waves -------------------------------------------------------------------------------------


def sample_cocentric_sine_waves(rng: SampleRNG, level: float, size: int) -> Draws:
    """CocentricSineWaves.sample_parameters: a centre (x₀, y₀), a wobble frequency and amplitude, a ring width."""
    return {
        "offset": _uniform(rng, 0, size, (2,), 0),
        "frequency": _uniform(rng, 0, 10, (1,), 1)[:, 0],
        "amplitude": _uniform(rng, 0, size / 10, (1,), 2)[:, 0],
        "ring_width": _uniform(rng, 0, size / 10, (1,), 3)[:, 0],
        "intensity": _scaled(level, 128),
    }


def render_cocentric_sine_waves(
    images: torch.Tensor,
    offset: torch.Tensor,
    frequency: torch.Tensor,
    amplitude: torch.Tensor,
    ring_width: torch.Tensor,
    intensity: float,
) -> torch.Tensor:
    """CocentricSineWaves.transform: a sawtooth in (r + amplitude · sin(frequency · θ)) mod ring width, added."""
    y, x = _grid(_side(images), images.device)
    dx, dy = x - _per_image(offset[:, 0]), y - _per_image(offset[:, 1])
    angle = torch.atan2(dx, dy) * _per_image(frequency)
    distance = torch.sqrt(dx * dx + dy * dy) + torch.sin(angle) * _per_image(amplitude)
    width = _per_image(ring_width)
    sawtooth = torch.remainder(distance, width) / width - 0.5
    return _add(images, sawtooth.mul_(intensity)[:, None])


# --- plasma_noise ---------------------------------------------------------------------------------------------


def sample_plasma_noise(rng: SampleRNG, level: float, size: int) -> Draws:
    """PlasmaNoise.sample_parameters: a time, 4 to 6 iterations, a sharpness and a scale, per image."""
    return {
        "time": _uniform(rng, 0, 6 * math.pi, (1,), 0)[:, 0],
        "iterations": _randint(rng, 4, PLASMA_ITERATIONS + 1, (1,), 1)[:, 0],
        "sharpness": _uniform(rng, 0.5, 1.0, (1,), 2)[:, 0],
        "scale": _uniform(rng, 0.075, 0.2, (1,), 3)[:, 0] * size,
        "intensity": _scaled(level, 64),
    }


def render_plasma_noise(
    images: torch.Tensor,
    time: torch.Tensor,
    iterations: torch.Tensor,
    sharpness: torch.Tensor,
    scale: torch.Tensor,
    intensity: float,
) -> torch.Tensor:
    """PlasmaNoise.transform: (1 − intensity / 255) · image + intensity · the swirled coordinates' sines."""
    rows, columns = _grid(_side(images), images.device)
    t, scale = _per_image(time), _per_image(scale)
    x, y = columns / scale, rows / scale
    decay = 2.25 - _per_image(sharpness)
    for step in range(PLASMA_ITERATIONS):
        # The reference's fourth factor starts at 0 and is only ever multiplied, so it drops out.
        a = torch.cos(y * 1.93**step + t / 1.15**step) / decay**step
        b = torch.sin(x * 1.93**step + t / 1.15**step) / decay**step
        active = (iterations > step).view(-1, 1, 1)
        x, y = torch.where(active, x + (a - 0.3 * b), x), torch.where(active, y + (b + 0.3 * a), y)
    plasma = torch.stack([torch.sin(x - t), torch.sin((x + y + torch.sin(t)) * 0.5), torch.sin(y + t)], 1)
    return _truncate(plasma.mul_(intensity).add_(images * (1 - intensity / 255)))


# --- caustic_refraction ---------------------------------------------------------------------------------------


def sample_caustic_refraction(rng: SampleRNG, level: float, size: int) -> Draws:
    """CausticRefraction.sample_parameters: a time and a pattern size per image; lens scale and lighting."""
    return {
        "time": _uniform(rng, 0.5, 2.0, (1,), 0)[:, 0],
        "pattern_size": _uniform(rng, 0.75, 1.25, (1,), 1)[:, 0] * size,
        "lens_scale": _scaled(level, 0.5 * size),
        "lighting": _scaled(level, 2.0),
    }


def render_caustic_refraction(
    images: torch.Tensor, time: torch.Tensor, pattern_size: torch.Tensor, lens_scale: float, lighting: float
) -> torch.Tensor:
    """CausticRefraction.transform: the image through a lens shaped like the softened caustics, lit by their slope."""
    size = _side(images)
    # The reference takes the luma of the pattern's three equal channels: the pattern itself; 0 outside the image.
    height = F.pad(_soften(_caustics(size, time, pattern_size)), (1, 1, 1, 1))
    north, south = height[:, 1:-1, :-2], height[:, 1:-1, 2:]  # (y, x ∓ 1)
    west, east = height[:, :-2, 1:-1], height[:, 2:, 1:-1]  # (y ∓ 1, x)
    dy, dx = _refraction(east - west, south - north, lens_scale)
    y, x = _grid(size, images.device)
    seen = _bilinear(to_float(images).double(), y + dy, x + dx)
    lit = seen + ((north - south + east - west) * lighting)[:, None]
    return to_uint8(lit)


def _caustics(size: int, time: torch.Tensor, pattern_size: torch.Tensor) -> torch.Tensor:
    """CausticRefraction's caustic_noise_kernel at every pixel: (N, S, S) in [0, 1], period `pattern_size`."""
    rows, columns = _grid(size, time.device)
    period = _per_image(pattern_size)
    p0 = torch.remainder(rows / period, 1) * 6.28318530718 - 250
    p1 = torch.remainder(columns / period, 1) * 6.28318530718 - 250
    i0, i1, total = p0, p1, 1.0
    for n in range(5):
        t = _per_image(time) * (1 - 3.5 / (n + 1))
        i0, i1 = p0 + torch.cos(t - i0) + torch.sin(t + i1), p1 + torch.sin(t - i1) + torch.cos(t + i0)
        length = torch.sqrt((p0 / (torch.sin(i0 + t) / 0.005)) ** 2 + (p1 / (torch.cos(i1 + t) / 0.005)) ** 2)
        total = total + 1 / length
    return (1.17 - (total / 5) ** 1.4).abs_().pow_(8).clamp_(0, 1)


def _soften(x: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(x, SOFTENING) over (N, S, S): radius int(4σ + ½), border mirrored with the edge."""
    radius = int(4 * SOFTENING + 0.5)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # made here: no copy from the host
    kernel = torch.exp(-0.5 * (t / SOFTENING) ** 2)
    kernel /= kernel.sum()
    x = torch.cat([x[:, :radius].flip(1), x, x[:, -radius:].flip(1)], 1)
    x = torch.cat([x[:, :, :radius].flip(2), x, x[:, :, -radius:].flip(2)], 2)
    x = conv2d(x[:, None], kernel.view(1, 1, 1, -1))
    return conv2d(x, kernel.view(1, 1, -1, 1))[:, 0]


def _refraction(slope_y: torch.Tensor, slope_x: torch.Tensor, lens_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """refract([0, 0, 1], n, CAUSTIC_ETA) · lens_scale rounded to 3 decimals, n ∝ (slope_y, slope_x, 1): (dy, dx)."""
    # The reference rotates (cos θₜ, sin θₜ, 0) by the inverse of the orthonormal frame (n, n × s, s), s ∝ ẑ × n:
    # cos θₜ · n + sin θₜ · (n × s), whose in-plane part is (n_y, n_x) · (cos θₜ − n_z / η), sin θₜ = |(n_y, n_x)| / η.
    norm = torch.sqrt(slope_y**2 + slope_x**2 + 1)
    ny, nx, nz = slope_y / norm, slope_x / norm, 1 / norm
    factor = torch.sqrt(1 - (ny**2 + nx**2) / CAUSTIC_ETA**2) - nz / CAUSTIC_ETA
    factor = torch.where(nz >= 1 - 1e-3, 0, factor) * lens_scale  # nearly flat: refract() keeps the ray
    return torch.round(ny * factor, decimals=3), torch.round(nx * factor, decimals=3)


def _bilinear(images: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """utils/image.py's bilinear_interpolation of (N, C, S, S) at pixel coordinates (y, x); 0 outside the image."""
    size = images.shape[-1]
    grid = torch.stack([x, y], -1).mul_(2 / (size - 1)).sub_(1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# --- sparkles and inverse_sparkles ----------------------------------------------------------------------------


def sample_sparkles(rng: SampleRNG, level: float, size: int) -> Draws:
    """Sparkles.sample_parameters and its ray-length draws: five centres (row, column), 50 to 199 rays each."""
    return {
        "centers": _uniform(rng, 0, size, (SPARKLES, 2), 0),
        "rays": _randint(rng, 50, MAX_RAYS + 1, (SPARKLES,), 1),
        "normals": rng.normal((SPARKLES, MAX_RAYS), 2),
        "radius": _scaled(level, 0.1) * size,
    }


def render_sparkles(
    images: torch.Tensor, centers: torch.Tensor, rays: torch.Tensor, normals: torch.Tensor, radius: float
) -> torch.Tensor:
    """Sparkles.transform: five star bursts (rays max(1, radius · (1 + z / 4)) long) in turn blend towards white."""
    size, out = _side(images), images.to(torch.float64)
    lengths = (radius + 0.25 * radius * normals.to(torch.float64)).clamp_(min=1)
    for k in range(centers.shape[1]):
        weight = _ray_weight(size, centers[:, k], rays[:, k], lengths[:, k], 1.0)  # amount 50: exponent 1
        value = out.to(torch.float32).to(torch.float64)  # the reference reads each pixel as float32 before a burst
        out = value + weight[:, None] * (255 - value)
    return _truncate(out)


def sample_inverse_sparkles(rng: SampleRNG, level: float, size: int) -> Draws:
    """InverseSparkles.sample_parameters and its ray-length draws: one centre in the middle half, 50 to 199 rays."""
    return {
        "center": _uniform(rng, 0.25, 0.75, (2,), 0) * size,
        "rays": _randint(rng, 50, MAX_RAYS + 1, (1,), 1)[:, 0],
        "normals": rng.normal((MAX_RAYS,), 2),
        "radius": 0.25 * size,
        "amount": 100 - _scaled(level, 65),
    }


def render_inverse_sparkles(
    images: torch.Tensor,
    center: torch.Tensor,
    rays: torch.Tensor,
    normals: torch.Tensor,
    radius: float,
    amount: float,
) -> torch.Tensor:
    """InverseSparkles.transform: white except through one star burst with rays radius · (1 + z / 4) long."""
    lengths = radius + 0.25 * radius * normals.to(torch.float64)
    weight = _ray_weight(_side(images), center, rays, lengths, (100 - amount) / 50)
    return _truncate(weight[:, None] * (images - 255.0) + 255)


def _ray_weight(
    size: int, center: torch.Tensor, rays: torch.Tensor, lengths: torch.Tensor, exponent: float
) -> torch.Tensor:
    """The sparkle kernel's blend factor clip((1 − (f − ½)²) · (ℓ² / (d² + 1e-4))^exponent, 0, 1), (N, S, S)."""
    # d: the distance to `center` (N, 2); f: the angle's fraction between two rays; ℓ: their lengths interpolated
    y, x = _grid(size, center.device)
    dy, dx = y - _per_image(center[:, 0]), x - _per_image(center[:, 1])
    position = (torch.atan2(dx, dy) + math.pi) / (2 * math.pi) * _per_image(rays)
    index = position.floor()
    fraction = position - index
    index = index.to(torch.int64).flatten(1)
    count = rays[:, None]
    first = lengths.gather(1, index % count).view_as(fraction)
    second = lengths.gather(1, (index + 1) % count).view_as(fraction)
    length = first + fraction * (second - first)
    falloff = (length**2 / (dy**2 + dx**2 + 1e-4)) ** exponent
    return ((1 - (fraction - 0.5) ** 2) * falloff).clamp_(0, 1)


# --- perlin_noise ---------------------------------------------------------------------------------------------


def sample_perlin_noise(rng: SampleRNG, level: float, size: int) -> Draws:
    """PerlinNoise.sample_parameters and PerlinNoiseGenerator's draws: the 256 gradients' k, and shuffle partners."""
    return {
        "gradient_draws": _randint(rng, 0, 2 * LATTICE, (LATTICE, 2), 0),
        "swaps": _randint(rng, 0, LATTICE, (LATTICE,), 1),
        "alpha": _scaled(level, 0.5),
    }


def render_perlin_noise(
    images: torch.Tensor, gradient_draws: torch.Tensor, swaps: torch.Tensor, alpha: float
) -> torch.Tensor:
    """PerlinNoise.transform: (1 − α) · image + 255 α · clip(½ Σ_f |noise(f y / s, f x / s)| / f + ½, 0, 1)."""
    size = _side(images)
    rows, columns = _grid(size, images.device)
    step = 1 / (32 * size / 224)  # s = 32 · S / 224 pixels between lattice points
    gradients = (gradient_draws - LATTICE).to(torch.float64)  # ∝ the reference's (k − 256) / 256
    # Non-zero integer vectors have norm ≥ 1, so the clamp only keeps a zero vector zero (the reference: NaN).
    gradients = gradients / torch.linalg.vector_norm(gradients, dim=-1, keepdim=True).clamp_(min=1)
    permutation = _shuffle(swaps)
    turbulence = sum(_perlin(permutation, gradients, rows * step * f, columns * step * f).abs_() / f for f in OCTAVES)
    noise = (turbulence * 0.5 + 0.5).clamp_(0, 1)
    return _truncate((noise * (255 * alpha))[:, None] + images * (1 - alpha))


def _shuffle(swaps: torch.Tensor) -> torch.Tensor:
    """PerlinNoiseGenerator's permutation (N, 256): for i = 255 down to 0, swap i with the next partner drawn."""
    # Partners come from all 256 entries, not from 0..i: not a uniform shuffle, but the reference's.
    permutation = torch.arange(LATTICE, device=swaps.device).repeat(len(swaps), 1)
    for draw, i in enumerate(range(LATTICE - 1, -1, -1)):
        partner = swaps[:, draw : draw + 1]
        held = permutation[:, i : i + 1].clone()
        permutation[:, i : i + 1] = permutation.gather(1, partner)
        permutation.scatter_(1, partner, held)
    return permutation


def _perlin(permutation: torch.Tensor, gradients: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PerlinNoiseGenerator.noise(u, v) for u (S, 1), v (1, S) ≥ 0: 2-D gradient noise, (N, S, S)."""
    n, shape = len(permutation), (len(permutation), u.shape[0], v.shape[1])
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    cu, cv = u0.to(torch.int64), v0.to(torch.int64)

    def corner(du: int, dv: int) -> torch.Tensor:
        """The gradient at lattice corner (u₀ + du, v₀ + dv) dotted with the offset to the point."""
        first = permutation[:, (cu[:, 0] + du) % LATTICE]  # p[bx]: (N, S)
        # p[p[bx] + by]: the reference's table holds p twice over, so the sum wraps around
        b = permutation.gather(1, ((first[:, :, None] + (cv + dv)) % LATTICE).view(n, -1))
        g = [gradients[..., axis].gather(1, b).view(shape) for axis in (0, 1)]
        return (fu - du) * g[0] + (fv - dv) * g[1]

    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a = torch.lerp(corner(0, 0), corner(1, 0), su)
    b = torch.lerp(corner(0, 1), corner(1, 1), su)
    return 1.5 * torch.lerp(a, b, sv)


# --- blue_noise_sample and brownish_noise ---------------------------------------------------------------------


def sample_blue_noise_sample(rng: SampleRNG, level: float, size: int) -> Draws:
    """BlueNoiseSample.sample_parameters and its draws: the Fourier phases of one noise image, and the threshold."""
    half, middle = _phase_draws(rng, 1, size)
    return {"half": half[:, 0], "middle": middle[:, 0], "threshold": _scaled(level, 3.0) - 2.5}


def render_blue_noise_sample(
    images: torch.Tensor, half: torch.Tensor, middle: torch.Tensor, threshold: float
) -> torch.Tensor:
    """BlueNoiseSample.transform: black wherever the unit-variance blue noise (power ∝ |k|) is ≤ threshold."""
    size = _side(images)
    power = _frequency_radius(size, images.device)
    keep = _spectral_noise(power, half, middle) > threshold
    return torch.where(keep[:, None], images, images.new_zeros(()))


def sample_brownish_noise(rng: SampleRNG, level: float, size: int) -> Draws:
    """BrownishNoise.sample_parameters and its draws: the Fourier phases of a noise image per channel."""
    half, middle = _phase_draws(rng, 3, size)
    return {"half": half, "middle": middle, "intensity": _scaled(level, 64)}


def render_brownish_noise(
    images: torch.Tensor, half: torch.Tensor, middle: torch.Tensor, intensity: float
) -> torch.Tensor:
    """BrownishNoise.transform: image + intensity · unit-variance noise of power 1 / (|k|² + 1), per channel."""
    power = 1 / (_frequency_radius(_side(images), images.device) ** 2 + 1)
    return _add(images, _spectral_noise(power, half, middle).mul_(intensity))


def _phase_draws(rng: SampleRNG, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gen_noise's phases, `count` per image: (N, count, S, S // 2), and (N, count, S // 2) used for odd S only."""
    half = _uniform(rng, 0, 2 * math.pi, (count, size, size // 2), 0)
    return half, _uniform(rng, 0, 2 * math.pi, (count, size // 2), 1)


def _frequency_radius(size: int, device: torch.device) -> torch.Tensor:
    """‖(x, y) − S / 2‖ (S, S): the distance of each frequency from the centre of the unshifted spectrum."""
    y, x = _grid(size, device)
    return torch.sqrt((x - size / 2) ** 2 + (y - size / 2) ** 2)


def _spectral_noise(power: torch.Tensor, half: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
    """gen_noise: Re(ifft2(roll(power · e^{iφ}, S // 2))) / its std, φ = [half, (middle), half mirrored]."""
    size = power.shape[-1]
    parts = [half]
    if size % 2:
        centre = middle.new_zeros(*middle.shape[:-1], 1)
        parts.append(torch.cat([middle, centre, middle.flip(-1)], -1)[..., None])
    phases = torch.cat([*parts, half.flip(-2, -1)], -1)
    spectrum = torch.polar(power.expand_as(phases), phases.to(torch.float64)).roll((size // 2, size // 2), (-2, -1))
    noise = torch.fft.ifft2(spectrum).real
    return noise / noise.std(dim=(-2, -1), correction=0, keepdim=True)


# --- checkerboard_cutout --------------------------------------------------------------------------------------


def sample_checkerboard_cutout(rng: SampleRNG, level: float, size: int) -> Draws:
    """CheckerBoardCutOut.sample_parameters and its grid draws: an angle, a square size ≥ 1 px, cell uniforms."""
    cells = min(4 * size, 40)  # the most cells a side of the reference's grid, int(4 · S // scale), can have
    return {
        "angle": _uniform(rng, 0, 2 * math.pi, (1,), 0)[:, 0],
        "scale": (_uniform(rng, 0.1, 0.25, (1,), 1)[:, 0] * size).clamp_(min=1),
        "cell_draws": rng.uniform((cells, cells), 2),
        "fraction": _scaled(level, 1.0),
    }


def render_checkerboard_cutout(
    images: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, cell_draws: torch.Tensor, fraction: float
) -> torch.Tensor:
    """CheckerBoardCutOut.transform: grey (128) where a rotated checker square of one colour has its draw < fraction."""
    size = _side(images)
    y, x = _grid(size, images.device)
    a, s = _per_image(angle), _per_image(scale)
    u = (torch.cos(a) * y + torch.sin(a) * x) / s
    v = (-torch.sin(a) * y + torch.cos(a) * x) / s
    side = torch.div(4 * size, s, rounding_mode="floor").to(torch.int64)
    same_colour = torch.remainder(u, 2).floor() == torch.remainder(v, 2).floor()
    # The reference indexes its grid with int(), which truncates; negative indices wrap around as in Python.
    row, column = u.trunc().to(torch.int64) % side, v.trunc().to(torch.int64) % side
    cells = cell_draws.shape[-1]
    drawn = cell_draws.flatten(1).gather(1, (row * cells + column).flatten(1)).view_as(u)
    cut = same_colour & (drawn < fraction)
    return torch.where(cut[:, None], images.new_full((), 128), images)


# --- the suite ------------------------------------------------------------------------------------------------


def _corrupt(
    sample: Callable[..., Draws],
    render: Callable[..., torch.Tensor],
    images: torch.Tensor,
    level: float,
    rng: SampleRNG,
) -> torch.Tensor:
    """One ImageNet-C̄ corruption at one level: the reference's draws for each image, then its transform."""
    return render(images, **sample(rng, level, _side(images)))


def _corruption(
    sample: Callable[..., Draws], render: Callable[..., torch.Tensor], levels: tuple[float, ...], min_size: int = 1
) -> Corruption:
    """A TableSuite entry whose five parameters are the reference's levels."""
    return Corruption(partial(_corrupt, sample, render), {224: levels}, min_size)


# imagenet_c_bar.csv: each corruption's five levels (alphabetical order).
CORRUPTIONS = {
    "blue_noise_sample": _corruption(
        sample_blue_noise_sample, render_blue_noise_sample, (0.8, 1.6, 2.4, 4.0, 5.6), min_size=2
    ),
    "brownish_noise": _corruption(sample_brownish_noise, render_brownish_noise, (1.0, 2.0, 3.0, 4.0, 5.0), min_size=2),
    "caustic_refraction": _corruption(
        sample_caustic_refraction, render_caustic_refraction, (2.35, 3.2, 4.9, 6.6, 9.15), min_size=4
    ),
    "checkerboard_cutout": _corruption(
        sample_checkerboard_cutout, render_checkerboard_cutout, (2.0, 3.0, 4.0, 5.0, 6.0)
    ),
    "cocentric_sine_waves": _corruption(
        sample_cocentric_sine_waves, render_cocentric_sine_waves, (3.0, 5.0, 8.0, 9.0, 10.0)
    ),
    "inverse_sparkles": _corruption(sample_inverse_sparkles, render_inverse_sparkles, (1.0, 2.0, 4.0, 9.0, 10.0)),
    "perlin_noise": _corruption(sample_perlin_noise, render_perlin_noise, (4.6, 5.2, 5.8, 7.6, 8.8)),
    "plasma_noise": _corruption(sample_plasma_noise, render_plasma_noise, (4.75, 7.0, 8.5, 9.25, 10.0)),
    "single_frequency_greyscale": _corruption(
        sample_single_frequency_greyscale, render_single_frequency_greyscale, (1.0, 1.5, 2.0, 4.5, 5.0)
    ),
    "sparkles": _corruption(sample_sparkles, render_sparkles, (1.0, 2.0, 3.0, 5.0, 6.0)),
}

SUITE = TableSuite(
    "imagenet-c-bar",
    "ImageNet-C̄: 10 corruptions unlike ImageNet-C's, 224-px parameters (Mintun, Kirillov & Xie 2021)",
    224,
    CORRUPTIONS,
    square_only=True,
)


@hookimpl
def register_suites(register: Callable[[CorruptionSuite], None]) -> None:
    """The dstbench hook: registers `imagenet-c-bar`."""
    register(SUITE)
