"""Layer-wise sparsity distributions, as RigL (Evci et al. 2020, `get_sparsities_erdos_renyi`) defines them, and
the exact integer nonzero count of every layer.

uniform  every layer at density 1 - S; layers forced dense stay dense (so the total is denser than the target).
er       density ∝ (n_in + n_out) / (n_in · n_out), kernel dims ignored.
erk      density ∝ (Σ dims / Π dims) ** erk_power_scale, kernel dims included.
For er and erk, ε solves ε · Σ_{l∉D} p_l N_l = (1 - S) Σ_l N_l - Σ_{l∈D} N_l, where D holds the layers forced
dense; while a layer's ε · p_l exceeds 1, the layers with the largest p_l join D and ε is solved again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from dstbench.errors import UserError, unknown_choice

DISTRIBUTIONS = ("uniform", "er", "erk")
Shapes = Mapping[str, tuple[int, ...]]


MAX_ERK_POWER_SCALE = 10  # above it, the scores of large layers underflow to 0 and no density solves


def _score(shape: tuple[int, ...], distribution: str, erk_power_scale: float) -> float:
    if distribution == "erk":
        return (sum(shape) / math.prod(shape)) ** erk_power_scale
    n_out, n_in = shape[0], shape[1]  # torch weights are (out, in, *kernel)
    return (n_in + n_out) / (n_in * n_out)


def densities(
    shapes: Shapes, sparsity: float, distribution: str, dense: Collection[str] = (), erk_power_scale: float = 1.0
) -> dict[str, float]:
    """Each layer's density. Raises UserError when the target cannot be met."""
    if distribution not in DISTRIBUTIONS:
        raise unknown_choice("distribution", distribution, DISTRIBUTIONS)
    if not shapes:
        raise UserError("the model has no sparsifiable layers (conv or linear weights)")
    unknown = set(dense) - set(shapes)
    if unknown:
        raise ValueError(f"layers {sorted(unknown)} are not sparsifiable")
    if distribution == "uniform":
        return {name: 1.0 if name in dense else 1.0 - sparsity for name in shapes}
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    scores = {name: _score(shape, distribution, erk_power_scale) for name, shape in shapes.items()}
    forced = set(dense)
    while True:
        sparse = [name for name in shapes if name not in forced]
        budget = (1 - sparsity) * sum(sizes.values()) - sum(sizes[name] for name in forced)
        if not sparse or budget <= 0:
            raise UserError(
                f"sparsity {sparsity} cannot be met with {len(forced)} of {len(shapes)} layers dense "
                f"({', '.join(sorted(forced)[:3])}{', ...' if len(forced) > 3 else ''}); lower the sparsity or keep "
                "fewer layers dense"
            )
        epsilon = budget / sum(scores[name] * sizes[name] for name in sparse)
        top = max(scores[name] for name in sparse)
        if epsilon * top <= 1:
            break
        forced |= {name for name in sparse if scores[name] == top}
    return {name: 1.0 if name in forced else epsilon * scores[name] for name in shapes}


def nonzero_counts(shapes: Shapes, layer_densities: Mapping[str, float]) -> dict[str, int]:
    """Integer nonzeros per layer, each within one of density × size, summing to the rounded ideal total
    (largest remainders get the leftover units)."""
    ideal = {name: layer_densities[name] * math.prod(shape) for name, shape in shapes.items()}
    counts = {name: math.floor(value) for name, value in ideal.items()}
    leftover = round(sum(ideal.values())) - sum(counts.values())
    by_remainder = sorted(ideal, key=lambda name: (counts[name] - ideal[name], name))
    for name in by_remainder[:leftover]:
        counts[name] += 1
    return counts
