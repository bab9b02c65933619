"""The per-frame and per-clip corruptions of video-c, batched on the clips' device.

Per-frame ones (shot noise, rain, contrast, brightness, saturate) run the image functions on the N · T frames of
a batch, each frame with its own random stream (`SampleRNG.frames`), through a `TableSuite` of 224-px parameters.
Per-clip ones (motion blur, fog) see the whole clip (N, 3, T, H, W).
"""

from __future__ import annotations

import torch

from dstbench.corruption import Corruption, SampleRNG, TableSuite
from dstbench.imageops import next_power_of_two, plasma_fractal, to_uint8
from dstbench_plugins.image_c.digital import contrast, saturate
from dstbench_plugins.image_c.noise import shot_noise
from dstbench_plugins.image_c.weather import box_blur, brightness

__all__ = [
    "FRAME_SUITE",
    "RAIN",
    "add_streaks",
    "draw_streaks",
    "drop_starts",
    "fog",
    "from_frames",
    "motion_blur",
    "rain",
    "to_frames",
]

REFERENCE_SIDE = 224  # the frame side Yi et al.'s parameters are meant for


def to_frames(clips: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) → (N · T, C, H, W), clip by clip."""
    n, c, t, h, w = clips.shape
    return clips.transpose(1, 2).reshape(n * t, c, h, w)


def from_frames(frames: torch.Tensor, clips: int) -> torch.Tensor:
    """(N · T, C, H, W) → (N, C, T, H, W), contiguous."""
    _, c, h, w = frames.shape
    return frames.reshape(clips, -1, c, h, w).transpose(1, 2).contiguous()


# --- rain --------------------------------------------------------------------------------------------------------

DROP_VALUE = 220.0  # cv2.line's colour (220, 220, 220) drawn into a one-channel mask: 220
SLANT_RANGE = 10  # np.random.randint(-10, 10) at 224 px
# (pixels per drop, drop length at 224 px, darken): generate_random_lines' rain types 1-5 and rain's coefficients
RAIN = ((770, 10, 0.8), (770, 30, 0.8), (770, 60, 0.7), (500, 60, 0.6), (400, 80, 0.5))


def drop_starts(rng: SampleRNG, height: int, width: int, drops: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """generate_random_lines' drop starts, int64 (N, drops) each: y uniform in [0, H - length), x uniform in
    [min(s, 0), W - max(s, 0)) for a slant s uniform in [-r, r) per frame, r = 10 px at 224 px. The slant only
    moves where drops start: the reference draws every line with slant -1."""
    reach = round(SLANT_RANGE * width / REFERENCE_SIDE)
    u = rng.uniform((1 + 2 * drops,)).to(torch.float64)
    slant = (u[:, :1] * (2 * reach)).floor() - reach
    low, high = slant.clamp(max=0), width - slant.clamp(min=0)
    x = low + (u[:, 1 : 1 + drops] * (high - low)).floor()
    y = (u[:, 1 + drops :] * (height - length)).floor()
    return x.long(), y.long()


def draw_streaks(x: torch.Tensor, y: torch.Tensor, length: int, height: int, width: int) -> torch.Tensor:
    """cv2.line(mask, (x, y), (x - 1, y + length), 220, 1) for every drop start (N, drops), as float32
    (N, 1, H, W): 8-connected, the first (length + 1) // 2 rows in column x and the rest in x - 1, clipped to the
    image as the true segment is (a line from column 0 keeps only its first pixel)."""
    n = len(x)
    step = torch.arange(length + 1, device=x.device)
    x, y = x[:, :, None], y[:, :, None]
    column = x - (step >= (length + 1) // 2).long()
    drawn = (column >= 0) & ((x > 0) | (step == 0))
    flat = torch.where(drawn, (y + step) * width + column, height * width)  # undrawn pixels go to a spare slot
    mask = torch.zeros(n, height * width + 1, device=x.device)
    mask.scatter_(1, flat.reshape(n, -1), DROP_VALUE)
    return mask[:, :-1].view(n, 1, height, width)


def add_streaks(images: torch.Tensor, streaks: torch.Tensor, darken: float) -> torch.Tensor:
    """rain_process: streaks m brighten the image by trunc(m · (1 - x/255) · (1 - mean(x)/255)), that image is
    box-blurred (cv2.blur 3×3) and mixed in where the streaks are, m/255 · blurred + (1 - m/255) · x, and each
    channel's contrast is scaled by `darken`; in float64 like the reference."""
    x = images.to(torch.float64)
    streaks = streaks.to(torch.float64)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    brightened = x + (streaks * (1 - x / 255) * (1 - mean / 255)).floor_()
    blurred = box_blur(brightened).round_().to(torch.float64)
    mixed = (blurred * streaks / 255 + x * (1 - streaks / 255)) / 255
    means = mixed.mean(dim=(2, 3), keepdim=True)
    return to_uint8((mixed - means) * darken + means)


def rain(images: torch.Tensor, parameter: tuple[int, int, float], rng: SampleRNG) -> torch.Tensor:
    """Yi et al.'s rain, a fresh set of streaks in every frame. Drop lengths and the slant range are pixels at
    224 px and scale with the frame height and width; the drop count is per area, as in the reference."""
    area_per_drop, reference_length, darken = parameter
    _, _, height, width = images.shape
    length = min(height - 1, max(1, round(reference_length * height / REFERENCE_SIDE)))
    x, y = drop_starts(rng, height, width, height * width // area_per_drop, length)
    return add_streaks(images, draw_streaks(x, y, length, height, width), darken)


# --- per-frame table ---------------------------------------------------------------------------------------------

FRAME_SUITE = TableSuite(
    "video-c-frames",
    "The per-frame corruptions of video-c, one frame at a time",
    REFERENCE_SIDE,
    {
        "shot_noise": Corruption(shot_noise, {REFERENCE_SIDE: (60, 25, 12, 5, 3)}),
        "rain": Corruption(rain, {REFERENCE_SIDE: RAIN}, min_size=2),
        "contrast": Corruption(contrast, {REFERENCE_SIDE: (0.5, 0.4, 0.3, 0.2, 0.1)}),
        "brightness": Corruption(brightness, {REFERENCE_SIDE: (0.1, 0.2, 0.3, 0.4, 0.5)}),
        "saturate": Corruption(saturate, {REFERENCE_SIDE: ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))}),
    },
)


# --- per-clip ----------------------------------------------------------------------------------------------------


def motion_blur(clips: torch.Tensor, half_window: int, rng: SampleRNG, stride: int = 1) -> torch.Tensor:
    """Yi et al.'s blur: video frame u becomes trunc(mean of the 2c video frames u - c … u + c - 1), c = half_window.
    A clip holds every `stride`-th frame of its video, so each video frame of the window is interpolated linearly
    between the clip's two frames around it; at stride 1 that is the reference's mean of 2c clip frames. Frame
    indices are clamped to the clip, so its first and last frames stand in for frames past its ends (the reference
    drops the 2c frames whose window leaves the video). Integer weights, exact: video frame t·s + d weighs s - (d mod
    s) on clip frame t + floor(d / s) and d mod s on the next."""
    weights: dict[int, int] = {}
    for d in range(-half_window, half_window):
        offset, rest = divmod(d, stride)
        weights[offset] = weights.get(offset, 0) + stride - rest
        if rest:
            weights[offset + 1] = weights.get(offset + 1, 0) + rest
    before, after = -min(weights), max(weights)
    frames = clips.shape[2]
    padded = torch.cat(
        [
            clips[:, :, :1].expand(-1, -1, before, -1, -1),
            clips,
            clips[:, :, -1:].expand(-1, -1, after, -1, -1),
        ],
        dim=2,
    ).to(torch.int32)
    total = torch.zeros_like(clips, dtype=torch.int32)
    for offset, weight in weights.items():
        total.add_(padded[:, :, before + offset : before + offset + frames], alpha=weight)
    return total.div_(2 * half_window * stride, rounding_mode="floor").to(torch.uint8)


def fog(clips: torch.Tensor, parameter: tuple[float, float], rng: SampleRNG) -> torch.Tensor:
    """Yi et al.'s fog: one plasma layer per clip, added to every frame as ImageNet-C's fog does, clip((x + c0 ·
    plasma) · max(x) / (max(x) + c0)) with max(x) each frame's, in float64. The formula of `image_c.weather.fog`,
    which draws a layer per image: drawing one per clip costs 1/T of that, and the layer is 90% of the work."""
    strength, decay = parameter
    h, w = clips.shape[-2:]
    plasma = plasma_fractal(rng, next_power_of_two(max(h, w)), decay)[:, None, None, :h, :w].to(torch.float64)
    x = clips.to(torch.float64) / 255
    peak = x.amax(dim=(1, 3, 4), keepdim=True)
    return to_uint8((x + strength * plasma) * peak / (peak + strength))
