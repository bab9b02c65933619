"""FLOPs of dense and sparse models, counted as RigL (Evci et al. 2020, appendix "FLOPs") counts them.

Only the multiply-adds (MACs) of conv and linear layers count, and FLOPs = 2 × MACs. A sparse layer costs its
density times its dense MACs. Training costs, per image and step, are those of RigL's appendix: the forward pass
and the two backward matmuls (input and weight gradients) each cost one inference, so dense training costs 3·f_D,
static sparse training and SET 3·f_S, and RigL, which needs the dense gradient at an update step, 2·f_S + f_D
there and 3·f_S at the other ΔT steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dstbench.sparse import SPARSIFIABLE

FLOPS_PER_MAC = 2
CONVENTION = "FLOPs = 2 × multiply-adds of conv and linear layers"


def _module_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call: every output element of a conv sums (in_channels / groups) × kernel products, every output
    element of a linear layer in_features products (so a linear applied to T tokens counts T times)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-adds per sample of every conv and linear layer, keyed like `sparsifiable` ("<module>.weight").

    `input_shape` is one sample's shape, e.g. (C, H, W); the model runs once, in eval mode, on a zero batch of one.
    A module called more than once counts every call; one never called counts 0.
    """
    names = {module: name for name, module in model.named_modules() if isinstance(module, SPARSIFIABLE)}
    macs = {f"{name}.weight": 0 for name in names.values()}

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        macs[f"{names[module]}.weight"] += _module_macs(module, output)

    handles = [module.register_forward_hook(count) for module in names]
    parameter = next(model.parameters(), None)
    device, dtype = (parameter.device, parameter.dtype) if parameter is not None else (None, None)
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


def sparse_macs(macs: Mapping[str, int], layer_densities: Mapping[str, float]) -> float:
    """Multiply-adds with each layer scaled by its density; layers without a density stay dense."""
    return sum(count * layer_densities.get(name, 1.0) for name, count in macs.items())


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs per training image (one forward and backward pass of one sample)."""

    dense: float  # 3 · f_D
    static_sparse: float  # 3 · f_S: a fixed mask, and SET (its updates need no dense gradient)
    rigl: float  # (3 · f_S · ΔT + 2 · f_S + f_D) / (ΔT + 1)


def training_flops(sparse: float, dense: float, delta_t: int) -> TrainingFlops:
    """Training FLOPs per image from the inference FLOPs `sparse` (f_S) and `dense` (f_D), with RigL's mask update
    every `delta_t` steps (averaged over one update step and the `delta_t` steps around it, as RigL does)."""
    if delta_t < 1:
        raise ValueError(f"delta_t must be at least 1, got {delta_t}")
    rigl = (3 * sparse * delta_t + 2 * sparse + dense) / (delta_t + 1)
    return TrainingFlops(dense=3 * dense, static_sparse=3 * sparse, rigl=rigl)
