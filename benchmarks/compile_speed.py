"""What compiling the corruptions with torch.compile (Inductor's fused kernels) would buy on the device.

The suites ship eager PyTorch: tens to hundreds of kernels per corruption, each reading and writing whole batches,
which bounds the suite's speed on a GPU (benchmarks/RESULTS.md). Fusing them is the lever left, at the price of
compiling every (corruption, severity) cell. Per corruption of `cifar-c` (32 px) and `imagenet-c` (224 px), at
severity 3: seconds to compile from a cold cache, images per second eager and compiled, kernels per call and the
megabytes they read and write (eager: ATen's kernels, not views; compiled: Inductor's generated kernels, external
calls such as convolutions not counted, each buffer once per kernel), graph breaks, and how far the compiled images
are from the eager ones (share of values that differ, largest difference). The JSON is rewritten after every
corruption, so a run cut off by a time limit leaves what it measured.

    python benchmarks/compile_speed.py                    # GPU if there is one
    python benchmarks/compile_speed.py --device cpu --images-32 64 --sizes 32 --only gaussian_noise,contrast
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

import torch
import torch._dynamo
import torch._inductor.config
from common import device_name, print_report, sync, write_report
from corruption_speed import DeviceWork, photos
from torch._dynamo.utils import counters
from torch._inductor import metrics

from dstbench.config import resolve_device
from dstbench.corruption import SampleRNG
from dstbench.errors import UserError
from dstbench.plugins import Plugins

SUITES = {32: "cifar-c", 224: "imagenet-c"}
SEVERITY = 3


def best_seconds(call, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def measure(suite, corruption: str, images: torch.Tensor, repeats: int, mode: str) -> dict:
    """Eager against compiled, one batch, severity 3."""
    entry = suite.table[corruption]
    parameter = entry.parameters[suite.resolution_px][SEVERITY - 1]
    ids = torch.arange(len(images), device=images.device)
    rng = SampleRNG.for_samples(0, suite.name, corruption, SEVERITY, ids=ids)
    eager_out = entry.function(images, parameter, rng)  # warm: caches filled, as in an evaluation
    with DeviceWork() as eager_work:
        entry.function(images, parameter, rng)
    eager_s = best_seconds(lambda: entry.function(images, parameter, rng), images.device, repeats)

    torch._dynamo.reset()
    metrics.reset()
    counters.clear()
    compiled = torch.compile(entry.function, dynamic=False, mode=mode)
    try:
        compile_s = best_seconds(lambda: compiled(images, parameter, rng), images.device, 1)
    except Exception as error:  # noqa: BLE001 - a corruption that does not compile is a result, not the end
        return {"error": f"{type(error).__name__}: {str(error)[:500]}"}
    compiled_out = compiled(images, parameter, rng)
    compiled_s = best_seconds(lambda: compiled(images, parameter, rng), images.device, repeats)
    difference = (compiled_out.to(torch.int16) - eager_out.to(torch.int16)).abs()
    return {
        "compile_s": round(compile_s, 2),
        "eager_img_s": round(len(images) / eager_s, 1),
        "compiled_img_s": round(len(images) / compiled_s, 1),
        "speedup": round(eager_s / compiled_s, 2),
        "eager_kernels": eager_work.kernels,
        "compiled_kernels": metrics.generated_kernel_count,
        "eager_mb": round(eager_work.bytes / 1e6, 1),
        "compiled_mb": round(metrics.num_bytes_accessed / 1e6, 1),
        "graph_breaks": sum(counters["graph_break"].values()),
        "share_differing": float((difference > 0).double().mean()),
        "max_difference": int(difference.max()),
    }


def summary(rows: dict[str, dict]) -> dict:
    """The corruptions that compiled, as one pass: images/s eager and compiled, and the compile time paid once."""
    rows = {name: row for name, row in rows.items() if "error" not in row}
    if not rows:
        return {"corruptions": 0}
    eager = sum(1 / row["eager_img_s"] for row in rows.values())
    compiled = sum(1 / row["compiled_img_s"] for row in rows.values())
    return {
        "corruptions": len(rows),
        "eager_img_s": round(len(rows) / eager, 1),
        "compiled_img_s": round(len(rows) / compiled, 1),
        "speedup": round(eager / compiled, 2),
        "compile_s": round(sum(row["compile_s"] for row in rows.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[32, 224],
        help="comma-separated resolutions to measure, of: 32 (cifar-c), 224 (imagenet-c)",
    )
    parser.add_argument("--images-32", type=int, default=10_000, help="batch size at 32 px")
    parser.add_argument("--images-224", type=int, default=500, help="batch size at 224 px")
    parser.add_argument("--only", help="comma-separated corruptions to measure (default: all 19)")
    parser.add_argument("--repeats", type=int, default=3, help="time each call this often, keep the best")
    parser.add_argument(
        "--mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile's mode (reduce-overhead replays CUDA graphs: no launches from the host)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if unknown := set(args.sizes) - set(SUITES):
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {sorted(SUITES)}")
    # Dynamo traces through the lru_caches of the random streams' tables, so the graphs rebuild them: inside a fused
    # hashing kernel that is what fusion is for
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    # cold compiles, as on a fresh machine, and Inductor's kernel count needs the code generated
    torch._inductor.config.fx_graph_cache = False
    # Inductor counts the bytes its kernels move only while its metrics log (TORCH_LOGS=inductor_metrics) is on;
    # on, but printing nothing
    metrics_log = logging.getLogger("torch._inductor.compile_fx.__inductor_metrics")
    metrics_log.setLevel(logging.INFO)
    metrics_log.propagate = False
    metrics_log.addHandler(logging.NullHandler())
    plugins = Plugins.load()
    device = resolve_device(args.device)
    report = {"device": device_name(device), "cpu_cores": os.cpu_count(), "torch": torch.__version__, "mode": args.mode}
    for size in args.sizes:
        suite = plugins.registry.suite(SUITES[size])
        try:  # the names are checked before anything compiles
            corruptions, _ = suite.select(args.only.split(",") if args.only else None, None)
        except UserError as error:
            parser.error(str(error))
        n = args.images_32 if size == 32 else args.images_224
        images = torch.from_numpy(photos(size, n)).permute(0, 3, 1, 2).contiguous().to(device)
        rows = {}
        report[f"{size}px"] = {"suite": suite.name, "batch": n, "severity": SEVERITY, "corruptions": rows}
        for corruption in corruptions:
            rows[corruption] = measure(suite, corruption, images, args.repeats, args.mode)
            report[f"{size}px"]["all_measured"] = summary(rows)
            print(f"{size} px {corruption}: {rows[corruption]}", file=sys.stderr)
            if args.json:
                write_report(report, args.json)
    print_report(report, args.json)


if __name__ == "__main__":
    main()
