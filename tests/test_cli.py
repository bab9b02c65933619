"""The command line, end to end through real subprocesses and through click's runner."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from statistics import fmean

import click
import pytest
import torch
from click.testing import CliRunner

from dstbench.cli import build_cli

SMALL = [
    "--epochs",
    "1",
    "--max-train-samples",
    "200",
    "--max-test-samples",
    "60",
    "--severities",
    "3",
    "--device",
    "cpu",
]


def dstbench(*args, cwd=None):
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-m", "dstbench", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_run_end_to_end(tmp_path):
    result = dstbench("run", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entry_path = tmp_path / "runs" / "digits-digits-cnn-dense-seed0" / "entry.json"
    assert f"entry: {entry_path.relative_to(tmp_path)}" in result.stdout
    assert "gaussian_noise" in result.stdout and "mPC" in result.stdout
    assert "epoch 1/1" in result.stderr  # no TTY: plain progress lines
    validate = dstbench("leaderboard", "validate", entry_path)
    assert validate.returncode == 0 and validate.stdout.strip().endswith(": ok")

    evaluated = dstbench("eval", entry_path.parent, "--severities", "1", "--entry", tmp_path / "sev1.json", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.strip().endswith(f"entry: {tmp_path / 'sev1.json'}")
    sev1 = json.loads((tmp_path / "sev1.json").read_text())
    original = json.loads(entry_path.read_text())
    assert sev1["evaluation"]["severities"] == [1] and sev1["clean_acc"] == original["clean_acc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--algo", "nope"], "unknown algorithm 'nope'; choose from: dense"),
        (["run", "--sparsity", "1.5"], "--sparsity must be in [0, 1), got 1.5"),
        (["run", "--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["run", "--dataset", "cifar10", "--data-dir", "{tmp}/nothing"], "cifar10"),
        (["run", "--config", "{tmp}/missing.toml"], "config file"),
        (["eval", "{tmp}/missing-run"], "does not exist"),
        (["eval", "{tmp}/junk.pt"], "junk.pt is not a dstbench checkpoint: the file is truncated or damaged"),
        (["leaderboard", "export", "{tmp}/no*.json", "--out", "{tmp}/x"], "no*.json does not exist; give an entry's"),
        (["run", "--dataset", "cifar10", "--data-dir", "hf:"], "--data-dir hf: needs a Hugging Face dataset name"),
        (["leaderboard", "verify", "{tmp}/junk.pt", "--checkpoint", "{tmp}/junk.pt", "--tolerance", "nan"], "nan"),
        (["run", "--device", "cuda"] if not torch.cuda.is_available() else ["run", "--device", "cuda:99"], "--device"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = dstbench(*args, "--out", tmp_path / "out", cwd=tmp_path) if args[0] == "run" else dstbench(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_damaged_files_odd_values_and_own_files_are_one_line_errors(tmp_path, finished_run, plugins):
    """Found by fuzzing the commands: each of these once ended in a traceback, ran anyway or overwrote a file."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.pt", "entry.json"):
        (run / name).write_bytes((Path(finished_run.out) / name).read_bytes())
    state = torch.load(run / "model.pt", weights_only=True)
    damaged = {
        "noconfig": {k: v for k, v in state.items() if k != "config"},
        "nohistory": {**state, "training": {k: v for k, v in state["training"].items() if k != "history"}},
        "otherweights": {**state, "model": {k + ".x": v for k, v in state["model"].items()}},
    }
    for name, content in damaged.items():
        torch.save(content, tmp_path / f"{name}.pt")
    (tmp_path / "run5.toml").write_text("run = 5\n")
    (tmp_path / "wide.png").write_bytes(_png(32, 48))
    noise = ["--suite", "cifar-c-noise", "--max-test-samples", "20"]
    cases = [
        (["eval", run, "--entry", run / "model.pt"], "is the run's own model.pt; write the new entry elsewhere"),
        (["eval", run, "--entry", run / "entry.json"], "is the run's own entry.json; write the new entry elsewhere"),
        (["eval", tmp_path / "noconfig.pt"], "noconfig.pt is damaged: its 'config' is missing or not a dict"),
        (["eval", tmp_path / "nohistory.pt", *noise], "nohistory.pt is damaged: its training record does not read"),
        (["eval", tmp_path / "otherweights.pt", *noise], "holds weights that do not fit its model: 20 of its"),
        (["run", "--lr", "1e308"], "--lr must be in (0, 3.4e38], got 1e+308"),
        (["run", "--algo", "mest", "--sparsity", "0.5", "--algo-opt", "importance_lambda=inf"], "a finite number"),
        (["run", "--corruptions", "gaussian_noise,,fog"], "has an empty item between commas"),
        (["run", "--config", tmp_path / "run5.toml"], "'run' must be a table of settings ([run]), got 5"),
        (["sweep", "--algo", "dense", "--seeds", "99999999999"], "--seeds must be a count from 1 to 1,000"),
        (["sweep", "--algo", "dense", "--sparsity", "0.1,,0.3"], "is not a comma-separated list of numbers"),
        (["corrupt", tmp_path / "wide.png", "--suite", "imagenet-c-bar"], "corrupts square images only; wide is"),
        (["corrupt", tmp_path / "wide.png", "--suite", "cifar-c", "--corruption", ","], "an empty item"),
        (["frequency", run, "--radii", "0-99999999"], "invalid --radii '0-99999999'; write whole numbers from 0"),
        (["frequency", run, "--radii", "0-50"], "the low-pass keeps every frequency from radius 23 on"),
    ]
    for args, message in cases:
        out = ["--out", tmp_path / "out"] if args[0] in ("run", "sweep", "corrupt", "frequency") else []
        result = CliRunner().invoke(build_cli(plugins), [*map(str, args), *map(str, out)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.output)
    assert not (tmp_path / "out").exists()
    assert (run / "model.pt").read_bytes() == (Path(finished_run.out) / "model.pt").read_bytes()


def _png(height: int, width: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unwritable_outputs_and_a_bad_baseline_are_refused_before_any_work(tmp_path, finished_run):
    file, out, run = tmp_path / "file", tmp_path / "out", Path(finished_run.out)
    file.write_text("x")
    noise = ["--suite", "cifar-c-noise"]
    cases = [
        (["run", "--out", file], f"--out {file} is a file; name a folder"),
        (["run", "--out", file / "sub"], f"--out {file / 'sub'}: {file} is a file, so no folder can be made below it"),
        (["sweep", "--algo", "dense", "--out", file], f"--out {file} is a file; name a folder"),
        (["eval", run, "--entry", file / "x.json"], f"{file} is a file, so no file can be made below it"),
        (["run", "--out", out, "--baseline", tmp_path / "none.json"], "none.json is not a valid entry: $: file does"),
        (  # the run's entry holds severities 1 and 5
            ["run", "--out", out, *noise, "--severities", "2", "--baseline", run / "entry.json"],
            "has no result for gaussian_noise at severity 2; mCE needs the baseline's errors on every corruption",
        ),
    ]
    for args, message in cases:
        result = dstbench(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not out.exists()


def test_eval_with_a_baseline_writes_and_shows_mce_and_relative_mce(tmp_path, finished_run):
    run = Path(finished_run.out)
    entry = json.loads((run / "entry.json").read_text())

    def baseline(name, accuracy):
        grid = {c: dict.fromkeys(row, accuracy(c)) for c, row in entry["corruptions"].items()}
        mpc = fmean(acc for row in grid.values() for acc in row.values())
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps({**entry, "corruptions": grid, "corruptions_acc": mpc, "rpc": mpc / entry["clean_acc"]})
        )
        return path

    def evaluate(baseline_path):
        out = tmp_path / f"{baseline_path.stem}-entry.json"
        result = dstbench("eval", run, "--baseline", baseline_path, "--entry", out, "--quiet")
        assert result.returncode == 0, result.stderr
        return result, json.loads(out.read_text())

    # Wrong on every corrupted image: the baseline's error is 100 and its drop its clean accuracy in every cell
    result, written = evaluate(baseline("wrong", lambda c: 0.0))
    mpc = written["corruptions_acc"]
    relative = 100 * (written["clean_acc"] - mpc) / entry["clean_acc"]
    assert written["corruptions_mce"] == pytest.approx(100 - mpc)
    assert written["corruptions_relative_mce"] == pytest.approx(relative)
    assert f"relative mCE {relative:.1f}%" in result.stdout and "warning" not in result.stderr

    result, written = evaluate(baseline("unhurt", lambda c: entry["clean_acc"] if c == "gaussian_noise" else 0.0))
    assert "warning: no relative mCE: the baseline's accuracy does not drop under gaussian_noise" in result.stderr
    assert written["corruptions_relative_mce"] is None and written["corruptions_mce"] is not None
    assert "relative mCE —" in result.stdout


@pytest.fixture(scope="module")
def cli(plugins):
    return build_cli(plugins)


def test_run_help_shows_examples_and_every_setting(cli):
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    for text in (
        "Examples:",
        "dstbench run --epochs",
        "--sparsity S",
        "--config",
        "--algo-opt KEY=VALUE",
        "--severities S",
        "--resume",
        "--device DEV",
    ):
        assert text in result.output


def test_list_shows_each_kind_with_its_plugin(cli):
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0
    listing = json.loads(result.output)
    assert set(listing) == {"algorithm", "model", "dataset", "suite", "trainer"}
    digits = next(row for row in listing["dataset"] if row["name"] == "digits")
    assert digits["plugin"] == "datasets" and digits["from"].startswith("dstbench ")
    assert CliRunner().invoke(cli, ["list"]).exit_code == 0


def test_plugins_lists_hooks(cli):
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    infos = {info["name"]: info for info in json.loads(result.output)}
    assert infos["dense"]["hooks"] == ["register_algorithms"] and infos["dense"]["builtin"]


def test_leaderboard_validate_reports_json_paths(cli, finished_run, tmp_path):
    entry = json.loads((Path(finished_run.out) / "entry.json").read_text())
    entry["training"]["epochs"] = -1
    entry["corruptions"]["gaussian_noise"]["1"] = "97.5"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entry))
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(entry).replace('"97.5"', "NaN"))
    result = CliRunner().invoke(cli, ["leaderboard", "validate", str(bad), str(nan)])
    assert result.exit_code == 1
    assert f"{bad}: $.corruptions.gaussian_noise.1: '97.5' is not of type 'number'" in result.output
    assert f"{bad}: $.training.epochs: -1 is less than the minimum of 1" in result.output
    assert f"{nan}: $: not readable JSON (NaN is not allowed)" in result.output


def test_interrupted_run_says_how_to_resume_and_resumes(tmp_path):
    out = tmp_path / "run"
    # small batches make epochs slow enough (about half a second) that the signal lands mid-run
    args = ["run", "--epochs", "8", "--batch-size", "16", "--severities", "1", "--device", "cpu", "--out", out]
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstbench", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        stdout=subprocess.DEVNULL,
        env=env,
        # a shell running the tests in the background ignores SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 2/8"):
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=60) == 130
    assert lines[-1].strip() == f"Error: interrupted; continue with: dstbench run --out {out} --resume"
    assert "Traceback" not in "".join(lines)
    changed = dstbench("run", "--out", out, "--resume", "--epochs", "9")
    assert changed.returncode == 2 and "epochs=8 (now 9)" in changed.stderr
    resumed = dstbench("run", "--out", out, "--resume")  # the hint as printed: the run's own settings
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    entry = json.loads((out / "entry.json").read_text())
    assert [h["epoch"] for h in entry["training"]["history"]] == list(range(1, 9))


def test_an_os_error_naming_a_file_is_one_line_and_others_stay_tracebacks():
    from click.testing import CliRunner

    from dstbench.options import DstbenchGroup

    group = DstbenchGroup()

    @group.command()
    @click.argument("kind")
    def write(kind):
        if kind == "disk":
            raise OSError(28, "No space left on device", "runs/a/checkpoint.pt")
        raise OSError("no file in this one")

    full = CliRunner().invoke(group, ["write", "disk"])
    assert full.exit_code == 2 and full.output == "Error: No space left on device: runs/a/checkpoint.pt\n"
    assert isinstance(CliRunner().invoke(group, ["write", "bug"]).exception, OSError)


def test_every_command_shows_examples_in_its_help(cli):
    def commands(group, prefix=()):
        for name, command in group.commands.items():
            yield (*prefix, name)
            if isinstance(command, click.Group):
                yield from commands(command, (*prefix, name))

    names = list(commands(cli))
    assert ("leaderboard", "verify") in names and ("corrupt",) in names
    for name in names:
        result = CliRunner().invoke(cli, [*name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name


def test_an_interrupt_before_anything_was_saved_does_not_offer_a_resume(tmp_path):
    from dstbench.hookspecs import hookimpl
    from dstbench.plugins import Plugins

    class InterruptAtStart:
        @hookimpl
        def on_run_start(self, run):
            raise KeyboardInterrupt

    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"stop": InterruptAtStart()})
    out = tmp_path / "out"
    result = CliRunner().invoke(build_cli(plugins), ["run", "--device", "cpu", "--quiet", "--out", str(out)])
    assert result.exit_code == 130 and result.output.strip().endswith("Error: interrupted; nothing was saved yet")


def test_an_output_folder_without_write_permission_is_named(tmp_path, monkeypatch):
    from dstbench.errors import UserError
    from dstbench.options import check_writable

    with pytest.raises(UserError, match=r"^--out /proc/dstbench/run: cannot write in /proc \(.+\)$"):
        check_writable(Path("/proc/dstbench/run"), "--out")  # refused to root too, which os.access would let pass

    def refuse(dir):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("dstbench.options.tempfile.TemporaryFile", refuse)
    message = f"--out {tmp_path / 'new' / 'run'}: cannot write in {tmp_path} (Permission denied)"
    with pytest.raises(UserError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        check_writable(tmp_path / "new" / "run", "--out")
    assert list(tmp_path.iterdir()) == []
