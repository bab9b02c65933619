"""Speed of the corruption suites on the device versus the reference implementation on every CPU core.

For each resolution (32 px: `cifar-c`, 224 px: `imagenet-c`): images per second of every corruption (all five
severities) and of the whole suite, dstbench on `--device` against `imagecorruptions` (the reference,
`pip install imagecorruptions-imaug`) in a process pool over all CPU cores; and the cost of a whole
CIFAR-10-C-style evaluation of a ResNet-18 against the same number of plain forward passes (goal on a GPU: at most
twice). Natural images from scikit-image, tiled to the batch size.

    python benchmarks/corruption_speed.py                       # GPU if there is one
    python benchmarks/corruption_speed.py --device cpu --images-32 500 --images-224 40 --eval-images 500
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import skimage.data
import skimage.transform
import torch
from common import device_name, print_report, sync
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from dstbench.config import resolve, resolve_device
from dstbench.corruption import SampleRNG
from dstbench.data import TensorImages
from dstbench.evaluate import evaluate
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import build_model
from dstbench.train import model_input

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photos(size: int, n: int) -> np.ndarray:
    """n natural RGB photos (N, H, W, 3) uint8, the five scikit-image ones repeated."""
    base = [
        skimage.transform.resize(getattr(skimage.data, name)()[..., :3], (size, size), anti_aliasing=True)
        for name in PHOTOS
    ]
    return np.stack([(base[i % len(base)] * 255).astype(np.uint8) for i in range(n)])


def timed_pass(suite, corruptions: tuple[str, ...], images: torch.Tensor, batch_size: int) -> float:
    """Seconds to corrupt `images` with each of `corruptions` at every severity, in batches, on their device."""
    ids = torch.arange(len(images), device=images.device)
    sync(images.device)
    start = time.perf_counter()
    for corruption in corruptions:
        for severity in suite.severities:
            for b in range(0, len(images), batch_size):
                rng = SampleRNG.for_samples(0, suite.name, corruption, severity, ids=ids[b : b + batch_size])
                suite.corrupt(images[b : b + batch_size], corruption, severity, rng)
    sync(images.device)
    return time.perf_counter() - start


def ours(suite, corruption: str, images: torch.Tensor, batch_size: int) -> float:
    """images/s of one corruption over its five severities, on the images' device."""
    warm = images[:8]
    suite.corrupt(
        warm, corruption, 1, SampleRNG.for_samples(0, "warm-up", ids=torch.arange(len(warm), device=warm.device))
    )
    return len(images) * len(suite.severities) / timed_pass(suite, (corruption,), images, batch_size)


def whole_suite(suite, images: torch.Tensor, batch_sizes: list[int], repeats: int) -> dict[int, float]:
    """images/s of the whole suite (every corruption and severity in turn, each image corrupted 95 times, counted
    95 times) at each batch size, the best of `repeats` passes: on a GPU small batches leave the device waiting on
    the host's launches, large ones overflow its cache, so the best size is measured."""
    rates = {}
    for batch in batch_sizes:
        timed_pass(suite, suite.corruptions, images, batch)  # warms the allocator to the batch size
        best = min(timed_pass(suite, suite.corruptions, images, batch) for _ in range(repeats))
        rates[batch] = round(len(images) * len(suite.corruptions) * len(suite.severities) / best, 1)
    return rates


class DeviceWork(TorchDispatchMode):
    """ATen operations dispatched; of them, kernels (operations that are not views) and the bytes of the tensors
    those read and write."""

    # Not flagged a view (autograd treats it as a fresh tensor), yet it only reshapes what mm, bmm or clone wrote.
    _views = {torch.ops.aten._unsafe_view.default}

    def __init__(self):
        super().__init__()
        self.operations = self.kernels = self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.operations += 1
        if not func.is_view and func not in self._views:
            self.kernels += 1
            tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def device_work(suite, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per corruption, what one warm call (severity 3) asks of the device: ATen operations (on a GPU roughly its
    launches, which bound small-image corruptions when each kernel has little to do), kernels and megabytes read and
    written by them (with a measured rate: the bandwidth achieved, which shows what bounds a corruption)."""
    work = {"ops_per_call": {}, "kernels_per_call": {}, "mb_per_call": {}}
    ids = torch.arange(len(images), device=images.device)
    for corruption in suite.corruptions:
        rng = SampleRNG.for_samples(0, suite.name, corruption, 3, ids=ids)
        suite.corrupt(images, corruption, 3, rng)  # warm: caches filled, as in an evaluation
        with DeviceWork() as counted:
            suite.corrupt(images, corruption, 3, rng)
        work["ops_per_call"][corruption] = counted.operations
        work["kernels_per_call"][corruption] = counted.kernels
        work["mb_per_call"][corruption] = round(counted.bytes / 1e6, 3)
    return work


def _reference_chunk(args: tuple[np.ndarray, str]) -> int:
    from imagecorruptions import corrupt

    chunk, corruption = args
    for image in chunk:
        for severity in range(1, 6):
            corrupt(image, corruption_name=corruption, severity=severity)
    return len(chunk)


def reference(pool: ProcessPoolExecutor, corruption: str, images: np.ndarray, workers: int) -> float:
    """images/s of `imagecorruptions` over all cores (its 224-px parameters at every size: only the speed counts)."""
    chunks = [(part, corruption) for part in np.array_split(images, workers * 4) if len(part)]
    start = time.perf_counter()
    done = sum(pool.map(_reference_chunk, chunks))
    return done * 5 / (time.perf_counter() - start)


def batch_size(args, size: int, batch: int | None = None) -> int:
    """`batch` (default --batch-size) at 32 px, a tenth of it at 224 px."""
    batch = batch or args.batch_size
    return batch if size <= 64 else max(1, batch // 10)


def compare(suite, images: torch.Tensor, reference_images: np.ndarray, args) -> tuple[dict, dict]:
    """images/s of every corruption, ours and the reference's, each the best of `args.repeats` timings, the two
    timed one after the other so that both see the same machine (a shared VM's speed drifts within minutes)."""
    from imagecorruptions import get_corruption_names

    known = set(get_corruption_names("all"))
    batch = batch_size(args, images.shape[-1])
    mine, theirs = {}, {}
    with ProcessPoolExecutor(args.workers) as pool:
        for corruption in suite.corruptions:
            mine[corruption] = max(ours(suite, corruption, images, batch) for _ in range(args.repeats))
            if corruption in known:
                # warm: every worker runs it once first (its glass blur is numba code, compiled at the first call)
                list(pool.map(_reference_chunk, [(reference_images[:1], corruption)] * 2 * args.workers))
                theirs[corruption] = max(
                    reference(pool, corruption, reference_images, args.workers) for _ in range(args.repeats)
                )
            # progress on stderr, so that a run cut off by a time limit still leaves its rates behind
            versus = f", reference {theirs[corruption]:,.0f}" if corruption in theirs else ""
            print(f"{images.shape[-1]} px {corruption}: {mine[corruption]:,.0f} img/s{versus}", file=sys.stderr)
    return mine, theirs


def total_rate(rates: dict[str, float]) -> float:
    """images/s of the whole suite: one pass over every corruption at every severity."""
    return len(rates) / sum(1 / r for r in rates.values()) if rates else 0.0


def evaluation_cost(plugins: Plugins, device: torch.device, n: int, batch_size: int) -> dict[str, float]:
    """A CIFAR-10-C-style evaluation (clean + 19 × 5 cells) of a CIFAR ResNet-18 vs as many plain forward passes."""
    cfg = resolve(
        {"dataset": "cifar10", "model": "cifar-resnet18", "device": str(device), "suite": "cifar-c"},
        None,
        plugins.registry,
    )
    channels_last = device.type == "cuda"
    bf16 = device.type == "cuda"
    model = build_model(cfg, plugins, device, channels_last).eval()
    images = torch.from_numpy(photos(32, n)).permute(0, 3, 1, 2).contiguous().to(device)
    data = TensorImages(images, torch.zeros(n, dtype=torch.int64, device=device))
    suite = plugins.registry.suite("cifar-c")
    corruptions, severities = suite.select(None, None)
    passes = n * (1 + len(corruptions) * len(severities))

    @torch.no_grad()
    def forward_only() -> None:
        for _ in range(1 + len(corruptions) * len(severities)):
            for b in range(0, n, batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    model(model_input(images[b : b + batch_size], channels_last))

    forward_only()  # warm-up (cuDNN autotuning)
    sync(device)
    start = time.perf_counter()
    forward_only()
    sync(device)
    forward_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(
        model,
        data,
        suite,
        corruptions,
        severities,
        device=device,
        batch_size=batch_size,
        seed=0,
        bf16=bf16,
        channels_last=channels_last,
        reporter=PlainReporter(quiet=True),
    )
    sync(device)
    evaluation_s = time.perf_counter() - start
    return {
        "images": n,
        "forward_passes": passes,
        "forward_s": round(forward_s, 2),
        "evaluation_s": round(evaluation_s, 2),
        "ratio": round(evaluation_s / forward_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images-32", type=int, default=10_000)
    parser.add_argument("--images-224", type=int, default=1_000)
    parser.add_argument("--reference-images-32", type=int, default=400)
    parser.add_argument("--reference-images-224", type=int, default=40)
    parser.add_argument("--eval-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--suite-batch-sizes",
        type=lambda text: [int(b) for b in text.split(",")],
        default=[1000, 10000],
        help="time the whole suite in one pass at each of these batch sizes (32 px; a tenth at 224 px)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=1, help="time each corruption this often, keep the best")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    plugins = Plugins.load()
    device = resolve_device(args.device)
    report = {"device": device_name(device), "cpu_cores": os.cpu_count(), "resolutions": {}}
    report["evaluation"] = evaluation_cost(plugins, device, args.eval_images, args.batch_size)
    print(f"evaluation vs forward passes: {report['evaluation']}", file=sys.stderr)
    for size, suite_name, n, n_ref in (
        (32, "cifar-c", args.images_32, args.reference_images_32),
        (224, "imagenet-c", args.images_224, args.reference_images_224),
    ):
        suite = plugins.registry.suite(suite_name)
        images = torch.from_numpy(photos(size, n)).permute(0, 3, 1, 2).contiguous().to(device)
        mine, theirs = compare(suite, images, photos(size, n_ref), args)
        suite_batches = sorted({min(n, batch_size(args, size, b)) for b in args.suite_batch_sizes})
        by_batch = whole_suite(suite, images, suite_batches, args.repeats)
        print(f"{size} px whole suite, img/s by batch size: {by_batch}", file=sys.stderr)
        report["resolutions"][f"{size}px"] = {
            "suite": suite_name,
            "ours_img_s": {k: round(v, 1) for k, v in mine.items()},
            "reference_img_s": {k: round(v, 1) for k, v in theirs.items()},
            "speedup": {k: round(mine[k] / theirs[k], 1) for k in theirs},
            **device_work(suite, images[: batch_size(args, size)]),
            "whole_suite_img_s_by_batch": by_batch,
            "suite_img_s": {
                "ours": round(total_rate(mine), 1),
                "reference": round(total_rate(theirs), 1),
                "ours_on_the_reference_corruptions": round(total_rate({k: mine[k] for k in theirs}), 1),
            },
        }
    print_report(report, args.json)


if __name__ == "__main__":
    main()
