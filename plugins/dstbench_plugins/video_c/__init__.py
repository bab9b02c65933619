"""The video corruption suite `video-c` of Yi et al. (NeurIPS 2021 D&B): per-frame and per-clip corruptions batched
on the device (`frames`), whole-video ones through a codec (`codec`), cached on disk (`cache`)."""

from __future__ import annotations

from dstbench.hookspecs import hookimpl
from dstbench_plugins.video_c.suite import VideoSuite

__all__ = ["VideoSuite", "register_suites"]


@hookimpl
def register_suites(register):
    register(VideoSuite())
