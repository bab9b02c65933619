"""An example third-party dstbench plugin that implements every hook with nothing but the public API.

It registers a static random-mask algorithm, a tiny MLP, a synthetic stripes dataset, an "invert" corruption
suite, an AdamW trainer and a command, and counts the lifecycle hooks it sees into the leaderboard entry.
"""

from __future__ import annotations

import dataclasses

import click
import torch
from torch import nn

from dstbench.algorithm import Algorithm
from dstbench.corruption import CorruptionSuite
from dstbench.data import Augment, DatasetSpec, DataSplits, TensorImages
from dstbench.hookspecs import hookimpl
from dstbench.models import ModelSpec
from dstbench.sparse import sparsifiable
from dstbench.train import Trainer


@dataclasses.dataclass(frozen=True)
class RandomStaticOptions:
    keep_first_dense: bool = False


class RandomStatic(Algorithm):
    """Each sparsifiable layer keeps a seeded random (1 - sparsity) of its weights, fixed for the whole run."""

    name = "example-random-static"
    description = "Random static mask, uniform per layer (example plugin)"
    Options = RandomStaticOptions
    default_distribution = "uniform"

    def setup(self, run, state=None):
        if state is not None:  # a resumed run
            params = dict(run.model.named_parameters())
            self.masks = {name: mask.to(params[name].device) for name, mask in state["masks"].items()}
            return
        weights = sparsifiable(run.model)
        if self.options.keep_first_dense:
            weights.pop(next(iter(weights)))
        generator = torch.Generator().manual_seed(run.config.seed)
        self.masks = {}
        for name, weight in weights.items():
            keep = round((1 - self.sparsity) * weight.numel())
            order = torch.randperm(weight.numel(), generator=generator)
            mask = torch.zeros(weight.numel(), dtype=torch.bool)
            mask[order[:keep]] = True
            self.masks[name] = mask.view_as(weight).to(weight.device)
        self._apply(run)

    @torch.no_grad()
    def _apply(self, run):
        params = dict(run.model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask)

    @hookimpl(tryfirst=True)
    def on_step_end(self, run):
        self._apply(run)

    def state_dict(self):
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}}


def _stripes(n: int, seed: int) -> TensorImages:
    """Class 0: horizontal stripes, class 1: vertical, at random phases, with noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    phase = torch.randint(0, 4, (n, 1, 1), generator=g)
    coords = torch.arange(16)
    rows = ((coords[None, :, None] + phase) // 2 % 2).expand(n, 16, 16)
    cols = ((coords[None, None, :] + phase) // 2 % 2).expand(n, 16, 16)
    pattern = torch.where(labels[:, None, None] == 0, rows, cols).float()
    images = (pattern * 160 + 40 + torch.randn(n, 16, 16, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    return TensorImages(images[:, None], labels, augment=Augment(crop_padding=1))


def _load_stripes(request):
    return DataSplits(_stripes(256, 0), _stripes(64, 1), ("horizontal", "vertical"))


class InvertSuite(CorruptionSuite):
    name = "example-invert"
    description = "Blend towards the negative image (example plugin)"
    corruptions = ("invert",)
    severities = (1, 2, 3)
    resolution = "any"

    def corrupt(self, images, corruption, severity, rng):
        alpha = severity / 4
        return ((1 - alpha) * images.float() + alpha * (255 - images.float())).round().to(torch.uint8)


class AdamWTrainer(Trainer):
    name = "example-adamw"
    description = "AdamW recipe (example plugin)"
    modality = "image"
    defaults = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05}


@click.command(name="example-hello")
def hello():
    """Say hello (example plugin command)."""
    click.echo("hello from the example plugin")


COUNTS = {"run_start": 0, "step_end": 0, "epoch_end": 0, "run_end": 0}


@hookimpl
def register_algorithms(register):
    register(RandomStatic)


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="example-mlp",
            build=lambda req: nn.Sequential(
                nn.Flatten(), nn.Linear(req.in_chans * req.image_size**2, 32), nn.ReLU(), nn.Linear(32, req.num_classes)
            ),
            description="Two-layer MLP (example plugin)",
        )
    )


@hookimpl
def register_datasets(register):
    register(
        DatasetSpec(
            name="example-stripes",
            description="Horizontal vs vertical stripes (example plugin)",
            num_classes=2,
            image_size=16,
            channels=1,
            mean=(0.5,),
            std=(0.25,),
            load=_load_stripes,
            recipe={"model": "example-mlp", "epochs": 2, "batch_size": 32, "lr": 0.05, "suite": "example-invert"},
        )
    )


@hookimpl
def register_suites(register):
    register(InvertSuite())


@hookimpl
def register_trainers(register):
    register(AdamWTrainer)


@hookimpl
def register_commands(register):
    register(hello)


@hookimpl
def on_run_start(run):
    COUNTS["run_start"] += 1


@hookimpl
def on_step_end(run):
    COUNTS["step_end"] += 1


@hookimpl
def on_epoch_end(run, stats):
    COUNTS["epoch_end"] += 1


@hookimpl
def on_run_end(run, result):
    COUNTS["run_end"] += 1


@hookimpl
def entry_fields(entry, run):
    return {"hook_counts": dict(COUNTS), "masked_layers": len(getattr(run.algorithm, "masks", {})) if run else None}
