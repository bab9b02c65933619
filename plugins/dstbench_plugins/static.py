"""`static`: a sparse mask drawn once from the layer-wise distribution (ERK by default) and never changed.

The baseline the paper's reviewers asked for: it separates the effect of sparsity from that of changing masks.
"""

from dstbench.hookspecs import hookimpl
from dstbench.sparse.dst import SparseAlgorithm


class Static(SparseAlgorithm):
    name = "static"
    description = "Static sparse training: a random ERK mask fixed at initialisation"


@hookimpl
def register_algorithms(register):
    register(Static)
