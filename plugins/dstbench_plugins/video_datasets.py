"""Built-in video datasets: moving-digits (embedded, generated at first use), UCF101, HMDB51 and any folder of
class folders of videos. Images are uint8 clips (N, 3, T, H, W); decoding, clip sampling, caching and streaming are
`dstbench.data.video`'s, shared by all four.

moving-digits: a scikit-learn 8x8 digit, scaled to 16x16, glides over a 32x32 canvas for 16 frames at 1 or 2 pixels
per frame; the class is its direction, one of eight (the diagonals included). The canvas wraps around (a torus), so
every frame of every class shows the digit at a uniformly random place: no single frame tells the class, only
motion does. What makes it more than a shift detector: a smaller, fainter distractor digit drifts in a random
direction (or stays still) beneath it, the background is a smooth grey field of random contrast, and every frame
gets fresh grey noise. The 3-conv `clip-cnn` reaches about 84% clean accuracy after 3 epochs and 93% after the
recipe's 15 (44% after one), in about 15 s of training on 2 CPU cores: clean accuracy does not saturate, so it can
still separate methods. The clips are real H.264 files (libx264, yuv420p, CRF 18) in the data
root's (or --data-dir's) `moving-digits` folder, so codec corruptions act on a real bitstream.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from dstbench.data import Augment, DatasetSpec, DataSplits, LoadRequest
from dstbench.data.sources import FileSplits, candidate_dirs, default_data_root, describe, find_dir, not_found
from dstbench.data.video import (
    HMDB51_LISTS,
    UCF101_LISTS,
    ClipSpec,
    hmdb51_files,
    ucf101_files,
    video_folder_files,
    video_splits,
    write_video,
)
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from dstbench.report import Reporter

# --- moving-digits -------------------------------------------------------------------------------------------------

MOVING_DIGITS = "moving-digits"
# (rows, columns) per frame at speed 1; the classes in alphabetical order.
VELOCITIES = {
    "down": (1, 0),
    "down-left": (1, -1),
    "down-right": (1, 1),
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "up-left": (-1, -1),
    "up-right": (-1, 1),
}
MOVING_DIGITS_CLASSES = tuple(VELOCITIES)
SPEEDS = (1, 2)  # pixels per frame along each axis the digit moves on
FRAMES, CANVAS, DIGIT_SIDE, DISTRACTOR_SIDE, FPS = 16, 32, 16, 12, 25
NOISE_STD = 0.05  # of the fresh grey noise on every frame, in [0, 1] units
BACKGROUND_MAX, DISTRACTOR_OPACITY = 0.5, 0.6
SPLIT_SIZES = {"train": 800, "test": 200}
DIGIT_POOL_TRAIN = 1400  # of scikit-learn's 1797 digits; test clips show the other 397, digits never seen in training
GENERATOR_SEED = 0
MANIFEST = "manifest.json"
MANIFEST_VERSION = 3  # bump when the generator changes: older folders are then regenerated
# Of the 800 training clips as decoded, scaled to [0, 1].
MOVING_DIGITS_MEAN = (0.2957, 0.2922, 0.2962)
MOVING_DIGITS_STD = (0.1519, 0.1511, 0.1522)


def digit_alpha(digit: np.ndarray, start: tuple[int, int], velocity: tuple[int, int]) -> np.ndarray:
    """(FRAMES, CANVAS, CANVAS) opacity of `digit` (a square in [0, 1], its brightness the opacity), its top-left
    corner at `start` in frame 0, moving `velocity` pixels per frame and wrapping around the edges."""
    layer = np.zeros((CANVAS, CANVAS))
    layer[: len(digit), : len(digit)] = digit
    shifts = [(start[0] + t * velocity[0], start[1] + t * velocity[1]) for t in range(FRAMES)]
    return np.stack([np.roll(layer, shift, axis=(0, 1)) for shift in shifts])


def _over(frames: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """`colour` (3 values) painted with opacity `alpha` (FRAMES, CANVAS, CANVAS) over float frames (3, FRAMES, ...)."""
    return frames * (1 - alpha) + colour[:, None, None, None] * alpha


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def moving_digit_clip(
    digit: np.ndarray, start: tuple[int, int], velocity: tuple[int, int], colour: np.ndarray, background: np.ndarray
) -> np.ndarray:
    """A uint8 (3, FRAMES, CANVAS, CANVAS) clip: `digit` (DIGIT_SIDE x DIGIT_SIDE, in [0, 1], its brightness the
    opacity) in `colour` (3 values in [0, 1]) over a static grey `background` (CANVAS x CANVAS, in [0, 1]), its
    top-left corner at `start` in frame 0 and moving `velocity` pixels per frame, wrapping around the edges."""
    return _to_uint8(
        _over(np.broadcast_to(background, (3, FRAMES, CANVAS, CANVAS)), digit_alpha(digit, start, velocity), colour)
    )


def _resized(squares: np.ndarray, side: int) -> np.ndarray:
    """(..., h, h) images in [0, 1] resized to (..., side, side), bilinearly."""
    flat = torch.from_numpy(squares).float().reshape(-1, 1, *squares.shape[-2:])
    scaled = F.interpolate(flat, size=side, mode="bilinear", align_corners=False).clamp(0, 1)
    return scaled.reshape(*squares.shape[:-2], side, side).numpy()


def _digit_pools(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits scaled to DIGIT_SIDE x DIGIT_SIDE in [0, 1], shuffled and cut into train and test pools."""
    from sklearn.datasets import load_digits

    digits = _resized(load_digits().images / 16, DIGIT_SIDE)  # pixel values run 0..16
    order = rng.permutation(len(digits))
    return digits[order[:DIGIT_POOL_TRAIN]], digits[order[DIGIT_POOL_TRAIN:]]


def random_moving_digit(rng: np.random.Generator, pool: np.ndarray, label: int) -> np.ndarray:
    """A clip of class `label`: a random digit of `pool` (DIGIT_SIDE squares in [0, 1]) moving in the class's
    direction at a random speed from a random start, over a smaller, fainter distractor digit moving in a random
    direction (or still) at a random speed, a smooth background and fresh noise on every frame. The random draws
    do not depend on `label`, so the same `rng` state gives the same first frame for every class."""
    background = _resized(rng.uniform(0, BACKGROUND_MAX, (4, 4)), CANVAS)
    frames = np.broadcast_to(background, (3, FRAMES, CANVAS, CANVAS))
    distractor = _resized(pool[rng.integers(len(pool))], DISTRACTOR_SIDE)
    directions = [(0, 0), *VELOCITIES.values()]  # still as often as in each direction
    drift = np.multiply(directions[rng.integers(len(directions))], rng.choice(SPEEDS))
    alpha = DISTRACTOR_OPACITY * digit_alpha(distractor, tuple(rng.integers(CANVAS, size=2)), tuple(drift))
    frames = _over(frames, alpha, rng.uniform(0.4, 1.0, 3))
    digit, start, speed = pool[rng.integers(len(pool))], tuple(rng.integers(CANVAS, size=2)), rng.choice(SPEEDS)
    velocity = tuple(np.multiply(VELOCITIES[MOVING_DIGITS_CLASSES[label]], speed))
    frames = _over(frames, digit_alpha(digit, start, velocity), rng.uniform(0.45, 1.0, 3))
    return _to_uint8(frames + rng.normal(0, NOISE_STD, (1, FRAMES, CANVAS, CANVAS)))


def generate_moving_digits(folder: Path, reporter: Reporter, sizes: Mapping[str, int] = SPLIT_SIZES) -> None:
    """Write `sizes[split]` clips per split as `folder/<split>/<class>/<index>.mp4` (H.264), classes in turn, then
    `folder/manifest.json` listing each file's label, split and length. Seeded: every generation gives the same
    bytes."""
    rng = np.random.default_rng(GENERATOR_SEED)
    pools = dict(zip(("train", "test"), _digit_pools(rng), strict=True))
    clips = []
    with reporter.task(f"generating {MOVING_DIGITS}", total=sum(sizes.values()), unit="clip") as task:
        for split, count in sizes.items():
            for index in range(count):
                label = index % len(MOVING_DIGITS_CLASSES)
                file = f"{split}/{MOVING_DIGITS_CLASSES[label]}/{index:04d}.mp4"
                (folder / file).parent.mkdir(parents=True, exist_ok=True)
                write_video(folder / file, random_moving_digit(rng, pools[split], label), fps=FPS)
                clips.append({"file": file, "label": label, "split": split, "bytes": (folder / file).stat().st_size})
                task.advance(1)
    manifest = {"version": MANIFEST_VERSION, "sizes": dict(sizes), "classes": MOVING_DIGITS_CLASSES, "clips": clips}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=0))


def moving_digits_files(folder: Path, sizes: Mapping[str, int] = SPLIT_SIZES) -> FileSplits | None:
    """The files `folder/manifest.json` lists, or None unless the manifest is of this version and these sizes and
    every file it lists is there at its full length."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    clips = manifest.get("clips", [])
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("sizes") != dict(sizes):
        return None
    if len(clips) != sum(sizes.values()) or any(_file_size(folder / c["file"]) != c["bytes"] for c in clips):
        return None

    def split_files(split: str) -> tuple[list[str], np.ndarray]:
        chosen = [clip for clip in clips if clip["split"] == split]
        return [str(folder / clip["file"]) for clip in chosen], np.asarray([clip["label"] for clip in chosen], np.int64)

    return FileSplits(*split_files("train"), *split_files("test"), MOVING_DIGITS_CLASSES)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def moving_digits_folder(data_dir: Path | None) -> Path:
    """`--data-dir` when it holds a manifest, else its `moving-digits` folder; by default the data root's."""
    if data_dir is not None and (data_dir / MANIFEST).is_file():
        return data_dir
    return (data_dir or default_data_root()) / MOVING_DIGITS


def manifest_sizes(folder: Path) -> Mapping[str, int]:
    """The split sizes `folder/manifest.json` records when they are valid (a smaller set, as tests make, keeps its
    sizes when regenerated), else `SPLIT_SIZES`."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text()).get("sizes")
    except (OSError, ValueError, AttributeError):
        return SPLIT_SIZES
    valid = isinstance(sizes, dict) and set(sizes) == set(SPLIT_SIZES)
    return sizes if valid and all(isinstance(n, int) and n > 0 for n in sizes.values()) else SPLIT_SIZES


def ensure_moving_digits(folder: Path, reporter: Reporter, sizes: Mapping[str, int] = SPLIT_SIZES) -> FileSplits:
    """moving-digits' files in `folder`, generated first when missing, truncated or of another generator version:
    in a temporary folder beside it, then renamed into place, so an interrupted generation never leaves a
    half-written folder."""
    files = moving_digits_files(folder, sizes)
    if files is not None:
        return files
    reporter.info(f"generating {MOVING_DIGITS} in {folder}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as scratch:
            built = Path(scratch) / folder.name
            generate_moving_digits(built, reporter, sizes)
            if folder.exists():
                folder.rename(Path(scratch) / "replaced")
            try:
                built.rename(folder)
            except OSError:  # another process put its own (identical) copy there first
                pass
    except OSError as exc:
        raise UserError(f"cannot generate {MOVING_DIGITS} in {folder} ({describe(exc)}); is it writable?") from None
    files = moving_digits_files(folder, sizes)
    if files is None:
        raise UserError(f"cannot generate {MOVING_DIGITS} in {folder}; is another process rewriting it?")
    return files


def load_moving_digits(request: LoadRequest) -> DataSplits:
    """The H.264 clips decoded once into the cache. Training crops at random after padding by 2, never flips
    (a flip would swap left and right). A --data-dir holding a manifest keeps the split sizes it records."""
    if request.frames is not None and request.frames > FRAMES:
        raise UserError(f"--frames {request.frames}: {MOVING_DIGITS} clips have {FRAMES} frames; choose at most that")
    spec = ClipSpec(request.frames or FRAMES, request.frame_stride or 1, CANVAS, CANVAS)
    span = (spec.frames - 1) * spec.stride + 1
    if span > FRAMES:  # every clip is this short: the stride would shrink in all of them, unlike what was asked
        raise UserError(
            f"--frames {spec.frames} --frame-stride {spec.stride}: a clip spans {span} frames; {MOVING_DIGITS} "
            f"clips have {FRAMES}, so choose (frames - 1) x stride + 1 <= {FRAMES} (e.g. --frames 8 --frame-stride 2)"
        )
    folder = moving_digits_folder(request.data_dir)
    sizes = manifest_sizes(folder) if request.data_dir is not None else SPLIT_SIZES
    files = ensure_moving_digits(folder, request.reporter, sizes)
    return video_splits(request, MOVING_DIGITS, files, spec, Augment(crop_padding=2, hflip=False), FPS)


# --- UCF101, HMDB51 and folders of videos --------------------------------------------------------------------------

# torchvision's video models' normalisation (Kinetics-400).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# r3d_18's input: frames resized to a short side of 128, cropped to 112. A stride of 2 takes 16 frames from 31, about
# 1.2 s at UCF101's 25 fps and HMDB51's 30: close to torchvision's reference training of r3d_18 (16 frames at 15 fps).
CLIP_FRAMES, CLIP_STRIDE, CLIP_SIZE, CLIP_SHORT_SIDE = 16, 2, 112, 128
UCF101_FPS, HMDB51_FPS = 25, 30  # as released (a few UCF101 videos run at 29.97)
ACTION_AUGMENT = Augment(crop_padding=8, hflip=True)
VIDEO_FOLDER_MAX_CLASSES = 400  # Kinetics-400 fits; the model has this many outputs
UCF101_SOURCE = (
    "download UCF101.rar and the train/test splits from https://www.crcv.ucf.edu/data/UCF101.php, unpack both into "
    f"one folder (UCF-101/, {UCF101_LISTS}/) and pass --data-dir"
)
HMDB51_SOURCE = (
    "download hmdb51_org.rar and test_train_splits.rar from "
    "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/, unpack them (and the per-class "
    f"archives) into one folder (hmdb51_org/<class>/, {HMDB51_LISTS}/) and pass --data-dir"
)
VIDEO_FOLDER_SOURCE = "pass --data-dir holding train/<class>/ and test/<class>/ folders of videos"


def _action_clips(request: LoadRequest) -> ClipSpec:
    return ClipSpec(request.frames or CLIP_FRAMES, request.frame_stride or CLIP_STRIDE, CLIP_SIZE, CLIP_SHORT_SIDE)


def _load_found(
    request: LoadRequest,
    name: str,
    folder: Path,
    files_of: Callable[[Path], FileSplits],
    num_classes: int,
    fps: float | None = None,
) -> DataSplits:
    files = files_of(folder)
    if len(files.classes) > num_classes:
        raise UserError(f"{folder} has {len(files.classes)} classes; {name} allows at most {num_classes}")
    return video_splits(request, name, files, _action_clips(request), ACTION_AUGMENT, fps)


def load_ucf101(request: LoadRequest) -> DataSplits:
    """UCF101's .avi files and official split `request.split`."""
    dirs = candidate_dirs(request.data_dir, ("UCF101", "ucf101"))
    folder = find_dir(dirs, UCF101_LISTS)
    if folder is None:
        raise not_found("ucf101", dirs, UCF101_SOURCE)
    return _load_found(request, "ucf101", folder, lambda found: ucf101_files(found, request.split), 101, UCF101_FPS)


def load_hmdb51(request: LoadRequest) -> DataSplits:
    """HMDB51's .avi files and official split `request.split`."""
    dirs = candidate_dirs(request.data_dir, ("HMDB51", "hmdb51"))
    folder = find_dir(dirs, HMDB51_LISTS)
    if folder is None:
        raise not_found("hmdb51", dirs, HMDB51_SOURCE)
    return _load_found(request, "hmdb51", folder, lambda found: hmdb51_files(found, request.split), 51, HMDB51_FPS)


def load_video_folder(request: LoadRequest) -> DataSplits:
    """Any videos PyAV decodes, in train/<class>/ and test/<class>/ folders."""
    dirs = candidate_dirs(request.data_dir, ("video-folder",))
    folder = find_dir(dirs, "train", "test")
    if folder is None:
        raise not_found("video-folder", dirs, VIDEO_FOLDER_SOURCE)
    return _load_found(request, "video-folder", folder, video_folder_files, VIDEO_FOLDER_MAX_CLASSES)


# --- Registration --------------------------------------------------------------------------------------------------

ACTION_RECIPE = {
    "model": "r3d_18",
    "frames": CLIP_FRAMES,
    "epochs": 50,
    "batch_size": 32,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "suite": "video-c",
}


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name=MOVING_DIGITS,
            description="a digit gliding over a 32x32 canvas past a distractor, class = its direction (8); H.264",
            num_classes=len(MOVING_DIGITS_CLASSES),
            image_size=CANVAS,
            channels=3,
            mean=MOVING_DIGITS_MEAN,
            std=MOVING_DIGITS_STD,
            load=load_moving_digits,
            modality="video",
            recipe={
                "model": "clip-cnn",
                "frames": FRAMES,
                "epochs": 15,
                "batch_size": 32,
                "lr": 0.05,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "suite": "video-c",
            },
            source="embedded: generated from scikit-learn's digits at first use",
        )
    )
    for name, description, num_classes, load, source in (
        ("ucf101", "UCF101 action videos, 101 classes, official splits 1-3", 101, load_ucf101, UCF101_SOURCE),
        ("hmdb51", "HMDB51 action videos, 51 classes, official splits 1-3", 51, load_hmdb51, HMDB51_SOURCE),
        (
            "video-folder",
            f"videos in train/<class>/ and test/<class>/ folders, up to {VIDEO_FOLDER_MAX_CLASSES} classes",
            VIDEO_FOLDER_MAX_CLASSES,
            load_video_folder,
            VIDEO_FOLDER_SOURCE,
        ),
    ):
        register(
            DatasetSpec(
                name=name,
                description=description,
                num_classes=num_classes,
                image_size=CLIP_SIZE,
                channels=3,
                mean=KINETICS_MEAN,
                std=KINETICS_STD,
                load=load,
                modality="video",
                recipe=dict(ACTION_RECIPE),
                source=source,
            )
        )
