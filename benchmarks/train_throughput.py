"""Training throughput of dense CIFAR ResNet-18 at 32 px: the ceiling versus the real data pipeline.

ceiling:  the same training step on one synthetic batch that already sits on the device (no loader, no
          augmentation, no hooks): the most the model can do.
pipeline: dstbench's own `Trainer.fit` on a synthetic uint8 dataset of CIFAR's size, held where the runner would
          hold it (on the GPU when it fits), with device-side crop and flip, lifecycle hooks and progress.
Both are timed in one process after a warm-up; their ratio is the pipeline's efficiency (goal on a GPU: ≥ 0.9).

    python benchmarks/train_throughput.py                 # GPU if there is one, else CPU
    python benchmarks/train_throughput.py --device cpu --images 2048 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch
from common import device_name, fit, print_report, sync, synthetic_data

from dstbench.config import resolve, resolve_device
from dstbench.plugins import Plugins
from dstbench.runner import build_model, use_channels_last
from dstbench.train import model_input, resolve_precision


def _config(args, plugins):
    flags = {
        "dataset": "cifar10",
        "model": args.model,
        "batch_size": args.batch_size,
        "epochs": 1,
        "device": args.device,
        "precision": args.precision,
        "quiet": True,
    }
    return resolve(flags, None, plugins.registry)


def ceiling(cfg, plugins, device, steps: int) -> float:
    trainer = plugins.registry.trainer(cfg.trainer)()
    channels_last = use_channels_last(cfg, device)
    model = build_model(cfg, plugins, device, channels_last)
    optimizer = trainer.build_optimizer(cfg, model)
    images = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (cfg.batch_size,), device=device)
    bf16 = resolve_precision(cfg.precision, device) == "bf16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(model_input(images, channels_last))
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    for _ in range(max(3, steps // 10)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def pipeline(cfg, plugins, device, n_images: int) -> float:
    # epoch 1 warms up (cuDNN autotuning, the allocator); epoch 2 is the measurement
    return fit(cfg, plugins, device, synthetic_data(n_images, 32, device), epochs=2).history[-1].images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="cifar-resnet18")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of the ceiling")
    parser.add_argument("--images", type=int, default=50_000, help="synthetic training set size of the pipeline")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    plugins = Plugins.load()
    cfg = _config(args, plugins)
    device = resolve_device(cfg.device)
    top = ceiling(cfg, plugins, device, args.steps)
    real = pipeline(cfg, plugins, device, args.images)
    results = {
        "device": device_name(device),
        "model": cfg.model,
        "batch_size": cfg.batch_size,
        "precision": resolve_precision(cfg.precision, device),
        "ceiling_img_s": round(top),
        "pipeline_img_s": round(real),
        "ratio": round(real / top, 3),
    }
    print_report(results, args.json)


if __name__ == "__main__":
    main()
