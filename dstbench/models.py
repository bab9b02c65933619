"""Model contract: a plugin registers a `ModelSpec`; dstbench wraps what it builds in a `Classifier`.

Every model dstbench trains takes images scaled to [0, 1] and normalises them itself (RobustBench's convention),
so corrupted uint8 images go straight in and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelRequest:
    num_classes: int
    in_chans: int
    image_size: int
    variant: str | None = None  # for a family spec ("timm/"), the part of the name after the prefix
    frames: int | None = None  # for video models: the clip length T of (N, C, T, H, W) inputs


@dataclass(frozen=True)
class ModelSpec:
    """`name` is either a model name or a family prefix ending in '/', which accepts 'prefix/<variant>'."""

    name: str
    build: Callable[[ModelRequest], nn.Module]
    description: str
    modality: str = "image"

    @property
    def is_family(self) -> bool:
        return self.name.endswith("/")


class Classifier(nn.Module):
    """Normalisation followed by the network; the input is a float batch in [0, 1]."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)  # images (N, C, H, W) and clips (N, C, T, H, W) alike
        return self.net((x - self.mean.view(shape)) / self.std.view(shape))
