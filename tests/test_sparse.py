"""The sparse core: distributions, exact counts, mask primitives, schedules."""

import math

import pytest
import torch
from torch import nn

from dstbench.errors import UserError
from dstbench.sparse import first_and_last, measure, sparsifiable
from dstbench.sparse.distributions import densities, nonzero_counts
from dstbench.sparse.masks import Masks, grow, prune, with_ties_broken
from dstbench.sparse.schedules import DropSchedule, cubic_density

SHAPES = {"a": (4, 2), "b": (8, 4, 3, 3), "c": (10, 8)}  # torch layouts: (out, in, *kernel)


def test_erk_by_hand():
    # raw scores p = Σdims / Πdims: a (4+2)/8 = 0.75, b (8+4+3+3)/288 = 0.0625, c 18/80 = 0.225
    # S = 0.5: ε (0.75·8 + 0.0625·288 + 0.225·80) = 0.5 · 376 → ε = 188 / 42 = 4.476 → a would be 3.36 > 1
    # a joins D: ε (18 + 18) = 188 - 8 → ε = 5; b 0.3125, c 1.125 > 1 → c joins D too
    # ε · 18 = 188 - 8 - 80 = 100 → ε = 50/9; b = 50/9 · 0.0625 = 0.3472
    d = densities(SHAPES, 0.5, "erk")
    assert d["a"] == 1.0 and d["c"] == 1.0
    assert d["b"] == pytest.approx(50 / 9 / 16)
    total = sum(d[n] * math.prod(s) for n, s in SHAPES.items())
    assert total == pytest.approx(0.5 * 376)


def test_er_ignores_kernel_dims_and_power_scale_flattens_erk():
    d = densities(SHAPES, 0.3, "er")
    # er score of b: (4 + 8) / 32, as for a linear layer of the same in and out
    eps = d["b"] / (12 / 32)
    assert d["c"] == pytest.approx(min(1.0, eps * 18 / 80)) or d["c"] == 1.0
    flat = densities(SHAPES, 0.3, "erk", erk_power_scale=0.0)  # every score 1: uniform density
    assert len({round(v, 9) for v in flat.values()}) == 1


def test_uniform_keeps_forced_dense_layers_dense():
    assert densities(SHAPES, 0.4, "uniform") == {"a": 0.6, "b": 0.6, "c": 0.6}
    assert densities(SHAPES, 0.4, "uniform", dense={"a"}) == {"a": 1.0, "b": 0.6, "c": 0.6}


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.9, 0.0])
def test_counts_are_integers_near_the_ideal_summing_to_the_target(distribution, sparsity):
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Linear(32, 10))
    shapes = {n: tuple(w.shape) for n, w in sparsifiable(model).items()}
    d = densities(shapes, sparsity, distribution)
    counts = nonzero_counts(shapes, d)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(counts.values()) == round((1 - sparsity) * total)
    for name, shape in shapes.items():
        assert isinstance(counts[name], int)
        assert abs(counts[name] - d[name] * math.prod(shape)) < 1
        assert 0 <= counts[name] <= math.prod(shape)


def test_impossible_targets_are_one_line_errors():
    with pytest.raises(UserError, match="cannot be met with 2 of 3 layers dense"):
        densities(SHAPES, 0.9, "erk", dense={"b", "c"})
    with pytest.raises(UserError, match="no sparsifiable layers"):
        densities({}, 0.5, "erk")
    with pytest.raises(UserError, match="unknown distribution 'erk2'"):
        densities(SHAPES, 0.5, "erk2")


def test_first_and_last_and_measure():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    weights = sparsifiable(model)
    assert list(weights) == ["0.weight", "3.weight"]
    assert first_and_last(weights, first=True, last=False) == {"0.weight"}
    assert first_and_last(weights, first=True, last=True) == {"0.weight", "3.weight"}
    with torch.no_grad():
        model[3].weight[0].zero_()
    layers = measure(model)
    counted = [(layer.name, layer.nonzeros, layer.numel) for layer in layers]
    assert counted == [("0.weight", 108, 108), ("3.weight", 4, 8)]


def test_prune_and_grow_exact_counts_and_semantics():
    mask = torch.tensor([True, True, True, False, False, False])
    scores = torch.tensor([3.0, 1.0, 2.0, 9.0, 0.5, 4.0], dtype=torch.float64)
    pruned = prune(mask, scores, 2)  # drops the two active of lowest score: positions 1 and 2
    assert pruned.tolist() == [True, False, False, False, False, False]
    grown = grow(pruned, scores, 3)  # grows the three inactive of highest score: 3, 5, 2
    assert grown.tolist() == [True, False, True, True, False, True]
    assert prune(mask, scores, 0) is mask and grow(mask, scores, 0) is mask


def test_ties_are_broken_by_noise_without_reordering_distinct_scores():
    scores = torch.tensor([0.0, 0.0, 1e-30, 1.0, 1.0 + 2**-23, 1.0], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    keyed = with_ties_broken(scores, torch.rand(6, generator=g))
    assert keyed[2] > keyed[0] and keyed[2] > keyed[1] and keyed[4] > keyed[3] and keyed[4] > keyed[5]
    assert len(set(keyed.tolist())) == 6
    assert scores.dtype == torch.float32 and scores[0] == 0  # the input is left alone


def test_masks_apply_zeroes_weights_and_optimizer_state():
    layer = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    masks = Masks({"weight": layer.weight}, {"weight": mask})
    masks.apply(optimizer)
    assert torch.equal(layer.weight != 0, mask)
    momentum = optimizer.state[layer.weight]["momentum_buffer"]
    assert torch.all(momentum[~mask] == 0) and torch.all(momentum[mask] != 0)
    assert torch.all(layer.bias != 0)  # only masked layers change


def test_random_masks_have_exact_counts_and_are_seeded():
    weights = {"w": nn.Parameter(torch.ones(50, 20))}
    a = Masks.random(weights, {"w": 333}, torch.Generator().manual_seed(1))
    b = Masks.random(weights, {"w": 333}, torch.Generator().manual_seed(1))
    c = Masks.random(weights, {"w": 333}, torch.Generator().manual_seed(2))
    assert a.counts() == {"w": 333}
    assert torch.equal(a["w"], b["w"]) and not torch.equal(a["w"], c["w"])


def test_saved_masks_must_match_the_model():
    weights = {"w": nn.Parameter(torch.ones(4, 4))}
    with pytest.raises(UserError, match="saved mask of w is torch.bool \\(3, 4\\)"):
        Masks.from_state(weights, {"w": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(UserError, match="do not match the model"):
        Masks.from_state(weights, {"v": torch.ones(4, 4, dtype=torch.bool)})


def test_rigl_schedule():
    schedule = DropSchedule(interval=100, end=750, fraction=0.3)
    updates = [t for t in range(1, 1001) if schedule.is_update(t)]
    assert updates == [100, 200, 300, 400, 500, 600, 700]
    assert schedule.fraction_at(0) == pytest.approx(0.3)
    assert schedule.fraction_at(375) == pytest.approx(0.15)  # α/2 (1 + cos(π/2))
    assert schedule.fraction_at(100) == pytest.approx(0.15 * (1 + math.cos(math.pi * 100 / 750)))
    assert schedule.fraction_at(750) == pytest.approx(0.0, abs=1e-12)
    assert DropSchedule(10, 50, 0.3, "constant").fraction_at(40) == 0.3


def test_a_schedule_with_a_start_updates_and_decays_from_it():
    schedule = DropSchedule(interval=10, end=90, fraction=0.4, start=50)
    assert [t for t in range(1, 200) if schedule.is_update(t)] == [50, 60, 70, 80, 90]
    assert schedule.fraction_at(50) == pytest.approx(0.4)
    assert schedule.fraction_at(70) == pytest.approx(0.2)  # halfway from start to end
    assert schedule.fraction_at(90) == pytest.approx(0.0, abs=1e-12)
    assert DropSchedule(10, 40, 0.4, start=40).fraction_at(40) == pytest.approx(0.4)  # no span: no division by 0


def test_cubic_density():
    assert cubic_density(0, 0, 100, 0.8, 0.5) == pytest.approx(0.8)
    assert cubic_density(50, 0, 100, 0.8, 0.5) == pytest.approx(0.5 + 0.3 * 0.125)
    assert cubic_density(100, 0, 100, 0.8, 0.5) == pytest.approx(0.5)
    assert cubic_density(500, 0, 100, 0.8, 0.5) == pytest.approx(0.5)
