"""The corruption contract's shared machinery: the counter-based per-sample RNG and severity parsing."""

import numpy as np
import pytest
import torch
from scipy import stats

from dstbench import corruption
from dstbench.corruption import SampleRNG, hash32, parse_severities
from dstbench.errors import UserError

M32 = 0xFFFFFFFF


def reference_lowbias32(x: int) -> int:
    """Chris Wellons' lowbias32 on plain Python ints, multiplying with unbounded precision."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def rng_for(ids, seed=0) -> SampleRNG:
    return SampleRNG.for_samples(seed, "test-suite", "noise", 3, ids=torch.as_tensor(ids, dtype=torch.int64))


# --- Hash ----------------------------------------------------------------------------------------------------------


def test_hash32_matches_the_reference_bit_for_bit():
    edges = [0, 1, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**31 + 1, M32 - 1, M32]
    values = edges + np.random.default_rng(0).integers(0, 2**32, 100_000).tolist()
    expected = [reference_lowbias32(v) for v in values]
    assert hash32(torch.tensor(values, dtype=torch.int64)).tolist() == expected
    # int32 words, the form SampleRNG hashes in: its products must wrap around mod 2**32, vector lanes and tail alike
    words = hash32(torch.tensor(values, dtype=torch.int64).to(torch.int32))
    assert words.dtype == torch.int32 and (words.to(torch.int64) & M32).tolist() == expected
    assert [hash32(v) for v in values[:1000]] == expected[:1000]  # the same function on Python ints
    # The reference itself agrees with lowbias32 compiled from C (uint32_t arithmetic).
    assert [reference_lowbias32(v) for v in (1, 0x12345678, 2**31, M32)] == [
        0x688990C0,
        0xF5E71C96,
        0xCC4B4124,
        0x6768824A,
    ]


def test_hash32_is_a_bijection_on_a_sample():
    x = torch.arange(2**31 - 50_000, 2**31 + 50_000)
    assert len(hash32(x).unique()) == len(x)


# --- Keys ----------------------------------------------------------------------------------------------------------


def test_for_samples_keys_are_pinned():
    """Keys must not change between versions, processes or platforms: results are compared across them."""
    keys = rng_for([0, 1, 2**40 + 7]).keys.tolist()
    assert keys == PINNED_KEYS
    assert all(0 <= k <= M32 for k in keys)


PINNED_KEYS = [230149661, 4020925743, 3243121984]


def test_for_samples_keys_depend_on_seed_labels_and_ids():
    ids = torch.arange(100_000)
    keys = SampleRNG.for_samples(0, "suite", "c", 3, ids=ids).keys
    assert len(keys.unique()) == len(ids)  # distinct ids below 2**32 give distinct keys
    for other in [
        SampleRNG.for_samples(1, "suite", "c", 3, ids=ids),
        SampleRNG.for_samples(0, "suite", "c", "3", ids=ids),  # '3' is not 3
        SampleRNG.for_samples(0, "suitec", "", 3, ids=ids),  # labels are delimited
        SampleRNG.for_samples(0, "suite", "c", 4, ids=ids),
    ]:
        assert (other.keys != keys).float().mean() > 0.99
    with pytest.raises(TypeError):
        SampleRNG.for_samples(0, 1.5, ids=ids)


# --- Distributions -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rng():
    return rng_for(torch.arange(1000))


def test_uniform_is_uniform_on_the_open_interval(rng):
    u = rng.uniform((3, 40))
    assert u.dtype == torch.float32 and u.shape == (1000, 3, 40)
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    extremes = SampleRNG._uniform24(torch.tensor([0, M32]))
    assert extremes[0] == 2.0**-25 and extremes[1] == 1 - 2.0**-24


def test_normal_is_standard_normal(rng):
    for shape in [(3, 41), (7,)]:  # an odd size: the last pair's sine part is dropped
        z = rng.normal(shape)
        assert z.dtype == torch.float32 and z.shape == (1000, *shape)
        assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    z = rng.normal((120,)).double()
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    cosine, sine = z[:, 0::2].flatten(), z[:, 1::2].flatten()  # the two halves of each Box-Muller pair
    assert abs(np.corrcoef(cosine, sine)[0, 1]) < 0.01


@pytest.mark.parametrize("lam", [0.5, 3, 9.9, 10, 50, 500])
def test_poisson_matches_the_poisson_distribution(rng, lam):
    levels = torch.full((1000, 200), 255, dtype=torch.uint8)
    counts = rng.poisson(levels, lam / 255).flatten().numpy()
    assert counts.dtype == np.float32 and np.all(counts == np.round(counts))
    n = len(counts)
    assert abs(counts.mean() - lam) < 5 * np.sqrt(lam / n)
    assert abs(counts.var() / lam - 1) < 5 * np.sqrt((2 + 1 / lam) / n)  # 5 standard errors
    # Chi-square over the bins the distribution puts 20 or more expected counts in, tails pooled.
    expected = n * stats.poisson.pmf(np.arange(int(lam * 3 + 50)), lam)
    edges = np.flatnonzero(expected >= 20)
    low, high = edges[0], edges[-1]
    observed = np.bincount(np.clip(counts.astype(int), low, high) - low, minlength=high - low + 1)
    bins = expected[low : high + 1].copy()
    bins[0] = n * stats.poisson.cdf(low, lam)
    bins[-1] = n * stats.poisson.sf(high - 1, lam)
    assert stats.chisquare(observed, bins * n / bins.sum()).pvalue > 1e-3


@pytest.mark.parametrize("scale", [3 / 255, 100 / 255, 500 / 255, 1.0])
def test_poisson_is_the_inverse_cdf_at_the_streams_uniform(scale):
    """Each count is the smallest k with u ≤ CDF(k) for the element's own uniform, as SciPy computes it, at every
    level: the sampler is exact, not merely close in distribution."""
    rng = rng_for(torch.arange(64))
    levels = torch.arange(256, dtype=torch.uint8).repeat(64, 4).view(64, 4, 256)
    counts = rng.poisson(levels, scale, stream=5)
    u = rng._uniform32(rng._bits(((5, corruption._POISSON, 4 * 256),)))
    expected = stats.poisson.ppf(u.numpy(), levels.reshape(64, -1).double().numpy() * scale)
    assert np.array_equal(counts.reshape(64, -1).numpy(), expected)


@pytest.mark.parametrize("photons", [0.5, 3, 5, 12, 25, 50, 60, 75, 100, 250, 500, 2000])
def test_poisson_table_rows_are_sorted_and_drop_no_reachable_tail(photons):
    table = corruption._poisson_table(photons / 255, torch.device("cpu"))
    terms, cdf = table.terms, table.cdf
    assert cdf.shape == (256 * terms,) and torch.all(cdf[1:] >= cdf[:-1])
    assert stats.poisson.sf(terms - 1, photons) < 1e-20  # P(X ≥ terms) at the largest rate
    offsets = 2 * torch.arange(256, dtype=torch.float64)[:, None]
    rows = cdf.view(256, terms)
    assert torch.all(rows[:, -1] - offsets[:, 0] == 1) and torch.all(rows >= offsets)
    # guide[r, m] is the first count whose CDF reaches m/M, compared as the search compares: offset by 2r
    buckets = corruption._GUIDE_BUCKETS
    assert table.guide.dtype == torch.int16  # the narrowest type that holds every count: 2 MB per level
    guide = table.guide.view(256, buckets + 1).to(torch.int64)
    edges = torch.arange(buckets + 1, dtype=torch.float64) / buckets + offsets
    assert torch.all(rows.gather(1, guide) >= edges)
    before = rows.gather(1, (guide - 1).clamp(min=0))
    assert torch.all((guide == 0) | (before < edges))


def test_accelerator_strategy_gives_the_same_counts(request):
    """On an accelerator every element is searched in the whole table, instead of starting from the guide: the same
    counts."""
    rng = rng_for(torch.arange(200))
    levels = torch.arange(256, dtype=torch.uint8).repeat(200, 3, 1)
    gathered = rng.poisson(levels, 500 / 255)
    request.getfixturevalue("accelerator_forms")
    assert corruption._poisson_table(500 / 255, torch.device("cpu")).guide is None  # the accelerator's table
    assert torch.equal(rng.poisson(levels, 500 / 255), gathered)


def test_cpu_blocks_give_the_same_numbers(monkeypatch):
    """Large draws run block by block on the CPU; tiny blocks, many of them, give the same numbers."""
    rng = rng_for(torch.arange(40))
    levels = torch.arange(256, dtype=torch.uint8).repeat(40, 3, 1)

    def draws_of() -> list[torch.Tensor]:
        return [rng.uniform((777,)), rng.normal((3, 301)), rng.poisson(levels, 250 / 255)]

    whole = draws_of()
    monkeypatch.setattr(corruption, "_CPU_BLOCK", 1000)
    for before, blocked in zip(whole, draws_of(), strict=True):
        assert torch.equal(before, blocked)


def test_uniforms_made_together_are_the_uniforms_made_alone(monkeypatch):
    rng = rng_for(torch.arange(30) * 11)
    draws = [((3, 4), 0), ((777,), 9), ((2, 2, 2), 1024), ((3, 4), 1)]
    alone = [rng.uniform(shape, stream) for shape, stream in draws]
    monkeypatch.setattr(corruption, "_CPU_BLOCK", 1000)  # and in blocks that cut across the draws
    together = rng.uniforms(draws)
    assert [u.shape for u in together] == [(30, *shape) for shape, _ in draws]
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))
    assert not torch.equal(together[0], together[3])  # another stream, other numbers


def test_poisson_of_mixed_levels(rng):
    levels = torch.tensor([0, 1, 60, 128, 255], dtype=torch.uint8).repeat(len(rng), 50, 1)
    counts = rng.poisson(levels, 500 / 255)
    assert counts.shape == levels.shape and counts.dtype == torch.float32
    assert torch.all(counts[..., 0] == 0)
    mean = counts.double().mean((0, 1))
    assert torch.allclose(mean, levels[0, 0].double() * 500 / 255, rtol=0.01, atol=0.01)
    with pytest.raises(ValueError, match="uint8"):
        rng.poisson(levels.float(), 1.0)


# --- Independence and invariance -----------------------------------------------------------------------------------


def test_streams_methods_elements_and_samples_are_uncorrelated():
    rng = SampleRNG(torch.arange(2000))  # consecutive keys, the least random input
    a, b = rng.uniform((500,)), rng.uniform((500,), stream=1)
    z = rng.normal((500,))
    pairs = {
        "streams": (a, b),
        "methods on one stream": (a, z),
        "neighbouring elements": (a[:, :-1], a[:, 1:]),
        "neighbouring samples": (a[:-1], a[1:]),
        "a stream and a shifted copy": (a[:, :-1], b[:, 1:]),
    }
    for what, (x, y) in pairs.items():
        r = np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1]
        assert abs(r) < 5 / np.sqrt(x.numel()), what


def draws(rng: SampleRNG) -> list[torch.Tensor]:
    levels = torch.tensor([0, 1, 10, 42, 255], dtype=torch.uint8, device=rng.keys.device).repeat(len(rng), 12)
    return [rng.uniform((4, 5)), rng.normal((3, 7)), rng.normal((3, 7), stream=9), rng.poisson(levels, 2.0, stream=2)]


def test_numbers_depend_only_on_the_sample():
    ids = torch.tensor([5, 17, 3, 2**33 + 1])
    alone = draws(rng_for(ids))
    crowd_ids = torch.cat([torch.arange(100, 140), ids.flip(0), torch.arange(900, 905)])
    crowd = draws(rng_for(crowd_ids))
    for single, batch in zip(alone, crowd, strict=True):
        assert torch.equal(single, batch[40:44].flip(0))
    one_at_a_time = [draws(rng_for(ids[i : i + 1])) for i in range(len(ids))]
    for k, single in enumerate(alone):
        assert torch.equal(single, torch.cat([d[k] for d in one_at_a_time]))
    for single, sliced in zip(alone, draws(rng_for(crowd_ids)[40:44]), strict=True):
        assert torch.equal(single, sliced.flip(0))


def test_same_keys_same_numbers_other_keys_other_numbers():
    first, again = draws(rng_for(torch.arange(30))), draws(rng_for(torch.arange(30)))
    other = draws(rng_for(torch.arange(30), seed=1))
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert (a != c).float().mean() > 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_same_numbers():
    ids = torch.arange(300)
    on_cpu, on_gpu = draws(rng_for(ids)), draws(rng_for(ids.cuda()))
    for cpu, gpu in zip(on_cpu, on_gpu, strict=True):
        assert gpu.device.type == "cuda"
        assert torch.allclose(cpu, gpu.cpu(), rtol=1e-5, atol=1e-5)
    assert torch.equal(rng_for(ids).uniform((9,)), rng_for(ids.cuda()).uniform((9,)).cpu())  # bits are exact


def test_cells_derived_together_are_the_cells_derived_alone():
    ids = torch.tensor([0, 7, 2**33 + 5, 41])
    cells = [("fog", 1), ("fog", 5), ("shot_noise", 3)]
    together = SampleRNG.for_cells(3, "cifar-c", cells, ids)
    for cell, rng in zip(cells, together, strict=True):
        alone = SampleRNG.for_samples(3, "cifar-c", *cell, ids=ids)
        assert torch.equal(rng.keys, alone.keys) and torch.equal(rng.normal((5,)), alone.normal((5,)))
    assert SampleRNG.for_cells(3, "cifar-c", [], ids) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cells_derived_together_are_the_cpu_cells():
    ids = torch.arange(1000)
    cells = [(name, severity) for name in ("fog", "snow") for severity in range(1, 6)]
    on_gpu = SampleRNG.for_cells(0, "cifar-c", cells, ids.cuda())
    for rng, cpu in zip(on_gpu, SampleRNG.for_cells(0, "cifar-c", cells, ids), strict=True):
        assert rng.keys.device.type == "cuda" and torch.equal(rng.keys.cpu(), cpu.keys)


def test_bad_arguments():
    with pytest.raises(ValueError):
        SampleRNG(torch.arange(3, dtype=torch.int32))
    with pytest.raises(ValueError):
        rng_for([1]).uniform((2,), stream=-1)


# --- Suites --------------------------------------------------------------------------------------------------------


def two_sizes_suite() -> corruption.TableSuite:
    """'big' needs images of at least 33 px (more than digits' 32); 'any' takes any size."""

    def invert(images, parameter, rng):
        return 255 - images

    table = {
        "big": corruption.Corruption(invert, {32: (0,) * 5}, min_size=33),
        "any": corruption.Corruption(invert, {32: (0,) * 5}),
    }
    return corruption.TableSuite("two-sizes", "test suite", 32, table)


def test_sizes_are_checked_for_the_selected_corruptions_only():
    suite = two_sizes_suite()
    suite.check_input(3, 8, ["any"])
    for selection in (None, ["any", "big"]):
        with pytest.raises(UserError, match="big needs images of at least 33 px, these are 8 px; leave it out"):
            suite.check_input(3, 8, selection)
    images = torch.zeros(2, 3, 8, 40, dtype=torch.uint8)  # the shorter side counts
    assert torch.equal(suite.corrupt(images, "any", 1, rng_for([1, 2])), images + 255)
    with pytest.raises(UserError, match="big needs images of at least 33 px, these are 8 px"):
        suite.corrupt(images, "big", 1, rng_for([1, 2]))


def test_a_run_checks_the_sizes_of_its_corruptions_only():
    from dstbench.config import resolve
    from dstbench.hookspecs import hookimpl
    from dstbench.plugins import Plugins

    class TwoSizes:
        @hookimpl
        def register_suites(self, register):
            register(two_sizes_suite())

    registry = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"two-sizes": TwoSizes()}).registry
    assert resolve({"suite": "two-sizes", "corruptions": "any"}, None, registry).corruptions == ("any",)
    with pytest.raises(UserError, match="big needs images of at least 33 px, these are 32 px"):
        resolve({"suite": "two-sizes"}, None, registry)


# --- Severities ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", (3,)),
        ("1,3,5", (1, 3, 5)),
        ("1-5", (1, 2, 3, 4, 5)),
        (" 5, 1 ", (1, 5)),
        ("4-5,1", (1, 4, 5)),
        ("2,2", (2,)),
        ("3-3", (3,)),
    ],
)
def test_parse_severities(text, expected):
    assert parse_severities(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1,,2", "1-", "-1", "5-1", "1.5", "1;2", "1-2-3"])
def test_parse_severities_rejects_junk(text):
    with pytest.raises(UserError, match="invalid severities"):
        parse_severities(text)
