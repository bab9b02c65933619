"""Training throughput of every sparse training algorithm relative to dense, in one process, on one device.

Each algorithm trains the same model with the same batch on the same synthetic on-device data through
dstbench's own trainer, mask application after every step and mask updates at the algorithms' default
intervals included. The first epoch warms up; the others are timed. Goal on a GPU: every algorithm at least
0.97x dense for CIFAR ResNet-18 at batch 512. Each mask update is also timed on its own (device synchronised).

    python benchmarks/dst_throughput.py                                   # GPU: ResNet-18, batch 512
    python benchmarks/dst_throughput.py --device cpu --model digits-cnn --batch-size 128 --images 12800
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from common import device_name, fit, print_report, sync, synthetic_data

from dstbench.config import resolve, resolve_device
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench.train import resolve_precision


class UpdateTimer:
    """Times the algorithm's mask updates (synchronising the device around them, so only at update steps)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, []

    @hookimpl(hookwrapper=True, tryfirst=True)
    def on_step_end(self, run):
        updating = hasattr(run.algorithm, "updates_at") and run.algorithm.updates_at(run)
        if updating:
            sync(self.device)
            start = time.perf_counter()
        yield
        if updating:
            sync(self.device)
            self.seconds.append(time.perf_counter() - start)


def measure(args, plugins: Plugins, device: torch.device, data, algo: str) -> dict:
    timer = UpdateTimer(device)
    plugins.register(timer, name="update-timer")
    flags = {
        "dataset": "cifar10",
        "model": args.model,
        "batch_size": args.batch_size,
        "algo": algo,
        "sparsity": 0.0 if algo == "dense" else args.sparsity,
        "device": args.device,
        "quiet": True,
    }
    options = {field.name for field in dataclasses.fields(plugins.registry.algorithm(algo).Options)}
    if args.update_interval and "update_interval" in options:
        flags["algo_options"] = (f"update_interval={args.update_interval}",)
    cfg = resolve(flags, None, plugins.registry)
    try:
        history = fit(cfg, plugins, device, data, args.epochs).history[1:]
    finally:
        plugins.unregister(timer)
    ms = 1000 * sum(timer.seconds) / len(timer.seconds) if timer.seconds else None
    return {
        "images_per_s": round(sum(s.images for s in history) / sum(s.seconds for s in history)),
        "updates_timed": len(timer.seconds),
        "ms_per_update": round(ms, 2) if ms is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="cifar-resnet18")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--images", type=int, default=50_000, help="synthetic training set size")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per algorithm, the first one untimed")
    parser.add_argument(
        "--update-interval", type=int, help="ΔT of the algorithms that have one (default theirs; short runs need less)"
    )
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--algos", default="dense,static,set,rigl,mest,granet")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    plugins = Plugins.load()
    algos = [a for a in args.algos.split(",") if a in plugins.registry.names("algorithm")]
    device = resolve_device(args.device)
    data = synthetic_data(args.images, 32, device)
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # interleaved, best of the repeats: other load on the machine hits every algorithm
        for algo in algos:
            measured = measure(args, plugins, device, data, algo)
            if algo not in results or measured["images_per_s"] > results[algo]["images_per_s"]:
                results[algo] = measured
    dense = results.get("dense", {}).get("images_per_s")
    for row in results.values():
        row["vs_dense"] = round(row["images_per_s"] / dense, 3) if dense else None
    report = {
        "device": device_name(device),
        "model": args.model,
        "batch_size": args.batch_size,
        "precision": resolve_precision("auto", device),
        "sparsity": args.sparsity,
        "images": args.images,
        "epochs_timed": args.epochs - 1,
        "algorithms": results,
    }
    print_report(report, args.json)


if __name__ == "__main__":
    main()
