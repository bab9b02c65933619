"""Readers for the formats image datasets come in, shared by the built-in dataset plugin and third-party ones.

Readers return uint8 images in (N, C, H, W) order with int64 labels, and raise `UserError` with a one-line message
naming the file or folder when data is missing, truncated or corrupt. PIL, Hugging Face `datasets` and torchvision
are imported inside the functions that use them, so importing this module costs nothing the CLI would notice.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from dstbench.checkpoint import atomic_write
from dstbench.errors import UserError

if TYPE_CHECKING:
    import datasets
    from PIL import Image

    from dstbench.report import Reporter

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: downloads are not locked
    fcntl = None

DATA_ROOT_ENV = "DSTBENCH_DATA"
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DECODE_CHUNK = 1024  # images decoded between progress updates


class SplitArrays(NamedTuple):
    """A dataset in memory: uint8 (N, C, H, W) images and int64 (N,) labels per split. `classes` may be empty when
    the source does not name them."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


class FileSplits(NamedTuple):
    """A dataset of image files, listed but not decoded: paths and int64 labels per split."""

    train_files: list[str]
    train_labels: np.ndarray
    test_files: list[str]
    test_labels: np.ndarray
    classes: tuple[str, ...]


@contextmanager
def one_at_a_time(root: Path, name: str, reporter: Reporter) -> Iterator[None]:
    """Hold an exclusive lock named `name` under `root/.locks` for the block, so that processes sharing a data root
    (a sweep's parallel runs with --download) download and unpack one at a time; says what it waits for. The lock
    is the operating system's (flock): a process that dies releases it. Without fcntl (Windows), no lock."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = root / ".locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            reporter.info(f"waiting for another dstbench process that downloads {name} into {root}")
            fcntl.flock(file, fcntl.LOCK_EX)
        yield


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# --- Where to look -------------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """Where datasets live when `--data-dir` is not given: $DSTBENCH_DATA, else ~/.cache/dstbench/data. It holds
    one folder per dataset (e.g. `cifar-10-batches-py`, `FashionMNIST/raw`); `--download` fetches into it."""
    return Path(os.environ.get(DATA_ROOT_ENV, "~/.cache/dstbench/data")).expanduser()


def candidate_dirs(data_dir: Path | None, subdirs: Sequence[str], system_dirs: Sequence[Path] = ()) -> list[Path]:
    """The folders to search for a dataset, in order.

    With `--data-dir`: that folder, then its `subdirs`, and nothing else, since the user said where the data is.
    Without: the default data root's `subdirs`, then `system_dirs` (where a distribution package puts the data).
    """
    if data_dir is not None:
        return [data_dir, *(data_dir / sub for sub in subdirs)]
    root = default_data_root()
    return [*(root / sub for sub in subdirs), *system_dirs]


def find_dir(dirs: Iterable[Path], *names: str) -> Path | None:
    """The first of `dirs` that contains every one of `names` (files or folders)."""
    return next((folder for folder in dirs if all((folder / name).exists() for name in names)), None)


def not_found(name: str, looked: Iterable[Path], remedy: str) -> UserError:
    """The error for a dataset found nowhere: '<name> not found; looked in: A, B; <remedy>'."""
    return UserError(f"{name} not found; looked in: {', '.join(map(str, looked))}; {remedy}")


# --- Cache of decoded arrays ---------------------------------------------------------------------------------------


def fingerprint(files: Iterable[str | Path], extra: Iterable[bytes] = ()) -> str:
    """A short hash of the files' paths, sizes and modification times, and of `extra` (e.g. the labels and class
    names that a listing derived from other files): a cache key that changes with the data."""
    digest = hashlib.sha256()
    for file in files:
        stat = os.stat(file)
        digest.update(f"{os.path.abspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for item in extra:
        digest.update(len(item).to_bytes(8, "little") + item)
    return digest.hexdigest()[:16]


def cached_arrays(cache_dir: Path, stem: str, build: Callable[[], SplitArrays]) -> SplitArrays:
    """`build()`'s result, kept in `cache_dir/<stem>.npz`: read from there when present, else built and written
    to a temporary file that is then renamed into place, so an interrupted run never leaves a half-written cache."""
    path = cache_dir / f"{stem}.npz"
    if path.exists():
        with np.load(path) as stored:
            arrays = SplitArrays(*(stored[field] for field in SplitArrays._fields))
        return arrays._replace(classes=tuple(str(name) for name in arrays.classes))
    arrays = build()

    def write(tmp: Path) -> None:
        with tmp.open("wb") as file:  # a file object, since np.savez would add .npz to a name
            np.savez(file, **arrays._replace(classes=np.asarray(arrays.classes, dtype=str))._asdict())

    atomic_write(path, write)
    return arrays


# --- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------------------------------


def find_maybe_gzipped(folder: Path, name: str) -> Path | None:
    """`folder/name` or `folder/name.gz`, whichever is a file."""
    return next((path for path in (folder / name, folder / f"{name}.gz") if path.is_file()), None)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), gzipped when its name ends in .gz, as a uint8 array.

    The header is the magic number 0x0800 + ndim (2049 for labels, 2051 for images), then one big-endian uint32
    size per dimension; the file must hold exactly the bytes the sizes promise.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path} ({describe(exc)}); download it again") from None
    header = 4 * (1 + ndim)
    magic = 0x0800 + ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise UserError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (magic number {magic}); download it again"
        )
    shape = tuple(int.from_bytes(data[4 * d : 4 * d + 4], "big") for d in range(1, ndim + 1))
    if len(data) - header != math.prod(shape):
        raise UserError(
            f"{path} holds {len(data) - header:,} bytes of data but its header promises {math.prod(shape):,} "
            f"(shape {shape}); it is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


# --- CIFAR python-pickle batches -----------------------------------------------------------------------------------


def read_cifar_folder(folder: Path, dataset_class: Any, verify_md5: bool) -> SplitArrays:
    """CIFAR-10 or CIFAR-100 from a folder of python-pickle batches, as in the official archives.

    `dataset_class` is torchvision's `CIFAR10` or `CIFAR100`; its `train_list`, `test_list` and `meta` name the
    files, their md5 sums and the key of the class names. With `verify_md5` every file must match its sum, which is
    right for an unpacked official archive. The meta file is optional (classes are then left unnamed).
    """
    meta = dataset_class.meta
    if verify_md5:
        for name, md5 in [*dataset_class.train_list, *dataset_class.test_list, (meta["filename"], meta["md5"])]:
            _check_md5(folder / name, md5)
    train = [_read_pickle(folder / name) for name, _ in dataset_class.train_list]
    test = [_read_pickle(folder / name) for name, _ in dataset_class.test_list]
    meta_path = folder / meta["filename"]
    names = _read_pickle(meta_path)[meta["key"]] if meta_path.exists() else []
    return SplitArrays(
        *_cifar_batches(train, folder),
        *_cifar_batches(test, folder),
        tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names),
    )


def _check_md5(path: Path, expected: str) -> None:
    if not path.is_file():
        raise UserError(f"{path} is missing; unpack the whole archive again, or pass --download")
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    if actual != expected:
        raise UserError(
            f"{path} has md5 {actual}, expected {expected}; it is corrupt, delete it and unpack the archive again"
        )


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            # The official batches were pickled by Python 2, so their keys load as bytes; decode them.
            entry = pickle.load(file, encoding="bytes")
        return {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
        raise UserError(f"cannot read CIFAR batch {path} ({describe(exc)}); unpack the archive again") from None


def _cifar_batches(entries: list[dict[str, Any]], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `data` is 3072 bytes: the 32x32 red plane, then green, then blue, which is (3, 32, 32) order."""
    try:
        images = np.concatenate([np.asarray(e["data"], np.uint8).reshape(-1, 3, 32, 32) for e in entries])
        labels = np.concatenate([np.asarray(e.get("labels", e.get("fine_labels")), np.int64) for e in entries])
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{folder} holds malformed CIFAR batches ({describe(exc)}); unpack the archive again") from None
    if len(images) != len(labels):
        raise UserError(f"{folder} holds {len(images)} CIFAR images but {len(labels)} labels; unpack the archive again")
    return images, labels


# --- Hugging Face datasets and parquet -----------------------------------------------------------------------------


def find_parquet_splits(folder: Path) -> dict[str, list[str]] | None:
    """The `*.parquet` files under `folder` (searched recursively) whose names contain 'train' and 'test', as
    Hugging Face lays them out (`plain_text/train-00000-of-00001.parquet`); None unless both splits have files."""
    if not folder.is_dir():
        return None
    files = sorted(folder.rglob("*.parquet"))
    splits = {split: [str(file) for file in files if split in file.name] for split in ("train", "test")}
    return splits if all(splits.values()) else None


def load_hf(path: str, where: str, **kwargs: Any) -> datasets.DatasetDict:
    """`datasets.load_dataset(path, **kwargs)` (Hugging Face's cache and offline mode apply), with any failure
    turned into a one-line `UserError` about `where`."""
    import datasets

    try:
        return datasets.load_dataset(path, **kwargs)
    except Exception as exc:  # hub, network, file and schema errors all mean the same to the user
        message = f"cannot load {where} with Hugging Face datasets: {describe(exc)}"
        if _hf_offline() and "data_files" not in kwargs and not Path(path).exists():
            message += (
                f"; Hugging Face's offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so download it once "
                f'where the network is reachable: HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python -c "import datasets; '
                f"datasets.load_dataset('{path}')\" (it is kept in {datasets.config.HF_DATASETS_CACHE})"
            )
        raise UserError(message) from None


def _hf_offline() -> bool:
    import datasets

    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return bool(datasets.config.HF_HUB_OFFLINE) or any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


def hf_arrays(dataset: datasets.DatasetDict, size: int, reporter: Reporter, name: str) -> SplitArrays:
    """The 'train' and 'test' splits of a Hugging Face image dataset, decoded to RGB size x size.

    The image column is 'img' or 'image'; the label column 'label' or 'fine_label' (CIFAR-100). Class names come
    from the label column's `ClassLabel` feature, when it has one.
    """
    if not {"train", "test"} <= set(dataset):
        raise UserError(f"{name} has splits {', '.join(dataset)}; dstbench needs 'train' and 'test'")
    train_images, train_labels = _hf_split(dataset["train"], size, reporter, f"decoding {name} train")
    test_images, test_labels = _hf_split(dataset["test"], size, reporter, f"decoding {name} test")
    label_feature = dataset["train"].features[_column(dataset["train"], ("label", "fine_label"), name)]
    classes = tuple(getattr(label_feature, "names", None) or ())
    return SplitArrays(train_images, train_labels, test_images, test_labels, classes)


def _column(split: datasets.Dataset, choices: Sequence[str], name: str) -> str:
    found = next((column for column in choices if column in split.column_names), None)
    if found is None:
        raise UserError(f"{name} has columns {', '.join(split.column_names)}; expected one of {', '.join(choices)}")
    return found


def _hf_split(
    split: datasets.Dataset, size: int, reporter: Reporter, description: str
) -> tuple[np.ndarray, np.ndarray]:
    image_column = _column(split, ("img", "image"), description)
    label_column = _column(split, ("label", "fine_label"), description)
    images = np.empty((len(split), 3, size, size), np.uint8)
    labels = np.empty(len(split), np.int64)
    with reporter.task(description, total=len(split)) as task:
        for number, batch in enumerate(split.iter(batch_size=DECODE_CHUNK)):
            start = number * DECODE_CHUNK
            for offset, image in enumerate(batch[image_column]):
                images[start + offset] = pil_to_chw(image, size)
            labels[start : start + len(batch[label_column])] = batch[label_column]
            task.advance(len(batch[label_column]))
    return images, labels


# --- Image files ---------------------------------------------------------------------------------------------------


def pil_to_chw(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image as uint8 (3, size, size) RGB, resized (bilinear) only when it is not that size already."""
    from PIL import Image

    image = to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1)


def grey_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grey (PNG, TIFF: mode I;16, or I) as 8-bit grey, scaled by 255/65535 and rounded: PIL's own conversion
    would clip every value above 255 to white."""
    from PIL import Image

    pixels = np.asarray(image).astype(np.float32) / 257
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """A PIL image in 8-bit RGB (16-bit grey through `grey_to_8_bit`)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = grey_to_8_bit(image)
    return image.convert("RGB")


def read_rgb(path: str | Path) -> Image.Image:
    """An image file decoded to RGB; `UserError` naming the file when PIL cannot decode it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot decode image {path} ({describe(exc)}); replace or delete the file") from None


def read_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as uint8 (3, size, size) RGB, resized as `pil_to_chw` does."""
    return pil_to_chw(read_rgb(path), size)


def decode_images(paths: Sequence[str], size: int, reporter: Reporter, description: str) -> np.ndarray:
    """Image files as one uint8 (N, 3, size, size) array, with a progress bar. (Threads do not help: for small
    images Python's per-image work dominates PIL's decoding.)"""
    images = np.empty((len(paths), 3, size, size), np.uint8)
    with reporter.task(description, total=len(paths)) as task:
        for start in range(0, len(paths), DECODE_CHUNK):
            chunk = paths[start : start + DECODE_CHUNK]
            for offset, path in enumerate(chunk):
                images[start + offset] = read_image(path, size)
            task.advance(len(chunk))
    return images


def decode_file_splits(files: FileSplits, size: int, reporter: Reporter, name: str) -> SplitArrays:
    """Both splits of `files` decoded with `decode_images`."""
    return SplitArrays(
        decode_images(files.train_files, size, reporter, f"decoding {name} train"),
        files.train_labels,
        decode_images(files.test_files, size, reporter, f"decoding {name} test"),
        files.test_labels,
        files.classes,
    )


def class_folders(root: Path) -> tuple[str, ...]:
    """The sorted names of the folders in `root`: the classes of a folder-per-class layout."""
    with os.scandir(root) as entries:
        return tuple(sorted(entry.name for entry in entries if entry.is_dir()))


def image_files(folder: str | Path) -> list[str]:
    """The paths of the image files directly in `folder` (known suffixes, any case), sorted."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    return [os.path.join(folder, name) for name in sorted(names)]


def scan_class_folders(root: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The image files of a folder-per-class layout, `root/<class>/*` or `root/<class>/images/*` (Tiny ImageNet's
    train layout), labelled by the class's position in `classes`. A class may lack a folder; a folder that is not
    a class, or no image at all, is an error."""
    strays = sorted(set(class_folders(root)) - set(classes))
    if strays:
        raise UserError(f"{root} has folders that are not classes of the dataset: {', '.join(strays[:5])}")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if (folder / "images").is_dir():
            folder = folder / "images"
        found = image_files(folder) if folder.is_dir() else []
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise UserError(f"{root} holds no images in per-class folders ({root}/<class>/*.png or *.JPEG)")
    return paths, np.asarray(labels, np.int64)


def folder_per_class_files(folder: Path, test_split: str = "test") -> FileSplits:
    """`folder/train/<class>/*` and `folder/<test_split>/<class>/*`; the classes are the train folders."""
    classes = class_folders(folder / "train")
    train_files, train_labels = scan_class_folders(folder / "train", classes)
    test_files, test_labels = scan_class_folders(folder / test_split, classes)
    return FileSplits(train_files, train_labels, test_files, test_labels, classes)


def tiny_imagenet_files(folder: Path) -> FileSplits:
    """Tiny ImageNet's files; the test split is the labelled validation set.

    Classes are the lines of `wnids.txt` (else the sorted train folders). Train images are in
    `train/<wnid>/images/` or `train/<wnid>/`; validation images either as released (`val/images/*` labelled by
    the tab-separated `val/val_annotations.txt`) or sorted into `val/<wnid>/`.
    """
    wnids = folder / "wnids.txt"
    classes = tuple(wnids.read_text().split()) if wnids.is_file() else class_folders(folder / "train")
    train_files, train_labels = scan_class_folders(folder / "train", classes)
    annotations = folder / "val" / "val_annotations.txt"
    if annotations.is_file() and (folder / "val" / "images").is_dir():
        val_files, val_labels = _annotated_files(annotations, classes)
    else:
        val_files, val_labels = scan_class_folders(folder / "val", classes)
    return FileSplits(train_files, train_labels, val_files, val_labels, classes)


def _annotated_files(annotations: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Tiny ImageNet's `val_annotations.txt`: '<file>\\t<wnid>\\t<box>' per line, files in `images/` beside it."""
    index = {wnid: label for label, wnid in enumerate(classes)}
    images = annotations.parent / "images"
    paths, labels = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{annotations} line {number} is not '<file><TAB><wnid>' with a known wnid: {line!r}")
        paths.append(str(images / fields[0]))
        labels.append(index[fields[1]])
    return paths, np.asarray(labels, np.int64)


class ImageFiles(Dataset):
    """Image files read one at a time, for `StreamImages`: item i is (`transform` of the uint8 (3, H, W) RGB image,
    label). PIL decodes, since torchvision's decoders are deprecated as of 0.29.

    The paths live in one bytes array, not a list of strings: forked DataLoader workers then share it, where a list
    of a million objects is copied page by page as their reference counts change. The class is module-level, so
    workers started by spawning can receive it by pickling.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.paths = np.asarray([os.fsencode(path) for path in paths])
        self.labels = np.asarray(labels, np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = np.array(read_rgb(os.fsdecode(self.paths[i])))  # a writable copy, as torch wants
        return self.transform(torch.from_numpy(pixels).permute(2, 0, 1)), int(self.labels[i])
