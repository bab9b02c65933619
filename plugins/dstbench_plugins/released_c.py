"""The released corrupted test sets of Hendrycks & Dietterich (ICLR 2019), evaluated from their published files.

`--suite cifar10-c-files --c-dir DIR` (and `cifar100-c-files`, `tinyimagenet-c-files`, `imagenet-c-files`) scores a
model on the very images the benchmark published instead of corrupting the clean test set on the fly:

  CIFAR-10-C, CIFAR-100-C   DIR or DIR/CIFAR-10-C holds `<corruption>.npy`, uint8 (5·N, 32, 32, 3), severity s in
                            rows (s-1)·N … s·N - 1 in the clean test set's order, and `labels.npy`; memory-mapped.
                            `--download` fetches the Zenodo archive (records 2535967 and 3555552) into the data root.
  Tiny-ImageNet-C           DIR or DIR/Tiny-ImageNet-C holds `<corruption>/<severity>/<wnid>/*.JPEG` (64 px),
                            decoded once into the data root's cache.
  ImageNet-C                DIR or DIR/ImageNet-C holds `<corruption>/<severity>/<wnid>/*.JPEG` (224 px), streamed.

`prepare` finds and checks the files of the selected cells before anything is trained; `released` hands the
evaluator one lazily read cell, so holding every cell of the grid costs no memory. Zenodo publishes an md5 sum per
archive, not per file, so only a download is checked against a sum; unpacked files are checked for shape, type and
labels instead.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import torch

from dstbench.corruption import CorruptionSuite, SampleRNG, SuiteRequest
from dstbench.data import ImageData, StreamImages, TensorImages
from dstbench.data.sources import (
    ImageFiles,
    SplitArrays,
    cached_arrays,
    candidate_dirs,
    class_folders,
    decode_images,
    default_data_root,
    describe,
    find_dir,
    fingerprint,
    not_found,
    scan_class_folders,
)
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench_plugins.image_c import BENCHMARK, EXTRA, SUBSETS

if TYPE_CHECKING:
    from dstbench.data.loader import Batch
    from dstbench.report import Reporter

Cell = tuple[str, int]  # (corruption, severity)

DOWNLOAD_CHUNK = 1 << 20  # bytes read between progress updates
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Archive:
    """A published archive: where to fetch it, its md5 sum, and the folder it unpacks to."""

    url: str
    md5: str
    folder: str


CIFAR10_C = Archive(
    "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar", "56bf5dcef84df0e2308c6dcbcbbd8499", "CIFAR-10-C"
)
CIFAR100_C = Archive(
    "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar", "11f0ed0f1191edbf9fa23466ae6021d3", "CIFAR-100-C"
)


class ReleasedImages(ImageData):
    """One released cell, read only while it is evaluated: `read(ids)` returns the uint8 (N, C, H, W) images of
    these sample ids. The evaluator asks for every cell before it starts, so cells must not hold pixels."""

    def __init__(self, labels: torch.Tensor, ids: torch.Tensor, read: Callable[[torch.Tensor], torch.Tensor]):
        self._labels, self.ids, self.read = labels, ids, read

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def subset(self, positions: torch.Tensor) -> ReleasedImages:
        return ReleasedImages(self._labels[positions], self.ids[positions], self.read)

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        images = TensorImages(self.read(self.ids), self._labels, ids=self.ids)
        return images.batches(batch_size, device, train=train, generator=generator, shard=shard)


class ReleasedSuite(CorruptionSuite):
    """A suite of published files: `prepare` returns a copy holding the selected cells, `released` hands them out."""

    corruptions = BENCHMARK + EXTRA
    subsets = SUBSETS

    def __init__(self, name: str, description: str, image_size: int, folder: str, generated: str):
        self.name, self.description, self.image_size = name, description, image_size
        self.folder = folder  # the folder the release unpacks to, looked for inside --c-dir
        self.generated = generated  # the suite that corrupts on the fly with the same parameters
        self.resolution = f"{image_size} px (released files)"
        self.cells: dict[Cell, ImageData] = {}

    def check_input(self, channels: int, size: int, corruptions: Sequence[str] | None = None) -> None:
        if (channels, size) != (3, self.image_size):
            raise UserError(
                f"suite '{self.name}' holds {self.image_size}x{self.image_size} RGB images, not {size} px ones with "
                f"{channels} channel(s)"
            )

    def prepare(self, request: SuiteRequest) -> ReleasedSuite:
        prepared = copy.copy(self)
        corruptions = request.corruptions or self.corruptions
        prepared.cells = self.load_cells(request, corruptions, request.severities or self.severities)
        return prepared

    def released(self, corruption: str, severity: int) -> ImageData:
        if (corruption, severity) not in self.cells:
            raise RuntimeError(f"suite '{self.name}' was not prepared for {corruption} at severity {severity}")
        return self.cells[(corruption, severity)]

    def corrupt(self, images: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        raise UserError(
            f"suite '{self.name}' evaluates released files and corrupts nothing itself; "
            f"suite '{self.generated}' corrupts images with the same parameters"
        )

    @abstractmethod
    def load_cells(
        self, request: SuiteRequest, corruptions: tuple[str, ...], severities: tuple[int, ...]
    ) -> dict[Cell, ImageData]:
        """Find and check the files of these cells; raise UserError naming any that is missing or malformed."""


# --- CIFAR-10-C and CIFAR-100-C: .npy arrays ---------------------------------------------------------------------


class CifarCFiles(ReleasedSuite):
    """CIFAR-10-C or CIFAR-100-C: `<corruption>.npy` and `labels.npy`, rows in the clean test set's order."""

    def __init__(self, name: str, description: str, archive: Archive):
        super().__init__(name, description, 32, archive.folder, "cifar-c")
        self.archive = archive

    def load_cells(
        self, request: SuiteRequest, corruptions: tuple[str, ...], severities: tuple[int, ...]
    ) -> dict[Cell, ImageData]:
        folder = self._find(request, corruptions)
        labels_file = folder / "labels.npy"
        labels = _load_npy(labels_file)
        per_severity = self._check_labels(labels_file, labels, request, severities)
        cells: dict[Cell, ImageData] = {}
        for corruption in corruptions:
            path = folder / f"{corruption}.npy"
            images = _load_npy(path)
            expected = (len(labels), 32, 32, 3)
            if images.shape != expected or images.dtype != np.uint8:
                raise UserError(
                    f"{path} holds {images.dtype} {images.shape}; expected uint8 {expected} "
                    f"({len(self.severities)} severities x {per_severity} images, height, width, RGB)"
                )
            for severity in severities:
                read = partial(_read_rows, images, (severity - 1) * per_severity)
                cells[(corruption, severity)] = ReleasedImages(request.test_labels, request.test_ids, read)
        return cells

    def _find(self, request: SuiteRequest, corruptions: tuple[str, ...]) -> Path:
        """The folder holding `labels.npy` and every selected corruption's file, downloaded when allowed."""
        needed = ("labels.npy", *(f"{corruption}.npy" for corruption in corruptions))
        dirs = candidate_dirs(request.c_dir, (self.folder,))
        folder = find_dir(dirs, *needed)
        if folder is None and request.download:
            fetch(self.archive, default_data_root(), request.reporter)
            folder = find_dir([default_data_root() / self.folder], *needed)
        if folder is not None:
            return folder
        partial_folder = find_dir(dirs, "labels.npy")
        if partial_folder is not None:
            missing = next(name for name in needed if not (partial_folder / name).exists())
            raise UserError(
                f"{partial_folder} has no {missing}; unpack the whole {self.archive.folder}.tar, leave the corruption "
                f"out with --corruptions, or pass --download"
            )
        raise not_found(
            self.folder,
            dirs,
            f"download {self.archive.url} (md5 {self.archive.md5}), unpack it and pass --c-dir, or pass --download",
        )

    def _check_labels(self, path: Path, labels: np.ndarray, request: SuiteRequest, severities: tuple[int, ...]) -> int:
        """The number of images per severity, after checking that the released labels of the evaluated samples
        are the clean test labels at every selected severity."""
        count = len(self.severities)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) % count:
            raise UserError(
                f"{path} holds {labels.dtype} {labels.shape}; expected integer labels, {count} severities' worth"
            )
        per_severity = len(labels) // count
        ids = request.test_ids.numpy()
        if len(ids) and ids.max() >= per_severity:
            raise UserError(
                f"{path} labels {per_severity} images per severity, but the test split has at least {ids.max() + 1}; "
                f"is --c-dir the corrupted version of dataset '{request.dataset}'?"
            )
        for severity in severities:
            released = labels[(severity - 1) * per_severity + ids]
            wrong = int(np.count_nonzero(released != request.test_labels.numpy()))
            if wrong:
                raise UserError(
                    f"{path}: at severity {severity}, {wrong} of {len(ids)} labels differ from the test split of "
                    f"'{request.dataset}'; the files are of another dataset or in another order"
                )
        return per_severity


def _load_npy(path: Path) -> np.ndarray:
    """A .npy file, memory-mapped; UserError naming the file when it is truncated or not a .npy file."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"cannot read {path} ({describe(exc)}); it is truncated or corrupt, download it again"
        ) from None


def _read_rows(images: np.ndarray, offset: int, ids: torch.Tensor) -> torch.Tensor:
    """Rows offset + ids of an (N, H, W, C) array as uint8 (len(ids), C, H, W)."""
    rows = np.ascontiguousarray(images[offset + ids.numpy()])
    return torch.from_numpy(rows).permute(0, 3, 1, 2).contiguous()


# --- Downloads ---------------------------------------------------------------------------------------------------


def fetch(archive: Archive, root: Path, reporter: Reporter) -> None:
    """Download `archive` into `root` (resuming a broken download from its `.part` file), check its md5 sum and
    unpack it there. The archive is deleted once unpacked."""
    tar = root / PurePosixPath(urllib.parse.urlparse(archive.url).path).name
    if tar.exists():  # an earlier unpacking was interrupted, or someone put a file there: checked, never deleted
        actual = md5sum(tar)
        if actual != archive.md5:
            raise UserError(
                f"{tar} has md5 {actual}, not {archive.md5} of {archive.url}: it is another or a damaged file; "
                "move it away and run again"
            )
    else:
        part = tar.with_name(f"{tar.name}.part")
        root.mkdir(parents=True, exist_ok=True)
        reporter.info(f"downloading {archive.url} into {root}")
        download(archive.url, part, reporter)
        actual = md5sum(part)
        if actual != archive.md5:
            part.unlink()
            raise UserError(
                f"{archive.url} arrived with md5 {actual}, expected {archive.md5}; the download was deleted, "
                "run again to download it afresh"
            )
        os.replace(part, tar)
    unpack(tar, root, archive.folder, reporter)
    tar.unlink()


def download(url: str, part: Path, reporter: Reporter) -> None:
    """Fetch `url` into `part`, continuing after the bytes already there (HTTP Range) when the server allows it."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.status != 206:  # the server sends the whole file
                start = 0
            elif not (sent := response.headers.get("Content-Range", "")).startswith(f"bytes {start}-"):
                raise UserError(
                    f"{url} answered a resume from byte {start:,} with {sent or 'no Content-Range'!r}; delete {part} "
                    "and run again"
                )
            length = int(response.headers.get("Content-Length", -1))
            received = _receive(response, part, start, length, reporter)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete
            return
        raise UserError(f"downloading {url} failed ({describe(exc)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"downloading {url} failed ({describe(exc)}); run again to resume") from None
    if length >= 0 and received != length:
        raise UserError(
            f"downloading {url} broke off after {start + received:,} of {start + length:,} bytes; run again to resume"
        )


def _receive(response: http.client.HTTPResponse, part: Path, start: int, length: int, reporter: Reporter) -> int:
    """Append the response body to `part` from byte `start` on, with a progress bar; the bytes received."""
    received = 0
    description = f"downloading {part.name.removesuffix('.part')}"
    with open(part, "ab" if start else "wb") as file, reporter.task(description, start + max(length, 0), "B") as task:
        task.advance(start)
        while chunk := response.read(DOWNLOAD_CHUNK):
            file.write(chunk)
            received += len(chunk)
            task.advance(len(chunk))
    return received


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(DOWNLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(tar: Path, root: Path, folder: str, reporter: Reporter) -> None:
    """Extract `tar` in a scratch folder inside `root`, then move the files of its `folder` into `root/folder`, so an
    interrupted extraction leaves no half-unpacked folder. Members that are links, devices or would land outside
    the scratch folder are refused."""
    reporter.info(f"unpacking {tar} into {root / folder}")
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{folder}.") as scratch:
        try:
            with tarfile.open(tar) as archive:
                members = [_checked_member(member, tar) for member in archive.getmembers()]
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(scratch, members=members, **extra)
        except (OSError, tarfile.TarError) as exc:
            raise UserError(f"cannot unpack {tar} ({describe(exc)}); delete it and download it again") from None
        unpacked = Path(scratch) / folder
        if not unpacked.is_dir():
            raise UserError(f"{tar} holds no folder {folder}; is it the right archive?")
        (root / folder).mkdir(exist_ok=True)
        for entry in unpacked.iterdir():
            os.replace(entry, root / folder / entry.name)


def _checked_member(member: tarfile.TarInfo, tar: Path) -> tarfile.TarInfo:
    path = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()) or path.is_absolute() or ".." in path.parts:
        raise UserError(f"{tar} holds '{member.name}', which is not a plain file inside the archive; refusing it")
    return member


# --- Tiny-ImageNet-C and ImageNet-C: folders of JPEGs -------------------------------------------------------------


class FolderCFiles(ReleasedSuite):
    """`<corruption>/<severity>/<wnid>/*.JPEG`, labelled by the position of the wnid among the dataset's classes
    (sorted wnids when the dataset does not name its classes). A cell's sample ids are its files' positions (class by
    class, files by name); every cell must hold as many images of each class as the others.

    A run on a subset of the test split (`--max-test-samples`) evaluates the files at the subset's positions in
    every cell: the same images in each. For ImageNet, whose validation folders are ordered the same way, they are
    the corrupted versions of the clean subset; for Tiny ImageNet (validation files in annotation order) they are
    a subset of the same size drawn with the same seed."""

    def __init__(self, name: str, description: str, image_size: int, folder: str, generated: str, source: str):
        super().__init__(name, description, image_size, folder, generated)
        self.source = source  # where to get the release, for errors

    def load_cells(
        self, request: SuiteRequest, corruptions: tuple[str, ...], severities: tuple[int, ...]
    ) -> dict[Cell, ImageData]:
        root = self._find(request, corruptions)
        folders = {(c, s): root / c / str(s) for c in corruptions for s in severities}
        for (corruption, severity), folder in folders.items():
            if not folder.is_dir():
                raise UserError(
                    f"{root} has no folder {corruption}/{severity}; unpack the whole release, or leave the "
                    "corruption out with --corruptions"
                )
        classes = request.classes or class_folders(next(iter(folders.values())))
        cells: dict[Cell, ImageData] = {}
        first: tuple[Path, np.ndarray] | None = None
        for cell, folder in folders.items():
            paths, labels = scan_class_folders(folder, classes)
            per_class = np.bincount(labels, minlength=len(classes))
            first = first or (folder, per_class)
            if not np.array_equal(per_class, first[1]):
                k = int(np.flatnonzero(per_class != first[1])[0])
                raise UserError(
                    f"{folder} holds {per_class[k]} images of class {classes[k]}, where {first[0]} holds "
                    f"{first[1][k]}; is the release fully unpacked?"
                )
            ids = _evaluated(request, len(paths), folder)
            cells[cell] = self.cell(request, cell, paths, torch.from_numpy(labels), ids)
        return cells

    def _find(self, request: SuiteRequest, corruptions: tuple[str, ...]) -> Path:
        """The first candidate folder holding a folder of any selected corruption."""
        dirs = candidate_dirs(request.c_dir, (self.folder,))
        found = next((d for d in dirs if any((d / c).is_dir() for c in corruptions)), None)
        if found is None:
            raise not_found(self.folder, dirs, f"get it from {self.source}, unpack it and pass --c-dir")
        return found

    @abstractmethod
    def cell(
        self, request: SuiteRequest, cell: Cell, paths: list[str], labels: torch.Tensor, ids: torch.Tensor
    ) -> ImageData:
        """The images of one cell's files (labelled `labels`) at positions `ids`."""


def _evaluated(request: SuiteRequest, count: int, folder: Path) -> torch.Tensor:
    """The positions among a cell's `count` files to evaluate: all, or those of the run's test subset."""
    ids = request.test_ids
    if not 0 < len(ids) < count:
        return torch.arange(count)
    if ids.max() >= count:
        raise UserError(
            f"{folder} holds {count} images, but the test split has at least {int(ids.max()) + 1}; is --c-dir the "
            f"corrupted version of dataset '{request.dataset}'?"
        )
    return ids


class TinyImageNetCFiles(FolderCFiles):
    """Each cell decoded once (with a progress bar, while preparing) into the data root's cache."""

    def cell(
        self, request: SuiteRequest, cell: Cell, paths: list[str], labels: torch.Tensor, ids: torch.Tensor
    ) -> ImageData:
        from dstbench.runner import cache_dir

        cache, stem = cache_dir(), f"{self.name}-{cell[0]}-{cell[1]}-{fingerprint(paths)}"

        def decode() -> SplitArrays:  # the cell is the test split of the cache helper's unit
            images = decode_images(
                paths, self.image_size, request.reporter, f"decoding {self.name} {cell[0]} {cell[1]}"
            )
            empty = np.empty((0, *images.shape[1:]), np.uint8)
            return SplitArrays(empty, np.empty(0, np.int64), images, labels.numpy(), ())

        if not (cache / f"{stem}.npz").exists():  # decode now rather than in the middle of the evaluation
            cached_arrays(cache, stem, decode)

        def read(ids: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(cached_arrays(cache, stem, decode).test_images[ids.numpy()])

        return ReleasedImages(labels[ids], ids, read)


class ImageNetCFiles(FolderCFiles):
    """Each cell streamed by DataLoader workers; the released images are already resized and cropped to 224 px."""

    def cell(
        self, request: SuiteRequest, cell: Cell, paths: list[str], labels: torch.Tensor, ids: torch.Tensor
    ) -> ImageData:
        files = ImageFiles(paths, labels.numpy(), _released_224)
        return StreamImages(files, labels[ids], workers=min(8, os.cpu_count() or 1), ids=ids)


def _released_224(image: torch.Tensor) -> torch.Tensor:
    """The decoded image as it is (module-level, so spawned DataLoader workers can unpickle it), if 224x224."""
    if image.shape[-2:] != (224, 224):
        raise UserError(f"an ImageNet-C image is {image.shape[-1]}x{image.shape[-2]}, not 224x224; is --c-dir right?")
    return image


# --- Registration ------------------------------------------------------------------------------------------------

SOURCE = "Hendrycks & Dietterich 2019"


def suites() -> list[ReleasedSuite]:
    return [
        CifarCFiles("cifar10-c-files", f"CIFAR-10-C's released .npy files, 19 corruptions ({SOURCE})", CIFAR10_C),
        CifarCFiles("cifar100-c-files", f"CIFAR-100-C's released .npy files, 19 corruptions ({SOURCE})", CIFAR100_C),
        TinyImageNetCFiles(
            "tinyimagenet-c-files",
            f"Tiny-ImageNet-C's released JPEGs, decoded once into the cache ({SOURCE})",
            64,
            "Tiny-ImageNet-C",
            "tinyimagenet-c",
            "https://zenodo.org/records/2536630",
        ),
        ImageNetCFiles(
            "imagenet-c-files",
            f"ImageNet-C's released JPEGs, streamed ({SOURCE})",
            224,
            "ImageNet-C",
            "imagenet-c",
            "https://zenodo.org/records/2235448",
        ),
    ]


@hookimpl
def register_suites(register: Callable[[CorruptionSuite], None]) -> None:
    for suite in suites():
        register(suite)
