"""The built-in `imagenet-c-bar` suite against a NumPy transcription of the authors' `imagenet_c_bar/corrupt.py`.

The transcription keeps the reference's generative process: `REFERENCE[name].sample(size, level, rs)` makes the
reference's draws with a NumPy RandomState (its `sample_parameters`, then what it draws from the per-image seed),
named like dstbench's draws, and `REFERENCE[name].render(image, **draws)` is its per-pixel transform, evaluated on
all pixels at once in float64. Three kinds of check:

- render: the same draws through both renderers give the same images, up to float rounding at truncation edges;
- sample: dstbench's draws have the reference's distributions (two-sample Kolmogorov–Smirnov tests);
- end to end: on natural photos, the change (corrupted − clean) has the reference's mean and standard deviation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pluggy
import pytest
import scipy.fftpack
import scipy.ndimage
import scipy.stats
import skimage.data
import skimage.transform
import torch
from click.testing import CliRunner

from dstbench import hookspecs
from dstbench.cli import build_cli
from dstbench.corruption import SampleRNG
from dstbench.errors import UserError
from dstbench_plugins import imagenet_c_bar as icb

Image = np.ndarray  # any NumPy array in the transcription
RandomState = np.random.RandomState

SUITE = icb.SUITE
NAMES = (
    "blue_noise_sample",
    "brownish_noise",
    "caustic_refraction",
    "checkerboard_cutout",
    "cocentric_sine_waves",
    "inverse_sparkles",
    "perlin_noise",
    "plasma_noise",
    "single_frequency_greyscale",
    "sparkles",
)
LEVELS = {  # imagenet_c_bar.csv
    "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
    "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
    "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
}


# --- The reference, transcribed ---------------------------------------------------------------------------------


def float_parameter(level: float, maximum: float) -> float:
    """corrupt.py's float_parameter."""
    return float(level) * maximum / 10.0


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x): the reference's loop variables, `for x in range(S)] for y in range(S)`, as (S, S) arrays."""
    y, x = np.mgrid[0:size, 0:size]
    return y.astype(np.float64), x.astype(np.float64)


def quantise(values: np.ndarray) -> np.ndarray:
    """The reference's np.clip(x, 0, 255).astype(np.uint8)."""
    return np.clip(values, 0, 255).astype(np.uint8)


def sample_single_frequency_greyscale(size: int, level: float, rs: RandomState) -> dict:
    """SingleFrequencyGreyscale.sample_parameters."""
    freq_mag = rs.uniform(low=-np.pi, high=np.pi)
    freq_2 = rs.uniform(low=-abs(freq_mag), high=abs(freq_mag))
    freq = np.array([freq_mag, freq_2])[rs.permutation(2)]
    phase = rs.uniform(low=0, high=2 * np.pi)
    return {"frequency": freq, "phase": phase, "intensity": float_parameter(level, 196)}


def render_single_frequency_greyscale(image: Image, frequency: Image, phase: float, intensity: float) -> Image:
    """SingleFrequencyGreyscale.transform."""
    y, x = pixel_grid(image.shape[0])
    noise = np.sin(x * frequency[0] + y * frequency[1] + phase)
    return quantise(image + intensity * noise[..., None])


def sample_cocentric_sine_waves(size: int, level: float, rs: RandomState) -> dict:
    """CocentricSineWaves.sample_parameters."""
    return {
        "offset": rs.uniform(low=0, high=size, size=2),
        "frequency": rs.uniform(low=0, high=10),
        "amplitude": rs.uniform(low=0, high=size / 10),
        "ring_width": rs.uniform(low=0, high=size / 10),
        "intensity": float_parameter(level, 128),
    }


def render_cocentric_sine_waves(
    image: Image, offset: Image, frequency: float, amplitude: float, ring_width: float, intensity: float
) -> Image:
    """CocentricSineWaves.transform."""
    y, x = pixel_grid(image.shape[0])
    x0, y0 = offset
    angle = np.arctan2(x - x0, y - y0) * frequency
    distance = ((np.sqrt((x - x0) ** 2 + (y - y0) ** 2) + np.sin(angle) * amplitude) % ring_width) / ring_width
    return quantise(image + intensity * (distance - 1 / 2)[..., None])


def sample_plasma_noise(size: int, level: float, rs: RandomState) -> dict:
    """PlasmaNoise.sample_parameters."""
    return {
        "time": rs.uniform(low=0.0, high=6 * np.pi),
        "iterations": rs.randint(low=4, high=7),
        "sharpness": rs.uniform(low=0.5, high=1.0),
        "scale": rs.uniform(low=0.075, high=0.2) * size,
        "intensity": float_parameter(level, 64),
    }


def render_plasma_noise(
    image: Image, time: float, iterations: int, sharpness: float, scale: float, intensity: float
) -> Image:
    """PlasmaNoise.transform, its kernel applied to all pixels at once."""
    y, x = pixel_grid(image.shape[0])
    x, y = x / scale, y / scale
    i = np.array([1.0, 1.0, 1.0, 0.0])
    for _ in range(iterations):
        r = np.array([np.cos(y * i[0] - i[3] + time / i[1]), np.sin(x * i[0] - i[3] + time / i[1])]) / i[2]
        r += np.array([-r[1], r[0]]) * 0.3
        x, y = x + r[0], y + r[1]
        i *= np.array([1.93, 1.15, (2.25 - sharpness), time * i[1]])
    noise = np.stack([np.sin(x - time), np.sin((x + y + np.sin(time)) * 0.5), np.sin(y + time)], -1)
    return quantise((1 - intensity / 255) * image + intensity * noise)


def sample_caustic_refraction(size: int, level: float, rs: RandomState) -> dict:
    """CausticRefraction.sample_parameters."""
    return {
        "time": rs.uniform(low=0.5, high=2.0),
        "pattern_size": rs.uniform(low=0.75, high=1.25) * size,
        "lens_scale": float_parameter(level, 0.5 * size),
        "lighting": float_parameter(level, 2.0),
    }


def refract(normal: Image, eta: float) -> Image:
    """refract([0, 0, 1], normal, eta) for every pixel's normal (S, S, 3), with the reference's rotation matrix."""
    incident = np.broadcast_to([0.0, 0.0, 1.0], normal.shape)
    cosine = normal[..., 2]
    out_angle = np.arcsin(np.sin(np.arccos(cosine)) / eta)
    out_unrotated = np.stack([np.cos(out_angle), np.sin(out_angle), np.zeros_like(out_angle)], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        spectator = np.cross(incident, normal)
        spectator /= np.linalg.norm(spectator, axis=-1, keepdims=True)
    orthogonal = np.cross(normal, spectator)
    flat = np.abs(cosine) >= 1.0 - 1e-3
    rotation = np.stack((normal, orthogonal, spectator), axis=-2)
    rotation[flat] = np.eye(3)
    out = (np.linalg.inv(rotation) @ out_unrotated[..., None])[..., 0]
    return np.where(flat[..., None], incident, out)


def bilinear_interpolation(image: Image, py: Image, px: Image) -> Image:
    """utils/image.py's bilinear_interpolation at every (py, px); corners outside the image count as 0."""
    l, u = np.floor(py).astype(int), np.floor(px).astype(int)
    r, d = l + 1, u + 1

    def at(row: Image, column: Image) -> Image:
        """The pixels at (row, column), 0 outside."""
        inside = (row >= 0) & (row < image.shape[0]) & (column >= 0) & (column < image.shape[1])
        values = image[np.clip(row, 0, image.shape[0] - 1), np.clip(column, 0, image.shape[1] - 1)]
        return np.where(inside[..., None], values, 0.0)

    wu, wd = (1.0 - px + u)[..., None], (1.0 - d + px)[..., None]
    al = at(l, u) * wu + at(l, d) * wd
    ar = at(r, u) * wu + at(r, d) * wd
    return al * (1.0 - py + l)[..., None] + ar * (1.0 - r + py)[..., None]


def render_caustic_refraction(
    image: Image, time: float, pattern_size: float, lens_scale: float, lighting: float
) -> Image:
    """CausticRefraction.transform: caustic_noise_kernel, gaussian_filter, luma_based_refract."""
    size = image.shape[0]
    y, x = pixel_grid(size)
    p = [(y / pattern_size % 1) * 6.28318530718 - 250, (x / pattern_size % 1) * 6.28318530718 - 250]
    i, c, inten = [p[0].copy(), p[1].copy()], 1.0, 0.005
    for n in range(5):
        t = time * (1.0 - (3.5 / (n + 1)))
        i = [p[0] + np.cos(t - i[0]) + np.sin(t + i[1]), p[1] + np.sin(t - i[1]) + np.cos(t + i[0])]
        c = c + 1.0 / np.sqrt((p[0] / (np.sin(i[0] + t) / inten)) ** 2 + (p[1] / (np.cos(i[1] + t) / inten)) ** 2)
    c = 1.17 - (c / 5.0) ** 1.4
    colour = np.clip(np.abs(c) ** 8.0, 0, 1)
    caustics = scipy.ndimage.gaussian_filter(np.stack([colour] * 3, -1), sigma=1)
    luma = np.pad(caustics @ np.array([0.2126, 0.7152, 0.0722]), 1)  # 0 outside the image
    north, south = luma[1:-1, :-2], luma[1:-1, 2:]
    west, east = luma[:-2, 1:-1], luma[2:, 1:-1]
    normal = np.stack([east - west, south - north, np.ones_like(east)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    shift = np.round(refract(normal, 4.0) * lens_scale, 3)
    out = bilinear_interpolation(image.astype(np.float32) / 255, y + shift[..., 0], x + shift[..., 1])
    out += ((north - south) * lighting)[..., None]
    out += ((east - west) * lighting)[..., None]
    return np.clip((np.clip(out, 0, 1) * 255).astype(np.uint8), 0, 255)


def sample_sparkles(size: int, level: float, rs: RandomState) -> dict:
    """Sparkles.sample_parameters, then the ray-length normals its transform draws from the seed."""
    centers = rs.uniform(low=0, high=size, size=(5, 2))
    radii = np.array([float_parameter(level, 0.1) for _ in range(5)]) * size
    seed = rs.randint(low=0, high=2**32)
    nrays = rs.randint(low=50, high=200, size=5)
    random_state = np.random.RandomState(seed=seed)
    z = [[random_state.randn() for _ in range(rays)] for rays in nrays]  # lengths max(1, r + r · z / 4)
    normals = np.stack([np.pad(np.asarray(zs), (0, icb.MAX_RAYS - len(zs))) for zs in z])
    return {"centers": centers, "rays": nrays, "normals": normals, "radius": radii[0]}


def ray_weight(size: int, center: Image, rays: int, lengths: list[float], amount: float) -> Image:
    """The sparkle kernel's blend factor f at every pixel (radius ≠ 0)."""
    y, x = pixel_grid(size)
    dp = [y - center[0], x - center[1]]
    dist = np.sqrt(dp[0] ** 2 + dp[1] ** 2)
    d = (np.arctan2(dp[1], dp[0]) + np.pi) / (2 * np.pi) * rays
    i = d.astype(int)
    f = d - i
    lengths = np.asarray(lengths)
    length = lengths[i % rays] + f * (lengths[(i + 1) % rays] - lengths[i % rays])
    g = (length**2 / (dist**2 + 1e-4)) ** ((100 - amount) / 50.0)
    return np.clip((1 - (f - 0.5) ** 2) * g, 0, 1)[..., None]


def render_sparkles(image: Image, centers: Image, rays: Image, normals: Image, radius: float) -> Image:
    """Sparkles.transform."""
    color = np.array([255, 255, 255])
    for center, count, z in zip(centers, rays, normals, strict=True):
        lengths = [max(1, radius + 25 / 100.0 * radius * v) for v in z[:count]]
        value = image.astype(np.float32)
        image = value + ray_weight(image.shape[0], center, count, lengths, 50) * (color - value)
    return quantise(image)


def sample_inverse_sparkles(size: int, level: float, rs: RandomState) -> dict:
    """InverseSparkles.sample_parameters, then the ray-length normals its transform draws from the seed."""
    center = rs.uniform(low=0.25, high=0.75, size=2) * size
    amount = 100 - float_parameter(level, 65)
    seed = rs.randint(low=0, high=2**32)
    rays = rs.randint(low=50, high=200)
    z = np.random.RandomState(seed=seed).randn(rays)
    normals = np.pad(z, (0, icb.MAX_RAYS - rays))
    return {"center": center, "rays": rays, "normals": normals, "radius": 0.25 * size, "amount": amount}


def render_inverse_sparkles(
    image: Image, center: Image, rays: int, normals: Image, radius: float, amount: float
) -> Image:
    """InverseSparkles.transform."""
    lengths = [radius + 25 / 100.0 * radius * v for v in normals[:rays]]
    color, value = np.array([255, 255, 255]), image.astype(np.float32)
    return quantise(color + ray_weight(image.shape[0], center, rays, lengths, amount) * (value - color))


def sample_perlin_noise(size: int, level: float, rs: RandomState) -> dict:
    """PerlinNoise.sample_parameters, then PerlinNoiseGenerator(RandomState(seed))'s gradient and shuffle draws."""
    # It draws 2B + 2 gradients, of which its copy loop keeps the first B.
    random_state = np.random.RandomState(seed=rs.randint(low=0, high=2**32))
    gradient_draws = random_state.randint(low=0, high=2**31, size=(2 * 256 + 2, 2)) % (2 * 256)
    swaps = random_state.randint(low=0, high=2**31, size=256) % 256
    return {"gradient_draws": gradient_draws[:256], "swaps": swaps, "alpha": float_parameter(level, 0.50)}


def perlin_tables(gradient_draws: Image, swaps: Image) -> tuple[Image, Image]:
    """PerlinNoiseGenerator.__init__'s tables p and g (2B + 2 entries) from its draws."""
    B = 256
    g = np.zeros((2 * B + 2, 2))
    g[:B] = (gradient_draws - B) / B
    g[:B] /= np.linalg.norm(g[:B], axis=1, keepdims=True)
    p = np.arange(2 * B + 2)
    for i, j in zip(np.arange(B - 1, -1, -1), swaps, strict=True):
        p[i], p[j] = p[j], p[i]
    for i in range(B + 2):
        p[B + i] = p[i]
        g[B + i, :] = g[i, :]
    return p, g


def perlin_noise(p: Image, g: Image, x: Image, y: Image) -> Image:
    """PerlinNoiseGenerator.noise at arrays of points."""
    B, N = 256, 16 * 256
    t = x + N
    bx0 = t.astype(int) % B
    bx1, rx0 = (bx0 + 1) % B, t % 1
    rx1 = rx0 - 1.0
    t = y + N
    by0 = t.astype(int) % B
    by1, ry0 = (by0 + 1) % B, t % 1
    ry1 = ry0 - 1.0
    i, j = p[bx0], p[bx1]
    b00, b10, b01, b11 = p[i + by0], p[j + by0], p[i + by1], p[j + by1]
    sx, sy = rx0**2 * (3.0 - 2.0 * rx0), ry0**2 * (3.0 - 2.0 * ry0)
    u, v = rx0 * g[b00, 0] + ry0 * g[b00, 1], rx1 * g[b10, 0] + ry0 * g[b10, 1]
    a = u + sx * (v - u)
    u, v = rx0 * g[b01, 0] + ry1 * g[b01, 1], rx1 * g[b11, 0] + ry1 * g[b11, 1]
    b = u + sx * (v - u)
    return 1.5 * (a + sy * (b - a))


def render_perlin_noise(image: Image, gradient_draws: Image, swaps: Image, alpha: float) -> Image:
    """PerlinNoise.transform: turbulence(y / s, x / s, 16) at every pixel."""
    size = image.shape[0]
    p, g = perlin_tables(gradient_draws, swaps)
    m = np.array([[1, 0], [0, 1]]) / (32 * size / 224)
    y, x = pixel_grid(size)
    npoint = np.stack([y, x], -1) @ m
    turbulence, f = 0.0, 1.0
    while f <= 16.0:
        turbulence = turbulence + np.abs(perlin_noise(p, g, f * npoint[..., 0], f * npoint[..., 1])) / f
        f = f * 2
    noise = np.clip(0.5 * turbulence + 0.5, 0, 1.0)[..., None]
    return quantise((1 - alpha) * image.astype(np.float32) + 255 * alpha * noise)


def sample_phases(size: int, random_state: RandomState) -> tuple[Image, Image]:
    """gen_noise's draws: the phases (S, S // 2), then the middle column's S // 2 for odd S (0 otherwise)."""
    half = random_state.uniform(low=0, high=2 * np.pi, size=(size, size // 2))
    middle = np.zeros(size // 2)
    if size % 2:
        middle = random_state.uniform(low=0, high=2 * np.pi, size=(size // 2, 1))[:, 0]
    return half, middle


def gen_noise(size: int, power: Image, half: Image, middle: Image) -> Image:
    """BlueNoiseSample's and BrownishNoise's gen_noise, from its phase draws."""
    phases = half
    if size % 2 == 0:
        phases = np.concatenate((phases, phases[::-1, ::-1]), axis=1)
    else:
        center_freq = np.concatenate((middle[:, None], np.array([[0.0]]), middle[::-1, None]), axis=0)
        phases = np.concatenate((phases, center_freq, phases[::-1, ::-1]), axis=1)
    fourier_space_noise = power * (np.cos(phases) + np.sin(phases) * 1j)
    fourier_space_noise = np.roll(fourier_space_noise, size // 2, axis=0)
    fourier_space_noise = np.roll(fourier_space_noise, size // 2, axis=1)
    noise = np.real(scipy.fftpack.ifft2(fourier_space_noise))
    return noise / np.std(noise)


def frequency_radius(size: int) -> Image:
    """gen_noise's ‖(x, y) − S / 2‖."""
    y, x = pixel_grid(size)
    return np.sqrt((x - size / 2) ** 2 + (y - size / 2) ** 2)


def sample_blue_noise_sample(size: int, level: float, rs: RandomState) -> dict:
    """BlueNoiseSample.sample_parameters, then gen_noise's phases from the seed."""
    half, middle = sample_phases(size, np.random.RandomState(seed=rs.randint(low=0, high=2**32)))
    return {"half": half, "middle": middle, "threshold": float_parameter(level, 3.0) - 2.5}


def render_blue_noise_sample(image: Image, half: Image, middle: Image, threshold: float) -> Image:
    """BlueNoiseSample.transform."""
    size = image.shape[0]
    mask = gen_noise(size, frequency_radius(size), half, middle) > threshold
    return quantise(image * mask.reshape(size, size, 1))


def sample_brownish_noise(size: int, level: float, rs: RandomState) -> dict:
    """BrownishNoise.sample_parameters, then three gen_noise's phases from the seed."""
    random_state = np.random.RandomState(seed=rs.randint(low=0, high=2**32))
    half, middle = zip(*[sample_phases(size, random_state) for _ in range(3)], strict=True)
    return {"half": np.stack(half), "middle": np.stack(middle), "intensity": float_parameter(level, 64)}


def render_brownish_noise(image: Image, half: Image, middle: Image, intensity: float) -> Image:
    """BrownishNoise.transform."""
    size = image.shape[0]
    power = 1 / (frequency_radius(size) ** 2 + 1)
    noise = np.stack([gen_noise(size, power, h, m) for h, m in zip(half, middle, strict=True)], axis=2)
    return quantise(image + intensity * noise)


def checker_cells(size: int, scale: float) -> int:
    """The side of CheckerBoardCutOut's grid."""
    return int(4 * size // scale)


def sample_checkerboard_cutout(size: int, level: float, rs: RandomState) -> dict:
    """CheckerBoardCutOut.sample_parameters, then its grid's uniforms from the seed."""
    angle = rs.uniform(low=0, high=2 * np.pi)
    scale = np.maximum(rs.uniform(low=0.1, high=0.25) * size, 1)
    seed = rs.randint(low=0, high=2**32)
    cells = checker_cells(size, scale)
    drawn = np.random.RandomState(seed=seed).uniform(size=(cells, cells))
    padded = np.ones((min(4 * size, 40),) * 2)  # dstbench draws the largest grid; 1 is never < fraction
    padded[:cells, :cells] = drawn
    return {"angle": angle, "scale": scale, "cell_draws": padded, "fraction": float_parameter(level, 1.0)}


def render_checkerboard_cutout(image: Image, angle: float, scale: float, cell_draws: Image, fraction: float) -> Image:
    """CheckerBoardCutOut.transform, mask_kernel at every pixel."""
    size = image.shape[0]
    cells = checker_cells(size, scale)
    grid = cell_draws[:cells, :cells] < fraction
    y, x = pixel_grid(size)
    nx = (np.cos(angle) * y + np.sin(angle) * x) / scale
    ny = (-np.sin(angle) * y + np.cos(angle) * x) / scale
    keep = ((nx % 2).astype(int) != (ny % 2).astype(int)) | ~grid[nx.astype(int), ny.astype(int)]
    return np.where(keep[..., None], image, np.uint8(128)).astype(np.uint8)


class Reference(NamedTuple):
    sample: Callable
    render: Callable


REFERENCE = {name: Reference(globals()[f"sample_{name}"], globals()[f"render_{name}"]) for name in NAMES}


# --- Helpers --------------------------------------------------------------------------------------------------

SCALARS = {"intensity", "radius", "amount", "alpha", "threshold", "lens_scale", "lighting", "fraction"}


def photos(size: int) -> np.ndarray:
    """skimage's astronaut, coffee and chelsea at `size` px: uint8 (3, S, S, 3)."""
    images = [getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea")]
    resized = [skimage.transform.resize(image, (size, size), anti_aliasing=True) for image in images]
    return (np.stack(resized) * 255).astype(np.uint8)


PHOTOS_224 = photos(224)


def nchw(images: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 photos as dstbench's (N, 3, S, S)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def stacked(draws: list[dict]) -> dict:
    """The reference's draws for several images as dstbench's batched draws (float64 tensors, as drawn)."""
    return {
        key: draws[0][key] if key in SCALARS else torch.as_tensor(np.stack([np.asarray(d[key]) for d in draws]))
        for key in draws[0]
    }


def corrupt(
    images: torch.Tensor, corruption: str, severity: int, ids: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor:
    """The suite's result, the way the evaluator calls it."""
    ids = torch.arange(len(images)) if ids is None else ids
    return SUITE.corrupt(
        images, corruption, severity, SampleRNG.for_samples(seed, SUITE.name, corruption, severity, ids=ids)
    )


# --- Contract -------------------------------------------------------------------------------------------------


def test_suite_is_registered_through_the_entry_point(plugins):
    """`dstbench list --json` shows the suite, loaded from pyproject.toml's entry point."""
    result = CliRunner().invoke(build_cli(plugins), ["list", "--json", "--kind", "suite"])
    assert result.exit_code == 0, result.output
    row = next(row for row in json.loads(result.output)["suite"] if row["name"] == "imagenet-c-bar")
    assert row["plugin"] == "imagenet_c_bar" and row["corruptions"].startswith("10: ")
    assert row["resolution"] == "224 px" and row["severities"] == "1,2,3,4,5"
    assert row["subsets (--corruptions)"] == "—"
    assert plugins.registry.suite("imagenet-c-bar") is SUITE


def test_suite_registers_through_the_hook_with_the_reference_table():
    pm = pluggy.PluginManager("dstbench")
    pm.add_hookspecs(hookspecs)
    pm.register(icb)
    registered = []
    pm.hook.register_suites(register=registered.append)
    assert registered == [SUITE]
    assert SUITE.corruptions == NAMES and SUITE.severities == (1, 2, 3, 4, 5)
    assert {name: tuple(SUITE.table[name].parameters[224]) for name in NAMES} == LEVELS


@pytest.mark.parametrize("corruption", NAMES)
@pytest.mark.parametrize("shape", [(3, 3, 224, 224), (2, 1, 37, 37), (2, 3, 4, 4), (0, 3, 16, 16)])
def test_output_is_uint8_of_the_same_shape(corruption, shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    SUITE.check_input(shape[1], shape[2])
    out = corrupt(images, corruption, 5)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    if len(images):
        assert not torch.equal(out, images)


@pytest.mark.parametrize("corruption", NAMES)
def test_works_down_to_its_smallest_size(corruption):
    """At its min_size, each corruption gives uint8 images of the same shape."""
    size = SUITE.table[corruption].min_size
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = corrupt(images, corruption, 5)
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_too_small_or_non_square_images_are_refused():
    with pytest.raises(UserError, match="caustic_refraction needs images of at least 4 px"):
        SUITE.check_input(3, 3)
    with pytest.raises(UserError, match="blue_noise_sample needs images of at least 2 px"):
        SUITE.check_input(3, 1)
    with pytest.raises(ValueError, match="square"):
        corrupt(torch.zeros(1, 3, 8, 9, dtype=torch.uint8), "sparkles", 1)


@pytest.mark.parametrize("corruption", NAMES)
def test_each_image_has_its_own_stream(corruption):
    """The same image with the same id gives the same result in any batch, at any position; another id, another."""
    images = nchw(photos(40)).repeat(2, 1, 1, 1)
    ids = torch.arange(10, 16)
    batch = corrupt(images, corruption, 3, ids)
    assert torch.equal(corrupt(images[[4, 1]], corruption, 3, ids[[4, 1]]), batch[[4, 1]])
    assert not torch.equal(batch[0], batch[3])  # the same photo, another id
    assert not torch.equal(corrupt(images, corruption, 3, ids, seed=1), batch)


@pytest.mark.parametrize("corruption", NAMES)
def test_severity_increases_the_damage(corruption):
    """With the same draws at every level, the mean absolute change grows strictly with the severity."""
    images = nchw(PHOTOS_224)
    rng = SampleRNG.for_samples(0, "same draws at every level", ids=torch.arange(len(images)))
    damage = [
        (SUITE.corrupt(images, corruption, s, rng).float() - images.float()).abs().mean().item() for s in range(1, 6)
    ]
    assert 0 < damage[0] and damage == sorted(set(damage)), damage


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("corruption", NAMES)
def test_the_gpu_gives_the_cpu_result_without_waiting_on_the_host(corruption):
    """Up to float rounding at truncation edges, with no synchronising CUDA call."""
    images = nchw(PHOTOS_224).repeat(4, 1, 1, 1)
    ids = torch.arange(len(images))
    on_cpu = corrupt(images, corruption, 4, ids)
    images, ids = images.cuda(), ids.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = corrupt(images, corruption, 4, ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    differ = on_gpu.cpu() != on_cpu
    assert differ.float().mean() < 1e-5, differ.float().mean()


# --- Parity with the reference -------------------------------------------------------------------------------


# The fraction of elements that may differ (by 1 level) with the same draws: float rounding that lands on the other
# side of a truncation; more for the plasma, whose iterated swirl amplifies rounding.
RENDER_TOLERANCE = {"plasma_noise": 1e-4}


@pytest.mark.parametrize("size", [224, 61])
@pytest.mark.parametrize("corruption", NAMES)
def test_render_matches_the_reference_given_the_same_draws(corruption, size):
    """Every level with the reference's own draws, on one photo per level (224 px) or all three (61 px)."""
    # 61 px: odd, so the spectral noises' phases take the middle column; every length scales as im_size does.
    rs = np.random.RandomState(NAMES.index(corruption))
    reference = REFERENCE[corruption]
    mismatched = total = 0
    for i, level in enumerate(LEVELS[corruption]):
        clean = PHOTOS_224[i % 3 : i % 3 + 1] if size == 224 else photos(size)
        draws = [reference.sample(size, level, rs) for _ in clean]
        theirs = np.stack([reference.render(image, **d) for image, d in zip(clean, draws, strict=True)])
        ours = getattr(icb, f"render_{corruption}")(nchw(clean), **stacked(draws)).permute(0, 2, 3, 1).numpy()
        difference = np.abs(ours.astype(int) - theirs.astype(int))
        assert difference.max() <= 1, (level, difference.max())
        mismatched, total = mismatched + np.count_nonzero(difference), total + difference.size
    assert mismatched / total <= RENDER_TOLERANCE.get(corruption, 1e-5)


def used_entries(key: str, draws: dict, size: int) -> list[np.ndarray]:
    """The draws of one key that the renderer reads, as 1-D samples: per column, or pooled where exchangeable."""
    # For ray lengths and grid cells, only those in use.
    values = np.asarray(draws[key], dtype=np.float64)
    values = values.reshape(len(values), -1)
    if key == "normals":
        used = np.arange(icb.MAX_RAYS) < np.asarray(draws["rays"]).reshape(len(values), -1, 1)
        return [values[used.reshape(len(values), -1)]]
    if key == "cell_draws":
        sides = (4 * size // np.asarray(draws["scale"], dtype=np.float64)).astype(int)[:, None, None]
        index = np.arange(math.isqrt(values.shape[1]))
        used = (index[None, :, None] < sides) & (index[None, None, :] < sides)
        return [values[used.reshape(len(values), -1)]]
    return [values.ravel()] if values.shape[1] > 10 else list(values.T)


@pytest.mark.parametrize("corruption", NAMES)
def test_draws_have_the_reference_distributions(corruption):
    """2000 draws against the reference's 2000 at 31 px: the same distributions (two-sample KS, p > 1e-4)."""
    size, n, level = 31, 2000, LEVELS[corruption][2]
    rng = SampleRNG.for_samples(0, "draws", corruption, ids=torch.arange(n))
    ours = getattr(icb, f"sample_{corruption}")(rng, level, size)
    rs = np.random.RandomState(1)
    theirs = stacked([REFERENCE[corruption].sample(size, level, rs) for _ in range(n)])
    assert ours.keys() == theirs.keys()
    for key in ours:
        if key in SCALARS:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key
            continue
        for a, b in zip(used_entries(key, ours, size), used_entries(key, theirs, size), strict=True):
            a, b = a[:: max(1, len(a) // 20000)], b[:: max(1, len(b) // 20000)]
            assert scipy.stats.ks_2samp(a, b).pvalue > 1e-4, key


# 3 photos × 2 draws per level and implementation. The per-image mean and standard deviation of the change
# (corrupted − clean, in levels) vary with the draws (where the sparkles fall, which cells are cut, ...), so the two
# implementations' averages must agree within 4.5 standard errors of their difference, plus 0.25 levels. (With 40
# draws per photo, every difference is within 1.7 standard errors.)
@pytest.mark.parametrize("corruption", NAMES)
def test_matches_the_reference_in_distribution_on_photos(corruption):
    """The mean and standard deviation of the change on photos, per severity, as the reference's."""
    clean = np.repeat(PHOTOS_224, 2, axis=0)
    reference = REFERENCE[corruption]
    rs = np.random.RandomState(100 + NAMES.index(corruption))
    for severity, level in enumerate(LEVELS[corruption], 1):
        ours = corrupt(nchw(clean), corruption, severity).permute(0, 2, 3, 1).numpy()
        theirs = np.stack([reference.render(image, **reference.sample(224, level, rs)) for image in clean])
        changes = [(x.astype(np.float64) - clean).reshape(len(clean), -1) for x in (ours, theirs)]
        for statistic in (np.mean, np.std):
            a, b = (statistic(change, axis=1) for change in changes)
            error = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / len(clean))
            assert abs(a.mean() - b.mean()) <= 4.5 * error + 0.25, (severity, statistic.__name__, a.mean(), b.mean())
