"""Released corrupted test sets: CIFAR-10-C .npy files, Tiny-ImageNet-C and ImageNet-C folders, written here as small
fixtures in the published layouts; the download from a local HTTP server; and a `dstbench run` that scores them.

Every image carries its class in the red value of its top-left pixel (25 per class), and `ReadLabel` predicts from
that pixel alone, so an accuracy of 100 % means the evaluator read exactly the right rows with the right labels."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from test_datasets import write_cifar_pickles, write_tiny_imagenet
from torch import nn

from dstbench.cli import build_cli
from dstbench.corruption import SuiteRequest
from dstbench.data import LoadRequest, StreamImages, TensorImages
from dstbench.data.sources import DATA_ROOT_ENV
from dstbench.errors import UserError
from dstbench.evaluate import evaluate
from dstbench.report import PlainReporter
from dstbench_plugins import archives, datasets, released_c
from dstbench_plugins.archives import Archive
from dstbench_plugins.released_c import CIFAR10_C, CifarCFiles, ImageNetCFiles, TinyImageNetCFiles

CPU = torch.device("cpu")
CORRUPTIONS = ("gaussian_noise", "shot_noise")
LABEL_STEP = 25  # red value of the top-left pixel per class


class ReadLabel(nn.Module):
    """Predicts the class written into the top-left pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot((x[:, 0, 0, 0] * 255 / LABEL_STEP).round().long(), 11).float()


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty default data root (and cache) for every test."""
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "data-root"))
    return tmp_path / "data-root"


def labelled(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """uint8 (N, size, size, 3) random images, each with its label written into its top-left pixel."""
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = labels * LABEL_STEP
    return images


def write_cifar_c(folder: Path, labels: np.ndarray, wrong: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """gaussian_noise.npy and shot_noise.npy of 5 x N rows, and labels.npy; shot_noise's images at the severities in
    `wrong` carry the next class in their pixel, so a model reading it is wrong there."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for number, corruption in enumerate(CORRUPTIONS):
        rows = []
        for severity in range(1, 6):
            shown = (labels + 1) % 10 if corruption == "shot_noise" and severity in wrong else labels
            rows.append(labelled(shown, 32, seed=10 * number + severity))
        arrays[corruption] = np.concatenate(rows)
        np.save(folder / f"{corruption}.npy", arrays[corruption])
    np.save(folder / "labels.npy", np.tile(labels, 5))
    return arrays


def request(labels: torch.Tensor, ids: torch.Tensor, c_dir: Path | None, quiet, **fields) -> SuiteRequest:
    selection = {"corruptions": CORRUPTIONS, "severities": (1, 2, 3, 4, 5), **fields}
    return SuiteRequest("cifar10", labels, ids, c_dir, False, quiet, **selection)


def clean_test(count: int = 7) -> TensorImages:
    labels = np.arange(count) % 10
    images = torch.from_numpy(labelled(labels, 32, seed=99)).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.from_numpy(labels))


def cifar_suite() -> CifarCFiles:
    return released_c.suites()[0]


def score(suite, data, reporter, severities=(1, 2, 3, 4, 5), corruptions=CORRUPTIONS):
    """ReadLabel's accuracies on the clean data and on the suite's cells."""
    return evaluate(
        ReadLabel(),
        data,
        suite,
        corruptions,
        severities,
        device=CPU,
        batch_size=3,
        seed=0,
        bf16=False,
        channels_last=False,
        reporter=reporter,
    )


# --- CIFAR-10-C ----------------------------------------------------------------------------------------------------


def test_registered_suites_read_files_and_refuse_to_corrupt(plugins):
    names = {"cifar10-c-files", "cifar100-c-files", "tinyimagenet-c-files", "imagenet-c-files"}
    assert names <= set(plugins.registry.names("suite"))
    suite = plugins.registry.suite("cifar10-c-files")
    assert len(suite.corruptions) == 19 and suite.select(["benchmark"], None)[0][-1] == "jpeg_compression"
    with pytest.raises(UserError, match="suite 'cifar-c' corrupts"):
        suite.corrupt(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "fog", 1, None)
    with pytest.raises(UserError, match="32x32 RGB"):
        suite.check_input(3, 64)


def test_cifar_c_rows_are_evaluated_severity_by_severity(tmp_path, quiet):
    test = clean_test()
    arrays = write_cifar_c(tmp_path / "CIFAR-10-C", test.labels.numpy(), wrong=(2, 4))
    suite = cifar_suite().prepare(request(test.labels, test.ids, tmp_path, quiet))  # finds DIR/CIFAR-10-C
    result = score(suite, test, quiet)
    assert result.clean_acc == 100 and result.corruption_acc["gaussian_noise"] == dict.fromkeys(range(1, 6), 100.0)
    assert result.corruption_acc["shot_noise"] == {1: 100.0, 2: 0.0, 3: 100.0, 4: 0.0, 5: 100.0}
    cell = suite.released("shot_noise", 3)
    batch = next(cell.batches(len(test), CPU, train=False))
    expected = torch.from_numpy(arrays["shot_noise"][2 * len(test) : 3 * len(test)]).permute(0, 3, 1, 2)
    assert batch.images.dtype == torch.uint8 and torch.equal(batch.images, expected)
    assert torch.equal(batch.ids, test.ids) and torch.equal(batch.labels, test.labels)


def test_a_test_subset_reads_the_rows_of_its_ids(tmp_path, quiet):
    full = clean_test(10)
    arrays = write_cifar_c(tmp_path, full.labels.numpy())
    test = full.subset(torch.tensor([1, 4, 9]))
    suite = cifar_suite().prepare(request(test.labels, test.ids, tmp_path, quiet, severities=(5,)))
    batch = next(suite.released("gaussian_noise", 5).batches(8, CPU, train=False))
    assert batch.ids.tolist() == [1, 4, 9]
    assert torch.equal(batch.images, torch.from_numpy(arrays["gaussian_noise"][[41, 44, 49]]).permute(0, 3, 1, 2))
    assert score(suite, test, quiet, severities=(5,)).mpc == 100


def test_default_data_root_is_searched_without_c_dir(data_root, quiet):
    test = clean_test()
    write_cifar_c(data_root / "CIFAR-10-C", test.labels.numpy())
    suite = cifar_suite().prepare(request(test.labels, test.ids, None, quiet, corruptions=("gaussian_noise",)))
    assert len(suite.released("gaussian_noise", 1)) == len(test)


def break_nothing(folder: Path) -> None:
    folder.rename(folder.with_name("elsewhere"))


def break_file(folder: Path) -> None:
    (folder / "shot_noise.npy").unlink()


def truncate(folder: Path) -> None:
    path = folder / "shot_noise.npy"
    path.write_bytes(path.read_bytes()[:-500])


def shuffle_labels(folder: Path) -> None:
    labels = np.load(folder / "labels.npy")
    np.save(folder / "labels.npy", np.roll(labels, 1))


def wrong_shape(folder: Path) -> None:
    np.save(folder / "shot_noise.npy", np.zeros((35, 3, 32, 32), np.uint8))


def wrong_dtype(folder: Path) -> None:
    np.save(folder / "shot_noise.npy", np.zeros((35, 32, 32, 3), np.float32))


def too_few_rows(folder: Path) -> None:
    np.save(folder / "labels.npy", np.zeros(15, np.int64))


BREAKAGES = [
    (break_nothing, "CIFAR-10-C not found; looked in: {dir}"),
    (break_file, "{dir} has no shot_noise.npy"),
    (truncate, "cannot read {dir}/shot_noise.npy"),
    (shuffle_labels, "labels differ from the test split"),
    (wrong_shape, "{dir}/shot_noise.npy holds uint8 (35, 3, 32, 32); expected uint8 (35, 32, 32, 3)"),
    (wrong_dtype, "holds float32"),
    (too_few_rows, "labels 3 images per severity, but the test split has at least 7"),
]


@pytest.mark.parametrize("breakage, message", BREAKAGES, ids=[b.__name__ for b, _ in BREAKAGES])
def test_bad_files_are_one_line_errors(tmp_path, quiet, breakage, message):
    test = clean_test()
    folder = tmp_path / "c"
    write_cifar_c(folder, test.labels.numpy())
    breakage(folder)
    with pytest.raises(UserError) as caught:
        cifar_suite().prepare(request(test.labels, test.ids, folder, quiet))
    assert message.format(dir=folder) in str(caught.value) and "\n" not in str(caught.value)


# --- Download ------------------------------------------------------------------------------------------------------


def cifar_c_tar(labels: np.ndarray) -> bytes:
    """The published archive's layout: CIFAR-10-C/<corruption>.npy and CIFAR-10-C/labels.npy."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        arrays = {"labels": np.tile(labels, 5), "gaussian_noise": np.concatenate([labelled(labels, 32, 0)] * 5)}
        for name, array in arrays.items():
            data = io.BytesIO()
            np.save(data, array)
            info = tarfile.TarInfo(f"CIFAR-10-C/{name}.npy")
            info.size = len(data.getvalue())
            tar.addfile(info, io.BytesIO(data.getvalue()))
    return buffer.getvalue()


@contextmanager
def serve(
    payload: bytes, truncate_first: bool = False, range_from: int | None = None
) -> Iterator[tuple[str, list[str | None]]]:
    """An HTTP server on localhost that serves `payload`, honours Range requests (or, with `range_from`, answers them
    from that byte) and, with `truncate_first`, breaks off its first response halfway. Yields the URL and the Range
    header of every request."""
    ranges: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            ranges.append(asked)
            start = int(asked.removeprefix("bytes=").removesuffix("-")) if asked else 0
            start = start if range_from is None or not asked else range_from
            body = payload[start:]
            self.send_response(206 if asked else 200)
            self.send_header("Content-Length", str(len(body)))
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate_first and len(ranges) == 1 else body)

        def log_message(self, *args: object) -> None:
            pass

    with running(Handler) as port:
        yield f"http://127.0.0.1:{port}/files/CIFAR-10-C.tar", ranges


@contextmanager
def running(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on localhost with this handler, for the block; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def left_in(root: Path) -> list[str]:
    """What a download left in the data root, besides the folder of its locks."""
    return sorted(name for name in os.listdir(root) if name != ".locks")


def downloading_suite(url: str, md5: str) -> CifarCFiles:
    return CifarCFiles("cifar10-c-files", "test", Archive(url, md5, CIFAR10_C.folder, CIFAR10_C.holds))


def test_download_resumes_checks_md5_and_unpacks(data_root, quiet):
    test = clean_test()
    payload = cifar_c_tar(test.labels.numpy())
    wanted = replace(request(test.labels, test.ids, None, quiet, corruptions=("gaussian_noise",)), download=True)
    with serve(payload, truncate_first=True) as (url, ranges):
        suite = downloading_suite(url, hashlib.md5(payload).hexdigest())
        with pytest.raises(UserError, match="broke off after .* run again to resume; or fetch it elsewhere, put it at"):
            suite.prepare(wanted)
        part = data_root / "CIFAR-10-C.tar.part"
        assert part.stat().st_size == len(payload) // 2
        prepared = suite.prepare(wanted)
    assert ranges == [None, f"bytes={len(payload) // 2}-"]
    assert left_in(data_root) == ["CIFAR-10-C"]  # the archive and the scratch folder are gone
    assert score(prepared, test, quiet, corruptions=("gaussian_noise",)).corruption_acc["gaussian_noise"][3] == 100


def test_a_resume_answered_with_other_bytes_is_refused(tmp_path, quiet):
    part = tmp_path / "CIFAR-10-C.tar.part"
    part.write_bytes(b"0123")
    with serve(b"0123456789", range_from=0) as (url, _):
        with pytest.raises(UserError, match=f"answered a resume from byte 4 with 'bytes 0-9/10'; delete {part}"):
            archives.download(url, part, quiet)
    assert part.read_bytes() == b"0123"


def test_download_with_the_wrong_md5_is_deleted(data_root, quiet):
    with serve(b"not the archive") as (url, _):
        with pytest.raises(
            UserError, match="arrived with md5 [0-9a-f]{32}, not the published 0{32} of .*; the download was deleted"
        ):
            archives.fetch(Archive(url, "0" * 32, "CIFAR-10-C", ("labels.npy",)), data_root, quiet)
    assert left_in(data_root) == []


def test_an_archive_already_there_is_checked_before_unpacking_and_kept_when_wrong(data_root, quiet):
    tar = data_root / "CIFAR-10-C.tar"
    (data_root / ".CIFAR-10-C.tar.x1y2" / "CIFAR-10-C").mkdir(parents=True)  # left by an unpacking that was killed
    tar.write_bytes(cifar_c_tar(np.arange(3)))  # some other archive under the expected name
    with pytest.raises(
        UserError,
        match=f"{tar} has md5 [0-9a-f]{{32}}, not the published 0{{32}} of http://127.0.0.1:9/CIFAR-10-C.tar: it is",
    ):
        archives.fetch(
            Archive("http://127.0.0.1:9/CIFAR-10-C.tar", "0" * 32, "CIFAR-10-C", ("labels.npy",)), data_root, quiet
        )
    assert left_in(data_root) == ["CIFAR-10-C.tar"]  # neither unpacked nor deleted
    archives.fetch(
        Archive(
            "http://127.0.0.1:9/CIFAR-10-C.tar",
            hashlib.md5(tar.read_bytes()).hexdigest(),
            "CIFAR-10-C",
            ("labels.npy",),
        ),
        data_root,
        quiet,
    )  # the right one is unpacked without downloading
    assert left_in(data_root) == ["CIFAR-10-C"]


def test_unpacking_refuses_paths_outside_the_folder(tmp_path, quiet):
    tar_path = tmp_path / "root" / "evil.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("CIFAR-10-C/../../escaped.npy")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="not a plain file inside the archive"):
        archives.unpack(tar_path, tmp_path / "root", CIFAR10_C, quiet)
    assert not (tmp_path / "escaped.npy").exists() and sorted(os.listdir(tmp_path / "root")) == ["evil.tar"]


# --- Tiny-ImageNet-C and ImageNet-C --------------------------------------------------------------------------------


def write_folder_c(root: Path, wnids: tuple[str, ...], size: int, suffix: str, per_class: int = 2) -> None:
    """<corruption>/<severity>/<wnid>/*.<suffix> for both corruptions at severities 1 and 2; an image of the i-th
    wnid in `wnids` carries label i."""
    for corruption in CORRUPTIONS:
        for severity in (1, 2):
            for label, wnid in enumerate(wnids):
                folder = root / corruption / str(severity) / wnid
                folder.mkdir(parents=True)
                images = labelled(np.full(per_class, label), size, seed=severity * 10 + label)
                for i, image in enumerate(images):
                    Image.fromarray(image).save(folder / f"val_{i}.{suffix}")


def test_tinyimagenet_c_labels_follow_the_dataset_classes_and_are_cached(tmp_path, data_root, quiet, monkeypatch):
    classes = ("n02", "n01", "n03")  # wnids.txt order, not sorted
    write_folder_c(tmp_path / "Tiny-ImageNet-C", classes, 64, "png")
    suite: TinyImageNetCFiles = released_c.suites()[2]
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, severities=(1, 2), classes=classes)
    prepared = suite.prepare(wanted)
    cell = prepared.released("shot_noise", 2)
    assert cell.labels.tolist() == [0, 0, 1, 1, 2, 2] and len(list((data_root / ".cache").glob("*.npz"))) == 4
    assert score(prepared, cell, quiet, severities=(1, 2)).mpc == 100
    monkeypatch.setattr(released_c, "decode_images", None)  # a second preparation reads the cache
    again = suite.prepare(wanted).released("shot_noise", 2)
    batch = next(again.batches(6, CPU, train=False))
    assert batch.images.shape == (6, 3, 64, 64) and batch.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_folder_wnids_are_sorted_when_the_dataset_names_no_classes(tmp_path, quiet):
    write_folder_c(tmp_path, ("n02", "n01"), 64, "png", per_class=1)
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, corruptions=("gaussian_noise",), severities=(1,))
    cell = released_c.suites()[2].prepare(wanted).released("gaussian_noise", 1)
    assert next(cell.batches(2, CPU, train=False)).images[:, 0, 0, 0].tolist() == [LABEL_STEP, 0]  # n01 first


def test_missing_severity_folder_is_named(tmp_path, quiet):
    write_folder_c(tmp_path, ("n01",), 64, "png", per_class=1)
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, severities=(1, 3))
    with pytest.raises(UserError, match=f"{tmp_path} has no folder gaussian_noise/3;"):
        released_c.suites()[2].prepare(wanted)
    with pytest.raises(UserError, match="Tiny-ImageNet-C not found; looked in: .*zenodo.org/records/8206060"):
        released_c.suites()[2].prepare(request(torch.zeros(0), torch.zeros(0), tmp_path / "none", quiet))


def test_a_cell_missing_images_of_a_class_is_named(tmp_path, quiet):
    write_folder_c(tmp_path, ("n01", "n02"), 64, "png")
    (tmp_path / "shot_noise" / "2" / "n02" / "val_1.png").unlink()  # a half-extracted cell
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, severities=(1, 2), classes=("n01", "n02"))
    with pytest.raises(
        UserError, match=f"{tmp_path / 'shot_noise' / '2'} holds 1 images of class n02, where .* holds 2"
    ):
        released_c.suites()[2].prepare(wanted)


@pytest.mark.parametrize("index", [2, 3])  # Tiny-ImageNet-C decoded into the cache, ImageNet-C streamed
def test_a_test_subset_evaluates_the_same_files_of_every_cell(tmp_path, data_root, quiet, index):
    size = 64 if index == 2 else 224
    write_folder_c(tmp_path, ("n01", "n02", "n03"), size, "png" if index == 2 else "JPEG")
    subset = torch.tensor([1, 4])  # positions: n01's second image, n03's first
    wanted = request(torch.zeros(2), subset, tmp_path, quiet, severities=(1, 2), classes=("n01", "n02", "n03"))
    prepared = released_c.suites()[index].prepare(wanted)
    for cell in prepared.cells.values():
        if index == 3:
            cell.workers = 0
        assert len(cell) == 2 and cell.labels.tolist() == [0, 2] and cell.ids.tolist() == [1, 4]
        assert next(cell.batches(2, CPU, train=False)).labels.tolist() == [0, 2]
    too_far = request(torch.zeros(2), torch.tensor([0, 6]), tmp_path, quiet, severities=(1,))
    with pytest.raises(UserError, match="holds 6 images, but the test split has at least 7; is --c-dir the corrupted"):
        released_c.suites()[index].prepare(too_far)


def test_imagenet_c_streams_224_px_jpegs(tmp_path, quiet):
    write_folder_c(tmp_path / "ImageNet-C", ("n01", "n02"), 224, "JPEG", per_class=1)
    suite: ImageNetCFiles = released_c.suites()[3]
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, severities=(1,), classes=("n01", "n02"))
    cell = suite.prepare(wanted).released("gaussian_noise", 1)
    assert isinstance(cell, StreamImages)
    cell.workers = 0
    batch = next(cell.batches(2, CPU, train=False))
    assert batch.images.shape == (2, 3, 224, 224) and batch.labels.tolist() == [0, 1]
    odd = tmp_path / "ImageNet-C" / "shot_noise" / "1" / "n02" / "val_0.JPEG"
    Image.new("RGB", (200, 224)).save(odd)
    cell = suite.prepare(wanted).released("shot_noise", 1)
    cell.workers = 0
    with pytest.raises(UserError, match="is 200x224, not 224x224"):
        list(cell.batches(2, CPU, train=False))


# --- Downloads of folder releases, and ImageNet-3DCC ---------------------------------------------------------------


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on localhost serving `files` by name (404 for others); yields its base URL and the names asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            asked.append(name)
            body = files.get(name)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    with running(Handler) as port:
        yield f"http://127.0.0.1:{port}/files", asked


def folder_tar(tmp_path: Path, corruptions: tuple[str, ...], prefix: str, mode: str = "w") -> bytes:
    """A tar of 64-px <corruption>/<severity>/<wnid>/ folders (severities 1 and 2, two classes) under `prefix`."""
    source = tmp_path / f"source-{'-'.join(corruptions)}"
    write_folder_c(source, ("n01", "n02"), 64, "png")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for corruption in corruptions:
            tar.add(source / "gaussian_noise", arcname=f"{prefix}{corruption}")
    return buffer.getvalue()


def test_folder_releases_fetch_only_the_archives_of_missing_corruptions(tmp_path, data_root, quiet):
    payloads = {  # the layouts differ: the content folder is found by the corruption folders it holds
        "noise.tar": folder_tar(tmp_path, ("gaussian_noise", "shot_noise"), ""),
        "blur.tar": folder_tar(tmp_path, ("defocus_blur",), "Tiny-ImageNet-C/blur/"),
    }
    with serve_files(payloads) as (base, asked):
        groups = {"noise.tar": ("gaussian_noise", "shot_noise"), "blur.tar": ("defocus_blur",)}
        suite = TinyImageNetCFiles(
            "tinyimagenet-c-files",
            "test",
            64,
            tuple(
                Archive(f"{base}/{name}", hashlib.md5(payloads[name]).hexdigest(), "Tiny-ImageNet-C", holds)
                for name, holds in groups.items()
            ),
            "tinyimagenet-c",
            "the test server",
        )

        def wanted(*corruptions: str, download: bool = True) -> SuiteRequest:
            fields = {"corruptions": corruptions, "severities": (1, 2), "classes": ("n01", "n02")}
            return replace(request(torch.zeros(0), torch.zeros(0), None, quiet, **fields), download=download)

        with pytest.raises(UserError, match="Tiny-ImageNet-C not found; .* pass --c-dir, or pass --download"):
            suite.prepare(wanted("shot_noise", download=False))
        prepared = suite.prepare(wanted("shot_noise"))
        assert asked == ["noise.tar"]
        assert score(prepared, prepared.released("shot_noise", 2), quiet, (1, 2), ("shot_noise",)).mpc == 100
        suite.prepare(wanted("gaussian_noise", "shot_noise"))
        assert asked == ["noise.tar"]  # both are there: nothing fetched
        suite.prepare(wanted("defocus_blur", "gaussian_noise"))
        assert asked == ["noise.tar", "blur.tar"]
    assert sorted(os.listdir(data_root / "Tiny-ImageNet-C")) == ["defocus_blur", "gaussian_noise", "shot_noise"]
    assert left_in(data_root) == [".cache", "Tiny-ImageNet-C"]  # archives and scratch folders gone


def test_an_archive_without_a_published_sum_is_checked_by_gzip(tmp_path, data_root, quiet, capsys):
    good = folder_tar(tmp_path, ("near_focus",), "", mode="w:gz")
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    with serve_files({"near_focus.tar.gz": bytes(damaged)}) as (base, _):
        archive = Archive(f"{base}/near_focus.tar.gz", None, "ImageNet-3DCC", ("near_focus",))
        with pytest.raises(UserError, match=r"near_focus.tar.gz arrived with a damaged gzip stream \(.*\); the"):
            archives.fetch(archive, data_root, quiet)
    assert left_in(data_root) == []  # deleted
    (data_root / "near_focus.tar.gz").write_bytes(bytes(damaged))  # one found in place is kept
    with pytest.raises(UserError, match=r"near_focus.tar.gz has a damaged gzip stream \(.*\): it is another or a"):
        archives.fetch(archive, data_root, quiet)
    (data_root / "near_focus.tar.gz").unlink()
    with serve_files({"near_focus.tar.gz": good}) as (base, _):
        archives.fetch(replace(archive, url=f"{base}/near_focus.tar.gz"), data_root, PlainReporter())
    size = f"{len(good):,}/{len(good):,} B"  # both bars ran to the end: the download's and the unpacking's
    printed = capsys.readouterr().err
    assert f"downloading near_focus.tar.gz: {size}" in printed
    assert f"unpacking near_focus.tar.gz into {data_root / 'ImageNet-3DCC'}: {size}" in printed
    assert sorted(os.listdir(data_root / "ImageNet-3DCC" / "near_focus")) == ["1", "2"]
    assert left_in(data_root) == ["ImageNet-3DCC"]


def test_processes_sharing_a_data_root_take_turns_and_the_second_finds_the_work_done(tmp_path, data_root, quiet):
    archive = Archive("http://127.0.0.1:9/noise.tar", "0" * 32, "ImageNet-C", ("gaussian_noise", "shot_noise"))
    waiting = threading.Event()

    class Waiter(PlainReporter):
        def info(self, message: str) -> None:
            if message.startswith("waiting for another dstbench process that downloads noise.tar into"):
                waiting.set()

    with released_c_lock(data_root, "noise.tar"):  # another process is downloading it
        worker = threading.Thread(target=archives.fetch, args=(archive, data_root, Waiter()))
        worker.start()
        assert waiting.wait(10) and worker.is_alive()
        for name in archive.holds:  # what the other process unpacked before it let go
            (data_root / "ImageNet-C" / name).mkdir(parents=True)
    worker.join(10)
    assert not worker.is_alive() and left_in(data_root) == ["ImageNet-C"]  # nothing fetched: port 9 never asked


@contextmanager
def released_c_lock(root: Path, name: str) -> Iterator[None]:
    """The lock another process holds while it downloads `name`: its own open file description."""
    import fcntl

    path = root / ".locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def test_tiny_imagenet_is_downloaded_as_the_published_zip(tmp_path, data_root, quiet, monkeypatch):
    write_tiny_imagenet(tmp_path / "made" / "tiny-imagenet-200", official_val=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((tmp_path / "made").rglob("*")):
            archive.write(path, path.relative_to(tmp_path / "made"))
    payload = buffer.getvalue()
    with serve_files({"tiny-imagenet-200.zip": payload}) as (base, asked):
        url, md5 = f"{base}/tiny-imagenet-200.zip", hashlib.md5(payload).hexdigest()
        monkeypatch.setattr(datasets, "TINY_IMAGENET", replace(datasets.TINY_IMAGENET, url=url, md5=md5))
        request = LoadRequest(None, False, tmp_path / "cache", quiet)
        with pytest.raises(UserError, match="tinyimagenet not found; .* or pass --download"):
            datasets.load_tinyimagenet(request)
        splits = datasets.load_tinyimagenet(replace(request, download=True))
        assert splits.classes == ("cat", "dog") and splits.test.labels.tolist() == [0, 0, 1, 1]
        datasets.load_tinyimagenet(replace(request, download=True))  # found: not fetched again
    assert asked == ["tiny-imagenet-200.zip"] and left_in(data_root) == ["tiny-imagenet-200"]


def test_an_archive_holding_none_of_the_expected_names_is_named(tmp_path, quiet):
    root = tmp_path / "root"
    root.mkdir()
    (root / "other.tar").write_bytes(folder_tar(tmp_path, ("fog",), "ImageNet-C/"))
    archive = Archive("http://127.0.0.1:9/other.tar", None, "ImageNet-C", ("gaussian_noise", "shot_noise"))
    with pytest.raises(UserError, match="other.tar holds none of gaussian_noise, shot_noise; is it the right archive"):
        archives.unpack(root / "other.tar", root, archive, quiet)
    assert left_in(root) == ["other.tar"]  # nothing moved in, the scratch folder gone


def test_zip_members_outside_the_folder_are_refused(tmp_path, quiet):
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "evil.zip", "w") as archive:
        archive.writestr("tiny-imagenet-200/../../escaped.txt", "x")
    with pytest.raises(UserError, match="holds 'tiny-imagenet-200/../../escaped.txt', which is not a plain file"):
        archives.unpack(root / "evil.zip", root, datasets.TINY_IMAGENET, quiet)
    assert left_in(root) == ["evil.zip"] and not (tmp_path / "escaped.txt").exists()


def test_a_download_that_cannot_fit_on_the_disk_is_refused(tmp_path, quiet, monkeypatch):
    free = type("Usage", (), {"free": 1_500_000_000})
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: free)
    part = tmp_path / "big.tar.part"
    with pytest.raises(UserError, match=f"{tmp_path} has 1.5 GB free; big.tar needs 2.0 GB to download and unpack"):
        archives._check_space(part, 1_000_000_000, 0)
    archives._check_space(part, 700_000_000, 0)
    archives._check_space(part, -1, 0)  # no Content-Length: nothing to check


def test_imagenet_3dcc_suite(plugins, tmp_path, quiet):
    suite = plugins.registry.suite("imagenet-3dcc-files")
    assert len(suite.corruptions) == 12 and len(suite.archives) == 12 and suite.resolution == "224 px (released files)"
    assert suite.select(["noise", "fog_3d"], [5]) == (("fog_3d", "iso_noise", "color_quant", "low_light"), (5,))
    with pytest.raises(UserError, match="unknown imagenet-3dcc-files corruption 'fog'"):
        suite.select(["fog"], None)
    with pytest.raises(UserError, match="corrupts nothing itself$"):
        suite.corrupt(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "fog_3d", 1, None)
    assert {a.url.rsplit("/", 1)[-1] for a in suite.archives} == {f"{c}.tar.gz" for c in suite.corruptions}
    result = CliRunner().invoke(build_cli(plugins), ["list", "--json", "--kind", "suite"])
    row = next(row for row in json.loads(result.output)["suite"] if row["name"] == "imagenet-3dcc-files")
    assert row["subsets (--corruptions)"].startswith("depth_of_field (2), camera_motion (2), lighting (1)")
    square = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)
    assert suite.fit(square) is square
    wide = torch.randint(0, 256, (3, 240, 320), dtype=torch.uint8)
    from dstbench_plugins.datasets import imagenet_test_transform

    assert torch.equal(suite.fit(wide), imagenet_test_transform()(wide)) and suite.fit(wide).shape == (3, 224, 224)
    for name in ("fog_3d", "near_focus"):
        write_folder_c(tmp_path / "ImageNet-3DCC" / "tmp", ("n01",), 240, "png", per_class=1)
        (tmp_path / "ImageNet-3DCC" / "tmp" / "gaussian_noise").rename(tmp_path / "ImageNet-3DCC" / name)
        shutil.rmtree(tmp_path / "ImageNet-3DCC" / "tmp")
    wanted = request(torch.zeros(0), torch.zeros(0), tmp_path, quiet, corruptions=("near_focus", "fog_3d"))
    with pytest.raises(UserError, match="has no folder near_focus/3; .* or pass --download"):
        suite.prepare(wanted)
    cell = suite.prepare(replace(wanted, severities=(2,))).released("fog_3d", 2)
    cell.workers = 0
    assert next(cell.batches(1, CPU, train=False)).images.shape == (1, 3, 224, 224)


# --- Through the command line --------------------------------------------------------------------------------------

RUN_ARGS = ["--dataset", "cifar10", "--model", "digits-cnn", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]


def cifar_with_c(tmp_path: Path) -> tuple[Path, Path]:
    """A CIFAR-10 pickle folder and its CIFAR-10-C whose gaussian_noise is the clean test set at every severity."""
    write_cifar_pickles(tmp_path / "cifar", per_batch=6)
    test = pickle.loads((tmp_path / "cifar" / "test_batch").read_bytes())
    labels = np.asarray(test[b"labels"])
    c_dir = tmp_path / "CIFAR-10-C"
    write_cifar_c(c_dir, labels)
    clean = np.asarray(test[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.save(c_dir / "gaussian_noise.npy", np.concatenate([clean] * 5))
    return tmp_path / "cifar", c_dir


def test_run_scores_the_released_files(tmp_path):
    data_dir, c_dir = cifar_with_c(tmp_path)
    out = tmp_path / "run"
    command = ["run", *RUN_ARGS, "--data-dir", data_dir, "--suite", "cifar10-c-files", "--c-dir", c_dir, "--out", out]
    env = {**os.environ, "DSTBENCH_PLUGINS": "", DATA_ROOT_ENV: str(tmp_path / "data-root")}
    result = subprocess.run(
        [sys.executable, "-m", "dstbench", *map(str, command), "--corruptions", "gaussian_noise,shot_noise"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads((out / "entry.json").read_text())
    assert entry["suite"] == "cifar10-c-files" and entry["evaluation"]["corruptions"] == list(CORRUPTIONS)
    assert entry["corruptions"]["gaussian_noise"] == {str(s): entry["clean_acc"] for s in range(1, 6)}


@pytest.mark.parametrize("breakage, message", BREAKAGES[:4], ids=[b.__name__ for b, _ in BREAKAGES[:4]])
def test_run_with_bad_files_exits_2_before_writing(tmp_path, plugins, breakage, message):
    data_dir, c_dir = cifar_with_c(tmp_path)
    breakage(c_dir)
    out = tmp_path / "run"
    command = ["run", *RUN_ARGS, "--data-dir", data_dir, "--suite", "cifar10-c-files", "--c-dir", c_dir, "--out", out]
    result = CliRunner().invoke(build_cli(plugins), [*map(str, command), "--corruptions", "gaussian_noise,shot_noise"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message.format(dir=c_dir) in lines[0] and not out.exists()
