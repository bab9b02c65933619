"""The built-in datasets: the embedded digits, Fashion-MNIST from Debian's package, and every other format from
fixtures written here in the real layouts. Hugging Face runs offline (conftest) with its cache under tmp_path."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dstbench.data import DatasetSpec, LoadRequest
from dstbench.data.sources import DATA_ROOT_ENV, read_idx
from dstbench.errors import UserError
from dstbench_plugins import datasets as builtin

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _specs() -> dict[str, DatasetSpec]:
    specs: list[DatasetSpec] = []
    builtin.register_datasets(specs.append)
    return {spec.name: spec for spec in specs}


SPECS = _specs()


@pytest.fixture(autouse=True)
def empty_data_root(tmp_path, monkeypatch):
    """The default data root is an empty folder, so nothing on this machine but Debian's package is found."""
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "data-root"))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")


def load(name: str, data_dir: Path | str | None, cache_dir: Path, quiet, download: bool = False):
    request = LoadRequest(Path(data_dir) if data_dir is not None else None, download, cache_dir, quiet)
    return SPECS[name].load(request)


def user_error(name: str, data_dir: Path | str | None, tmp_path: Path, quiet) -> str:
    with pytest.raises(UserError) as caught:
        load(name, data_dir, tmp_path / "cache", quiet)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_plugin_import_leaves_heavy_libraries_alone():
    heavy = ("datasets", "PIL", "sklearn", "torchvision")
    code = f"import sys, dstbench_plugins.datasets; print([m for m in {heavy!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


def test_registered_specs_are_complete():
    assert set(SPECS) == {"digits", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet", "imagenet"}
    for spec in SPECS.values():
        assert len(spec.mean) == len(spec.std) == spec.channels
        assert {"model", "epochs", "batch_size", "lr", "suite"} <= set(spec.recipe)
        assert spec.source and "\n" not in spec.source


# --- digits --------------------------------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_stratified(tmp_path, quiet):
    first, second = (load("digits", None, tmp_path, quiet) for _ in range(2))
    assert (len(first.train), len(first.test)) == (1347, 450)
    assert first.train.images.shape == (1347, 3, 32, 32) and first.train.images.dtype == torch.uint8
    assert first.train.images.is_contiguous() and first.train.labels.dtype == torch.int64
    assert first.classes == tuple("0123456789")
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.labels, second.test.labels)
    train_counts, test_counts = (torch.bincount(split.labels, minlength=10) for split in (first.train, first.test))
    assert torch.all((train_counts - 3 * test_counts).abs() <= 4)  # 3:1 in every class
    assert first.train.augment.crop_padding == 4 and not first.train.augment.hflip


def test_digits_normalisation_constants_match_the_data(tmp_path, quiet):
    spec = SPECS["digits"]
    pixels = load("digits", None, tmp_path, quiet).train.images.float() / 255
    for channel in range(3):
        assert pixels[:, channel].mean().item() == pytest.approx(spec.mean[channel], abs=1e-3)
        assert pixels[:, channel].std().item() == pytest.approx(spec.std[channel], abs=1e-3)


# --- Fashion-MNIST -------------------------------------------------------------------------------------------------


def test_fashion_mnist_from_debian_package(tmp_path, quiet):
    splits = load("fashion-mnist", None, tmp_path, quiet)
    assert (len(splits.train), len(splits.test)) == (60000, 10000)
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.test.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(splits.train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(splits.test.labels), torch.full((10,), 1000))
    assert splits.classes[0] == "T-shirt/top" and splits.classes[9] == "Ankle boot"


def write_idx(path: Path, array: np.ndarray) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_fashion(folder: Path, suffix: str = "") -> np.ndarray:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(5, dtype=np.uint8))
    return images


def test_fashion_mnist_idx_files_in_torchvision_layout(tmp_path, quiet):
    images = write_fashion(tmp_path / "FashionMNIST" / "raw", suffix=".gz")
    splits = load("fashion-mnist", tmp_path, tmp_path / "cache", quiet)
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(images))
    assert splits.test.labels.tolist() == [0, 1, 2, 3, 4]


def test_truncated_idx_file_is_named(tmp_path, quiet):
    write_fashion(tmp_path / "fashion")
    truncated = tmp_path / "fashion" / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    assert str(truncated) in user_error("fashion-mnist", tmp_path / "fashion", tmp_path, quiet)


def test_idx_magic_number_is_checked(tmp_path):
    labels = tmp_path / "labels"
    write_idx(labels, np.zeros(3, np.uint8))
    with pytest.raises(UserError, match="magic number 2051"):
        read_idx(labels, 3)


def test_fashion_mnist_missing_lists_the_places_looked(tmp_path, quiet):
    missing = tmp_path / "nowhere"
    message = user_error("fashion-mnist", missing, tmp_path, quiet)
    for place in (missing, missing / "fashion-mnist", missing / "FashionMNIST" / "raw"):
        assert str(place) in message
    assert "--download" in message and "dataset-fashion-mnist" in message


# --- CIFAR python pickles ------------------------------------------------------------------------------------------


def write_cifar_pickles(folder: Path, cifar100: bool = False, per_batch: int = 3) -> list[np.ndarray]:
    """The official archive's files with `per_batch` random images each; returns the rows of every batch."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    num_classes = 100 if cifar100 else 10
    label_key = b"fine_labels" if cifar100 else b"labels"
    names = ["train", "test"] if cifar100 else [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    rows = []
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": data, label_key: labels, b"batch_label": name.encode()}))
        rows.append(data)
    meta_name, names_key = ("meta", b"fine_label_names") if cifar100 else ("batches.meta", b"label_names")
    class_names = [f"class{i}".encode() for i in range(100)] if cifar100 else [n.encode() for n in CIFAR10_NAMES]
    (folder / meta_name).write_bytes(pickle.dumps({names_key: class_names}))
    return rows


def test_cifar10_pickles_are_read_in_channel_plane_order(tmp_path, quiet):
    rows = write_cifar_pickles(tmp_path / "my-cifar")
    splits = load("cifar10", tmp_path / "my-cifar", tmp_path / "cache", quiet)
    assert (len(splits.train), len(splits.test)) == (15, 3)
    assert splits.train.images.shape == (15, 3, 32, 32) and splits.train.images.is_contiguous()
    first = splits.train.images[0]
    assert first[0, 0, 1] == rows[0][0, 1] and first[1, 0, 0] == rows[0][0, 1024] and first[2, 31, 31] == rows[0][0, -1]
    assert torch.equal(splits.test.images.reshape(3, -1), torch.from_numpy(rows[-1]))
    assert splits.classes == tuple(CIFAR10_NAMES)
    assert splits.train.augment.hflip and splits.train.augment.crop_padding == 4


def test_cifar100_pickles_use_fine_labels(tmp_path, quiet):
    write_cifar_pickles(tmp_path / "c100", cifar100=True)
    splits = load("cifar100", tmp_path / "c100", tmp_path / "cache", quiet)
    assert (len(splits.train), len(splits.test)) == (3, 3) and len(splits.classes) == 100
    assert splits.train.labels.max() < 100


def test_official_cifar_folder_with_wrong_md5_is_named(tmp_path, quiet):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    message = user_error("cifar10", tmp_path, tmp_path, quiet)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message and "md5" in message


def test_cifar_labels_beyond_the_classes_are_refused(tmp_path, quiet):
    write_cifar_pickles(tmp_path / "mixed")
    batch = tmp_path / "mixed" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [42]}))
    assert "10 classes" in user_error("cifar10", tmp_path / "mixed", tmp_path, quiet)


def test_cifar_missing_names_the_three_ways_to_get_it(tmp_path, quiet):
    message = user_error("cifar10", None, tmp_path, quiet)
    assert "cifar-10-batches-py" in message and "hf:uoft-cs/cifar10" in message and "--download" in message


# --- CIFAR from parquet, Hugging Face and image folders ------------------------------------------------------------


def random_images(count: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def write_parquet(folder: Path, label_column: str = "label") -> dict[str, list[np.ndarray]]:
    """Hugging Face's repository layout: plain_text/{train,test}-00000-of-00001.parquet."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"img": ImageFeature(), label_column: ClassLabel(names=CIFAR10_NAMES)})
    pixels = {"train": random_images(4, 32, 2), "test": random_images(2, 32, 3)}
    for split, images in pixels.items():
        rows = {"img": [Image.fromarray(image) for image in images], label_column: list(range(len(images)))}
        path = folder / "plain_text" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return pixels


def as_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def test_cifar_parquet_is_decoded_once_then_cached(tmp_path, quiet, hf_cache, monkeypatch):
    pixels = write_parquet(tmp_path / "parquet")
    cache = tmp_path / "cache"
    splits = load("cifar10", tmp_path / "parquet", cache, quiet)
    assert torch.equal(splits.train.images, as_tensor(pixels["train"]))
    assert splits.test.labels.tolist() == [0, 1] and splits.classes == tuple(CIFAR10_NAMES)
    assert len(list(cache.glob("cifar10-*.npz"))) == 1
    monkeypatch.setattr(builtin, "load_hf", None)  # a second load must not need Hugging Face
    again = load("cifar10", tmp_path / "parquet", cache, quiet)
    assert torch.equal(again.train.images, splits.train.images) and again.classes == splits.classes


def test_cifar100_parquet_with_fine_label_column(tmp_path, quiet, hf_cache):
    write_parquet(tmp_path / "parquet", label_column="fine_label")
    splits = load("cifar100", tmp_path / "parquet", tmp_path / "cache", quiet)
    assert splits.train.labels.tolist() == [0, 1, 2, 3]


def test_hf_prefix_loads_through_hugging_face(tmp_path, quiet, hf_cache):
    pixels = write_parquet(tmp_path / "repo")
    splits = load("cifar10", f"hf:{tmp_path / 'repo'}", tmp_path / "cache", quiet)
    assert torch.equal(splits.test.images, as_tensor(pixels["test"]))


def test_hf_prefix_failure_is_one_line(tmp_path, quiet, hf_cache):
    assert "no-such-user/no-such-dataset" in user_error("cifar10", "hf:no-such-user/no-such-dataset", tmp_path, quiet)


def test_torchvision_downloads_wait_for_another_process_on_the_same_root(tmp_path):
    """Two runs of a parallel sweep with --download: the second waits for the first's download, then torchvision
    finds the files there (here: the fake dataset class is only called once the lock is free)."""
    import fcntl
    import threading

    from dstbench.report import PlainReporter

    root, calls, waiting = tmp_path / "data-root", [], threading.Event()

    class Waiter(PlainReporter):
        def info(self, message: str) -> None:
            if message == f"waiting for another dstbench process that downloads cifar10 into {root}":
                waiting.set()

    request = LoadRequest(None, True, tmp_path / "cache", Waiter())
    (root / ".locks").mkdir(parents=True)
    with open(root / ".locks" / "cifar10.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the other process's download
        worker = threading.Thread(target=builtin._download, args=(request, "cifar10", lambda **kw: calls.append(kw)))
        worker.start()
        assert waiting.wait(10) and calls == []
    worker.join(10)
    assert calls == [{"root": str(root), "download": True}]


def test_hf_offline_failure_says_what_to_download_where(tmp_path, quiet, hf_cache):
    message = user_error("cifar10", "hf:uoft-cs/cifar10", tmp_path, quiet)
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    assert str(tmp_path / "hf") in message and "load_dataset('uoft-cs/cifar10')" in message


def write_image_folders(root: Path, splits: dict[str, int], size: int | tuple[int, int], fmt: str) -> None:
    """`count` images per class in root/<split>/<class>/ for each split."""
    width, height = (size, size) if isinstance(size, int) else size
    for split, count in splits.items():
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i, image in enumerate(random_images(count, max(width, height), seed=10 * label + len(split))):
                Image.fromarray(image[:height, :width]).save(root / split / name / f"{name}_{i}.{fmt}")


def test_cifar_image_folders_are_cached(tmp_path, quiet):
    write_image_folders(tmp_path / "folders", {"train": 3, "test": 1}, 32, "png")
    cache = tmp_path / "cache"
    splits = load("cifar10", tmp_path / "folders", cache, quiet)
    assert splits.classes == ("cat", "dog") and splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    cat = np.array(Image.open(tmp_path / "folders" / "train" / "cat" / "cat_0.png"))
    assert torch.equal(splits.train.images[0], torch.from_numpy(cat).permute(2, 0, 1))
    assert len(list(cache.glob("cifar10-*.npz"))) == 1
    assert torch.equal(load("cifar10", tmp_path / "folders", cache, quiet).test.images, splits.test.images)


# --- Tiny ImageNet -------------------------------------------------------------------------------------------------


def write_tiny_imagenet(root: Path, official_val: bool) -> None:
    """2 classes x 3 train images in train/<wnid>/images/, and 2 x 2 validation images in either val layout."""
    write_image_folders(root, {"train": 3, "val": 2}, 64, "JPEG")
    (root / "wnids.txt").write_text("cat\ndog\n")
    for name in ("cat", "dog"):
        (root / "train" / name / "images").mkdir()
        for file in (root / "train" / name).glob("*.JPEG"):
            file.rename(root / "train" / name / "images" / file.name)
    Image.fromarray(random_images(1, 80, 5)[0][:70]).save(root / "train" / "dog" / "images" / "odd_size.JPEG")
    if official_val:
        (root / "val" / "images").mkdir()
        lines = []
        for name in ("cat", "dog"):
            for file in sorted((root / "val" / name).glob("*.JPEG")):
                file.rename(root / "val" / "images" / file.name)
                lines.append(f"{file.name}\t{name}\t0\t0\t63\t63")
            (root / "val" / name).rmdir()
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("official_val", [True, False])
def test_tinyimagenet_both_val_layouts(tmp_path, quiet, official_val):
    write_tiny_imagenet(tmp_path / "tiny-imagenet-200", official_val)
    splits = load("tinyimagenet", tmp_path, tmp_path / "cache", quiet)
    assert splits.classes == ("cat", "dog")
    assert splits.train.images.shape == (7, 3, 64, 64) and splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert splits.test.images.shape == (4, 3, 64, 64) and splits.test.labels.tolist() == [0, 0, 1, 1]
    assert splits.train.augment.crop_padding == 8
    assert len(list((tmp_path / "cache").glob("tinyimagenet-*.npz"))) == 1


def test_tinyimagenet_cache_follows_relabelled_validation_images(tmp_path, quiet):
    """The cached arrays hold labels too: editing val_annotations.txt or wnids.txt, with the images untouched, must
    not bring back the old labels."""
    root = tmp_path / "tiny-imagenet-200"
    write_tiny_imagenet(root, official_val=True)
    cache = tmp_path / "cache"
    assert load("tinyimagenet", tmp_path, cache, quiet).test.labels.tolist() == [0, 0, 1, 1]
    annotations = root / "val" / "val_annotations.txt"
    swapped = {"cat": "dog", "dog": "cat"}
    lines = [line.split("\t") for line in annotations.read_text().splitlines()]
    annotations.write_text("".join("\t".join([f, swapped[w], *rest]) + "\n" for f, w, *rest in lines))
    assert load("tinyimagenet", tmp_path, cache, quiet).test.labels.tolist() == [1, 1, 0, 0]
    (root / "wnids.txt").write_text("dog\ncat\n")
    splits = load("tinyimagenet", tmp_path, cache, quiet)
    assert splits.classes == ("dog", "cat") and splits.test.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_image_modes_decode_to_8_bit_rgb(tmp_path, mode):
    """Grey, alpha, CMYK, palette and 16-bit grey files all become the same picture in 8-bit RGB; 16-bit values
    are scaled down (65535 is white), not clipped at 255."""
    from dstbench.data.sources import read_image

    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = Image.fromarray(grey).convert(mode)
    path = tmp_path / f"image.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    pixels = read_image(path, 16)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 16, 16)
    assert np.abs(pixels.astype(int) - grey).max() <= (8 if mode == "CMYK" else 1)


def test_tinyimagenet_unreadable_image_is_named(tmp_path, quiet):
    write_tiny_imagenet(tmp_path / "tiny", official_val=False)
    broken = tmp_path / "tiny" / "train" / "cat" / "images" / "broken.JPEG"
    broken.write_bytes(b"not a jpeg")
    assert str(broken) in user_error("tinyimagenet", tmp_path / "tiny", tmp_path, quiet)


# --- ImageNet ------------------------------------------------------------------------------------------------------


def test_imagenet_streams_224_crops(tmp_path, quiet):
    write_image_folders(tmp_path / "imagenet", {"train": 2, "val": 1}, (300, 240), "JPEG")
    Image.fromarray(random_images(1, 400, 6)[0][:260]).convert("L").save(tmp_path / "imagenet/val/dog/grey.JPEG")
    splits = load("imagenet", tmp_path, tmp_path / "cache", quiet)
    assert splits.classes == ("cat", "dog") and splits.test.labels.tolist() == [0, 1, 1]
    splits.train.workers = splits.test.workers = 0
    generator = torch.Generator().manual_seed(0)
    batches = list(splits.train.batches(2, torch.device("cpu"), train=True, generator=generator))
    assert [tuple(b.images.shape) for b in batches] == [(2, 3, 224, 224)] * 2
    assert batches[0].images.dtype == torch.uint8 and sorted(torch.cat([b.ids for b in batches]).tolist()) == [
        0,
        1,
        2,
        3,
    ]
    test = list(splits.test.batches(3, torch.device("cpu"), train=False))
    assert test[0].images.shape == (3, 3, 224, 224) and test[0].labels.tolist() == [0, 1, 1]


def test_imagenet_missing_says_how_to_get_it(tmp_path, quiet):
    assert "image-net.org" in user_error("imagenet", tmp_path / "nothing", tmp_path, quiet)
