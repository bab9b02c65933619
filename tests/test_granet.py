"""GraNet, shipped as its own distribution (plugins/granet) and found through its entry point like any
third-party plugin; CI installs it with pip."""

import os
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch
from conftest import run_config
from test_algorithms import FAST, Auditor

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import execute
from dstbench.sparse.schedules import cubic_density

try:
    distribution("dstbench-granet")
except PackageNotFoundError:
    if os.environ.get("CI"):
        raise
    pytest.skip("pip install ./plugins/granet to run these tests", allow_module_level=True)

UPDATES = ("update_interval=2",)


def _run(tmp_path, auditor=None, **flags):
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": "granet"}, extra={"auditor": auditor} if auditor else None)
    options = UPDATES + tuple(flags.pop("algo_options", ()))
    cfg = run_config(plugins, tmp_path, algo_options=options, **{**FAST, "algo": "granet", **flags})
    return execute(cfg, plugins, PlainReporter(quiet=True)), plugins


def test_granet_comes_from_its_own_distribution(tmp_path):
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": "granet"})
    registered = plugins.registry.entries["algorithm"]["granet"]
    assert (registered.plugin, registered.distribution) == ("granet", "dstbench-granet")
    assert plugins.registry.algorithm("granet-r").Options().growth == "random"
    assert "granet" not in Plugins.load(env={"DSTBENCH_PLUGINS": ""}).registry.names("algorithm")


def test_gradual_pruning_follows_the_cubic_schedule_to_the_target(tmp_path):
    auditor = Auditor()
    entry, _ = _run(tmp_path, auditor, sparsity=0.6)
    history = [sum(c.values()) for c in auditor.count_history]  # after setup, then after every step
    algorithm_start, final = history[0], history[-1]
    end = round(0.75 * 16)
    for step, total in enumerate(history[1:], start=1):
        scheduled_step = step - step % 2 if step <= end else end  # pruning happens at the updates, every 2 steps
        if scheduled_step:
            assert total == round(cubic_density(scheduled_step, 0, end, algorithm_start, final))
    dense = sum(layer.numel for layer in entry.sparsity.layers if layer.name not in auditor.count_history[0])
    assert final + dense == round(0.4 * sum(layer.numel for layer in entry.sparsity.layers))
    assert algorithm_start > final  # it started denser (init density 0.8)
    assert entry.sparsity.achieved == pytest.approx(0.6, abs=0.003)


def test_a_target_denser_than_the_initial_density_only_regenerates(tmp_path):
    auditor = Auditor()
    _run(tmp_path, auditor, sparsity=0.1)
    assert all(counts == auditor.count_history[0] for counts in auditor.count_history)


def test_granet_r_and_options(tmp_path):
    auditor = Auditor()
    entry, _ = _run(tmp_path, auditor, sparsity=0.5, algo="granet-r", algo_options=("init_density=0.9",))
    assert entry.algorithm.params["growth"] == "random" and entry.algorithm.params["init_density"] == 0.9
    assert entry.algorithm.plugin == "granet" and entry.algorithm.version == "0.2.0"


class PrunedThenRegrown:
    """At each update, the weights the cubic schedule pruned and regeneration grew back in the same update: like
    any grown weight they must start at zero with zero momentum (GraNet's own code masks between the two)."""

    def __init__(self, monkeypatch):
        self.regrown = 0
        self.pruned = {}
        granet = Plugins.load(env={"DSTBENCH_PLUGINS": "granet"}).registry.algorithm("granet")
        original = granet.prune_to_schedule

        def recorded(algorithm, step):
            before = {n: m.clone() for n, m in algorithm.masks.masks.items()}
            original(algorithm, step)
            self.pruned = {n: before[n] & ~m for n, m in algorithm.masks.masks.items()}

        monkeypatch.setattr(granet, "prune_to_schedule", recorded)

    @hookimpl(trylast=True)
    def on_step_end(self, run):
        algorithm, state = run.algorithm, run.optimizer.state
        for name, pruned in self.pruned.items():
            regrown = pruned & algorithm.masks.masks[name]
            weight = algorithm.masks.weights[name]
            assert torch.all(weight[regrown] == 0) and torch.all(state[weight]["momentum_buffer"][regrown] == 0)
            self.regrown += int(regrown.sum())
        self.pruned = {}


def test_weights_the_schedule_prunes_regrow_from_zero(tmp_path, monkeypatch):
    checker = PrunedThenRegrown(monkeypatch)
    _run(tmp_path, checker, sparsity=0.6)
    assert checker.regrown > 0  # gradient regrowth does pick weights the schedule just pruned


def test_granet_reaches_its_target_at_its_last_update_or_refuses_to_start(tmp_path):
    """prune_end at 0.75 of 16 steps is step 12; updates every 5 steps: the schedule ends at step 10, on target."""
    entry, _ = _run(tmp_path / "a", sparsity=0.6, algo_options=("update_interval=5",))
    assert entry.sparsity.achieved == pytest.approx(0.6, abs=0.003)
    with pytest.raises(UserError, match="none falls between steps 0 and 12 of this run's 16 .* lower update_interval"):
        _run(tmp_path / "b", sparsity=0.6, algo_options=("update_interval=13",))


def test_nothing_changes_before_prune_start(tmp_path):
    auditor = Auditor()
    _run(tmp_path, auditor, sparsity=0.6, algo_options=("prune_start=0.5",))
    assert auditor.update_steps and min(auditor.update_steps) >= 8  # 16 steps: pruning and regrowth from step 8
