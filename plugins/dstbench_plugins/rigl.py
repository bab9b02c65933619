"""`rigl`: Rigging the Lottery (Evci et al., ICML 2020).

Every ΔT = 100 steps until T_end = 75% of training, each layer drops the f(t) = α/2 · (1 + cos(π t / T_end)),
α = 0.3, fraction of its active weights of smallest magnitude and grows as many inactive weights of largest
dense-gradient magnitude (the current batch's gradient). Grown weights start at zero with zero momentum.
"""

import torch

from dstbench.hookspecs import hookimpl
from dstbench.sparse.dst import DropAndGrow


class RigL(DropAndGrow):
    name = "rigl"
    description = "RigL: drop the smallest-magnitude weights, grow by dense gradient (Evci et al. 2020)"

    def grow_scores(self, name: str) -> torch.Tensor:
        return self.gradient(name)


@hookimpl
def register_algorithms(register):
    register(RigL)
