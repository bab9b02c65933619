"""Released corrupted test sets, evaluated from their published files instead of corrupting on the fly.

`--suite cifar10-c-files --c-dir DIR` (and the others below) scores a model on the very images a benchmark
published. `--download` fetches the published archives into the data root (md5-checked where a sum is published,
resumable, with a progress bar):

  CIFAR-10-C, CIFAR-100-C   DIR or DIR/CIFAR-10-C holds `<corruption>.npy`, uint8 (5·N, 32, 32, 3), severity s in
                            rows (s-1)·N … s·N - 1 in the clean test set's order, and `labels.npy`; memory-mapped.
  Tiny-ImageNet-C           DIR or DIR/Tiny-ImageNet-C holds `<corruption>/<severity>/<wnid>/*.JPEG` (64 px),
                            decoded once into the data root's cache.
  ImageNet-C                DIR or DIR/ImageNet-C holds `<corruption>/<severity>/<wnid>/*.JPEG` (224 px), streamed.
  ImageNet-3DCC             DIR or DIR/ImageNet-3DCC, the same layout, 12 corruptions of Kar et al. (CVPR 2022) that
                            follow the scene's depth; streamed. No on-the-fly version: they need depth maps.

`prepare` finds and checks the files of the selected cells before anything is trained; `released` hands the
evaluator one lazily read cell, so holding every cell of the grid costs no memory. The publishers give an md5 sum
per archive, not per file, so only a download is checked against a sum; unpacked files are checked for shape, type
and labels instead.
"""

from __future__ import annotations

import copy
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
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
from dstbench_plugins.archives import Archive, fetch
from dstbench_plugins.datasets import imagenet_test_transform
from dstbench_plugins.image_c import BENCHMARK, EXTRA, SUBSETS

if TYPE_CHECKING:
    from dstbench.data.loader import Batch

Cell = tuple[str, int]  # (corruption, severity)

CIFAR_C_FILES = ("labels.npy", *(f"{corruption}.npy" for corruption in BENCHMARK + EXTRA))
CIFAR10_C = Archive(
    "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
    "56bf5dcef84df0e2308c6dcbcbbd8499",
    "CIFAR-10-C",
    CIFAR_C_FILES,
)
CIFAR100_C = Archive(
    "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar",
    "11f0ed0f1191edbf9fa23466ae6021d3",
    "CIFAR-100-C",
    CIFAR_C_FILES,
)
TINYIMAGENET_C = (
    Archive(
        "https://zenodo.org/records/8206060/files/Tiny-ImageNet-C.tar",
        "f9c9a9dbdc11469f0b850190f7ad8be1",
        "Tiny-ImageNet-C",
        BENCHMARK,
    ),
    Archive(
        "https://zenodo.org/records/8206060/files/Tiny-ImageNet-C-extra.tar",
        "0db0588d243cf403ef93449ec52b70eb",
        "Tiny-ImageNet-C",
        EXTRA,
    ),
)
# ImageNet-C comes in five archives, by the corruption groups of the paper (the extra four in their own).
IMAGENET_C_GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": EXTRA,
}
IMAGENET_C_MD5 = {
    "noise": "e80562d7f6c3f8834afb1ecf27252745",
    "blur": "2d8e81fdd8e07fef67b9334fa635e45c",
    "weather": "33ffea4db4d93fe4a428c40a6ce0c25d",
    "digital": "89157860d7b10d5797849337ca2e5c03",
    "extra": "d492dfba5fc162d8ec2c3cd8ee672984",
}
IMAGENET_C = tuple(
    Archive(f"https://zenodo.org/records/2235448/files/{group}.tar", IMAGENET_C_MD5[group], "ImageNet-C", holds)
    for group, holds in IMAGENET_C_GROUPS.items()
)
# ImageNet-3DCC (Kar et al., CVPR 2022): one .tar.gz per corruption, no published checksums.
IMAGENET_3DCC_GROUPS = {
    "depth_of_field": ("near_focus", "far_focus"),
    "camera_motion": ("xy_motion_blur", "z_motion_blur"),
    "lighting": ("flash",),
    "weather": ("fog_3d",),
    "noise": ("iso_noise", "color_quant", "low_light"),
    "video": ("bit_error", "h265_abr", "h265_crf"),
}
IMAGENET_3DCC_CORRUPTIONS = tuple(name for group in IMAGENET_3DCC_GROUPS.values() for name in group)
IMAGENET_3DCC = tuple(
    Archive(f"https://datasets.epfl.ch/3dcc/imagenet_3dcc/{name}.tar.gz", None, "ImageNet-3DCC", (name,))
    for name in IMAGENET_3DCC_CORRUPTIONS
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

    def __init__(
        self,
        name: str,
        description: str,
        image_size: int,
        archives: tuple[Archive, ...],
        generated: str | None,
        source: str,
        corruptions: tuple[str, ...] = BENCHMARK + EXTRA,
        subsets: Mapping[str, tuple[str, ...]] = SUBSETS,
    ):
        self.name, self.description, self.image_size = name, description, image_size
        self.archives = archives  # what --download fetches
        self.source = source  # where to get the release, for errors
        self.folder = archives[0].folder  # the folder the release unpacks to, looked for inside --c-dir
        self.generated = generated  # the suite that corrupts on the fly with the same parameters, if any
        self.corruptions, self.subsets = corruptions, subsets
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
        alternative = f"; suite '{self.generated}' corrupts images with the same parameters" if self.generated else ""
        raise UserError(f"suite '{self.name}' evaluates released files and corrupts nothing itself{alternative}")

    @abstractmethod
    def load_cells(
        self, request: SuiteRequest, corruptions: tuple[str, ...], severities: tuple[int, ...]
    ) -> dict[Cell, ImageData]:
        """Find and check the files of these cells; raise UserError naming any that is missing or malformed."""


# --- CIFAR-10-C and CIFAR-100-C: .npy arrays ---------------------------------------------------------------------


class CifarCFiles(ReleasedSuite):
    """CIFAR-10-C or CIFAR-100-C: `<corruption>.npy` and `labels.npy`, rows in the clean test set's order."""

    def __init__(self, name: str, description: str, archive: Archive):
        super().__init__(name, description, 32, (archive,), "cifar-c", archive.url)

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
        (archive,) = self.archives
        needed = ("labels.npy", *(f"{corruption}.npy" for corruption in corruptions))
        dirs = candidate_dirs(request.c_dir, (self.folder,))
        folder = find_dir(dirs, *needed)
        if folder is None and request.download:
            fetch(archive, default_data_root(), request.reporter)
            folder = find_dir([default_data_root() / self.folder], *needed)
        if folder is not None:
            return folder
        partial_folder = find_dir(dirs, "labels.npy")
        if partial_folder is not None:
            missing = next(name for name in needed if not (partial_folder / name).exists())
            raise UserError(
                f"{partial_folder} has no {missing}; unpack the whole {archive.file_name}, leave the corruption "
                f"out with --corruptions, or pass --download"
            )
        raise not_found(
            self.folder,
            dirs,
            f"download {archive.url} (md5 {archive.md5}), unpack it and pass --c-dir, or pass --download",
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


# --- Tiny-ImageNet-C and ImageNet-C: folders of JPEGs -------------------------------------------------------------


class FolderCFiles(ReleasedSuite):
    """`<corruption>/<severity>/<wnid>/*.JPEG`, labelled by the position of the wnid among the dataset's classes
    (sorted wnids when the dataset does not name its classes). A cell's sample ids are its files' positions (class by
    class, files by name); every cell must hold as many images of each class as the others.

    A run on a subset of the test split (`--max-test-samples`) evaluates the files at the subset's positions in
    every cell: the same images in each. For ImageNet, whose validation folders are ordered the same way, they are
    the corrupted versions of the clean subset; for Tiny ImageNet (validation files in annotation order) they are
    a subset of the same size drawn with the same seed."""

    def load_cells(
        self, request: SuiteRequest, corruptions: tuple[str, ...], severities: tuple[int, ...]
    ) -> dict[Cell, ImageData]:
        root = self._find(request, corruptions)
        folders = {(c, s): root / c / str(s) for c in corruptions for s in severities}
        for (corruption, severity), folder in folders.items():
            if not folder.is_dir():
                raise UserError(
                    f"{root} has no folder {corruption}/{severity}; unpack the whole release, leave the "
                    "corruption out with --corruptions, or pass --download"
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
        """The first candidate folder holding every selected corruption's folder, after fetching the archives of
        the missing ones into the data root when allowed; failing that, the first holding any of them (for
        `load_cells` to name what is missing)."""
        dirs = candidate_dirs(request.c_dir, (self.folder,))
        if find_dir(dirs, *corruptions) is None and request.download:
            downloaded = default_data_root() / self.folder
            for archive in self.archives:
                if any(name in corruptions and not (downloaded / name).is_dir() for name in archive.holds):
                    fetch(archive, default_data_root(), request.reporter)
            dirs = [*dirs, downloaded] if downloaded not in dirs else dirs
        found = find_dir(dirs, *corruptions) or next(
            (d for d in dirs if any((d / c).is_dir() for c in corruptions)), None
        )
        if found is None:
            raise not_found(
                self.folder, dirs, f"get it from {self.source}, unpack it and pass --c-dir, or pass --download"
            )
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
        files = ImageFiles(paths, labels.numpy(), self.fit)
        return StreamImages(files, labels[ids], workers=min(8, os.cpu_count() or 1), ids=ids)

    @staticmethod
    def fit(image: torch.Tensor) -> torch.Tensor:
        """A decoded image as the model sees it: ImageNet-C's as it is, if 224x224. (A static method pickles by
        its qualified name, so spawned DataLoader workers can receive it.)"""
        if image.shape[-2:] != (224, 224):
            raise UserError(
                f"an ImageNet-C image is {image.shape[-1]}x{image.shape[-2]}, not 224x224; is --c-dir right?"
            )
        return image


class ImageNet3DCCFiles(ImageNetCFiles):
    """ImageNet-3DCC, streamed like ImageNet-C. Its images are used as they are when 224x224; any other size gets
    the clean validation images' transform (shorter side to 256 px, centre 224 crop), so both see the same view."""

    @staticmethod
    def fit(image: torch.Tensor) -> torch.Tensor:
        return image if image.shape[-2:] == (224, 224) else imagenet_test_transform()(image)


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
            TINYIMAGENET_C,
            "tinyimagenet-c",
            "https://zenodo.org/records/8206060",
        ),
        ImageNetCFiles(
            "imagenet-c-files",
            f"ImageNet-C's released JPEGs, streamed ({SOURCE})",
            224,
            IMAGENET_C,
            "imagenet-c",
            "https://zenodo.org/records/2235448",
        ),
        ImageNet3DCCFiles(
            "imagenet-3dcc-files",
            "ImageNet-3DCC's released JPEGs: 12 corruptions that follow the scene's depth, streamed (Kar et al. 2022)",
            224,
            IMAGENET_3DCC,
            None,
            "https://datasets.epfl.ch/3dcc/index.html",
            corruptions=IMAGENET_3DCC_CORRUPTIONS,
            subsets=IMAGENET_3DCC_GROUPS,
        ),
    ]


@hookimpl
def register_suites(register: Callable[[CorruptionSuite], None]) -> None:
    for suite in suites():
        register(suite)
