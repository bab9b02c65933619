"""Base classes of the sparse training algorithms; a new algorithm subclasses one and implements `update`.

`SparseAlgorithm` draws the initial masks from the layer-wise distribution (exact integer counts per layer) and
zeroes the masked weights after every optimizer step. At an update step, its `on_step_end` hook (a) zeroes the
masked weights and their optimizer state (momentum, Adam moments), so weights that grow start at zero with zero
momentum, (b) calls `update`, which changes masks with `prune` and `grow`, and (c) applies the new masks to
weights and optimizer state, clearing the state of what was pruned. Between updates the state of inactive weights
is left alone: it never reaches an active weight, and leaving it saves a pass over it every step. `.grad` holds
the step's dense gradient throughout. All randomness comes from one seeded generator on the training device, saved in
checkpoints; under torch.distributed every process computes the same update and rank 0's masks are broadcast.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dstbench.algorithm import Algorithm
from dstbench.errors import UserError, unknown_choice
from dstbench.hookspecs import hookimpl
from dstbench.sparse import first_and_last, sparsifiable
from dstbench.sparse.distributions import DISTRIBUTIONS, MAX_ERK_POWER_SCALE, densities, nonzero_counts
from dstbench.sparse.masks import Masks, grow, prune, with_ties_broken
from dstbench.sparse.schedules import DECAYS, DropSchedule

if TYPE_CHECKING:
    from dstbench.config import RunConfig
    from dstbench.train import Run

GROW_INITS = ("zero", "normal")
SEED_OFFSET = 0x5EED  # mask randomness and data order come from different streams of the run seed


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class SparseOptions:
    dense_first: bool = False  # keep the first sparsifiable layer dense
    dense_last: bool = False  # keep the last (usually the classifier) dense
    erk_power_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(
            0 < self.erk_power_scale <= MAX_ERK_POWER_SCALE,
            f"erk_power_scale must be in (0, {MAX_ERK_POWER_SCALE}], got {self.erk_power_scale}",
        )


@dataclasses.dataclass(frozen=True)
class GrowOptions(SparseOptions):
    grow_init: str = "zero"  # value of a weight when it becomes active: zero, or normal with its layer's std

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.grow_init in GROW_INITS, f"grow_init must be one of {', '.join(GROW_INITS)}, got '{self.grow_init}'"
        )


@dataclasses.dataclass(frozen=True)
class DropGrowOptions(GrowOptions):
    update_interval: int = 100  # ΔT, in optimizer steps
    drop_fraction: float = 0.3  # α (RigL) or ζ (SET): the share of a layer's active weights replaced at an update
    t_end: float = 0.75  # updates stop after this fraction of training
    decay: str = "cosine"  # of the drop fraction: cosine or constant

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.update_interval >= 1, f"update_interval must be at least 1, got {self.update_interval}")
        _check(0 < self.drop_fraction < 1, f"drop_fraction must be in (0, 1), got {self.drop_fraction}")
        _check(0 < self.t_end <= 1, f"t_end must be in (0, 1], got {self.t_end}")
        _check(self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)}, got '{self.decay}'")


class SparseAlgorithm(Algorithm):
    """A sparse network with masks fixed at initialisation; subclasses change them in `update`."""

    Options: ClassVar[type] = SparseOptions
    default_distribution: ClassVar[str | None] = "erk"

    masks: Masks
    counts: dict[str, int]  # active weights per masked layer, tracked on the host so updates need no device reads
    targets: dict[str, int]  # the distribution's count per sparsifiable layer (forced-dense layers: all weights)
    initial: dict[str, int]  # the same at the initial sparsity (the target, except for gradual pruning)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        if not cfg.sparsity:
            raise UserError(
                f"algorithm '{cls.name}' trains sparse weights: --sparsity must be in (0, 1); for 0 use --algo dense"
            )
        distribution = cfg.distribution or cls.default_distribution
        if distribution not in DISTRIBUTIONS:
            raise unknown_choice("distribution", distribution, DISTRIBUTIONS)

    def setup(self, run: Run, state: dict[str, Any] | None = None) -> None:
        weights = sparsifiable(run.model)
        if not weights:
            raise UserError(f"model '{run.config.model}' has no conv or linear weights to make sparse")
        dense = first_and_last(weights, first=self.options.dense_first, last=self.options.dense_last)
        shapes = {name: tuple(w.shape) for name, w in weights.items()}

        def counts_at(sparsity: float) -> dict[str, int]:
            layer_densities = densities(shapes, sparsity, self.distribution, dense, self.options.erk_power_scale)
            return nonzero_counts(shapes, layer_densities)

        self.targets = counts_at(self.sparsity)
        empty = next((name for name, count in self.targets.items() if count == 0), None)
        if empty is not None:
            raise UserError(
                f"at sparsity {self.sparsity:g} ({self.distribution}) layer {empty} would keep none of its "
                f"{math.prod(shapes[empty]):,} weights; lower the sparsity"
            )
        self.initial = counts_at(self.initial_sparsity())
        masked = {name: w for name, w in weights.items() if name not in dense}
        self.generator = torch.Generator(device=run.device).manual_seed(run.config.seed + SEED_OFFSET)
        if state is None:
            self.masks = Masks.random(masked, self.initial, self.generator)
            self.masks.broadcast()
            self.counts = {name: self.initial[name] for name in masked}
        else:
            self.masks = Masks.from_state(masked, state["masks"])
            self.generator.set_state(state["generator"])
            self.counts = dict(state["counts"])
        # A resumed run's optimizer state is the saved one, which an uninterrupted run would go on with as it is.
        self.masks.apply(run.optimizer if state is None else None)

    def initial_sparsity(self) -> float:
        """The sparsity of the first masks; algorithms that prune gradually start below the target."""
        return self.sparsity

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks.state_dict(), "generator": self.generator.get_state(), "counts": dict(self.counts)}

    @hookimpl(tryfirst=True)
    def on_step_end(self, run: Run) -> None:
        updating = self.updates_at(run)
        self.masks.apply(run.optimizer if updating else None)
        if updating:
            self.update(run)
            self.masks.broadcast()
            self.masks.apply(run.optimizer)

    def updates_at(self, run: Run) -> bool:
        """Whether `run.step` (just taken) is an update step."""
        return False

    def update(self, run: Run) -> None:
        """Change the masks with `self.replace`, or `prune` and `grow`, keeping `self.counts` current."""

    # --- scores and mask changes for subclasses ------------------------------------------------------------

    def noise(self, name: str) -> torch.Tensor:
        return torch.rand(self.masks[name].numel(), generator=self.generator, device=self.generator.device)

    def magnitude(self, name: str) -> torch.Tensor:
        return with_ties_broken(self.masks.weights[name].detach().abs().flatten(), self.noise(name))

    def gradient(self, name: str) -> torch.Tensor:
        grad = self.masks.weights[name].grad
        if grad is None:
            raise RuntimeError(f"{name} has no gradient at the update step")
        return with_ties_broken(grad.abs().flatten(), self.noise(name))

    def random(self, name: str) -> torch.Tensor:
        return self.noise(name).double()

    def set_mask(self, name: str, new: torch.Tensor) -> None:
        """Install a flat mask; weights that become active get `grow_init` (they are zero until then)."""
        if getattr(self.options, "grow_init", "zero") == "normal":
            old = self.masks[name].flatten()
            weight = self.masks.weights[name].detach()
            flat = weight.flatten()  # in the masks' (logical) order, whatever the memory format
            active = old.to(flat.dtype)
            n = max(self.counts[name], 2)
            mean = (flat * active).sum() / n
            std = (((flat - mean) * active).square().sum() / (n - 1)).sqrt()
            noise = torch.randn(flat.numel(), generator=self.generator, device=self.generator.device)
            weight.copy_(torch.where(new & ~old, noise.to(flat.dtype) * std, flat).view(weight.shape))
        self.masks[name] = new

    def replace(self, name: str, n: int, drop_scores: torch.Tensor, grow_scores: torch.Tensor) -> None:
        """Drop the `n` active weights of lowest `drop_scores` and grow `n` of highest `grow_scores` among those
        not kept (a weight dropped and grown again in the same update keeps its value, as in RigL)."""
        mask = self.masks[name].flatten()
        self.set_mask(name, grow(prune(mask, drop_scores, n), grow_scores, n))


class DropAndGrow(SparseAlgorithm):
    """Every ΔT steps until T_end, replace a decaying fraction of each layer's active weights (SET, RigL)."""

    Options: ClassVar[type] = DropGrowOptions
    schedule: DropSchedule

    def setup(self, run: Run, state: dict[str, Any] | None = None) -> None:
        super().setup(run, state)
        o = self.options
        self.schedule = DropSchedule(o.update_interval, round(o.t_end * run.total_steps), o.drop_fraction, o.decay)

        if self.schedule.interval > self.schedule.end:  # not one update step
            run.reporter.warn(
                f"{self.name} will not change its masks: its first update would be at step "
                f"{o.update_interval} of {run.total_steps} (update_interval); it trains like static sparse"
            )

    def updates_at(self, run: Run) -> bool:
        return self.schedule.is_update(run.step)

    def update(self, run: Run) -> None:
        fraction = self.schedule.fraction_at(run.step)
        for name in self.masks:
            n = int(fraction * self.counts[name])
            self.replace(name, n, self.drop_scores(name), self.grow_scores(name))

    def drop_scores(self, name: str) -> torch.Tensor:
        return self.magnitude(name)

    def grow_scores(self, name: str) -> torch.Tensor:
        raise NotImplementedError
