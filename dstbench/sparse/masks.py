"""`Masks`: the boolean masks of a model's sparse layers, the one record of which weights exist.

Masks are never rebuilt from `weight != 0` (a weight grown at zero is active); they are saved in checkpoints.
`apply` zeroes the masked weights in one fused multiplication, and with the optimizer also their optimizer state
(momentum, Adam moments), so a weight that becomes active starts at zero with no stale momentum. `prune` and
`grow` change one layer's mask by exact counts without reading anything back from the device.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dstbench.errors import UserError


class Masks:
    def __init__(self, weights: Mapping[str, nn.Parameter], masks: Mapping[str, torch.Tensor]):
        self.weights = dict(weights)
        self.masks = {name: masks[name] for name in weights}
        self._factors: dict[str, torch.Tensor] = {}
        for name in self.masks:
            self._refresh(name)

    @classmethod
    def random(
        cls, weights: Mapping[str, nn.Parameter], counts: Mapping[str, int], generator: torch.Generator
    ) -> Masks:
        """Exactly counts[name] active weights per layer, placed uniformly at random."""
        masks = {}
        for name, weight in weights.items():
            scores = torch.rand(weight.numel(), generator=generator, device=generator.device)
            masks[name] = grow(
                torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device), scores, counts[name]
            ).view_as(weight)
        return cls(weights, masks)

    def _refresh(self, name: str) -> None:
        self._factors[name] = self.masks[name].to(self.weights[name].dtype)
        names = list(self.masks)
        self._weight_list = [self.weights[n] for n in names]  # what every step multiplies, built once per change
        self._factor_list = [self._factors.get(n) for n in names]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        self.masks[name] = mask.view_as(self.weights[name])
        self._refresh(name)

    def __iter__(self):
        return iter(self.masks)

    def counts(self) -> dict[str, int]:
        """Active weights per layer (reads from the device: not for the hot path)."""
        names = list(self.masks)
        values = torch.stack([self.masks[n].sum() for n in names]).tolist() if names else []
        return dict(zip(names, values, strict=True))

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the masked weights and, with `optimizer`, every state tensor shaped like them."""
        torch._foreach_mul_(self._weight_list, self._factor_list)
        if optimizer is None:
            return
        states, factors = [], []
        for name in self.masks:
            weight = self.weights[name]
            for value in optimizer.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    states.append(value)
                    factors.append(self._factors[name])
        if states:
            torch._foreach_mul_(states, factors)

    def broadcast(self, src: int = 0) -> None:
        """Make every process hold rank `src`'s masks (a no-op outside torch.distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for name, mask in self.masks.items():
            as_bytes = mask.to(torch.uint8)
            torch.distributed.broadcast(as_bytes, src)
            self[name] = as_bytes.bool()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: mask.cpu() for name, mask in self.masks.items()}

    @classmethod
    def from_state(cls, weights: Mapping[str, nn.Parameter], state: Mapping[str, torch.Tensor]) -> Masks:
        """Masks saved by `state_dict`, checked against the model's layers."""
        missing, extra = set(weights) - set(state), set(state) - set(weights)
        if missing or extra:
            raise UserError(
                f"the saved masks do not match the model: layers missing from them {sorted(missing)[:3]}, "
                f"unknown to the model {sorted(extra)[:3]}"
            )
        for name, weight in weights.items():
            if tuple(state[name].shape) != tuple(weight.shape) or state[name].dtype != torch.bool:
                raise UserError(
                    f"the saved mask of {name} is {state[name].dtype} {tuple(state[name].shape)}, the model's weight "
                    f"is {tuple(weight.shape)}"
                )
        return cls(weights, {name: state[name].to(weight.device) for name, weight in weights.items()})


def with_ties_broken(scores: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Non-negative scores in float64, with equal scores put in a random order by `noise` (uniform in [0, 1)),
    while distinct float32 scores keep their order: the relative perturbation (2**-30) is far below float32's
    resolution, and zeros get an absolute one (1e-300) below the smallest positive float32."""
    noise = noise.double()
    return scores.to(torch.float64, copy=True).mul_(noise.mul(2.0**-30).add_(1)).add_(noise.mul(1e-300))


def prune(mask: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """A flat mask without its `n` active entries of lowest score (scores: flat, float64, ties already broken)."""
    if n <= 0:
        return mask
    candidates = torch.where(mask, scores, torch.full_like(scores, float("inf")))
    drop = torch.topk(candidates, n, largest=False, sorted=False).indices
    return mask.clone().index_fill_(0, drop, False)


def grow(mask: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """A flat mask with its `n` inactive entries of highest score added; the caller makes sure that at least `n`
    entries are inactive."""
    if n <= 0:
        return mask
    candidates = torch.where(mask, torch.full_like(scores, float("-inf")), scores)
    add = torch.topk(candidates, n, sorted=False).indices
    return mask.clone().index_fill_(0, add, True)
