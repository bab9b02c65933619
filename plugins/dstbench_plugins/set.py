"""`set`: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

Removes the active weights of smallest magnitude and regrows exactly as many at random positions. Defaults follow
RigL's comparison of the methods (Evci et al. 2020): ζ = 0.3, an update every ΔT = 100 steps until 75% of
training, with cosine decay of ζ. The original removes the ζ smallest positive and ζ largest negative weights
(`sign_split=true`) once per epoch (`update_interval` = steps per epoch, `decay=constant`).
"""

import dataclasses

import torch

from dstbench.hookspecs import hookimpl
from dstbench.sparse.dst import DropAndGrow, DropGrowOptions
from dstbench.sparse.masks import grow, prune, with_ties_broken


@dataclasses.dataclass(frozen=True)
class SETOptions(DropGrowOptions):
    sign_split: bool = False  # drop ζ of the positive and ζ of the negative weights, each nearest zero


class SET(DropAndGrow):
    name = "set"
    description = "SET: drop the smallest-magnitude weights, regrow as many at random (Mocanu et al. 2018)"
    Options = SETOptions

    def grow_scores(self, name: str) -> torch.Tensor:
        return self.random(name)

    def update(self, run) -> None:
        if not self.options.sign_split:
            super().update(run)
            return
        fraction = self.schedule.fraction_at(run.step)
        weights = {name: self.masks.weights[name].detach().flatten() for name in self.masks}
        # how many active weights are positive, for every layer in one read from the device
        positives = torch.stack([((w > 0) & self.masks[n].flatten()).sum() for n, w in weights.items()]).tolist()
        for (name, weight), n_pos in zip(weights.items(), positives, strict=True):
            n_neg = self.counts[name] - n_pos
            mask = self.masks[name].flatten()
            noise = self.noise(name)
            # positive weights by their value, negative ones by their magnitude: each side's nearest to zero go
            scores_pos = with_ties_broken(torch.where(weight > 0, weight, torch.inf), noise)
            scores_neg = with_ties_broken(torch.where(weight > 0, torch.inf, -weight), noise)
            n_pos_drop, n_neg_drop = int(fraction * n_pos), int(fraction * n_neg)
            mask = prune(prune(mask, scores_pos, n_pos_drop), scores_neg, n_neg_drop)
            self.set_mask(name, grow(mask, self.random(name), n_pos_drop + n_neg_drop))


@hookimpl
def register_algorithms(register):
    register(SET)
