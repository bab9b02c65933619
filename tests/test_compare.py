"""`dstbench compare`: a sweep's summary for runs and entries given on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from entries import make_entry

from dstbench.cli import build_cli


@pytest.fixture
def compare(plugins):
    def invoke(*args):
        return CliRunner().invoke(build_cli(plugins), ["compare", *map(str, args)])

    return invoke


def write(path, entry):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return path


def test_runs_folders_and_entry_files_are_compared_with_dense(compare, tmp_path):
    for seed, (dense, rigl) in enumerate(((80.0, 81.0), (82.0, 84.0))):
        write(tmp_path / "runs" / f"dense-{seed}" / "entry.json", make_entry(seed=seed, clean=dense))
        rigl_entry = make_entry(algo="rigl", sparsity=0.3, seed=seed, clean=rigl)
        write(tmp_path / "elsewhere" / f"rigl-{seed}.json", rigl_entry)
    run = tmp_path / "runs" / "dense-0"
    out = tmp_path / "comparison"
    files = sorted((tmp_path / "elsewhere").glob("*.json"))
    result = compare(tmp_path / "runs", run, *files, "--out", out)  # dense-0 named twice: read once
    assert result.exit_code == 0, result.output
    assert "Δ mPC" in result.output and f"gains: {out / 'gains.png'}" in result.output
    summary = json.loads((out / "summary.json").read_text())
    dense, rigl = summary["rows"]
    assert (dense["algorithm"], dense["seeds"], rigl["seeds"]) == ("dense", [0, 1], [0, 1])
    assert rigl["corruptions_acc_vs_baseline"]["mean"] == pytest.approx(1.5)  # +1 and +2, paired by seed
    assert rigl["cell_gains"]["gaussian_noise"]["1"] == pytest.approx(fmean_gain(80, 81, 82, 84))
    assert sorted(p.name for p in out.iterdir()) == ["gains.png", "summary.json", "summary.png"]


def fmean_gain(dense0, rigl0, dense1, rigl1, drop=10.0):
    """make_entry's gaussian_noise at severity 1 is clean - drop: the mean relative gain of the two seeds."""
    pairs = ((dense0 - drop, rigl0 - drop), (dense1 - drop, rigl1 - drop))
    return sum(100 * (r - d) / d for d, r in pairs) / 2


def test_without_the_baseline_the_tables_still_print_with_a_warning(compare, tmp_path):
    entry = write(tmp_path / "a.json", make_entry(algo="rigl", sparsity=0.3))
    result = compare(entry)
    assert result.exit_code == 0 and "rigl" in result.output
    assert "no dense run among them (rigl): nothing to compare with; see --baseline-algo" in result.output
    static = write(tmp_path / "b.json", make_entry(algo="static", sparsity=0.3))
    result = compare(entry, static, "--baseline-algo", "static", "--out", tmp_path / "out")
    assert result.exit_code == 0 and "nothing to compare" not in result.output and "top cell gain" in result.output
    assert (tmp_path / "out" / "gains.png").exists()
    again = compare(entry, static, "--out", tmp_path / "out")  # dense is the baseline now: no gains to plot
    assert again.exit_code == 0 and not (tmp_path / "out" / "gains.png").exists() and "gains:" not in again.output


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda tmp: [tmp / "missing"], "missing does not exist; give run folders, folders of runs or entry files"),
        (lambda tmp: [tmp], "holds no entry.json; give run folders, folders of runs or entry files"),
        (lambda tmp: [write(tmp / "bad.json", {"run_id": "x"})], "bad.json is not a valid entry: "),
        (
            lambda tmp: [write(tmp / f"{name}.json", make_entry()) for name in ("one", "two")],
            "runs cifar10-cifar-resnet18-dense-seed0 and cifar10-cifar-resnet18-dense-seed0 are the same algorithm",
        ),
    ],
    ids=["missing", "no entries", "invalid", "twice"],
)
def test_bad_input_is_one_line(compare, tmp_path, setup, message):
    result = compare(*setup(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_out_must_be_a_folder(compare, tmp_path):
    entry = write(tmp_path / "a.json", make_entry())
    (tmp_path / "file").write_text("")
    result = compare(entry, "--out", tmp_path / "file")
    assert result.exit_code == 2 and "--out" in result.output and "is a file; name a folder" in result.output


def test_the_committed_digits_entries_through_a_subprocess(tmp_path):
    """The leaderboard's own dense, SET, RigL and MEST entries, compared by the installed command."""
    entries = sorted((Path(__file__).parents[1] / "leaderboard" / "entries" / "digits" / "cifar-c").glob("*.json"))
    command = [sys.executable, "-m", "dstbench", "compare", *map(str, entries), "--out", str(tmp_path / "out")]
    env = {**os.environ, "DSTBENCH_PLUGINS": "", "COLUMNS": "200"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {row["algorithm"]: row for row in summary["rows"]}
    assert set(rows) == {"dense", "set", "rigl", "mest"} and rows["dense"]["cell_gains"] is None
    for name in ("set", "rigl", "mest"):  # one seed each: the difference is the entries' own
        runs = {run["algorithm"]: run for run in summary["runs"]}
        difference = runs[name]["corruptions_acc"] - runs["dense"]["corruptions_acc"]
        assert rows[name]["corruptions_acc_vs_baseline"]["mean"] == pytest.approx(difference)
        assert len(rows[name]["cell_gains"]) == 19 and f"{name} " in result.stdout
    assert (tmp_path / "out" / "gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
