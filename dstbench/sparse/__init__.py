"""Which weights are sparsifiable, and how sparse a model really is (counted in its weights, not its masks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SPARSIFIABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def sparsifiable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv and linear weights by name, in module order; biases and norm layers stay dense."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, SPARSIFIABLE)}


def first_and_last(weights: dict[str, nn.Parameter], *, first: bool, last: bool) -> set[str]:
    """The names of the first and/or last sparsifiable weight, the layers DST code bases often keep dense."""
    names = list(weights)
    if not names:
        return set()
    return ({names[0]} if first else set()) | ({names[-1]} if last else set())


@dataclass(frozen=True)
class LayerDensity:
    name: str
    shape: tuple[int, ...]
    nonzeros: int
    numel: int

    @property
    def density(self) -> float:
        return self.nonzeros / self.numel


@torch.no_grad()
def measure(model: nn.Module) -> list[LayerDensity]:
    """Nonzero counts of every sparsifiable weight, read from the weights themselves."""
    weights = sparsifiable(model)
    counts = torch.stack([torch.count_nonzero(w) for w in weights.values()]).tolist() if weights else []
    return [LayerDensity(n, tuple(w.shape), c, w.numel()) for (n, w), c in zip(weights.items(), counts, strict=True)]


def achieved_sparsity(layers: list[LayerDensity]) -> float:
    total = sum(layer.numel for layer in layers)
    return 1.0 - sum(layer.nonzeros for layer in layers) / total if total else 0.0
