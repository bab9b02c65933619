"""`dstbench sweep`: the grid, up-front validation, skip and resume, the paired statistics, the outputs."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev

import pytest
from click.testing import CliRunner
from conftest import run_config
from scipy.stats import t

from dstbench import sweep as sweep_module
from dstbench.algorithm import Algorithm
from dstbench.cli import build_cli, run
from dstbench.config import FIELDS, RUNTIME, resolve
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.options import given
from dstbench.plugins import Plugins
from dstbench.summary import plot_gains, summarize, summary_tables
from dstbench.sweep import Children, Grid, child_device, parse_seeds, plan, run_args

QUICK = [
    "--epochs=1",
    "--batch-size=32",
    "--max-train-samples=200",
    "--max-test-samples=60",
    "--severities=1,5",
    "--device=cpu",
    "--quiet",
]


@dataclass(frozen=True)
class BoostOptions:
    boost: float = 1.0


class FakeSparse(Algorithm):
    name = "fake-sparse"  # trains like dense; its entries say sparse, which is all the summary needs
    Options = BoostOptions


class Failing(Algorithm):
    name = "fake-failing"

    def setup(self, run, state=None):
        raise UserError("fake-failing cannot set up")


class Crashing(Algorithm):
    name = "fake-crashing"

    def setup(self, run, state=None):
        raise RuntimeError("fake-crashing hit a bug\nsecond line")


class FakePlugin:
    @hookimpl
    def register_algorithms(self, register):
        register(FakeSparse)
        register(Failing)
        register(Crashing)


@pytest.fixture(scope="module")
def fake_plugins():
    return Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"fake": FakePlugin()})


@pytest.fixture(scope="module")
def cli(fake_plugins):
    return build_cli(fake_plugins)


def sweep(cli, out, *args):
    return CliRunner().invoke(cli, ["sweep", *args, *QUICK, f"--out={out}"])


# --- the grid ----------------------------------------------------------------------------------------------------


def test_dense_runs_at_sparsity_0_only_and_seeds_are_a_count_or_a_list(fake_plugins):
    grid = Grid.parse("dense,fake-sparse,dense", "0.1,0.3", "2")
    assert grid.points(fake_plugins.registry) == [
        ("dense", 0.0, 0),
        ("dense", 0.0, 1),
        ("fake-sparse", 0.1, 0),
        ("fake-sparse", 0.1, 1),
        ("fake-sparse", 0.3, 0),
        ("fake-sparse", 0.3, 1),
    ]
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,4") == [0, 4]
    assert parse_seeds("7,") == [7]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algo=dense,nope"], "unknown algorithm 'nope'"),
        (["--algo=fake-sparse", "--sparsity=0.1,1.2"], "--sparsity must be in [0, 1), got 1.2"),
        (["--algo=dense", "--seeds=x"], "--seeds: 'x' is not a comma-separated list"),
        (["--algo=dense", "--seeds=0"], "--seeds must be a count from 1 to 1,000"),
        (["--algo=dense", "--algo-opt=nope=1"], "no algorithm of the sweep (dense) has option 'nope'"),
        (["--algo=dense", "--devices=cpu,cuda:99"], "--device cuda:99"),
        (["--algo=fake-sparse", "--sparsity=0.3,0.3000001"], "share the run directory digits-digits-cnn-fake-sparse"),
    ],
)
def test_bad_values_fail_in_one_line_before_anything_runs(cli, tmp_path, args, message):
    result = sweep(cli, tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_devices_under_torchrun_fail_in_one_line(cli, tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    args = ["sweep", "--algo=dense", "--devices=cpu,cpu", *QUICK, f"--out={tmp_path / 'out'}"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2 and "under torchrun" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_plan_reads_a_config_file_and_gives_each_algorithm_only_its_options(fake_plugins, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('epochs = 3\nseed = 9\nseverities = "5"\ndistribution = "erk"\n[algo_options]\nboost = 2.0\n')
    grid = Grid.parse("dense,fake-sparse", "0.5", "1")
    sweep_dir, configs = plan(grid, {"device": "cpu"}, str(recipe), fake_plugins.registry, None)
    assert sweep_dir.as_posix() == "sweeps/digits-digits-cnn"
    assert [(c.algo, c.sparsity, c.seed, c.algo_options, c.distribution) for c in configs] == [
        ("dense", 0.0, 0, {}, None),
        ("fake-sparse", 0.5, 0, {"boost": 2.0}, "erk"),
    ]
    assert all(c.epochs == 3 and c.severities == (5,) and not c.resume for c in configs)
    assert configs[1].out == f"sweeps/digits-digits-cnn/runs/{configs[1].run_id}"
    assert not sweep_dir.exists()


def test_run_args_resolve_to_the_same_config(plugins, tmp_path):
    cfg = run_config(
        plugins,
        tmp_path,
        schedule="multistep",
        milestones="0.3,0.6",
        nesterov=True,
        channels_last=False,
        corruptions="gaussian_noise,shot_noise",
        label_smoothing=0.1,
    )
    params = run.make_context("run", run_args(cfg)).params
    assert params.pop("config_file") is None
    assert resolve(given(params), None, plugins.registry) == cfg


# --- the statistics ----------------------------------------------------------------------------------------------


def entry(algo, sparsity, seed, clean, mpc, cells=None, test_samples=100):
    cells = cells or {"gaussian_noise": {"3": mpc}}
    severities = sorted({int(s) for row in cells.values() for s in row})
    return {
        "run_id": f"{algo}-s{sparsity}-seed{seed}",
        "dataset": "digits",
        "model": "digits-cnn",
        "suite": "cifar-c-noise",
        "algorithm": {"name": algo},
        "sparsity": {"target": sparsity, "achieved": sparsity},
        "seed": seed,
        "clean_acc": clean,
        "corruptions_acc": mpc,
        "rpc": mpc / clean,
        "corruptions_mce": None,
        "corruptions_relative_mce": None,
        "training": {"wall_time_s": 1.0},
        "corruptions": cells,
        "evaluation": {"corruptions": list(cells), "severities": severities, "test_samples": test_samples},
    }


def test_summary_means_std_and_differences_paired_by_seed():
    entries = [
        entry("dense", 0.0, 0, 90.0, 70.0),
        entry("dense", 0.0, 1, 92.0, 71.0),
        entry("dense", 0.0, 2, 91.0, 75.0),
        entry("rigl", 0.5, 0, 91.0, 73.0),
        entry("rigl", 0.5, 1, 92.5, 74.5),
        entry("rigl", 0.5, 3, 80.0, 60.0),  # no dense seed 3: not paired
        entry("rigl", 0.9, 1, 85.0, 65.0),
    ]
    summary = summarize(entries)
    dense, rigl, single = summary.rows
    assert (dense.algorithm, dense.seeds, dense.clean_acc.mean) == ("dense", [0, 1, 2], 91.0)
    assert dense.clean_acc.std == pytest.approx(1.0)  # ddof=1
    assert dense.clean_acc_vs_baseline is None
    assert rigl.seeds == [0, 1, 3] and rigl.corruptions_acc.mean == pytest.approx(fmean([73.0, 74.5, 60.0]))
    assert rigl.corruptions_acc.std == pytest.approx(stdev([73.0, 74.5, 60.0]))
    assert rigl.rpc.mean == pytest.approx(fmean([73 / 91, 74.5 / 92.5, 60 / 80]))

    diff = rigl.corruptions_acc_vs_baseline  # seeds 0 and 1: +3.0 and +3.5
    half = t.ppf(0.975, 1) * stdev([3.0, 3.5]) / math.sqrt(2)
    assert diff.seeds == [0, 1] and diff.mean == pytest.approx(3.25)
    assert (diff.low, diff.high) == (pytest.approx(3.25 - half), pytest.approx(3.25 + half))
    assert diff.significant == (diff.low > 0)
    clean = rigl.clean_acc_vs_baseline  # +1.0 and +0.5
    assert clean.mean == pytest.approx(0.75) and clean.low < 0 < clean.high and not clean.significant

    assert single.seeds == [1] and single.clean_acc.std is None
    assert single.clean_acc_vs_baseline.mean == pytest.approx(-7.0) and single.clean_acc_vs_baseline.low is None
    assert [run.run_id for run in summary.runs] == [e["run_id"] for e in entries]
    json.dumps(summary.to_dict(), allow_nan=False)


def test_relative_gains_of_every_cell_over_the_seeds_both_have(tmp_path):
    def grid(noise3, noise5, blur3):
        return {"gaussian_noise": {"3": noise3, "5": noise5}, "defocus_blur": {"3": blur3}}

    entries = [
        entry("dense", 0.0, 0, 90.0, 0, grid(50.0, 20.0, 80.0)),
        entry("dense", 0.0, 1, 90.0, 0, grid(40.0, 0.0, 80.0)),
        entry("rigl", 0.5, 0, 90.0, 0, grid(55.0, 25.0, 80.0)),
        entry("rigl", 0.5, 1, 90.0, 0, grid(50.0, 10.0, 76.0)),
        entry("rigl", 0.5, 2, 10.0, 0, grid(0.0, 0.0, 0.0)),  # no dense seed 2: left out
        entry("set", 0.5, 7, 90.0, 0),  # no seed in common with dense
    ]
    dense, rigl, unpaired = summarize(entries).rows
    assert dense.cell_gains is None and unpaired.cell_gains is None and unpaired.top_gain() is None
    assert rigl.cell_gains == {
        "gaussian_noise": {"3": pytest.approx((10 + 25) / 2), "5": None},  # dense seed 1 scored 0 there
        "defocus_blur": {"3": pytest.approx((0 - 5) / 2)},
    }
    assert rigl.top_gain() == ("gaussian_noise", "3", pytest.approx(17.5))
    path = tmp_path / "gains.png"
    assert plot_gains(summarize(entries), path) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_gains(summarize(entries[:2]), tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_a_baseline_at_several_sparsities_is_compared_at_the_row_s_own():
    entries = [
        entry("static", 0.5, 0, 90.0, 70.0),
        entry("static", 0.9, 0, 80.0, 50.0),
        entry("set", 0.5, 0, 91.0, 71.0),
        entry("set", 0.9, 0, 81.0, 51.0),
        entry("set", 0.7, 0, 85.0, 60.0),  # static has no 0.7: no baseline to pick
    ]
    rows = {(row.algorithm, row.sparsity): row for row in summarize(entries, baseline="static").rows}
    for sparsity in (0.5, 0.9):
        assert rows["set", sparsity].corruptions_acc_vs_baseline.mean == pytest.approx(1.0)
        assert rows["set", sparsity].clean_acc_vs_baseline.mean == pytest.approx(1.0)
    assert rows["set", 0.7].corruptions_acc_vs_baseline is None and rows["set", 0.7].cell_gains is None
    dense_only = summarize([entry("dense", 0.0, 0, 90.0, 70.0), entry("set", 0.7, 0, 85.0, 60.0)])
    assert dense_only.rows[1].corruptions_acc_vs_baseline.mean == pytest.approx(-10.0)  # its one level: 0


def test_runs_scored_over_other_grids_are_not_compared():
    five = {"gaussian_noise": {str(s): 80.0 - 10 * s for s in range(1, 6)}}
    entries = [
        entry("dense", 0.0, 0, 90.0, 50.0, five),
        entry("rigl", 0.5, 0, 90.0, 70.0, {"gaussian_noise": {"1": 70.0}}),  # severity 1 alone
        entry("set", 0.5, 1, 90.0, 50.0, five, test_samples=50),  # another test subset
        entry("set", 0.5, 0, 90.0, 51.0, five),
    ]
    summary = summarize(entries)
    assert [(row.algorithm, row.grid) for row in summary.rows] == [
        ("dense", "gaussian_noise × severities 1–5 · 100 test samples"),
        ("rigl", "gaussian_noise × severity 1 · 100 test samples"),
        ("set", "gaussian_noise × severities 1–5 · 50 test samples"),
        ("set", "gaussian_noise × severities 1–5 · 100 test samples"),
    ]
    assert [row.corruptions_acc_vs_baseline is None for row in summary.rows] == [True, True, True, False]
    assert summary.rows[3].corruptions_acc_vs_baseline.seeds == [0]
    assert len(summary_tables(summary).renderables) == 3


def test_two_entries_of_one_run_are_an_error():
    with pytest.raises(UserError, match="same algorithm, sparsity and seed"):
        summarize([entry("dense", 0.0, 0, 90.0, 70.0), entry("dense", 0.0, 0, 91.0, 70.0)])


# --- end to end --------------------------------------------------------------------------------------------------


def _mtimes(out):
    return {path.parent.name: path.stat().st_mtime_ns for path in (out / "runs").glob("*/entry.json")}


def _rows(out):
    return json.loads((out / "summary.json").read_text())["rows"]


def test_sweep_writes_summary_skips_finished_runs_and_reruns_a_missing_one(cli, tmp_path):
    out = tmp_path / "sweep"
    args = ["--algo=dense,fake-sparse", "--sparsity=0.5", "--seeds=2"]
    first = sweep(cli, out, *args)
    assert first.exit_code == 0, first.output
    assert "[4/4] fake-sparse s=0.5 seed=1  clean" in first.stdout and "mPC" in first.stdout
    assert "Δ mPC" in first.stdout and "fake-sparse" in first.stdout
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "gains.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n" and f"gains: {out / 'gains.png'}" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["algorithm"], r["sparsity"], r["seeds"]) for r in summary["rows"]] == [
        ("dense", 0.0, [0, 1]),
        ("fake-sparse", 0.5, [0, 1]),
    ]
    assert summary["rows"][1]["corruptions_acc_vs_baseline"]["seeds"] == [0, 1]
    gains = summary["rows"][1]["cell_gains"]
    assert len(gains) == 19 and all(cells == {"1": 0.0, "5": 0.0} for cells in gains.values())  # trains as dense
    assert "top cell gain" in first.stdout
    assert len(summary["runs"]) == 4 and summary["missing"] == []
    assert [run["corruptions_relative_mce"] for run in summary["runs"]] == [None] * 4  # no --baseline
    older = out / "runs" / "digits-digits-cnn-dense-seed0" / "entry.json"  # as a dstbench of schema 2 wrote it
    old = json.loads(older.read_text())
    del old["corruptions_relative_mce"]
    older.write_text(json.dumps({**old, "schema_version": 2}))
    finished = _mtimes(out)

    again = sweep(cli, out, *args)
    assert again.exit_code == 0 and again.stdout.count("  skip (") == 4
    assert _mtimes(out) == finished and _rows(out) == summary["rows"]

    (out / "runs" / "digits-digits-cnn-fake-sparse-s0.5-seed0" / "entry.json").unlink()
    rerun = sweep(cli, out, *args)
    assert rerun.exit_code == 0 and rerun.stdout.count("  skip (") == 3
    assert "fake-sparse s=0.5 seed=0  clean" in rerun.stdout
    changed = {name for name, mtime in _mtimes(out).items() if finished[name] != mtime}
    assert changed == {"digits-digits-cnn-fake-sparse-s0.5-seed0"}
    assert _rows(out) == summary["rows"]


def test_a_failing_run_is_reported_and_the_others_still_run(cli, tmp_path):
    out = tmp_path / "sweep"
    result = sweep(cli, out, "--algo=fake-failing,dense", "--sparsity=0.5", "--seeds=1")
    assert result.exit_code == 1
    assert "fake-failing s=0.5 seed=0  failed" in result.stderr and "fake-failing cannot set up" in result.stderr
    assert "1 of 2 runs failed" in result.stderr
    assert (out / "runs" / "digits-digits-cnn-dense-seed0" / "entry.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing"] == ["digits-digits-cnn-fake-failing-s0.5-seed0"]


def test_sweep_command_in_subprocesses_sequential_and_parallel(tmp_path):
    def dstbench_sweep(out, *extra):
        args = "--algo=dense --seeds=2 --epochs=1 --max-train-samples=200 --max-test-samples=50 --severities=3".split()
        command = [sys.executable, "-m", "dstbench", "sweep", *args, "--out", str(out), *extra]
        env = {**os.environ, "DSTBENCH_PLUGINS": ""}
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    here = dstbench_sweep(tmp_path / "here", "--device", "cpu")
    assert here.returncode == 0, here.stderr
    assert "[2/2] dense s=0 seed=1" in here.stdout and "Δ mPC" in here.stdout

    parallel = dstbench_sweep(tmp_path / "parallel", "--devices", "cpu,cpu")
    assert parallel.returncode == 0, parallel.stderr
    for seed in (0, 1):
        run_id = f"digits-digits-cnn-dense-seed{seed}"
        a, b = (json.loads((tmp_path / d / "runs" / run_id / "entry.json").read_text()) for d in ("here", "parallel"))
        assert _settings(b) == _settings(a)  # the subprocess ran with the settings the sweep resolved
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, os.cpu_count() // 2)  # two CPU runs share the cores
    assert b["training"]["device"].endswith(f", {threads} threads)")


def _settings(entry):
    return {k: v for k, v in entry["config"].items() if FIELDS[k].metadata["role"] != RUNTIME}


def test_a_crashing_run_fails_in_one_line_and_the_others_still_run(cli, tmp_path):
    result = sweep(cli, tmp_path / "sweep", "--algo=fake-crashing,dense", "--sparsity=0.5", "--seeds=1")
    assert result.exit_code == 1, result.output
    assert "fake-crashing s=0.5 seed=0  failed" in result.stderr
    assert "RuntimeError: fake-crashing hit a bug" in result.stderr
    assert "second line" not in result.stderr and "1 of 2 runs failed" in result.stderr
    assert (tmp_path / "sweep" / "runs" / "digits-digits-cnn-dense-seed0" / "entry.json").exists()


def test_a_run_another_sweep_finished_meanwhile_is_skipped(fake_plugins, tmp_path, monkeypatch, quiet):
    """Whether a run is finished (or started) is asked just before it starts, not when the sweep planned it."""
    flags = {**given(run.make_context("run", QUICK).params), "quiet": True}
    _, configs = plan(Grid.parse("dense", "0", "2"), flags, None, fake_plugins.registry, str(tmp_path))
    real = sweep_module.run_here

    def and_another_sweep(cfg, plugins, reporter):
        if cfg.seed == 0:  # meanwhile another sweep on the same --out finishes seed 1
            assert real(configs[1], plugins, reporter).entry is not None
        return real(cfg, plugins, reporter)

    monkeypatch.setattr(sweep_module, "run_here", and_another_sweep)
    progress = sweep_module.Progress(quiet, len(configs))
    assert sweep_module._run_all(configs, [], fake_plugins, progress) == []
    assert progress.count == 2


def test_each_gpu_run_sees_only_its_gpu():
    env = {"CUDA_VISIBLE_DEVICES": "4,6", "OMP_NUM_THREADS": "3"}
    assert child_device("cuda:1", ["cuda:0", "cuda:1"], env) == ("cuda:0", {**env, "CUDA_VISIBLE_DEVICES": "6"})
    assert child_device("cuda", ["cuda", "cuda"], {})[1]["CUDA_VISIBLE_DEVICES"] == "0"
    assert child_device("cuda:3", ["cuda:3"], {})[1]["CUDA_VISIBLE_DEVICES"] == "3"
    assert child_device("cpu", ["cpu", "cpu"], env) == ("cpu", env)  # OMP_NUM_THREADS set: kept


def test_a_killed_run_says_so():
    code = "import os, signal, sys; print('an earlier warning', file=sys.stderr); os.kill(os.getpid(), signal.SIGKILL)"
    returncode, stderr = Children().run([sys.executable, "-c", code], os.environ)
    assert sweep_module._failure(returncode, stderr) == "killed by SIGKILL"
    assert sweep_module._failure(2, "Error: bad\n\n") == "Error: bad"


def _children(pid):
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(child) for task in tasks for child in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the runs' processes in /proc")
def test_ctrl_c_stops_the_parallel_runs(tmp_path):
    args = "--algo=dense --seeds=2 --epochs=10000 --max-train-samples=64 --batch-size=32 --severities=3".split()
    command = [sys.executable, "-m", "dstbench", "sweep", *args, "--devices=cpu,cpu", f"--out={tmp_path / 'sweep'}"]
    env = {**os.environ, "DSTBENCH_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    sweep_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    children = []
    try:
        deadline = time.monotonic() + 60
        while len(_children(sweep_process.pid)) < 2:  # both runs have started
            assert sweep_process.poll() is None and time.monotonic() < deadline, sweep_process.communicate()
            time.sleep(0.05)
        time.sleep(1)
        children = _children(sweep_process.pid)
        sweep_process.send_signal(signal.SIGINT)  # to the sweep alone, as `kill -INT` (the runs have own sessions)
        _, stderr = sweep_process.communicate(timeout=60)
        assert sweep_process.returncode == 130 and "interrupted; run the same command again" in stderr, stderr
        for pid in children:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:  # nothing left running when the test fails
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sweep_process.kill()
        sweep_process.communicate()
