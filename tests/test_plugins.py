"""The plugin system: hooks documented and fired, broken plugins isolated, clashes named, entry points found."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WarningsReporter, run_config

from dstbench import hookspecs
from dstbench.algorithm import Algorithm
from dstbench.errors import PluginError
from dstbench.hookspecs import hookimpl
from dstbench.models import ModelSpec
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import execute

HOOKS = sorted(name for name, f in vars(hookspecs).items() if hasattr(f, "dstbench_spec"))
EXAMPLE = Path(__file__).parent / "example_plugin"


def test_every_hook_is_documented_with_typed_arguments():
    assert len(HOOKS) == 11
    for name in HOOKS:
        spec = getattr(hookspecs, name)
        assert spec.__doc__ and len(spec.__doc__.split()) >= 5, name
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(spec).parameters.values())


class Recorder:
    """Implements every hook and records each call."""

    def __init__(self):
        self.calls = {name: 0 for name in HOOKS}

    def _seen(self, name):
        self.calls[name] += 1

    @hookimpl
    def register_algorithms(self, register):
        self._seen("register_algorithms")

    @hookimpl
    def register_models(self, register):
        self._seen("register_models")

    @hookimpl
    def register_datasets(self, register):
        self._seen("register_datasets")

    @hookimpl
    def register_suites(self, register):
        self._seen("register_suites")

    @hookimpl
    def register_trainers(self, register):
        self._seen("register_trainers")

    @hookimpl
    def register_commands(self, register):
        self._seen("register_commands")

    @hookimpl
    def on_run_start(self, run):
        assert run.step == 0 and run.epoch == 0
        self._seen("on_run_start")

    @hookimpl
    def on_step_end(self, run):
        assert run.step >= 1 and run.loss is not None
        self._seen("on_step_end")

    @hookimpl
    def on_epoch_end(self, run, stats):
        assert stats.epoch == run.epoch
        self._seen("on_epoch_end")

    @hookimpl
    def on_run_end(self, run, result):
        assert result.steps == run.step
        self._seen("on_run_end")

    @hookimpl
    def entry_fields(self, entry, run):
        self._seen("entry_fields")
        return {"steps_seen": self.calls["on_step_end"]}


def test_every_hook_fires_during_a_run(tmp_path):
    recorder = Recorder()
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"recorder": recorder})
    cfg = run_config(plugins, tmp_path, epochs=2)
    entry = execute(cfg, plugins, PlainReporter(quiet=True))
    steps = entry.training.steps
    assert recorder.calls == {
        **{name: 1 for name in HOOKS if name.startswith("register_")},
        "on_run_start": 1,
        "on_step_end": steps,
        "on_epoch_end": 2,
        "on_run_end": 1,
        "entry_fields": 1,
    }
    assert entry.extensions == {"recorder": {"steps_seen": steps}}


class BrokenRegistration:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="half-registered", build=lambda r: None, description=""))
        raise RuntimeError("boom")

    @hookimpl
    def on_step_end(self, run):
        raise AssertionError("a skipped plugin must not receive run hooks")


def test_failing_registration_skips_only_that_plugin(tmp_path):
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"broken": BrokenRegistration()})
    (broken,) = plugins.broken()
    assert broken.name == "broken" and "RuntimeError: boom" in broken.error
    assert "half-registered" not in plugins.registry.names("model")
    assert "digits-cnn" in plugins.registry.names("model")
    execute(run_config(plugins, tmp_path, epochs=1), plugins, PlainReporter(quiet=True))


class FailsMidRun:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def on_step_end(self, run):
        self.calls += 1
        raise RuntimeError("plugin step hook broke")

    @hookimpl
    def entry_fields(self, entry, run):
        raise AssertionError("a plugin skipped after failing must not be called again")


def test_a_plugin_hook_that_raises_mid_run_is_reported_and_skipped(tmp_path):
    failing, reporter = FailsMidRun(), WarningsReporter()
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"fails": failing}, isolate=True)
    entry = execute(run_config(plugins, tmp_path, epochs=1), plugins, reporter)
    assert entry.clean_acc > 0 and failing.calls == 1  # the run finished; the hook ran once
    (broken,) = plugins.broken()
    assert broken.error == "on_step_end failed: RuntimeError: plugin step hook broke"
    assert reporter.warnings == [
        "plugin 'fails' failed in on_step_end (RuntimeError: plugin step hook broke); it is skipped from now on"
    ]
    strict = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"fails": FailsMidRun()})  # a test's checks
    with pytest.raises(RuntimeError, match="plugin step hook broke"):
        execute(run_config(strict, tmp_path / "strict", epochs=1), strict, reporter)


class Exits:
    @hookimpl
    def register_models(self, register):
        raise SystemExit("bye")


def test_a_plugin_that_exits_is_skipped_not_obeyed():
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"exits": Exits()})
    (broken,) = plugins.broken()
    assert broken.name == "exits" and broken.error == "registration failed: SystemExit: bye"
    assert "digits-cnn" in plugins.registry.names("model")


class WrongType:
    @hookimpl
    def register_algorithms(self, register):
        register(object)


def test_registering_the_wrong_type_is_reported():
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"wrong": WrongType()})
    assert "subclass of dstbench.algorithm.Algorithm" in plugins.broken()[0].error


class Clash:
    class Dense(Algorithm):
        name = "dense"

    @hookimpl
    def register_algorithms(self, register):
        register(self.Dense)


def test_two_plugins_registering_one_name_is_an_error_naming_both():
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"clash": Clash()})
    with pytest.raises(PluginError) as info:
        _ = plugins.registry
    message = str(info.value)
    assert "algorithm 'dense'" in message and "plugin 'dense'" in message and "plugin 'clash'" in message


def test_builtins_load_through_entry_points(plugins):
    builtin = {name for name, info in plugins.infos.items() if info.builtin}
    assert {"dense", "image_trainer", "datasets", "models", "image_c"} <= builtin
    assert not plugins.broken()
    registry = plugins.registry
    assert registry.entries["algorithm"]["dense"].distribution == "dstbench"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example plugin distribution, installed by pip into its own directory."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    return site


def _dstbench(site, *args, env_extra=None, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(site), **(env_extra or {})}
    env.pop("DSTBENCH_PLUGINS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dstbench", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_pip_installed_plugin_is_discovered_through_its_entry_point(example_site):
    result = _dstbench(example_site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    infos = {info["name"]: info for info in json.loads(result.stdout)}
    example = infos["example"]
    assert example["distribution"] == "dstbench-example-plugin" and example["version"] == "0.2.0"
    assert not example["builtin"] and example["error"] is None
    assert set(example["hooks"]) == set(HOOKS)
    assert example["registered"] == {
        "algorithm": ["example-random-static"],
        "model": ["example-mlp"],
        "dataset": ["example-stripes"],
        "suite": ["example-invert"],
        "trainer": ["example-adamw"],
        "command": ["example-hello"],
    }
    assert "this example plugin is broken on purpose" in infos["example_broken"]["error"]
    # the broken plugin is reported once, and everything else works
    assert result.stderr.count("example_broken") == 1
    hello = _dstbench(example_site, "example-hello")
    assert hello.returncode == 0 and hello.stdout.strip() == "hello from the example plugin"


def test_pip_installed_plugin_trains_with_its_own_everything(example_site, tmp_path):
    result = _dstbench(
        example_site,
        "run",
        "--dataset",
        "example-stripes",
        "--algo",
        "example-random-static",
        "--sparsity",
        "0.5",
        "--trainer",
        "example-adamw",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads((tmp_path / "run" / "entry.json").read_text())
    assert entry["suite"] == "example-invert" and entry["model"] == "example-mlp"
    assert entry["algorithm"] == {
        "name": "example-random-static",
        "params": {"keep_first_dense": False},
        "plugin": "example",
        "version": "0.2.0",
    }
    assert entry["config"]["optimizer"] == "adamw"
    assert entry["sparsity"]["achieved"] == pytest.approx(0.5, abs=1e-3)
    counts = entry["extensions"]["example"]["hook_counts"]
    assert counts == {"run_start": 1, "step_end": entry["training"]["steps"], "epoch_end": 2, "run_end": 1}
    assert entry["extensions"]["example"]["masked_layers"] == 2


def test_env_var_restricts_external_plugins(example_site):
    none = json.loads(_dstbench(example_site, "plugins", "--json", env_extra={"DSTBENCH_PLUGINS": ""}).stdout)
    assert all(info["builtin"] for info in none)
    only = _dstbench(example_site, "plugins", "--json", env_extra={"DSTBENCH_PLUGINS": "example"})
    names = {info["name"] for info in json.loads(only.stdout)}
    assert "example" in names and "example_broken" not in names
    assert "example_broken" not in only.stderr
