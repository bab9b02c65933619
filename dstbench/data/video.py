"""Video files: clips decoded with PyAV, H.264 written with it, datasets' video lists, and a cache of decoded clips.

A clip is `frames` frames taken `stride` apart from one video, each resized so that its short side is `short_side`
and cropped to `size` x `size`: uint8 (3, T, size, size), the layout `TensorImages` holds clips in. Every video
dataset reads through `read_clips`, whether `video_splits` decodes a split once into the cache or streams it through
DataLoader workers, so both paths give the same test clips: the centre clip, centre crop. Training sees a random
clip of each video every epoch on both paths: streamed, a clip anywhere in the video; cached, one of the
`TRAIN_VIEWS` clips spread evenly over it that the cache holds per training video.

A video of at least T frames always gives a clip: when it is shorter than T frames at the asked stride, the stride
shrinks until the clip fits, so the clip spans the whole video. A video of fewer than T frames is refused, like a
missing, empty or undecodable file or one in a codec FFmpeg cannot decode: `UserError` naming the file, or, with
--skip-bad, skipped and counted by `BadVideos`.

PyAV is imported inside the functions that use it, so importing this module costs nothing the CLI would notice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from dstbench.checkpoint import write_json
from dstbench.data import Augment, DataSplits, LoadRequest, StreamImages, TensorImages
from dstbench.data.sources import FileSplits, SplitArrays, cached_arrays, class_folders, describe, fingerprint
from dstbench.errors import UserError

if TYPE_CHECKING:
    import av

    from dstbench.report import Reporter

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv"})
# A dataset whose decoded clips (both splits, training videos counted `cached_views` times) fit in this many bytes
# is decoded once into the cache and held in memory; a larger one streams through DataLoader workers. At 16 x 112 x
# 112, one clip per video of UCF101 is 7.5 GiB and of HMDB51 2.9 GiB: on a machine of 32 GiB or more HMDB51 is
# cached with 3 training views (6.9 GiB), UCF101 (2 views: 12.8 GiB) streams unless --clip-cache-gib allows 13 or
# more. A quarter of the memory leaves room for a copy while loading.
CACHE_BUDGET_BYTES = min(8 * 2**30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
# Clips cached per training video, at `uniform_clip_positions(TRAIN_VIEWS)`, one drawn per video per epoch: four
# segments of the video, as in TSN-style sampling, for four times the memory of the centre clip alone. When they do
# not fit the budget fewer are cached, down to 2; one clip per video would mean no temporal jitter at all, so below
# that the splits stream instead (random clips anywhere in each video).
TRAIN_VIEWS = 4
MIN_TRAIN_VIEWS = 2
DECODE_WORKERS = min(8, os.cpu_count() or 1)
MIN_FILES_FOR_WORKERS = 64  # below this, starting worker processes costs more than decoding in this one
# libx264 at a quality where clean clips look clean; one thread keeps tiny frames fast. Without mb-tree rate control
# the bytes are the same on every run: with it, about 1 in 10 clips of 32 x 32 frames came out different (x264 165).
X264_OPTIONS: Mapping[str, str] = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
SKIP_HINT = "replace or delete it, or pass --skip-bad"


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut: `frames` frames `stride` apart, resized to a short side of `short_side`, then cropped
    to `size` x `size`."""

    frames: int
    stride: int
    size: int
    short_side: int

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1 or not 1 <= self.size <= self.short_side:
            raise ValueError(f"invalid clip spec {self}")

    @property
    def nbytes(self) -> int:
        """Bytes of one decoded clip."""
        return 3 * self.frames * self.size * self.size


# --- Where a clip lies in a video ----------------------------------------------------------------------------------


def clip_frame_indices(num_frames: int, frames: int, stride: int, position: float) -> range:
    """The indices of a clip's frames in a video of `num_frames` frames, `frames` of them `stride` apart (or less,
    when the video is too short for the stride). `position` in [0, 1] places the clip: 0 at the start, 0.5 in the
    centre, 1 at the end. The caller makes sure that `num_frames >= frames`."""
    if frames > 1:
        stride = min(stride, (num_frames - 1) // (frames - 1))
    span = (frames - 1) * stride + 1
    free = num_frames - span
    start = min(free, math.floor(position * (free + 1)))
    return range(start, start + span, stride)


def uniform_clip_positions(count: int) -> list[float]:
    """`count` clip positions spread evenly over a video, for testing on several clips; one is the centre clip."""
    return [(i + 0.5) / count for i in range(count)]


# --- Reading -------------------------------------------------------------------------------------------------------


def _open(path: str | Path) -> av.container.InputContainer:
    """The container, after the checks that give clearer messages than FFmpeg's."""
    import av

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise UserError(f"video {path} does not exist (is the download complete?); {SKIP_HINT}") from None
    if size == 0:
        raise UserError(f"video {path} is empty (0 bytes); {SKIP_HINT}")
    return av.open(str(path))


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise UserError(f"{path} holds no video stream; {SKIP_HINT}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UserError(f"video {path} is in a codec this FFmpeg build cannot decode; {SKIP_HINT}")
    return stream


def _decoding(path: str | Path, read: Callable[[], Any]) -> Any:
    """`read()`, with PyAV's errors turned into a one-line `UserError` naming the file."""
    import av

    try:
        return read()
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise UserError(f"cannot decode video {path} ({describe(exc)}); {SKIP_HINT}") from None


def _too_short(path: str | Path, num_frames: int, frames: int) -> UserError:
    return UserError(f"video {path} has {num_frames} frames, fewer than the {frames} of a clip (--frames); {SKIP_HINT}")


def _frame_count(container: av.container.InputContainer, stream: Any, path: str | Path, frames: int) -> int:
    """The container's frame count, else its packets counted without decoding (then rewound); a video of fewer
    than `frames` frames is refused."""
    count = stream.frames
    if not count:
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
    if count < frames:
        raise _too_short(path, count, frames)
    return count


def _resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(height, width)
    return max(short_side, round(height * scale)), max(short_side, round(width * scale))


def _clip_frames(
    path: str | Path, spec: ClipSpec, positions: Sequence[float], num_frames: int | None
) -> list[list[np.ndarray]]:
    """Each clip's frames as (H', W', 3) RGB at the resized shape, from one pass of decoding. `num_frames` is what
    the caller knows (None: the container's count, else the packets'); when the video ends sooner, the clips are
    chosen again from the frames that were really there."""
    from av.video.reformatter import VideoReformatter

    with _open(path) as container:
        stream = _video_stream(container, path)
        known = num_frames or _frame_count(container, stream, path, spec.frames)
        clips = [clip_frame_indices(known, spec.frames, spec.stride, position) for position in positions]
        wanted = set().union(*clips)
        reformatter = VideoReformatter()  # keeps its scaler between frames, where `frame.to_ndarray` makes one each
        kept: dict[int, np.ndarray] = {}
        decoded = 0
        for decoded, frame in enumerate(container.decode(stream), 1):
            if decoded - 1 in wanted:
                height, width = _resized_shape(frame.height, frame.width, spec.short_side)
                rgb = reformatter.reformat(frame, width, height, "rgb24", interpolation="BILINEAR")
                kept[decoded - 1] = rgb.to_ndarray()
                if len(kept) == len(wanted):
                    return [[kept[i] for i in clip] for clip in clips]
    if decoded < spec.frames:
        raise _too_short(path, decoded, spec.frames)
    return _clip_frames(path, spec, positions, decoded)


def read_clip(
    path: str | Path, spec: ClipSpec, position: float = 0.5, crop: tuple[float, float] = (0.5, 0.5)
) -> np.ndarray:
    """One clip of the video at `path` as uint8 (3, T, size, size). `position` places the clip in time as in
    `clip_frame_indices`; `crop` = (vertical, horizontal) places the crop in the resized frame, each in [0, 1]
    (0.5, 0.5: the centre crop). Raises `UserError` naming the file when the video cannot give a clip."""
    return read_clips(path, spec, (position,), crop)[0]


def read_clips(
    path: str | Path, spec: ClipSpec, positions: Sequence[float], crop: tuple[float, float] = (0.5, 0.5)
) -> np.ndarray:
    """The clips at `positions` (as `read_clip`'s), decoded in one pass, as uint8 (K, 3, T, size, size)."""
    clips = _decoding(path, lambda: _clip_frames(path, spec, positions, None))
    height, width = clips[0][0].shape[:2]
    top = min(height - spec.size, math.floor(crop[0] * (height - spec.size + 1)))
    left = min(width - spec.size, math.floor(crop[1] * (width - spec.size + 1)))
    stacked = np.stack([np.stack(frames) for frames in clips])[:, :, top : top + spec.size, left : left + spec.size]
    return np.ascontiguousarray(stacked.transpose(0, 4, 1, 2, 3))


def probe_video(path: str | Path, frames: int) -> int:
    """The number of frames that decode from the video at `path`, after checking that it gives at least `frames`;
    `UserError` naming the file if not. It decodes every frame (without converting them), so a video that passes
    gives a clip at any place in time: a header that counts frames a cut-short file lacks, or a damaged packet
    past the first frames, stops it here rather than in the middle of a streamed epoch. That costs about half of
    `read_clip` at the end of the video."""

    def probe() -> int:
        with _open(path) as container:
            decoded = sum(1 for _ in container.decode(_video_stream(container, path)))
        if not decoded:
            raise UserError(f"video {path}: not one frame decodes; {SKIP_HINT}")
        if decoded < frames:
            raise _too_short(path, decoded, frames)
        return decoded

    return _decoding(path, probe)


def measure_decode_rate(paths: Sequence[str | Path], spec: ClipSpec) -> float:
    """Centre clips decoded per second in this process, one video after another: the decode speed a benchmark
    reports (a DataLoader with W workers reaches about W times this)."""
    start = time.perf_counter()
    for path in paths:
        read_clip(path, spec)
    return len(paths) / (time.perf_counter() - start)


# --- Writing -------------------------------------------------------------------------------------------------------


def write_video(
    target: str | Path | IO[bytes],
    clip: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    options: Mapping[str, str] = X264_OPTIONS,
    container_format: str | None = None,
) -> None:
    """Encode a uint8 (3, T, H, W) RGB clip as a yuv420p video (H and W even) into a file or file object; the
    container comes from the file name, or `container_format` (e.g. 'mp4' for a `BytesIO`)."""
    import av

    _, _, height, width = clip.shape
    with av.open(target, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options)
        for frame in clip.transpose(1, 2, 3, 0):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


# --- Datasets' lists of videos -------------------------------------------------------------------------------------


def video_files(folder: str | Path) -> list[str]:
    """The paths of the video files directly in `folder` (known suffixes, any case), sorted."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in VIDEO_SUFFIXES]
    return [os.path.join(folder, name) for name in sorted(names)]


def scan_video_classes(root: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The videos of `root/<class>/*`, labelled by the class's position in `classes`; no video at all is an error."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = video_files(root / name) if (root / name).is_dir() else []
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise UserError(f"{root} holds no videos in per-class folders ({root}/<class>/*.avi, *.mp4, ...)")
    return paths, np.asarray(labels, np.int64)


def video_folder_files(folder: Path) -> FileSplits:
    """`folder/train/<class>/*` and `folder/test/<class>/*`; the classes are the train folders, sorted."""
    classes = class_folders(folder / "train")
    strays = sorted(set(class_folders(folder / "test")) - set(classes))
    if strays:
        raise UserError(f"{folder / 'test'} has class folders that train/ lacks: {', '.join(strays[:5])}")
    train_files, train_labels = scan_video_classes(folder / "train", classes)
    test_files, test_labels = scan_video_classes(folder / "test", classes)
    return FileSplits(train_files, train_labels, test_files, test_labels, classes)


def _lines(path: Path, remedy: str) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a text file as (line number, whitespace-separated fields)."""
    if not path.is_file():
        raise UserError(f"{path} is missing; {remedy}")
    numbered = enumerate(path.read_text(errors="replace").splitlines(), 1)
    return [(number, line.split()) for number, line in numbered if line.strip()]


UCF101_LISTS = "ucfTrainTestlist"
UCF101_REMEDY = f"unpack the train/test split archive from https://www.crcv.ucf.edu/data/UCF101.php as {UCF101_LISTS}/"


def ucf101_files(folder: Path, split: int) -> FileSplits:
    """UCF101 split `split` (1-3): `folder/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt` naming videos
    in `folder/UCF-101/<Class>/` (or `folder/<Class>/`). Labels are the classes' positions in classInd.txt; a label
    written in the train list must agree with the video's class folder."""
    lists = folder / UCF101_LISTS
    videos = folder / "UCF-101" if (folder / "UCF-101").is_dir() else folder
    index_file = lists / "classInd.txt"
    entries = _lines(index_file, UCF101_REMEDY)
    if any(len(fields) != 2 or fields[0] != str(number) for number, (_, fields) in enumerate(entries, 1)):
        raise UserError(f"{index_file} is not '<1-based index> <class>' per line, in order")
    classes = tuple(fields[1] for _, fields in entries)
    train_files, train_labels = _ucf101_list(lists / f"trainlist0{split}.txt", videos, classes)
    test_files, test_labels = _ucf101_list(lists / f"testlist0{split}.txt", videos, classes)
    return FileSplits(train_files, train_labels, test_files, test_labels, classes)


def _ucf101_list(list_file: Path, videos: Path, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    index = {name: label for label, name in enumerate(classes)}
    paths, labels = [], []
    for number, fields in _lines(list_file, UCF101_REMEDY):
        name = fields[0].split("/")[0]
        label = index.get(name)
        if label is None or len(fields) > 2 or fields[1:] not in ([], [str(label + 1)]):
            raise UserError(f"{list_file} line {number} is not '<Class>/<video> [<label in classInd>]': {fields}")
        paths.append(str(videos / fields[0]))
        labels.append(label)
    return paths, np.asarray(labels, np.int64)


HMDB51_LISTS = "testTrainMulti_7030_splits"
_HMDB51_LIST = re.compile(r"(.+)_test_split[123]\.txt")
HMDB51_REMEDY = (
    "unpack test_train_splits.rar from https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/"
)


def hmdb51_files(folder: Path, split: int) -> FileSplits:
    """HMDB51 split `split` (1-3): `folder/testTrainMulti_7030_splits/<class>_test_split<N>.txt`, one line
    '<video> <0|1|2>' per video of the class (1: train, 2: test, 0: unused), naming videos in
    `folder/hmdb51_org/<class>/` (or `folder/<class>/`). The classes are the split files' names, sorted."""
    suffix = f"_test_split{split}.txt"
    lists = sorted((folder / HMDB51_LISTS).glob(f"*{suffix}"))
    if not lists:
        raise UserError(f"{folder / HMDB51_LISTS} holds no *{suffix} files; {HMDB51_REMEDY}")
    # A class with a file for another split but not this one would silently drop out, shifting later labels.
    every_class = {m[1] for path in (folder / HMDB51_LISTS).glob("*") if (m := _HMDB51_LIST.fullmatch(path.name))}
    missing = sorted(every_class - {path.name.removesuffix(suffix) for path in lists})
    if missing:
        raise UserError(f"{folder / HMDB51_LISTS / (missing[0] + suffix)} is missing; {HMDB51_REMEDY}")
    videos = folder / "hmdb51_org" if (folder / "hmdb51_org").is_dir() else folder
    classes = tuple(path.name.removesuffix(suffix) for path in lists)
    parts: dict[str, tuple[list[str], list[int]]] = {"1": ([], []), "2": ([], [])}
    for label, (name, list_file) in enumerate(zip(classes, lists, strict=True)):
        for number, fields in _lines(list_file, HMDB51_REMEDY):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise UserError(f"{list_file} line {number} is not '<video> <0|1|2>': {fields}")
            if fields[1] in parts:
                parts[fields[1]][0].append(str(videos / name / fields[0]))
                parts[fields[1]][1].append(label)
    (train_files, train_labels), (test_files, test_labels) = parts["1"], parts["2"]
    return FileSplits(
        train_files, np.asarray(train_labels, np.int64), test_files, np.asarray(test_labels, np.int64), classes
    )


# --- Decoding whole splits -----------------------------------------------------------------------------------------


@dataclass
class BadVideos:
    """The videos of one split that cannot give a clip. Without `skip` the first stops the load (its `UserError`
    names the file); with it they are counted and `report` warns once."""

    split: str  # e.g. 'ucf101 train'
    skip: bool
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        if not self.skip:
            raise UserError(reason)
        self.reasons.append(reason)

    def report(self, reporter: Reporter, listed: int, kept: int) -> None:
        """Warn when `kept` < `listed` videos are left (the reasons are known only when this load decoded them);
        `UserError` when none is left."""
        if kept == listed:
            return
        first = f" (first: {self.reasons[0]})" if self.reasons else ""
        if kept == 0:
            raise UserError(f"{self.split}: none of its {listed} videos can be used{first}")
        reporter.warn(f"{self.split}: skipped {listed - kept} of {listed} videos that cannot be used{first}")


class _Attempt(Dataset):
    """`function(path)` for each path, with a `UserError` returned as its message rather than raised, so that one
    bad video does not stop a DataLoader."""

    def __init__(self, function: Callable[[str], Any], paths: Sequence[str]):
        self.function, self.paths = function, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        try:
            return self.function(self.paths[i]), ""
        except UserError as exc:
            return None, str(exc)


def _attempt_all(
    function: Callable[[str], Any], paths: Sequence[str], reporter: Reporter, description: str
) -> Iterator[tuple[int, Any, str]]:
    """(position, result, problem) for every path in order, computed by DataLoader workers, with a progress bar."""
    workers = DECODE_WORKERS if len(paths) >= MIN_FILES_FOR_WORKERS else 0
    loader = DataLoader(_Attempt(function, paths), batch_size=None, num_workers=workers)
    with reporter.task(description, total=len(paths), unit="clip") as task:
        for position, (result, problem) in enumerate(loader):
            yield position, result, problem
            task.advance(1)


def decode_clips(
    paths: Sequence[str], labels: np.ndarray, spec: ClipSpec, bad: BadVideos, reporter: Reporter, views: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The videos' clips and their labels, skipping what `bad` allows: the centre clips as uint8
    (N, 3, T, size, size), or with `views` > 1 that many clips spread evenly over each video
    (`uniform_clip_positions`) as (N, views, 3, T, size, size). Views that are the same clip in every video (videos
    no longer than a clip) are kept once, as (N, 3, T, size, size)."""
    clips = np.empty((len(paths), views, 3, spec.frames, spec.size, spec.size), np.uint8)
    positions = uniform_clip_positions(views) if views > 1 else [0.5]
    kept: list[int] = []
    distinct = False
    for position, clip, problem in _attempt_all(
        partial(read_clips, spec=spec, positions=positions), paths, reporter, f"decoding {bad.split}"
    ):
        if problem:
            bad.add(problem)
            continue
        clips[len(kept)] = clip
        kept.append(position)
        distinct = distinct or not (clip == clip[:1]).all()
    clips = clips[: len(kept)] if distinct else np.ascontiguousarray(clips[: len(kept), 0])
    return clips, labels[kept]


def probe_videos(
    paths: Sequence[str], labels: np.ndarray, frames: int, bad: BadVideos, reporter: Reporter
) -> tuple[list[str], np.ndarray]:
    """The videos that pass `probe_video`, and their labels, skipping what `bad` allows."""
    kept: list[int] = []
    for position, _, problem in _attempt_all(
        partial(probe_video, frames=frames), paths, reporter, f"checking {bad.split}"
    ):
        if problem:
            bad.add(problem)
        else:
            kept.append(position)
    return [paths[i] for i in kept], labels[kept]


def _sample_draws(index: int) -> list[float]:
    """Four uniforms in [0, 1) for training sample `index` in this epoch. In a DataLoader worker they come from the
    epoch's base seed (which DataLoader draws from the loader's generator, the same for every worker) and the index
    alone, so they do not depend on how many workers there are or which one reads the sample; in the main process
    (no workers) from torch's generator."""
    info = get_worker_info()
    if info is None:
        return torch.rand(4).tolist()
    return np.random.default_rng((info.seed - info.id, index)).random(4).tolist()


class VideoClips(Dataset):
    """Videos read one clip at a time, for `StreamImages`: item i is (uint8 (3, T, size, size), label). For training
    a random clip, random crop and (with `hflip`) random flip (`_sample_draws`: the same for any number of
    workers); otherwise the centre clip and crop, as `decode_clips` gives.

    The paths live in one bytes array, as in `ImageFiles`, so forked workers share rather than copy them; the class
    is module-level, so workers started by spawning receive it by pickling."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, spec: ClipSpec, *, train: bool, hflip: bool):
        self.paths = np.asarray([os.fsencode(path) for path in paths])
        self.labels = np.asarray(labels, np.int64)
        self.spec, self.train, self.hflip = spec, train, hflip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = os.fsdecode(self.paths[i])
        if not self.train:
            return torch.from_numpy(read_clip(path, self.spec)), int(self.labels[i])
        position, top, left, flip = _sample_draws(i)
        clip = read_clip(path, self.spec, position, (top, left))
        if self.hflip and flip < 0.5:
            clip = np.ascontiguousarray(clip[..., ::-1])
        return torch.from_numpy(clip), int(self.labels[i])


# --- Cached or streamed splits -------------------------------------------------------------------------------------


def cached_views(train_videos: int, test_videos: int, spec: ClipSpec, budget: int) -> int:
    """How many clips of each training video to cache beside the test videos' centre clips: `TRAIN_VIEWS`, or as
    many as fit in `budget` bytes down to `MIN_TRAIN_VIEWS`; 0 when not even those fit, and the splits stream."""
    fit = (budget // spec.nbytes - test_videos) // max(train_videos, 1)
    return min(TRAIN_VIEWS, fit) if fit >= MIN_TRAIN_VIEWS else 0


def cached_clips(request: LoadRequest, name: str, files: FileSplits, spec: ClipSpec, views: int) -> SplitArrays:
    """The training videos' `views` clips and the test videos' centre clips (`decode_clips`), decoded once and kept
    in `request.cache_dir`; the cache's name changes with the clip spec, `views`, the files (paths, sizes, times),
    the classes and labels, and --skip-bad. Skipped videos are reported once per split."""
    bads = [BadVideos(f"{name} {split}", request.skip_bad) for split in ("train", "test")]
    present = [[path for path in paths if os.path.isfile(path)] for paths in (files.train_files, files.test_files)]
    labelling = repr((files.classes, files.train_labels.tolist(), files.test_labels.tolist())).encode()
    key = fingerprint(present[0]) + fingerprint(present[1], [labelling])
    stem = (
        f"{name}-{spec.frames}x{spec.stride}-{spec.short_side}c{spec.size}-v{views}"
        f"{'-skip' if request.skip_bad else ''}-{key}"
    )

    def build() -> SplitArrays:
        train = decode_clips(files.train_files, files.train_labels, spec, bads[0], request.reporter, views)
        test = decode_clips(files.test_files, files.test_labels, spec, bads[1], request.reporter)
        return SplitArrays(*train, *test, files.classes)

    arrays = cached_arrays(request.cache_dir, stem, build)
    bads[0].report(request.reporter, len(files.train_files), len(arrays.train_labels))
    bads[1].report(request.reporter, len(files.test_files), len(arrays.test_labels))
    return arrays


def probed_videos(
    request: LoadRequest, paths: Sequence[str], labels: np.ndarray, frames: int, bad: BadVideos
) -> tuple[list[str], np.ndarray]:
    """`probe_videos`, its verdict kept in `request.cache_dir` (a small JSON file): probing decodes every video, so
    a later load of the same files (paths, sizes, times) for clips of as many frames does not do it again."""
    present = [path for path in paths if os.path.isfile(path)]
    listed = hashlib.sha256("\0".join(paths).encode()).hexdigest()[:8]
    stem = f"{bad.split.replace(' ', '-')}-probe-{frames}{'-skip' if bad.skip else ''}-{fingerprint(present)}{listed}"
    record = Path(request.cache_dir) / f"{stem}.json"
    try:
        verdict = json.loads(record.read_text())
        kept, reasons = [int(i) for i in verdict["kept"]], [str(r) for r in verdict["reasons"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    else:
        if all(0 <= i < len(paths) for i in kept) and (bad.skip or len(kept) == len(paths)):
            bad.reasons += reasons
            return [paths[i] for i in kept], labels[kept]
    usable, usable_labels = probe_videos(paths, labels, frames, bad, request.reporter)
    position = {path: i for i, path in enumerate(paths)}
    try:
        write_json(record, {"kept": [position[path] for path in usable], "reasons": bad.reasons}, sync=False)
    except OSError:
        pass  # a cache that cannot be written costs the next load a probe, nothing more
    return usable, usable_labels


def streamed_splits(request: LoadRequest, name: str, files: FileSplits, spec: ClipSpec, hflip: bool) -> DataSplits:
    """Both splits read by DataLoader workers, after `probe_videos` has checked (or skipped) every video (or a
    previous load did, `probed_videos`)."""
    splits = []
    for split, paths, labels in (
        ("train", files.train_files, files.train_labels),
        ("test", files.test_files, files.test_labels),
    ):
        bad = BadVideos(f"{name} {split}", request.skip_bad)
        usable, usable_labels = probed_videos(request, paths, labels, spec.frames, bad)
        bad.report(request.reporter, len(paths), len(usable))
        clips = VideoClips(usable, usable_labels, spec, train=split == "train", hflip=hflip)
        splits.append(StreamImages(clips, torch.from_numpy(usable_labels), workers=DECODE_WORKERS))
    return DataSplits(*splits, classes=files.classes)


def video_splits(
    request: LoadRequest, name: str, files: FileSplits, spec: ClipSpec, augment: Augment, fps: float | None = None
) -> DataSplits:
    """The dataset's splits: decoded once into the cache and held as `TensorImages` (training: one of each video's
    cached views at random, and `augment`) when the clips fit in --clip-cache-gib (`cached_views`), else
    streamed (training: random clips and crops, and flips when `augment.hflip`). `fps`: the videos' frame rate
    (None: the first test video's)."""
    for split, paths in (("train", files.train_files), ("test", files.test_files)):
        if not paths:
            raise UserError(f"{name} lists no {split} videos; check its split files or folders")
    budget = CACHE_BUDGET_BYTES if request.clip_cache_gib is None else int(request.clip_cache_gib * 2**30)
    views = cached_views(len(files.train_files), len(files.test_files), spec, budget)
    if not views:
        splits = streamed_splits(request, name, files, spec, augment.hflip)
    else:
        arrays = cached_clips(request, name, files, spec, views)
        splits = DataSplits(
            train=TensorImages(
                torch.from_numpy(arrays.train_images), torch.from_numpy(arrays.train_labels), augment=augment
            ),
            test=TensorImages(torch.from_numpy(arrays.test_images), torch.from_numpy(arrays.test_labels)),
            classes=arrays.classes,
        )
    fps = fps or frame_rate_of(files.test_files[0])
    return dataclasses.replace(splits, video_fps=fps, frame_stride=spec.stride)


def frame_rate_of(path: str | Path) -> float | None:
    """The frame rate a video's container declares, None if it declares none or does not open."""

    def read() -> Any:
        with _open(path) as container:
            stream = _video_stream(container, path)
            return stream.average_rate or stream.guessed_rate

    try:
        rate = _decoding(path, read)
    except UserError:
        return None
    return float(rate) if rate else None
