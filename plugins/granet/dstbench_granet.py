"""GraNet for dstbench (Liu et al., "Sparse Training via Boosting Pruning Plasticity with Neuroregeneration",
NeurIPS 2021), written against dstbench's public API only: a separately installed plugin, as any third party's.

The network starts sparse at `init_density` (ERK) and is pruned gradually to the target density with the cubic
schedule d(t) = d_f + (d_i - d_f)(1 - progress)³, by global weight magnitude, every ΔT steps between `prune_start`
and `prune_end`. At each of those updates, after the pruned weights and their optimizer state are zeroed,
zero-cost neuroregeneration replaces a fraction of every layer's weights, decaying by cosine from `prune_start` to
`prune_end`: the smallest magnitudes go and as many grow by gradient (`granet`) or at random (`granet-r`). (The
authors' code decays it over the whole run; here every mask update ends at `prune_end`, as RigL's do at T_end.)
When the target is denser than `init_density` (sparsity below 0.2 with the default), training starts at the target
and only regenerates.
"""

from __future__ import annotations

import dataclasses

import torch

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.sparse.dst import GrowOptions, SparseAlgorithm
from dstbench.sparse.masks import prune
from dstbench.sparse.schedules import DropSchedule, cubic_density


@dataclasses.dataclass(frozen=True)
class GraNetOptions(GrowOptions):
    init_density: float = 0.8
    prune_start: float = 0.0  # fraction of training where gradual pruning starts ...
    prune_end: float = 0.75  # ... and where it, and every mask update, ends
    update_interval: int = 100  # ΔT, in optimizer steps
    regrow_fraction: float = 0.5  # of each layer's active weights at the first update, decaying by cosine
    growth: str = "gradient"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.init_density <= 1:
            raise ValueError(f"init_density must be in (0, 1], got {self.init_density}")
        if not 0 <= self.prune_start < self.prune_end <= 1:
            raise ValueError(f"need 0 <= prune_start < prune_end <= 1, got {self.prune_start}, {self.prune_end}")
        if self.update_interval < 1:
            raise ValueError(f"update_interval must be at least 1, got {self.update_interval}")
        if not 0 <= self.regrow_fraction < 1:
            raise ValueError(f"regrow_fraction must be in [0, 1), got {self.regrow_fraction}")
        if self.growth not in ("gradient", "random"):
            raise ValueError(f"growth must be gradient or random, got '{self.growth}'")


class GraNet(SparseAlgorithm):
    name = "granet"
    description = "GraNet: gradual magnitude pruning from density 0.8 with gradient regrowth (Liu et al. 2021)"
    Options = GraNetOptions

    def initial_sparsity(self) -> float:
        return 1 - max(self.options.init_density, 1 - self.sparsity)

    def setup(self, run, state=None) -> None:
        super().setup(run, state)
        o = self.options
        self.start = round(o.prune_start * run.total_steps)
        last = round(o.prune_end * run.total_steps)
        end = last - last % o.update_interval  # the last update: the cubic schedule reaches the target there
        self.schedule = DropSchedule(o.update_interval, end, o.regrow_fraction, "cosine", self.start)
        self.final_total = sum(self.targets[name] for name in self.masks)
        self.initial_total = sum(self.initial[name] for name in self.masks)
        if self.initial_total > self.final_total and end < max(self.start, 1):
            raise UserError(
                f"granet reaches its target sparsity at its mask updates, every {o.update_interval} steps, but none "
                f"falls between steps {self.start} and {last} of this run's {run.total_steps} (prune_start, "
                "prune_end): lower update_interval or train longer"
            )

    def updates_at(self, run) -> bool:
        return self.schedule.is_update(run.step)

    def update(self, run) -> None:
        self.prune_to_schedule(run.step)
        self.masks.apply(run.optimizer)  # as GraNet's own code: what the schedule pruned regrows from 0, momentum 0
        fraction = self.schedule.fraction_at(run.step)
        for name in self.masks:
            grow_scores = self.gradient(name) if self.options.growth == "gradient" else self.random(name)
            self.replace(name, int(fraction * self.counts[name]), self.magnitude(name), grow_scores)

    def prune_to_schedule(self, step: int) -> None:
        """Remove the globally smallest weights down to the cubic schedule's total for this step."""
        goal = round(cubic_density(step, self.start, self.schedule.end, self.initial_total, self.final_total))
        excess = sum(self.counts.values()) - goal
        if excess <= 0:
            return
        names = list(self.masks)
        kept = prune(
            torch.cat([self.masks[n].flatten() for n in names]), torch.cat([self.magnitude(n) for n in names]), excess
        )
        for name, mask in zip(names, kept.split([self.masks[n].numel() for n in names]), strict=True):
            self.set_mask(name, mask)
        counts = torch.stack([self.masks[n].sum() for n in names]).tolist()  # one read from the device per update
        self.counts = dict(zip(names, counts, strict=True))


@dataclasses.dataclass(frozen=True)
class GraNetROptions(GraNetOptions):
    growth: str = "random"


class GraNetR(GraNet):
    name = "granet-r"
    description = "GraNet_r: GraNet with random regrowth"
    Options = GraNetROptions


@hookimpl
def register_algorithms(register):
    register(GraNet)
    register(GraNetR)
