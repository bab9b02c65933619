"""Dataset contract: a plugin registers a `DatasetSpec`; its `load` returns train and test splits of uint8 images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstbench.data.loader import Augment, ImageData, StreamImages, TensorImages

if TYPE_CHECKING:
    from dstbench.report import Reporter

__all__ = ["Augment", "DataSplits", "DatasetSpec", "ImageData", "LoadRequest", "StreamImages", "TensorImages"]


@dataclass(frozen=True)
class LoadRequest:
    """What the user said about where the data is."""

    data_dir: Path | None  # --data-dir; None: look in the dataset's default places
    download: bool  # --download: the user allows fetching over the network
    cache_dir: Path  # where a loader may keep derived files (decoded arrays)
    reporter: Reporter
    # Video datasets: the official split, clip length and frame stride (None: the loader's default), whether
    # unreadable files are skipped (and counted) rather than fatal, and the memory for decoded clips in GiB (None:
    # the loader's default).
    split: int = 1
    frames: int | None = None
    frame_stride: int | None = None
    skip_bad: bool = False
    clip_cache_gib: float | None = None


@dataclass(frozen=True)
class DataSplits:
    train: ImageData
    test: ImageData
    classes: tuple[str, ...]
    # Video: the videos' own frame rate, and the stride between a clip's frames in them, so that corruptions defined
    # on a video's frames (motion blur over 2c frames, re-timing to 20 fps) act on clips as on the whole video.
    video_fps: float | None = None
    frame_stride: int = 1


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. `load` raises `UserError` naming where it looked and how to get the data."""

    name: str
    description: str
    num_classes: int
    image_size: int  # side of the square images the loader yields
    channels: int
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]; the model normalises with it
    std: tuple[float, ...]
    load: Callable[[LoadRequest], DataSplits]
    modality: str = "image"
    # Run options this dataset's usual recipe sets, e.g. {"model": "cifar-vgg16", "epochs": 200, "suite": "..."}.
    recipe: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # how to get the data, shown by `dstbench list` and in errors
