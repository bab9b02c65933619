"""GraNet, shipped as its own distribution (plugins/granet) and found through its entry point like any
third-party plugin; CI installs it with pip."""

import os
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from conftest import run_config
from test_algorithms import FAST, Auditor

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
    assert entry.algorithm.plugin == "granet" and entry.algorithm.version == "0.1.0"
