"""Built-in datasets: digits (embedded, the default), Fashion-MNIST, CIFAR-10/100, Tiny ImageNet and ImageNet.

Each loader looks in `--data-dir` when given, else in the default data root (`dstbench.data.sources`), and raises
`UserError` naming where it looked and how to get the data. scikit-learn, PIL, Hugging Face `datasets` and
torchvision are imported inside the loaders, so loading this plugin costs the CLI nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dstbench.data import Augment, DatasetSpec, DataSplits, LoadRequest, StreamImages, TensorImages
from dstbench.data.sources import (
    FileSplits,
    ImageFiles,
    SplitArrays,
    cached_arrays,
    candidate_dirs,
    decode_file_splits,
    default_data_root,
    describe,
    find_dir,
    find_maybe_gzipped,
    find_parquet_splits,
    fingerprint,
    folder_per_class_files,
    hf_arrays,
    load_hf,
    not_found,
    one_at_a_time,
    read_cifar_folder,
    read_idx,
    tiny_imagenet_files,
)
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench_plugins.archives import Archive, fetch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Of digits' 1347 training images as load_digits_splits makes them, scaled to [0, 1]; the three channels are equal.
DIGITS_MEAN = (0.3052,) * 3
DIGITS_STD = (0.3236,) * 3

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# In file order: train images, train labels, test images, test labels.
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


def _tensor_splits(arrays: SplitArrays, num_classes: int, augment: Augment, where: str | Path) -> DataSplits:
    """In-memory splits, after checking that the labels fit the dataset (a wrong folder often has more classes)."""
    for labels in (arrays.train_labels, arrays.test_labels):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise UserError(
                f"{where}: labels run {labels.min()}..{labels.max()} but the dataset has {num_classes} classes; "
                f"is this the right data?"
            )

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))

    return DataSplits(
        train=TensorImages(tensor(arrays.train_images), tensor(arrays.train_labels), augment=augment),
        test=TensorImages(tensor(arrays.test_images), tensor(arrays.test_labels)),
        classes=arrays.classes or tuple(str(label) for label in range(num_classes)),
    )


def _cached(
    request: LoadRequest,
    name: str,
    files: list[str],
    build: Callable[[], SplitArrays],
    extra: Iterable[bytes] = (),
) -> SplitArrays:
    return cached_arrays(request.cache_dir, f"{name}-{fingerprint(files, extra)}", build)


def _decoded(request: LoadRequest, name: str, files: FileSplits, size: int) -> SplitArrays:
    """Image files decoded once; later loads read the cached arrays. The key covers the labels and class names
    too, since those come from elsewhere (folder names, wnids.txt, val_annotations.txt) and change on their own."""
    labels = (np.ascontiguousarray(files.train_labels, np.int64), np.ascontiguousarray(files.test_labels, np.int64))
    return _cached(
        request,
        name,
        files.train_files + files.test_files,
        lambda: decode_file_splits(files, size, request.reporter, name),
        extra=[*(array.tobytes() for array in labels), "\0".join(files.classes).encode()],
    )


def _download(request: LoadRequest, name: str, dataset_class: Any) -> None:
    """Fetch with torchvision into the default data root, where the loaders look next."""
    root = default_data_root()
    request.reporter.info(f"downloading {name} to {root}")
    try:
        with one_at_a_time(root, name, request.reporter):  # torchvision skips files already there and checked
            dataset_class(root=str(root), download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError on a bad md5
        raise UserError(f"downloading {name} to {root} failed: {describe(exc)}") from None


# --- digits --------------------------------------------------------------------------------------------------------


def load_digits_splits(request: LoadRequest) -> DataSplits:
    """scikit-learn's 8x8 digits, scaled up to 3x32x32, in a fixed stratified 1347/450 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)  # pixel values run 0..16
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target).long()
    train, test = (
        torch.from_numpy(positions)
        for positions in train_test_split(
            np.arange(len(labels)), test_size=0.25, stratify=digits.target, random_state=0
        )
    )
    return DataSplits(
        # Digits are not mirror-symmetric, so no flips.
        train=TensorImages(images[train].contiguous(), labels[train], augment=Augment(crop_padding=4, hflip=False)),
        test=TensorImages(images[test].contiguous(), labels[test]),
        classes=tuple(str(digit) for digit in range(10)),
    )


# --- Fashion-MNIST -------------------------------------------------------------------------------------------------


def _fashion_files(folder: Path) -> list[Path] | None:
    found = [path for name in FASHION_FILES if (path := find_maybe_gzipped(folder, name))]
    return found if len(found) == len(FASHION_FILES) else None


def load_fashion_mnist(request: LoadRequest) -> DataSplits:
    """Fashion-MNIST's four IDX files, gzipped or not."""
    dirs = candidate_dirs(request.data_dir, ("fashion-mnist", "FashionMNIST/raw"), (DEBIAN_FASHION_DIR,))
    files = next(filter(None, map(_fashion_files, dirs)), None)
    if files is None and request.download:
        from torchvision.datasets import FashionMNIST

        _download(request, "fashion-mnist", FashionMNIST)
        files = _fashion_files(default_data_root() / "FashionMNIST" / "raw")
    if files is None:
        raise not_found(
            "fashion-mnist",
            dirs,
            "install Debian's dataset-fashion-mnist, put the four IDX files in --data-dir, or pass --download",
        )
    splits = []
    for images_file, labels_file in (files[:2], files[2:]):
        images, labels = read_idx(images_file, 3), read_idx(labels_file, 1).astype(np.int64)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise UserError(
                f"{images_file} holds images of shape {images.shape} and {labels_file} {len(labels)} labels; "
                f"expected 28x28 images, one label each"
            )
        splits += [images[:, None], labels]
    return _tensor_splits(
        SplitArrays(*splits, FASHION_CLASSES), 10, Augment(crop_padding=2, hflip=True), files[0].parent
    )


# --- CIFAR-10 and CIFAR-100 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cifar:
    name: str
    num_classes: int
    torchvision_class: str  # CIFAR10 or CIFAR100: its attributes name the archive's folder, files and md5 sums
    hf_name: str  # a Hugging Face copy, for the error message


CIFAR10 = Cifar("cifar10", 10, "CIFAR10", "uoft-cs/cifar10")
CIFAR100 = Cifar("cifar100", 100, "CIFAR100", "uoft-cs/cifar100")
CIFAR_AUGMENT = Augment(crop_padding=4, hflip=True)


def load_cifar(cifar: Cifar, request: LoadRequest) -> DataSplits:
    """CIFAR from `--data-dir hf:<name>`, else from a folder of python-pickle batches, parquet files or
    train/test folders of images, else downloaded with `--download`."""
    hf_name = _hf_name(request.data_dir)
    if hf_name is not None:
        dataset = load_hf(hf_name, where=f"'{hf_name}'")
        cache_files = [entry["filename"] for split in dataset.values() for entry in split.cache_files]
        arrays = _cached(
            request,
            cifar.name,
            cache_files,
            lambda: hf_arrays(dataset, 32, request.reporter, cifar.name),
            extra=[hf_name.encode()],  # an in-memory dataset has no cache files to tell it from another
        )
        return _tensor_splits(arrays, cifar.num_classes, CIFAR_AUGMENT, hf_name)

    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, cifar.torchvision_class)
    dirs = candidate_dirs(request.data_dir, (dataset_class.base_folder, cifar.name))
    found = _read_local_cifar(cifar, dataset_class, dirs, request)
    if found is None and request.download:
        _download(request, cifar.name, dataset_class)
        found = _read_local_cifar(cifar, dataset_class, [default_data_root() / dataset_class.base_folder], request)
    if found is None:
        raise not_found(
            cifar.name,
            dirs,
            f"put the python-pickle folder ({dataset_class.base_folder}) in --data-dir, "
            f"pass --data-dir hf:{cifar.hf_name}, or pass --download",
        )
    arrays, folder = found
    return _tensor_splits(arrays, cifar.num_classes, CIFAR_AUGMENT, folder)


def _hf_name(data_dir: Path | None) -> str | None:
    """'uoft-cs/cifar10' for `--data-dir hf:uoft-cs/cifar10`."""
    text = str(data_dir) if data_dir is not None else ""
    if not text.startswith("hf:"):
        return None
    if not text[len("hf:") :].strip():
        raise UserError("--data-dir hf: needs a Hugging Face dataset name, e.g. hf:uoft-cs/cifar10")
    return text[len("hf:") :]


def _read_local_cifar(
    cifar: Cifar, dataset_class: Any, dirs: list[Path], request: LoadRequest
) -> tuple[SplitArrays, Path] | None:
    """The first layout found, trying every folder for pickles, then parquet, then image folders."""
    first_files = (dataset_class.train_list[0][0], dataset_class.test_list[0][0])
    folder = find_dir(dirs, *first_files)
    if folder is not None:
        # An unpacked official archive must match its md5 sums; a folder of the user's own batches need not.
        return read_cifar_folder(folder, dataset_class, verify_md5=folder.name == dataset_class.base_folder), folder
    for folder in dirs:
        parquet = find_parquet_splits(folder)
        if parquet is not None:
            return _parquet_arrays(request, cifar.name, folder, parquet), folder
    folder = find_dir(dirs, "train", "test")
    if folder is not None:
        return _decoded(request, cifar.name, folder_per_class_files(folder), 32), folder
    return None


def _parquet_arrays(request: LoadRequest, name: str, folder: Path, parquet: dict[str, list[str]]) -> SplitArrays:
    def decode() -> SplitArrays:
        dataset = load_hf("parquet", where=str(folder), data_files=parquet)
        return hf_arrays(dataset, 32, request.reporter, name)

    return _cached(request, name, parquet["train"] + parquet["test"], decode)


# --- Tiny ImageNet -------------------------------------------------------------------------------------------------


TINY_IMAGENET = Archive(
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "90528d7ca1a48142e341f4ef8d21d0de",
    "tiny-imagenet-200",
    ("wnids.txt", "train", "val"),
)


def load_tinyimagenet(request: LoadRequest) -> DataSplits:
    """Tiny ImageNet's 64x64 JPEGs, decoded once into the cache; the test split is the validation set."""
    dirs = candidate_dirs(request.data_dir, ("tiny-imagenet-200", "tinyimagenet"))
    folder = find_dir(dirs, "train", "val")
    if folder is None and request.download:
        fetch(TINY_IMAGENET, default_data_root(), request.reporter)
        folder = find_dir([default_data_root() / TINY_IMAGENET.folder], "train", "val")
    if folder is None:
        raise not_found(
            "tinyimagenet",
            dirs,
            f"download {TINY_IMAGENET.url}, unzip it and pass --data-dir, or pass --download",
        )
    arrays = _decoded(request, "tinyimagenet", tiny_imagenet_files(folder), 64)
    return _tensor_splits(arrays, 200, Augment(crop_padding=8, hflip=True), folder)


# --- ImageNet ------------------------------------------------------------------------------------------------------


def imagenet_test_transform() -> Callable[[torch.Tensor], torch.Tensor]:
    """ImageNet's validation transform: the shorter side to 256 px, then the centre 224 x 224."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])


def load_imagenet(request: LoadRequest) -> DataSplits:
    """ImageNet's JPEGs in class folders, streamed from disk by DataLoader workers."""
    from torchvision.transforms import v2

    dirs = candidate_dirs(request.data_dir, ("imagenet",))
    folder = find_dir(dirs, "train", "val")
    if folder is None:
        raise not_found(
            "imagenet",
            dirs,
            "get ILSVRC2012 from image-net.org, arrange it as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
            "and pass --data-dir",
        )
    files = folder_per_class_files(folder, test_split="val")
    train_transform = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])
    test_transform = imagenet_test_transform()
    workers = min(8, os.cpu_count() or 1)
    train = ImageFiles(files.train_files, files.train_labels, train_transform)
    test = ImageFiles(files.test_files, files.test_labels, test_transform)
    return DataSplits(
        train=StreamImages(train, torch.from_numpy(files.train_labels), workers=workers),
        test=StreamImages(test, torch.from_numpy(files.test_labels), workers=workers),
        classes=files.classes,
    )


# --- Registration --------------------------------------------------------------------------------------------------

CIFAR_RECIPE = {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "multistep"}


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name="digits",
            description="scikit-learn's 8x8 handwritten digits scaled to 32x32; embedded, trains in seconds",
            num_classes=10,
            image_size=32,
            channels=3,
            mean=DIGITS_MEAN,
            std=DIGITS_STD,
            load=load_digits_splits,
            recipe={
                "model": "digits-cnn",
                "epochs": 20,
                "batch_size": 64,
                "lr": 0.05,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "suite": "cifar-c",
            },
            source="embedded (scikit-learn's digits)",
        )
    )
    register(
        DatasetSpec(
            name="fashion-mnist",
            description="Zalando's 28x28 grey images of clothing, 10 classes, 60000 train / 10000 test",
            num_classes=10,
            image_size=28,
            channels=1,
            mean=(0.2860,),
            std=(0.3530,),
            load=load_fashion_mnist,
            recipe={
                "model": "cifar-resnet18",
                "epochs": 30,
                "batch_size": 128,
                "lr": 0.1,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "suite": "cifar-c",
            },
            source="apt-get install dataset-fashion-mnist, the four IDX files in --data-dir, or --download",
        )
    )
    for cifar, mean, std, model in (
        (CIFAR10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-vgg16"),
        (CIFAR100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-resnet34"),
    ):
        register(
            DatasetSpec(
                name=cifar.name,
                description=f"32x32 colour photos, {cifar.num_classes} classes, 50000 train / 10000 test",
                num_classes=cifar.num_classes,
                image_size=32,
                channels=3,
                mean=mean,
                std=std,
                load=partial(load_cifar, cifar),
                recipe={"model": model, **CIFAR_RECIPE, "suite": "cifar-c"},
                source=f"the python-pickle folder in --data-dir, --data-dir hf:{cifar.hf_name}, or --download",
            )
        )
    register(
        DatasetSpec(
            name="tinyimagenet",
            description="64x64 ImageNet subset, 200 classes, 100000 train / 10000 validation (used as test)",
            num_classes=200,
            image_size=64,
            channels=3,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            load=load_tinyimagenet,
            recipe={
                "model": "cifar-efficientnet-b0",
                "epochs": 200,
                "batch_size": 128,
                "lr": 0.1,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "suite": "tinyimagenet-c",
            },
            source="unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip and pass --data-dir, or --download",
        )
    )
    register(
        DatasetSpec(
            name="imagenet",
            description="ILSVRC2012, 1000 classes, 1.28M train / 50000 validation (used as test), streamed",
            num_classes=1000,
            image_size=224,
            channels=3,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            load=load_imagenet,
            recipe={
                "model": "resnet50",
                "epochs": 100,
                "batch_size": 256,
                "lr": 0.1,
                "weight_decay": 1e-4,
                "schedule": "cosine",
                "label_smoothing": 0.1,
                "suite": "imagenet-c",
            },
            source="image-net.org's ILSVRC2012 as train/<wnid>/ and val/<wnid>/ folders, passed with --data-dir",
        )
    )
