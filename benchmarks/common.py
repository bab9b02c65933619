"""What the benchmark scripts share: a run of dstbench's own trainer on synthetic data held like real data."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from dstbench.config import RunConfig
from dstbench.data import Augment, TensorImages
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import build_model, place_on_device, use_channels_last
from dstbench.train import Run, TrainResult


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def print_report(report: dict, path: str | None) -> None:
    """The results as JSON on stdout, and in `path` when given."""
    print(json.dumps(report, indent=2))
    if path:
        write_report(report, path)


def write_report(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def synthetic_data(n_images: int, size: int, device: torch.device) -> TensorImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n_images,), generator=g)
    return place_on_device(TensorImages(images, labels, augment=Augment(crop_padding=4, hflip=True)), device)


def fit(cfg: RunConfig, plugins: Plugins, device: torch.device, data: TensorImages, epochs: int) -> TrainResult:
    """`Trainer.fit` with the config's algorithm, exactly as `dstbench run` trains, minus data loading and eval."""
    cfg = replace(cfg, epochs=epochs)
    registry = plugins.registry
    trainer = registry.trainer(cfg.trainer)()
    channels_last = use_channels_last(cfg, device)
    model = build_model(cfg, plugins, device, channels_last)
    optimizer = trainer.build_optimizer(cfg, model)
    algorithm = registry.algorithm(cfg.algo).from_config(cfg)
    run = Run(
        config=cfg,
        model=model,
        optimizer=optimizer,
        scheduler=trainer.build_scheduler(cfg, optimizer, data.num_batches(cfg.batch_size, train=True)),
        algorithm=algorithm,
        train_data=data,
        device=device,
        hooks=plugins,
        reporter=PlainReporter(quiet=True),
        generator=torch.Generator().manual_seed(0),
        channels_last=channels_last,
    )
    algorithm.setup(run)
    plugins.register(algorithm, name="benchmark-algorithm")
    try:
        return trainer.fit(run)
    finally:
        plugins.unregister(algorithm)
