"""`dense`: the baseline. No masks and no hooks, so it adds nothing to a training step."""

from dstbench.algorithm import Algorithm
from dstbench.hookspecs import hookimpl


class Dense(Algorithm):
    name = "dense"
    description = "Dense training: every weight is trained (the baseline)"
    sparse = False
    default_sparsity = 0.0


@hookimpl
def register_algorithms(register):
    register(Dense)
