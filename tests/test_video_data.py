"""Video data: clip sampling, decoding and bad files, UCF101 / HMDB51 / video-folder layouts written here with real
encoded videos, the cached and streamed paths, and the embedded moving-digits dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from dstbench.data import LoadRequest, StreamImages, TensorImages
from dstbench.data import video as video_module
from dstbench.data.sources import DATA_ROOT_ENV
from dstbench.data.video import (
    TRAIN_VIEWS,
    ClipSpec,
    cached_views,
    clip_frame_indices,
    hmdb51_files,
    measure_decode_rate,
    probe_video,
    read_clip,
    read_clips,
    ucf101_files,
    uniform_clip_positions,
    write_video,
)
from dstbench.errors import UserError
from dstbench_plugins import video_datasets
from dstbench_plugins.video_datasets import (
    FRAMES,
    MOVING_DIGITS_CLASSES,
    MOVING_DIGITS_MEAN,
    MOVING_DIGITS_STD,
    NOISE_STD,
    VELOCITIES,
    ensure_moving_digits,
    load_hmdb51,
    load_ucf101,
    load_video_folder,
    moving_digit_clip,
    random_moving_digit,
)

pytest_plugins = ["video_fixtures"]  # the small_moving_digits fixture
LEVEL_STEP = 12  # frame t of a test video is flat grey 12 * t, so a decoded frame tells which frame it was


@pytest.fixture(autouse=True)
def empty_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "data-root"))


def numbered_clip(frames: int, height: int = 24, width: int = 32) -> np.ndarray:
    levels = np.arange(frames, dtype=np.uint8) * LEVEL_STEP
    return np.broadcast_to(levels[None, :, None, None], (3, frames, height, width)).copy()


def write_numbered(path: Path, frames: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".avi":  # UCF101 and HMDB51 ship MPEG-4 part 2 in AVI
        kwargs = {"codec": "mpeg4", "options": {"qscale": "2"}, **kwargs}
    write_video(path, numbered_clip(frames), **kwargs)
    return path


def frame_numbers(clip: np.ndarray) -> list[int]:
    """Which frames of a `numbered_clip` video a decoded clip holds."""
    return [round(level / LEVEL_STEP) for level in clip.astype(float).mean(axis=(0, 2, 3))]


def request(tmp_path: Path, data_dir: Path | None, reporter, **kwargs) -> LoadRequest:
    return LoadRequest(data_dir, False, tmp_path / "cache", reporter, **kwargs)


# --- Clip sampling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_frames, frames, stride, position, expected",
    [
        (100, 8, 2, 0.0, range(0, 15, 2)),  # the first clip
        (100, 8, 2, 0.5, range(43, 58, 2)),  # the centre clip: 42 and 43 frames are left either side
        (100, 8, 2, 1.0, range(85, 100, 2)),  # the last clip ends on the last frame
        (20, 8, 4, 0.5, range(3, 18, 2)),  # 29 frames needed at stride 4: the stride shrinks to 2
        (8, 8, 4, 0.7, range(0, 8)),  # exactly T frames: every frame
        (10, 1, 5, 0.5, range(5, 6)),
    ],
)
def test_clip_frame_indices(num_frames, frames, stride, position, expected):
    assert list(clip_frame_indices(num_frames, frames, stride, position)) == list(expected)


def test_uniform_and_random_clips_stay_inside_the_video():
    positions = uniform_clip_positions(3)
    assert positions[1] == 0.5
    starts = [clip_frame_indices(50, 4, 3, p)[0] for p in positions]
    assert starts == sorted(set(starts))  # evenly spread, in order
    for position in np.random.default_rng(0).random(200):
        num_frames = int(np.random.default_rng(int(position * 1e6)).integers(6, 40))
        indices = clip_frame_indices(num_frames, 6, 4, float(position))
        assert len(indices) == 6 and indices[0] >= 0 and indices[-1] < num_frames


def test_read_clip_layout_dtype_and_frames(tmp_path):
    path = write_numbered(tmp_path / "v.mp4", 20)
    spec = ClipSpec(frames=4, stride=3, size=16, short_side=20)
    clip = read_clip(path, spec)
    assert clip.shape == (3, 4, 16, 16) and clip.dtype == np.uint8 and clip.flags.c_contiguous
    assert frame_numbers(clip) == [5, 8, 11, 14]  # the centre clip
    assert frame_numbers(read_clip(path, spec, position=0.0)) == [0, 3, 6, 9]
    several = read_clips(path, spec, [0.0, 0.5, 1.0])  # one decoding pass
    assert several.shape == (3, 3, 4, 16, 16)
    assert [frame_numbers(clip) for clip in several] == [[0, 3, 6, 9], [5, 8, 11, 14], [10, 13, 16, 19]]
    assert measure_decode_rate([path, path], spec) > 0


def test_crop_position_moves_the_crop(tmp_path):
    clip = np.zeros((3, 4, 24, 48), np.uint8)
    clip[..., 24:] = 200  # the right half is bright
    write_video(tmp_path / "halves.mp4", clip)
    spec = ClipSpec(frames=2, stride=1, size=24, short_side=24)
    left = read_clip(tmp_path / "halves.mp4", spec, crop=(0.5, 0.0))
    right = read_clip(tmp_path / "halves.mp4", spec, crop=(0.5, 1.0))
    assert left.mean() < 20 and right.mean() > 180


def test_short_video_shrinks_the_stride_to_span_it(tmp_path):
    path = write_numbered(tmp_path / "short.avi", 10)
    assert frame_numbers(read_clip(path, ClipSpec(frames=4, stride=5, size=16, short_side=16))) == [0, 3, 6, 9]


# --- Bad files -----------------------------------------------------------------------------------------------------


def damage_packet(path: Path, index: int) -> None:
    """Overwrite the payload of the video's `index`-th packet in place: the file still opens and its first frames
    decode, but FFmpeg's decoder rejects that packet."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    position, size = packets[index]
    data = bytearray(path.read_bytes())
    data[position : position + size] = b"\xff" * size
    path.write_bytes(bytes(data))


def make_bad(folder: Path, kind: str) -> Path:
    """A file that cannot give a 4-frame clip (`cut-short` is an AVI, whose header still counts every frame)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.{'avi' if kind == 'cut-short' else 'mp4'}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a video\n" * 50)
    elif kind == "truncated":
        write_numbered(path, 12)
        path.write_bytes(path.read_bytes()[:600])
    elif kind == "unknown-codec":  # the sample entry 'avc1' renamed: a codec no FFmpeg knows
        write_numbered(path, 12)
        path.write_bytes(path.read_bytes().replace(b"avc1", b"zzzz"))
    elif kind == "too-short":
        write_numbered(path, 3)
    elif kind == "cut-short":  # a download that stopped early: the header says 40 frames, 3 are there
        write_numbered(path, 40)
        with av.open(str(path)) as container:
            fourth = [p.pos for p in container.demux(container.streams.video[0]) if p.size][3]
        path.write_bytes(path.read_bytes()[:fourth])
    elif kind == "damaged":  # its first frames decode, its 10th packet does not
        write_numbered(path, 12)
        damage_packet(path, 9)
    elif kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        write_numbered(path, 12).chmod(0)
    elif kind != "missing":
        raise ValueError(kind)
    return path


BAD_KINDS = [
    "missing",
    "empty",
    "garbage",
    "truncated",
    "unknown-codec",
    "too-short",
    "cut-short",
    "damaged",
    "unreadable",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_video_is_a_user_error_naming_it(tmp_path, kind):
    path = make_bad(tmp_path, kind)
    spec = ClipSpec(frames=4, stride=1, size=16, short_side=16)
    for attempt in (lambda: read_clip(path, spec), lambda: probe_video(path, spec.frames)):
        with pytest.raises(UserError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and "--skip-bad" in message and "\n" not in message
    if kind == "too-short":
        assert "3 frames, fewer than the 4" in message


# --- Layouts -------------------------------------------------------------------------------------------------------


def write_video_folder(root: Path, bad: str | None = None) -> Path:
    """train/{a,b}/ with 3 videos each, test/{a,b}/ with 2; `bad` adds a bad file to train/b/."""
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate("ab"):
            for i in range(count):
                write_numbered(root / split / name / f"{i}.mp4", 8 + 2 * i + label)
    if bad:
        make_bad(root / "train" / "b", bad)
    return root


@pytest.mark.parametrize("budget", [None, 0], ids=["cached", "streamed"])
@pytest.mark.parametrize("kind", BAD_KINDS[1:])  # a folder cannot list a missing file
def test_skip_bad_continues_and_counts(tmp_path, quiet, capsys, monkeypatch, budget, kind):
    if budget is not None:
        monkeypatch.setattr(video_module, "CACHE_BUDGET_BYTES", budget)
    root = write_video_folder(tmp_path / "videos", bad=kind)
    (bad,) = (root / "train" / "b").glob(f"{kind}.*")
    with pytest.raises(UserError, match=str(bad)):
        load_video_folder(request(tmp_path, root, quiet, frames=4))
    splits = load_video_folder(request(tmp_path, root, quiet, frames=4, skip_bad=True))
    assert len(splits.train) == 6 and len(splits.test) == 4 and splits.classes == ("a", "b")
    assert isinstance(splits.train, StreamImages if budget == 0 else TensorImages)
    assert "video-folder train: skipped 1 of 7 videos" in capsys.readouterr().err
    # What is left gives a clip at every place in time: a streamed epoch does not stop at the bad video.
    for _epoch in range(2):
        for batch in splits.train.batches(4, torch.device("cpu"), train=True, generator=torch.Generator()):
            assert batch.images.shape[1:] == (3, 4, 112, 112)


def test_cached_and_streamed_test_clips_are_identical(tmp_path, quiet, monkeypatch):
    root = write_video_folder(tmp_path / "videos")
    load = request(tmp_path, root, quiet, frames=4, frame_stride=2)
    cached = load_video_folder(load)
    monkeypatch.setattr(video_module, "CACHE_BUDGET_BYTES", 0)
    streamed = load_video_folder(load)
    assert isinstance(cached.test, TensorImages) and isinstance(streamed.test, StreamImages)
    streamed.test.workers = 2  # worker processes, as in a run
    batch = next(streamed.test.batches(16, torch.device("cpu"), train=False))
    assert batch.images.shape == cached.test.images.shape == (4, 3, 4, 112, 112)
    assert torch.equal(batch.images, cached.test.images) and torch.equal(batch.labels, cached.test.labels)
    assert frame_numbers(cached.test.images[0].numpy()) == [1, 3, 5, 7]  # the centre clip of 8 frames at stride 2
    # What the corruptions defined on a video's frames need: its frame rate (read from the files here) and the stride.
    assert (cached.video_fps, cached.frame_stride) == (streamed.video_fps, streamed.frame_stride) == (25.0, 2)
    # Training clips are drawn at random places in time: a 12-frame video gives more than one clip.
    train_item = streamed.train.dataset[2]
    assert train_item[0].shape == (3, 4, 112, 112) and train_item[1] == 0
    torch.manual_seed(0)
    assert len({tuple(frame_numbers(streamed.train.dataset[2][0].numpy())) for _ in range(12)}) > 1


def test_streamed_training_clips_do_not_depend_on_the_worker_count(tmp_path, quiet, monkeypatch):
    """--workers is a runtime setting: with the same seed, an epoch's random clips, crops and flips must be the same
    whether one worker process decodes them or several (each worker has its own random stream)."""
    for split, count in (("train", 6), ("test", 1)):
        for i in range(count):
            write_numbered(tmp_path / "videos" / split / "ab"[i % 2] / f"{i}.mp4", 24)
    monkeypatch.setattr(video_module, "CACHE_BUDGET_BYTES", 0)
    train = load_video_folder(request(tmp_path, tmp_path / "videos", quiet, frames=4)).train
    assert isinstance(train, StreamImages)

    def epoch(workers: int) -> list[torch.Tensor]:
        train.workers = workers
        batches = train.batches(2, torch.device("cpu"), train=True, generator=torch.Generator().manual_seed(5))
        return [batch.images for batch in batches]

    one, two = epoch(1), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    positions = {tuple(frame_numbers(clip.numpy())) for images in one for clip in images}
    assert len(positions) > 2  # the clips do lie at random places in the videos


def test_video_folder_reloads_from_the_cache(tmp_path, quiet, monkeypatch):
    root = write_video_folder(tmp_path / "videos")
    first = load_video_folder(request(tmp_path, root, quiet, frames=4))
    monkeypatch.setattr(video_module, "read_clips", None)  # a second load must not decode
    again = load_video_folder(request(tmp_path, root, quiet, frames=4))
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.labels, again.test.labels)


def test_cache_follows_the_classes_not_only_the_files(tmp_path, quiet):
    """A class folder added without videos (or an edited classInd.txt) changes the labels, not the files."""
    root = write_video_folder(tmp_path / "videos")
    first = load_video_folder(request(tmp_path, root, quiet, frames=4))
    assert first.classes == ("a", "b") and first.test.labels.tolist() == [0, 0, 1, 1]
    (root / "train" / "0-new").mkdir()
    again = load_video_folder(request(tmp_path, root, quiet, frames=4))
    assert again.classes == ("0-new", "a", "b") and again.test.labels.tolist() == [1, 1, 2, 2]


def test_streamed_videos_are_probed_once(tmp_path, quiet, capsys, monkeypatch):
    """Probing decodes every video: a second streamed load of the same files reuses the first one's verdict, bad
    videos and their count included, and probes again when a file changes."""
    monkeypatch.setattr(video_module, "CACHE_BUDGET_BYTES", 0)
    root = write_video_folder(tmp_path / "videos", bad="damaged")
    first = load_video_folder(request(tmp_path, root, quiet, frames=4, skip_bad=True))
    assert "skipped 1 of 7" in capsys.readouterr().err
    real_probe = video_module.probe_video
    monkeypatch.setattr(video_module, "probe_video", None)  # a second load must not decode
    again = load_video_folder(request(tmp_path, root, quiet, frames=4, skip_bad=True))
    assert again.train.dataset.paths.tolist() == first.train.dataset.paths.tolist()
    assert torch.equal(again.test.labels, first.test.labels)
    assert "skipped 1 of 7 videos that cannot be used (first: cannot decode video" in capsys.readouterr().err
    with pytest.raises(UserError, match="damaged.mp4"):  # without --skip-bad the verdict is not reused
        monkeypatch.setattr(video_module, "probe_video", real_probe)
        load_video_folder(request(tmp_path, root, quiet, frames=4))
    write_numbered(root / "train" / "b" / "damaged.mp4", 12)  # repaired: probed again, and kept
    assert len(load_video_folder(request(tmp_path, root, quiet, frames=4, skip_bad=True)).train) == 7


def test_cached_training_videos_hold_views_spread_over_time(tmp_path, quiet):
    root = write_video_folder(tmp_path / "videos")  # train/a/0.mp4, the first training video, has 8 frames
    splits = load_video_folder(request(tmp_path, root, quiet, frames=4, frame_stride=1))
    assert splits.train.images.shape == (6, TRAIN_VIEWS, 3, 4, 112, 112) and splits.train.num_views == TRAIN_VIEWS
    views = [frame_numbers(view.numpy()) for view in splits.train.images[0]]
    assert views == [list(clip_frame_indices(8, 4, 1, p)) for p in uniform_clip_positions(TRAIN_VIEWS)]
    assert views == [[0, 1, 2, 3], [1, 2, 3, 4], [3, 4, 5, 6], [4, 5, 6, 7]]
    assert splits.test.images.shape == (4, 3, 4, 112, 112)  # test videos: the centre clip only
    assert frame_numbers(splits.test.images[0].numpy()) == [2, 3, 4, 5]
    # Each training sample of an epoch is one of its own views (here without the crop, to compare them).
    plain = TensorImages(splits.train.images, splits.train.labels)
    batch = next(plain.batches(6, torch.device("cpu"), train=True, generator=torch.Generator().manual_seed(0)))
    for image, i in zip(batch.images, batch.ids.tolist(), strict=True):
        assert any(torch.equal(image, view) for view in splits.train.images[i])


@pytest.mark.parametrize("fit, expected", [(TRAIN_VIEWS + 3, TRAIN_VIEWS), (3, 3), (2, 2), (1.9, 0)])
def test_cache_budget_counts_every_training_view(tmp_path, quiet, fit, expected):
    """--clip-cache-gib is the budget: 4 test clips and 6 training videos' views must fit in it."""
    spec = ClipSpec(frames=4, stride=1, size=112, short_side=112)
    budget = int((4 + 6 * fit + 0.5) * spec.nbytes)  # half a clip to spare: GiB are floats
    assert cached_views(6, 4, spec, budget) == expected
    root = write_video_folder(tmp_path / "videos")
    splits = load_video_folder(request(tmp_path, root, quiet, frames=4, clip_cache_gib=budget / 2**30))
    if expected:
        assert splits.train.images.shape[:2] == (6, expected)
    else:  # one clip per video would give no temporal jitter: stream instead
        assert isinstance(splits.train, StreamImages) and isinstance(splits.test, StreamImages)


UCF_CLASSES = ("ApplyEyeMakeup", "Biking", "HandstandPushups")


def write_ucf101(root: Path) -> Path:
    """Two groups per class; split 1 tests on group 1, split 2 on group 2, as the official lists do."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\r\n" for i, name in enumerate(UCF_CLASSES, 1)))
    for label, name in enumerate(UCF_CLASSES):
        for group in (1, 2):
            write_numbered(root / "UCF-101" / name / f"v_{name}_g0{group}_c01.avi", 8 + label)
    for split in (1, 2):
        train = [f"{name}/v_{name}_g0{3 - split}_c01.avi {label}" for label, name in enumerate(UCF_CLASSES, 1)]
        test = [f"{name}/v_{name}_g0{split}_c01.avi" for name in UCF_CLASSES]
        (lists / f"trainlist0{split}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{split}.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.mark.parametrize("split", [1, 2])
def test_ucf101_official_split_files(tmp_path, quiet, split):
    root = write_ucf101(tmp_path / "UCF101")
    files = ucf101_files(root, split)
    assert files.classes == UCF_CLASSES
    assert [Path(f).name for f in files.test_files] == [f"v_{n}_g0{split}_c01.avi" for n in UCF_CLASSES]
    assert [Path(f).name for f in files.train_files] == [f"v_{n}_g0{3 - split}_c01.avi" for n in UCF_CLASSES]
    assert files.train_labels.tolist() == files.test_labels.tolist() == [0, 1, 2]
    splits = load_ucf101(request(tmp_path, tmp_path, quiet, split=split, frames=4))  # found in its UCF101/ folder
    assert splits.train.images.shape == (3, TRAIN_VIEWS, 3, 4, 112, 112) and splits.train.images.dtype == torch.uint8
    assert splits.test.labels.tolist() == [0, 1, 2]
    assert (splits.video_fps, splits.frame_stride) == (25, 2)  # UCF101's rate, the default stride


def test_ucf101_list_naming_a_missing_video(tmp_path, quiet, capsys):
    root = write_ucf101(tmp_path / "UCF101")
    missing = root / "UCF-101" / "Biking" / "v_Biking_g01_c01.avi"
    missing.unlink()
    with pytest.raises(UserError, match=f"video {missing} does not exist"):
        load_ucf101(request(tmp_path, root, quiet, frames=4))
    splits = load_ucf101(request(tmp_path, root, quiet, frames=4, skip_bad=True))
    assert splits.test.labels.tolist() == [0, 2]
    assert "ucf101 test: skipped 1 of 3 videos" in capsys.readouterr().err


def test_ucf101_label_disagreeing_with_classind_is_named(tmp_path):
    root = write_ucf101(tmp_path / "UCF101")
    trainlist = root / "ucfTrainTestlist" / "trainlist01.txt"
    trainlist.write_text(trainlist.read_text().replace(" 2\n", " 3\n"))
    with pytest.raises(UserError, match=f"{trainlist} line 2 is not"):
        ucf101_files(root, 1)


HMDB_CLASSES = ("brush_hair", "cartwheel")


def write_hmdb51(root: Path) -> Path:
    """Three videos per class; in split N video N is for testing, the one after unused (0), the rest training."""
    for name in HMDB_CLASSES:
        for i in range(3):
            write_numbered(root / "hmdb51_org" / name / f"{name}_v{i}.avi", 8)
        for split in (1, 2, 3):
            marks = {(split - 1) % 3: 2, split % 3: 0, (split + 1) % 3: 1}
            lines = [f"{name}_v{i}.avi {marks[i]} " for i in range(3)]
            (root / "testTrainMulti_7030_splits" / f"{name}_test_split{split}.txt").parent.mkdir(exist_ok=True)
            (root / "testTrainMulti_7030_splits" / f"{name}_test_split{split}.txt").write_text("\n".join(lines))
    return root


@pytest.mark.parametrize("split", [1, 3])
def test_hmdb51_official_split_files(tmp_path, quiet, split):
    root = write_hmdb51(tmp_path / "hmdb")
    files = hmdb51_files(root, split)
    assert files.classes == HMDB_CLASSES
    assert [Path(f).name for f in files.test_files] == [f"{n}_v{split - 1}.avi" for n in HMDB_CLASSES]
    assert [Path(f).name for f in files.train_files] == [f"{n}_v{(split + 1) % 3}.avi" for n in HMDB_CLASSES]
    assert files.train_labels.tolist() == [0, 1]
    splits = load_hmdb51(request(tmp_path, root, quiet, split=split, frames=4))
    assert splits.test.images.shape == (2, 3, 4, 112, 112)


def test_hmdb51_bad_mark_and_empty_split_are_named(tmp_path, quiet):
    root = write_hmdb51(tmp_path / "hmdb")
    split_file = root / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt"
    split_file.write_text("cartwheel_v0.avi 7\n")
    with pytest.raises(UserError, match=f"{split_file} line 1 is not '<video> <0|1|2>'"):
        hmdb51_files(root, 1)
    for name in HMDB_CLASSES:
        (root / "testTrainMulti_7030_splits" / f"{name}_test_split1.txt").write_text(f"{name}_v0.avi 1\n")
    with pytest.raises(UserError, match="hmdb51 lists no test videos"):
        load_hmdb51(request(tmp_path, root, quiet, frames=4))


def test_hmdb51_split_file_missing_for_one_class_is_named(tmp_path):
    """A class whose file of this split is missing would vanish from it, and every later class's label shift."""
    root = write_hmdb51(tmp_path / "hmdb")
    lists = root / "testTrainMulti_7030_splits"
    (lists / "brush_hair_test_split2.txt").unlink()
    assert hmdb51_files(root, 1).classes == HMDB_CLASSES  # the other splits are whole
    with pytest.raises(UserError, match=f"{lists / 'brush_hair_test_split2.txt'} is missing"):
        hmdb51_files(root, 2)


def test_dataset_not_found_on_the_command_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    args = ["run", "--dataset", "ucf101", "--data-dir", str(empty), "--device", "cpu", "--out", str(tmp_path / "o")]
    result = subprocess.run(
        [sys.executable, "-m", "dstbench", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ucf101 not found; looked in: ")
    assert str(empty) in lines[0] and "https://www.crcv.ucf.edu/data/UCF101.php" in lines[0]


# --- moving-digits -------------------------------------------------------------------------------------------------


def test_moving_digits_is_deterministic_h264(tmp_path, quiet, small_moving_digits):
    first = small_moving_digits.files
    second = ensure_moving_digits(tmp_path / "again", quiet, {"train": 32, "test": 16})
    assert len(first.train_files) == 32 and len(first.test_files) == 16
    assert first.train_labels.tolist() == second.train_labels.tolist() == list(range(8)) * 4
    for a, b in zip(first.train_files + first.test_files, second.train_files + second.test_files, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    with av.open(first.test_files[0]) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (32, 32)
        assert sum(1 for _ in container.decode(stream)) == FRAMES


@pytest.mark.parametrize("damage", ["delete", "truncate", "old-version"])
def test_moving_digits_regenerated_when_damaged_or_old(tmp_path, quiet, damage):
    folder, sizes = tmp_path / "md", {"train": 8, "test": 4}
    files = ensure_moving_digits(folder, quiet, sizes)
    victim = Path(files.train_files[5])
    original = victim.read_bytes()
    untouched = Path(files.test_files[0]).stat().st_mtime_ns
    assert Path(ensure_moving_digits(folder, quiet, sizes).test_files[0]).stat().st_mtime_ns == untouched
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(original[: len(original) // 2])
    else:  # a folder the previous generator wrote
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "version": manifest["version"] - 1}))
        victim.write_bytes(b"an older clip")
    ensure_moving_digits(folder, quiet, sizes)
    assert victim.read_bytes() == original
    assert json.loads((folder / "manifest.json").read_text())["sizes"] == sizes


def test_moving_digits_class_is_the_motion_not_the_frame():
    assert len(MOVING_DIGITS_CLASSES) == 8 and len(set(VELOCITIES.values())) == 8
    assert all(max(abs(rows), abs(columns)) == 1 for rows, columns in VELOCITIES.values())  # diagonals too
    pool = np.random.default_rng(0).random((5, 16, 16))
    clips = [random_moving_digit(np.random.default_rng(7), pool, label) for label in range(8)]
    for clip in clips[1:]:  # the same draws: the same first frame, whatever the class
        assert np.array_equal(clip[:, 0], clips[0][:, 0]) and not np.array_equal(clip[:, 1], clips[0][:, 1])
    digit = np.zeros((16, 16))
    digit[3:9, 5:7] = 1
    black, white = np.zeros((32, 32)), np.ones(3)
    for velocity in [(2, 0), (0, -3), (1, 1), (-2, 2)]:
        clip = moving_digit_clip(digit, (30, 4), velocity, white, black)
        for t in (1, 15):  # each frame is the first one shifted, wrapping around the canvas
            assert np.array_equal(clip[:, t], np.roll(clip[:, 0], (t * velocity[0], t * velocity[1]), axis=(1, 2)))


def test_moving_digits_frames_get_fresh_mild_noise():
    pool = np.zeros((1, 16, 16))  # invisible digits (and distractors): what changes over time is the noise
    clip = random_moving_digit(np.random.default_rng(3), pool, 0).astype(float)
    flicker = np.median(clip.std(axis=1))  # per pixel, over time; clipping at black lowers it a little
    assert 0.5 * NOISE_STD * 255 < flicker < 1.2 * NOISE_STD * 255


def test_small_moving_digits_load_through_data_dir_with_training_views(tmp_path, quiet, plugins, small_moving_digits):
    spec = plugins.registry.dataset("moving-digits")
    before = Path(small_moving_digits.files.train_files[0]).stat().st_mtime_ns
    splits = spec.load(request(tmp_path, small_moving_digits.folder, quiet, frames=8))
    assert Path(small_moving_digits.files.train_files[0]).stat().st_mtime_ns == before  # its sizes kept, no rebuild
    assert splits.train.images.shape == (32, TRAIN_VIEWS, 3, 8, 32, 32)
    assert splits.test.images.shape == (16, 3, 8, 32, 32)
    assert not torch.equal(splits.train.images[:, 0], splits.train.images[:, -1])  # 16 frames give distinct views
    full = spec.load(request(tmp_path, small_moving_digits.folder, quiet))  # clips of all 16 frames: views collapse
    assert full.train.images.shape == (32, 3, FRAMES, 32, 32)
    strided = spec.load(request(tmp_path, small_moving_digits.folder, quiet, frames=8, frame_stride=2))
    assert torch.equal(strided.test.images, full.test.images[:, :, 1::2])  # the centre clip: frames 1, 3, ..., 15
    assert (strided.video_fps, strided.frame_stride, full.frame_stride) == (25, 2, 1)
    # Every clip has 16 frames: a stride that cannot fit would shrink to 1 in every video, unlike what was asked.
    with pytest.raises(UserError, match="--frames 16 --frame-stride 2: a clip spans 31 frames; moving-digits"):
        spec.load(request(tmp_path, small_moving_digits.folder, quiet, frame_stride=2))


def test_moving_digits_default_size_through_the_registry(tmp_path, quiet, plugins):
    spec = plugins.registry.dataset("moving-digits")
    splits = spec.load(request(tmp_path, None, quiet))  # generated under the (empty) default data root
    assert splits.train.images.shape == (800, 3, FRAMES, 32, 32) and splits.test.images.shape == (200, 3, 16, 32, 32)
    assert splits.classes == MOVING_DIGITS_CLASSES and splits.test.labels.bincount().tolist() == [25] * 8
    scaled = splits.train.images.float() / 255
    assert scaled.mean(dim=(0, 2, 3, 4)).tolist() == pytest.approx(MOVING_DIGITS_MEAN, abs=2e-3)
    assert scaled.std(dim=(0, 2, 3, 4)).tolist() == pytest.approx(MOVING_DIGITS_STD, abs=2e-3)
    assert (tmp_path / "data-root" / "moving-digits" / "manifest.json").is_file()
    with pytest.raises(UserError, match="--frames 20: moving-digits clips have 16 frames"):
        spec.load(request(tmp_path, None, quiet, frames=20))


def test_moving_digits_registered_as_video():
    specs = []
    video_datasets.register_datasets(specs.append)
    names = {spec.name: spec for spec in specs}
    assert set(names) == {"moving-digits", "ucf101", "hmdb51", "video-folder"}
    assert all(spec.modality == "video" and spec.recipe["frames"] >= 4 for spec in specs)
    assert names["moving-digits"].num_classes == len(MOVING_DIGITS_CLASSES)
