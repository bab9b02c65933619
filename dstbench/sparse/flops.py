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
from torch.utils._python_dispatch import TorchDispatchMode

from dstbench.sparse import sparsifiable

FLOPS_PER_MAC = 2
CONVENTION = "FLOPs = 2 × multiply-adds of conv and linear layers"


def _product_macs(func: object, args: tuple, output: torch.Tensor) -> int | None:
    """Multiply-adds of one matrix product or convolution (None for any other operation): every output element of a
    convolution sums (in_channels / groups) × kernel products; a matrix product (m × k)·(k × n) takes m·k·n."""
    aten = torch.ops.aten
    if func in (aten.convolution.default, aten._convolution.default):
        source, weight, transposed = args[0], args[1], args[6]
        per_element = weight.shape[1] * math.prod(weight.shape[2:])  # (in or out channels) / groups × kernel
        return (source if transposed else output).numel() * per_element
    if func in (aten.addmm.default, aten.baddbmm.default):
        args = args[1:]
    if func in (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.mv.default):
        a, b = args[0], args[1]
        return a.numel() * (b.shape[-1] if b.ndim > 1 else 1)
    return None


class _WeightMacs(TorchDispatchMode):
    """Credits each matrix product and convolution to the weight it reads, found by storage: a weight reaches the
    kernels through views (`linear` multiplies by its transpose), and some modules never call their layers (Video
    Swin's attention multiplies by `qkv.weight` itself), so counting calls of the layers would miss them."""

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        super().__init__()
        # A storage's C pointer: unique among live storages, shared by views, defined on the meta device too.
        self.names = {weight.untyped_storage()._cdata: name for name, weight in weights.items()}
        self.macs = dict.fromkeys(weights, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        macs = _product_macs(func, args, output)
        if macs is not None:
            storages = (arg.untyped_storage()._cdata for arg in args if isinstance(arg, torch.Tensor))
            name = next((self.names[storage] for storage in storages if storage in self.names), None)
            if name is not None:
                self.macs[name] += macs
        return output


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-adds per sample of every conv and linear layer, keyed like `sparsifiable` ("<module>.weight").

    `input_shape` is one sample's shape, e.g. (C, H, W); the model runs once, in eval mode, on a zero batch of one.
    Every product that reads a layer's weight counts, however the model calls it: a layer called twice counts
    twice, one never used counts 0.
    """
    weights = sparsifiable(model)
    parameter = next(model.parameters(), None)
    device, dtype = (parameter.device, parameter.dtype) if parameter is not None else (None, None)
    was_training = model.training
    try:
        model.eval()
        with _WeightMacs(weights) as counter:
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return counter.macs


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
