"""The `video-c` suite: the 12 corruptions × 5 severities of Yi et al. (NeurIPS 2021 D&B; Mini Kinetics-C), with
the parameters of their `create_mini_kinetics_c.py` (224-px frames).

Per-frame corruptions run on the N · T frames of a batch, per-clip ones on whole clips, both batched on the clips'
device. Codec corruptions go through PyAV on the CPU, clips in parallel threads, cached on disk (`ClipCache`), and come
back to the clips' device. Every clip draws its randomness from its own `SampleRNG` stream (its frames from
`SampleRNG.frames`), so a corrupted clip does not depend on the batch it is in or on the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dstbench.corruption import CorruptionSuite, SampleRNG, SuiteRequest
from dstbench.errors import UserError
from dstbench_plugins.video_c import codec
from dstbench_plugins.video_c.cache import ClipCache
from dstbench_plugins.video_c.frames import FRAME_SUITE, fog, from_frames, motion_blur, to_frames

__all__ = ["CLIP_CORRUPTIONS", "CODEC_CORRUPTIONS", "VideoSuite"]

MOTION_BLUR = (3, 5, 7, 9, 11)  # c: each video frame the mean of 2c
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
CLIP_CORRUPTIONS = ("motion_blur", "fog")
# Deterministic ones ignore the clip's random key and are cached by content alone.
CODEC_CORRUPTIONS: dict[str, tuple[Callable[[np.ndarray, object, codec.Uniform], np.ndarray], tuple, bool]] = {
    "bit_error": (codec.bit_error, (100000, 50000, 30000, 20000, 10000), True),
    "h264_crf": (codec.h264_crf, (23, 30, 37, 44, 51), False),
    "h265_crf": (codec.h265_crf, (27, 33, 39, 45, 51), False),
    "frame_rate": (codec.frame_rate, (20, 16, 12, 9, 6), False),
    "packet_loss": (codec.packet_loss, (1, 2, 3, 4, 6), True),
}
CODEC_THREADS = os.cpu_count() or 1
SUBSETS = {
    "frame": FRAME_SUITE.corruptions,
    "clip": CLIP_CORRUPTIONS,
    "codec": tuple(CODEC_CORRUPTIONS),
}


class VideoSuite(CorruptionSuite):
    """Corrupts uint8 RGB clips (N, 3, T, H, W). `cache_dir`: where codec results are kept (None: the dstbench
    cache's `video-c` folder)."""

    name = "video-c"
    description = "Mini Kinetics-C: 12 video corruptions, 224-px parameters (Yi et al. 2021)"
    corruptions = (*FRAME_SUITE.corruptions, *CLIP_CORRUPTIONS, *CODEC_CORRUPTIONS)
    modality = "video"
    resolution = "224 px (Yi et al. 2021 parameters)"
    subsets = SUBSETS

    def __init__(self, cache_dir: Path | None = None, video_fps: float = codec.SOURCE_FPS, frame_stride: int = 1):
        self.cache = ClipCache(cache_dir)
        # Motion blur and frame rate are defined on a video's own frames: a clip holds every `frame_stride`-th of
        # them, shown at video_fps / frame_stride.
        self.frame_stride = frame_stride
        self.clip_fps = Fraction(video_fps).limit_denominator(1001) / frame_stride

    def prepare(self, request: SuiteRequest) -> VideoSuite:
        """This suite for clips of the run's videos (their frame rate and stride)."""
        if request.video_fps is None and request.frame_stride == 1:
            return self
        return VideoSuite(self.cache.folder, request.video_fps or codec.SOURCE_FPS, request.frame_stride)

    def check_input(self, channels: int, size: int, corruptions: Sequence[str] | None = None) -> None:
        if channels != 3:
            raise UserError(f"suite '{self.name}' corrupts RGB clips, not {channels}-channel ones")
        frame = None if corruptions is None else [c for c in corruptions if c in FRAME_SUITE.table]
        FRAME_SUITE.check_input(channels, size, frame)

    def corrupt(self, images: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        self.select([corruption], [severity])  # UserError for an unknown corruption or severity
        if images.ndim != 5:
            raise UserError(
                f"suite '{self.name}' corrupts video clips (N, C, T, H, W), not a tensor of shape "
                f"{tuple(images.shape)}; use an image suite for images"
            )
        self.check_input(images.shape[1], min(images.shape[3:]), (corruption,))
        if images.dtype != torch.uint8 or len(images) != len(rng):
            raise ValueError(f"expected uint8 clips and N streams, got {images.dtype} and {len(rng)} streams")
        if not len(images):
            return images.clone()
        if corruption in FRAME_SUITE.corruptions:
            frames = FRAME_SUITE.corrupt(to_frames(images), corruption, severity, rng.frames(images.shape[2]))
            return from_frames(frames, len(images))
        if corruption == "motion_blur":
            return motion_blur(images, MOTION_BLUR[severity - 1], rng, self.frame_stride)
        if corruption == "fog":
            return fog(images, FOG[severity - 1], rng)
        return self._codec(images, corruption, severity, rng)

    def _codec(self, clips: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        function, parameters, random = CODEC_CORRUPTIONS[corruption]
        parameter, variant = parameters[severity - 1], ""
        if corruption == "frame_rate":
            function, variant = partial(codec.frame_rate, clip_fps=self.clip_fps), f"{self.clip_fps} fps"
        frames = clips.permute(0, 2, 3, 4, 1).cpu().numpy()  # (N, T, H, W, 3)
        keys = rng.keys.cpu()

        def one(i: int) -> np.ndarray:
            streams = SampleRNG(keys[i : i + 1])

            def uniform(count: int, index: int) -> np.ndarray:
                return streams.uniform((count,), stream=index)[0].to(torch.float64).numpy()

            key = int(keys[i]) & 0xFFFFFFFF if random else None
            compute = partial(function, frames[i], parameter, uniform)
            return self.cache.get(frames[i], corruption, severity, key, compute, variant)

        # FFmpeg releases the GIL and each encoder runs one thread (for reproducible bytes): clips go in parallel.
        with ThreadPoolExecutor(CODEC_THREADS) as pool:
            out = np.stack(list(pool.map(one, range(len(frames)))))
        return torch.from_numpy(out).permute(0, 4, 1, 2, 3).contiguous().to(clips.device)
