"""`mest` and `mest-g`: Memory-Economic Sparse Training (Yuan et al., NeurIPS 2021).

Every few epochs each layer mutates: the active weights of lowest importance |w| + λ|∂L/∂w| (the update step's
real gradient) are removed and as many weights grow, at random (`mest`, MEST_r) or by gradient magnitude
(`mest-g`, MEST_g). The mutation ratio decays over training in the shape of the authors' scripts (theirs e.g.
2% → 1% → 0%): it halves at `first_decay` and stops at `stop` (fractions of training). Its default, 10%, is also
the soft memory bound's excess below.

With the soft memory bound (EM&S, `soft_bound=true`, the default) a layer first grows past its target, by
`mutation_ratio` of its target count (10%: "10% of the target density above the target"), trains that way until
the next mutation, and is then pruned back to the target by importance before growing again. Once the mutation
ratio reaches 0 the next update prunes back to the target for good. Without the bound (EM), each update removes
and regrows the same number, so the count never leaves the target.
"""

import dataclasses

import torch

from dstbench.hookspecs import hookimpl
from dstbench.sparse.dst import GrowOptions, SparseAlgorithm
from dstbench.sparse.masks import grow, prune, with_ties_broken

GROWTHS = ("random", "gradient")


@dataclasses.dataclass(frozen=True)
class MESTOptions(GrowOptions):
    update_every_epochs: float = 5.0  # mutation interval, as in the authors' scripts
    mutation_ratio: float = 0.1  # of each layer's target nonzero count
    first_decay: float = 0.6  # the mutation ratio halves here (fraction of training) ...
    stop: float = 0.8  # ... and is 0 from here on
    importance_lambda: float = 1.0  # λ in |w| + λ|g|
    soft_bound: bool = True
    growth: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update_every_epochs <= 0:
            raise ValueError(f"update_every_epochs must be positive, got {self.update_every_epochs}")
        if not 0 <= self.mutation_ratio < 1:
            raise ValueError(f"mutation_ratio must be in [0, 1), got {self.mutation_ratio}")
        if not 0 <= self.first_decay <= self.stop <= 1:
            raise ValueError(f"need 0 <= first_decay <= stop <= 1, got {self.first_decay} and {self.stop}")
        if self.importance_lambda < 0:
            raise ValueError(f"importance_lambda must be at least 0, got {self.importance_lambda}")
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {', '.join(GROWTHS)}, got '{self.growth}'")


class MEST(SparseAlgorithm):
    name = "mest"
    description = "MEST (EM&S): mutate by importance |w| + λ|g|, random regrowth (Yuan et al. 2021)"
    Options = MESTOptions

    def setup(self, run, state=None) -> None:
        super().setup(run, state)
        self.interval = max(1, round(self.options.update_every_epochs * run.steps_per_epoch))
        self.total_steps = run.total_steps
        self.last_update = 0
        if self.interval > run.total_steps:
            run.reporter.warn(
                f"{self.name} will not change its masks: its first mutation would be at step {self.interval} of "
                f"{run.total_steps} (update_every_epochs); it trains like static sparse"
            )

    def updates_at(self, run) -> bool:
        # The final prune-back changes what over_target says: plugins asking after it still see the update.
        final = run.step == self.total_steps and (self.over_target() or self.last_update == run.step)
        return run.step % self.interval == 0 or final

    def over_target(self) -> bool:
        return any(self.counts[name] > self.targets[name] for name in self.masks)

    def mutation_ratio(self, step: int) -> float:
        progress = step / self.total_steps
        o = self.options
        return 0.0 if progress >= o.stop else o.mutation_ratio / 2 if progress >= o.first_decay else o.mutation_ratio

    def importance(self, name: str) -> torch.Tensor:
        weight = self.masks.weights[name]
        score = weight.detach().abs() + self.options.importance_lambda * weight.grad.abs()
        return with_ties_broken(score.flatten(), self.noise(name))

    def grow_scores(self, name: str) -> torch.Tensor:
        return self.gradient(name) if self.options.growth == "gradient" else self.random(name)

    def update(self, run) -> None:
        self.last_update = run.step
        ratio = self.mutation_ratio(run.step)
        for name in self.masks:
            target = self.targets[name]
            mutation = int(ratio * target)
            if self.options.soft_bound:  # back to the target, then past it
                n_prune = self.counts[name] - target
                n_grow = min(mutation, self.masks[name].numel() - target)
            else:  # the same number out and in
                n_prune = n_grow = mutation
            mask = prune(self.masks[name].flatten(), self.importance(name), n_prune)
            self.set_mask(name, grow(mask, self.grow_scores(name), n_grow))
            self.counts[name] += n_grow - n_prune


@dataclasses.dataclass(frozen=True)
class MESTGOptions(MESTOptions):
    growth: str = "gradient"


class MESTG(MEST):
    name = "mest-g"
    description = "MEST_g: MEST with regrowth by gradient magnitude"
    Options = MESTGOptions


@hookimpl
def register_algorithms(register):
    register(MEST)
    register(MESTG)
