"""`dstbench leaderboard submit`, `verify` and `export` on a real small run (the session's `finished_run`)."""

import csv
import json
import shutil
from pathlib import Path
from statistics import fmean
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from entries import make_entry

from dstbench.cli import build_cli
from dstbench.entry import entry_grid, validate_file, violations
from dstbench.leaderboard.robustbench import ALEXNET_ERRORS
from dstbench.leaderboard.submission import _subset_accuracy_checks, sampling_tolerance


@pytest.fixture(scope="module")
def cli(plugins):
    return build_cli(plugins)


def invoke(cli, *args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["leaderboard", *map(str, args)])  # rich tables unwrapped


@pytest.fixture
def run_dir(finished_run, tmp_path):
    """A copy of the finished run (digits, 100 test samples, cifar-c-noise at severities 1 and 5) to tamper with."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run.out, copy)
    return copy


@pytest.fixture
def board(tmp_path):
    (tmp_path / "leaderboard" / "entries").mkdir(parents=True)
    return tmp_path / "leaderboard"


def edit_entry(run_dir, change):
    path = run_dir / "entry.json"
    entry = json.loads(path.read_text())
    change(entry)
    assert violations(entry) == []  # a consistent lie: only the checkpoint can expose it
    path.write_text(json.dumps(entry))
    return entry


def submit(cli, run_dir, board, *args):
    return invoke(cli, "submit", run_dir, "--leaderboard", board, "--device", "cpu", "--quiet", *args)


def refusal(result):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "does not reproduce" in errors[0] and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_submit_checks_the_run_and_writes_the_entry_once(cli, run_dir, board):
    result = submit(
        cli, run_dir, board, "--subset", 50, "--name", "Digits2026Dense", "--link", "https://example.org/paper",
        "--authors", "A. Author, B. Author", "--venue", "Tests 2026",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    target = board / "entries" / "digits" / "cifar-c-noise" / "Digits2026Dense.json"
    assert validate_file(target) == []
    assert target.stat().st_mode & 0o777 == 0o644  # a file to commit, not mkstemp's private 0600
    written, claimed = json.loads(target.read_text()), json.loads((run_dir / "entry.json").read_text())
    assert written["name"] == "Digits2026Dense" and written["venue"] == "Tests 2026"
    assert written["link"] == "https://example.org/paper" and written["authors"] == "A. Author, B. Author"
    assert {k: written[k] for k in ("clean_acc", "corruptions", "checkpoint")} == {
        k: claimed[k] for k in ("clean_acc", "corruptions", "checkpoint")
    }
    assert "50 of 100 samples" in result.stdout and "differs" not in result.stdout
    assert "git -C" in result.stdout and "add entries/digits/cifar-c-noise/Digits2026Dense.json" in result.stdout

    again = submit(cli, run_dir, board, "--name", "Digits2026Again")
    assert again.exit_code == 2 and str(target) in again.stderr and "duplicate" in again.stderr
    same_name = submit(cli, run_dir, board, "--name", "Digits2026Dense")
    assert same_name.exit_code == 2 and f"{target} exists" in same_name.stderr
    assert sorted(p.name for p in board.rglob("*.json")) == ["Digits2026Dense.json"]


def test_submit_defaults_to_the_run_id(cli, run_dir, board):
    result = submit(cli, run_dir, board)
    assert result.exit_code == 0, result.output
    assert (board / "entries" / "digits" / "cifar-c-noise" / "digits-digits-cnn-dense-seed0.json").is_file()


def test_checkpoint_url_is_where_the_entry_points_and_the_sha256_still_pins_it(cli, run_dir, board):
    bad = submit(cli, run_dir, board, "--checkpoint-url", "javascript:alert(1)")
    assert bad.exit_code == 2 and "--checkpoint-url must be an http(s) URL" in bad.stderr
    url = "https://example.org/models/digits-dense.pt"
    result = submit(cli, run_dir, board, "--checkpoint-url", url)
    assert result.exit_code == 0, result.output
    written = json.loads(next(board.rglob("*.json")).read_text())
    claimed = json.loads((run_dir / "entry.json").read_text())
    assert written["checkpoint"] == {"file": url, "sha256": claimed["checkpoint"]["sha256"]}


def test_a_tampered_checkpoint_is_refused(cli, run_dir, board):
    claimed = json.loads((run_dir / "entry.json").read_text())["checkpoint"]["sha256"]
    with (run_dir / "model.pt").open("ab") as f:
        f.write(b"\0")
    line = refusal(submit(cli, run_dir, board))
    assert "checkpoint sha256" in line and claimed[:16] in line and "(tolerance exact)" in line
    assert not list(board.rglob("*.json"))


def test_claimed_sparsity_is_counted_in_the_checkpoint(cli, run_dir, board):
    def sparser(entry):
        layer = entry["sparsity"]["layers"][0]
        layer["nonzeros"] -= 100
        layer["density"] = layer["nonzeros"] / layer["numel"]
        layers = entry["sparsity"]["layers"]
        entry["sparsity"]["achieved"] = 1 - sum(x["nonzeros"] for x in layers) / sum(x["numel"] for x in layers)

    first = edit_entry(run_dir, sparser)["sparsity"]["layers"][0]
    line = refusal(submit(cli, run_dir, board))
    assert f"layer {first['name']}: entry {first['nonzeros']:,} of {first['numel']:,} nonzero" in line
    assert f"measured {first['nonzeros'] + 100:,} of" in line
    assert "sparsity (global)" in line


def test_claimed_clean_accuracy_is_re_evaluated(cli, run_dir, board):
    def better(entry):
        entry["clean_acc"] = min(100.0, entry["clean_acc"] + 5)
        entry["rpc"] = entry["corruptions_acc"] / entry["clean_acc"]

    entry = edit_entry(run_dir, better)
    result = submit(cli, run_dir, board)
    line = refusal(result)
    measured = entry["clean_acc"] - 5
    assert f"clean accuracy (100 of 100 samples): entry {entry['clean_acc']:.2f}, measured {measured:.2f}" in line
    assert "±1.00" in line and "differs" in result.stdout  # the whole test set: only the 1-point floor


def test_claimed_mce_and_relative_mce_are_recomputed_from_the_cells_and_the_baseline(cli, run_dir, board, tmp_path):
    from dstbench.evaluate import EvalResult

    claimed = json.loads((run_dir / "entry.json").read_text())
    baseline = json.loads(json.dumps(claimed))
    for row in baseline["corruptions"].values():
        for severity in row:
            row[severity] = max(0.0, row[severity] - 10)
    cells = [acc for row in baseline["corruptions"].values() for acc in row.values()]
    baseline["corruptions_acc"] = fmean(cells)
    baseline["rpc"] = baseline["corruptions_acc"] / baseline["clean_acc"]
    baseline_path = tmp_path / "dense.json"
    baseline_path.write_text(json.dumps(baseline))
    true_mce = EvalResult(0.0, entry_grid(claimed), 0).mce(entry_grid(baseline))
    true_relative = EvalResult.of_entry(claimed).relative_mce(EvalResult.of_entry(baseline))

    def with_mce(value, recorded, relative=None):
        def change(entry):
            entry["corruptions_mce"] = value
            entry["corruptions_relative_mce"] = relative
            entry["evaluation"]["baseline"] = recorded

        return change

    edit_entry(run_dir, with_mce(true_mce, str(baseline_path)))
    off_board = submit(cli, run_dir, board)
    assert off_board.exit_code == 2 and "so no reader could check the mCE" in off_board.stderr
    decoy = board / "entries" / "aaa" / "cifar-c-noise" / "Dense2026.json"  # sorts before digits/, other cells
    decoy.parent.mkdir(parents=True)
    decoy_cells = {c: {s: max(0.0, acc - 5) for s, acc in row.items()} for c, row in baseline["corruptions"].items()}
    decoy_mpc = fmean(acc for row in decoy_cells.values() for acc in row.values())
    decoy_rpc = decoy_mpc / baseline["clean_acc"]
    decoy_entry = {**baseline, "dataset": "aaa", "corruptions": decoy_cells, "corruptions_acc": decoy_mpc}
    decoy.write_text(json.dumps({**decoy_entry, "rpc": decoy_rpc}))
    elsewhere = submit(cli, run_dir, board, "--baseline", decoy)
    assert (
        elsewhere.exit_code == 2 and "cifar-c-noise (the board's entries of this dataset and suite)" in elsewhere.stderr
    )
    on_board = board / "entries" / "digits" / "cifar-c-noise" / "Dense2026.json"
    on_board.parent.mkdir(parents=True)
    on_board.write_text(json.dumps({**baseline, "seed": 7}))  # another experiment than the run's

    edit_entry(run_dir, with_mce(true_mce + 3, str(on_board)))
    line = refusal(submit(cli, run_dir, board))
    assert f"mCE from the entry's cells and its baseline's: entry {true_mce + 3:.2f}, measured {true_mce:.2f}" in line
    edit_entry(run_dir, with_mce(true_mce, str(on_board), true_relative + 3))
    line = refusal(submit(cli, run_dir, board))
    claim = f"entry {true_relative + 3:.2f}, measured {true_relative:.2f}"
    assert f"relative mCE from the entry's cells and its baseline's: {claim}" in line and line.count("mCE from") == 1

    # A baseline that scores as well under corruption as without leaves the relative mCE undefined
    unhurt_path = on_board.with_name("Flat2026.json")
    flat = {c: dict.fromkeys(row, baseline["clean_acc"]) for c, row in baseline["corruptions"].items()}
    unhurt = {**baseline, "seed": 8, "corruptions": flat, "corruptions_acc": baseline["clean_acc"], "rpc": 1.0}
    unhurt_path.write_text(json.dumps(unhurt))
    edit_entry(run_dir, with_mce(None, str(unhurt_path), 50.0))
    line = refusal(submit(cli, run_dir, board))
    assert "relative mCE from the entry's cells and its baseline's: entry 50.00, measured undefined" in line
    unhurt_path.unlink()

    edit_entry(run_dir, with_mce(true_mce, str(tmp_path / "moved.json"), true_relative))
    assert "baseline " + str(tmp_path / "moved.json") + " not found; pass --baseline FILE" in refusal(
        submit(cli, run_dir, board)
    )
    result = submit(cli, run_dir, board, "--baseline", on_board, "--name", "Rigl2026")
    assert result.exit_code == 0, result.output
    written = json.loads((on_board.parent / "Rigl2026.json").read_text())
    assert written["corruptions_mce"] == true_mce and written["evaluation"]["baseline"] == "Dense2026"
    assert written["corruptions_relative_mce"] == true_relative

    # Readers find the baseline by its name beside the entry, not the decoy of that name of another dataset
    model = run_dir / "model.pt"
    args = ["--checkpoint", model, "--device", "cpu", "--leaderboard", board]
    assert invoke(cli, "verify", on_board.parent / "Rigl2026.json", *args).exit_code == 0
    on_board.rename(on_board.with_name("Gone2026.json"))
    gone = invoke(cli, "verify", on_board.parent / "Rigl2026.json", *args)
    assert gone.exit_code == 1 and "baseline Dense2026 not found" in gone.stdout


def test_bad_submission_metadata_is_refused_before_anything_runs(cli, run_dir, board):
    for args, message in [
        (["--name", "../../escape"], "name '../../escape' cannot name an entry file"),
        (["--name", "ok", "--link", "javascript:alert(1)"], "--link: 'javascript:alert(1)' does not match"),
        (["--name", "ok", "--venue", "x" * 201], "--venue: "),
    ]:
        result = submit(cli, run_dir, board, *args)
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert not list(board.rglob("*.json"))
    not_a_board = submit(cli, run_dir, board / "entries")
    assert not_a_board.exit_code == 2 and "has no entries/" in not_a_board.stderr


def test_sampling_tolerance():
    assert sampling_tolerance(90.0, 100, 100) == 1.0  # the whole test set: no sampling error
    assert sampling_tolerance(50.0, 500, 10000) == pytest.approx(300 * (0.25 / 500 * 9500 / 9999) ** 0.5)
    assert sampling_tolerance(100.0, 10, 10000) == 1.0


def test_the_mpc_tolerance_is_three_mean_sigmas_with_the_floor_applied_once():
    cells = {"gaussian_noise": {"1": 99.9, "2": 50.0}, "fog": {"1": 99.9, "2": 50.0}}
    entry = {"clean_acc": 99.0, "corruptions_acc": 74.95, "corruptions": cells, "evaluation": {"test_samples": 10000}}
    fpc = 9500 / 9999
    sigmas = [100 * (p * (1 - p) / 500 * fpc) ** 0.5 for p in (0.999, 0.5)]
    expected = 3 * fmean(sigmas)  # 3.48: the cell at 99.9% adds its own small σ, not the floor's 1/3 point
    for measured, ok in ((74.95 + expected - 0.01, True), (74.95 + expected + 0.01, False)):
        result = SimpleNamespace(clean_acc=99.0, mpc=measured)
        _, mpc = _subset_accuracy_checks(entry, result, 500)
        assert mpc.tolerance == f"±{expected:.2f}" and mpc.ok is ok


def test_verify_compares_every_cell(cli, run_dir, tmp_path):
    ok = invoke(cli, "verify", run_dir / "entry.json", "--checkpoint", run_dir / "model.pt", "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert "every claim reproduces" in ok.stdout and "gaussian_noise" in ok.stdout and "(+0.00)" in ok.stdout

    def worse_shot_noise(entry):
        row = entry["corruptions"]["shot_noise"]
        row["5"] = max(0.0, row["5"] - 7)
        cells = [acc for r in entry["corruptions"].values() for acc in r.values()]
        entry["corruptions_acc"] = sum(cells) / len(cells)
        entry["rpc"] = entry["corruptions_acc"] / entry["clean_acc"]

    entry = edit_entry(run_dir, worse_shot_noise)
    bad = invoke(cli, "verify", run_dir / "entry.json", "--checkpoint", run_dir / "model.pt", "--device", "cpu")
    line = refusal(bad)
    claimed = entry["corruptions"]["shot_noise"]["5"]
    assert f"shot_noise severity 5: entry {claimed:.2f}, measured {claimed + 7:.2f}" in line
    assert "(+7.00)" in bad.stdout

    other = tmp_path / "other.pt"
    other.write_bytes((run_dir / "model.pt").read_bytes() + b"x")
    assert "checkpoint sha256" in refusal(invoke(cli, "verify", run_dir / "entry.json", "--checkpoint", other))


def test_export_writes_robustbench_fields(cli, plugins, tmp_path):
    benchmark, _ = plugins.registry.suite("cifar-c").select(("benchmark",), None)
    extra, _ = plugins.registry.suite("cifar-c").select(("extra",), None)
    fits = {**make_entry(corruptions=(*benchmark, *extra), clean=94.0, drop=3.0), "name": "Wu2025Test"}
    fits["corruptions_mce"], fits["evaluation"]["baseline"] = 95.0, "Dense2026"  # relative to a dense run
    fits["corruptions_relative_mce"] = 80.0  # RobustBench has no such field: not exported
    fits.update(link="https://arxiv.org/abs/2410.03030", authors="B. Wu", venue="ICLR 2025")
    digits = make_entry(dataset="digits", model="digits-cnn", suite="cifar-c-noise")
    files = []
    for i, entry in enumerate((fits, digits)):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(entry))
    result = invoke(cli, "export", *files, "--out", tmp_path / "rb")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "rb" / "model_info" / "cifar10" / "corruptions" / "Wu2025Test.json").read_text())
    assert list(info) == [
        "link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
        "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_mce", "footnote",
    ]  # fmt: skip
    mean15 = sum(fits["corruptions"][c][str(s)] for c in benchmark for s in range(1, 6)) / 75
    assert info["corruptions_acc"] == f"{mean15:.2f}" != f"{fits['corruptions_acc']:.2f}"  # the 15, not all 19
    assert info["clean_acc"] == "94.00" and info["eps"] is None and info["architecture"] == "cifar-resnet18"
    assert info["corruptions_mce"] is None  # RobustBench's is relative to AlexNet, the entry's to its dense run
    assert info["venue"] == "ICLR 2025" and info["dataset"] == "cifar10" and info["additional_data"] is False
    assert f"{files[1]}: skipped: dataset 'digits' has no RobustBench corruptions leaderboard" in result.stderr

    imagenet = {**make_entry(dataset="imagenet", suite="imagenet-c-files", corruptions=benchmark), "name": "ImNet"}
    imagenet["corruptions"] = {c: {str(s): 100 * (1 - ALEXNET_ERRORS[c]) for s in range(1, 6)} for c in benchmark}
    imagenet["corruptions"]["fog"] = {str(s): 100 * (1 - ALEXNET_ERRORS["fog"] / 2) for s in range(1, 6)}
    imagenet["corruptions_acc"] = fmean(acc for row in imagenet["corruptions"].values() for acc in row.values())
    imagenet["rpc"] = imagenet["corruptions_acc"] / imagenet["clean_acc"]
    files.append(tmp_path / "imagenet.json")
    files[-1].write_text(json.dumps(imagenet))
    assert invoke(cli, "export", files[-1], "--out", tmp_path / "rb").exit_code == 0
    info = json.loads((tmp_path / "rb" / "model_info" / "imagenet" / "corruptions" / "ImNet.json").read_text())
    assert info["corruptions_mce"] == f"{100 * (14 + 0.5) / 15:.2f}"  # AlexNet's errors but half of them in fog

    none_fit = invoke(cli, "export", files[1], "--out", tmp_path / "rb2")
    assert none_fit.exit_code == 2 and "none of the 1 entries fits" in none_fit.stderr
    assert not (tmp_path / "rb2").exists()


def unaggregated(path: Path) -> tuple[list[list[str]], dict[str, dict[tuple[str, int], float]]]:
    lines = list(csv.reader(path.open()))
    columns = list(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return lines, {row[0]: dict(zip(columns, map(float, row[1:]), strict=True)) for row in lines[2:]}


def test_export_writes_and_updates_robustbench_unaggregated_csv(cli, plugins, tmp_path):
    benchmark, _ = plugins.registry.suite("cifar-c").select(("benchmark",), None)
    first = {**make_entry(corruptions=benchmark, clean=94.0, drop=3.0), "name": "First2026"}
    first["corruptions"]["fog"]["5"] = 33.33
    first["corruptions_acc"] = fmean(acc for row in first["corruptions"].values() for acc in row.values())
    first["rpc"] = first["corruptions_acc"] / first["clean_acc"]
    second = {**make_entry(corruptions=benchmark, clean=90.0, drop=5.0, seed=1), "name": "Second2026"}
    for name, entry in (("a", first), ("b", second)):
        (tmp_path / f"{name}.json").write_text(json.dumps(entry))
    folder = tmp_path / "rb" / "model_info" / "cifar10" / "corruptions"
    # A RobustBench checkout's file, its columns in another order, with a model of its own
    folder.mkdir(parents=True)
    columns = [(c, s) for c in reversed(benchmark) for s in range(1, 6)]
    (folder / "unaggregated_results.csv").write_text(
        ",".join(["", *(c for c, _ in columns)]) + "\n" + ",".join(["", *(str(s) for _, s in columns)]) + "\n"
        + ",".join(["Standard", *["0.5"] * 75]) + "\n" + ",".join(["First2026", *["0.1"] * 75]) + "\n"
    )  # fmt: skip
    result = invoke(cli, "export", tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "rb")
    assert result.exit_code == 0, result.output
    lines, rows = unaggregated(folder / "unaggregated_results.csv")
    assert lines[0][1] == benchmark[-1] and list(rows) == ["Standard", "First2026", "Second2026"]
    assert set(rows["Standard"].values()) == {0.5}
    for name, entry in (("First2026", first), ("Second2026", second)):
        assert rows[name] == {(c, s): entry["corruptions"][c][str(s)] / 100 for c in benchmark for s in range(1, 6)}
    assert rows["First2026"][("fog", 5)] == 0.3333
    assert (folder / "unaggregated_results.csv").stat().st_mode & 0o777 == 0o644
    assert (folder / "First2026.json").stat().st_mode & 0o777 == 0o644

    (folder / "unaggregated_results.csv").write_text(",fog\n,1\nStandard,0.5\n")
    (folder / "First2026.json").unlink()
    bad = invoke(cli, "export", tmp_path / "a.json", "--out", tmp_path / "rb")
    assert bad.exit_code == 2 and "unaggregated_results.csv does not have one column per" in bad.stderr
    assert not (folder / "First2026.json").exists()  # nothing written
    header = ",".join(["", *(c for c, _ in columns)]) + "\n" + ",".join(["", *(str(s) for _, s in columns)]) + "\n"
    for text, message in [
        ("", "is not a RobustBench unaggregated results file"),
        (",fog\n,one\n", "is not a RobustBench unaggregated results file"),
        (header + "Standard,0.5\n", "has a row whose length differs from its header's"),
    ]:
        (folder / "unaggregated_results.csv").write_text(text)
        bad = invoke(cli, "export", tmp_path / "a.json", "--out", tmp_path / "rb")
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.output
        assert not (folder / "First2026.json").exists()


def test_export_imagenet_c_and_3dcc_share_a_model_file_and_keep_a_checkout_s_fields(cli, plugins, tmp_path):
    benchmark, _ = plugins.registry.suite("imagenet-c").select(("benchmark",), None)
    dcc = plugins.registry.suite("imagenet-3dcc-files").corruptions
    two_d = {**make_entry(dataset="imagenet", model="resnet50", suite="imagenet-c-files", corruptions=benchmark)}
    three_d = make_entry(dataset="imagenet", model="resnet50", suite="imagenet-3dcc-files", corruptions=dcc, drop=4)
    short = make_entry(dataset="imagenet", model="resnet50", suite="imagenet-3dcc-files", corruptions=dcc[:-1])
    for entry in (two_d, three_d, short):
        entry["name"] = "Liu2026Sparse"
    files = {}
    for label, entry in (("2d", two_d), ("3d", three_d), ("short", short), ("twice", three_d)):
        files[label] = tmp_path / f"{label}.json"
        files[label].write_text(json.dumps(entry))
    folder = tmp_path / "rb" / "model_info" / "imagenet" / "corruptions"
    folder.mkdir(parents=True)
    # A checkout's file of the model, with a field dstbench does not write, and a 3D CSV with a model of its own
    (folder / "Liu2026Sparse.json").write_text(json.dumps({"name": "Sparse training", "metrics": {"x": 1}}))
    columns = [(c, s) for c in dcc for s in range(1, 6)]
    (folder / "unaggregated_results_3d.csv").write_text(
        ",".join(["", *(c for c, _ in columns), "average"]) + "\n" + ",".join(["", *(str(s) for _, s in columns)])
        + ",\n" + ",".join(["Standard_R50", *["0.5"] * 60, "0.500000001"]) + "\n"
    )  # fmt: skip

    result = invoke(cli, "export", *files.values(), "--out", tmp_path / "rb")
    assert result.exit_code == 0, result.output
    assert f"{files['short']}: skipped: RobustBench averages 12 corruptions × severities 1-5; missing" in result.stderr
    assert f"{files['twice']}: skipped: {files['3d']} already exports as 'Liu2026Sparse'" in result.stderr
    info = json.loads((folder / "Liu2026Sparse.json").read_text())
    mean15 = fmean(two_d["corruptions"][c][str(s)] for c in benchmark for s in range(1, 6))
    mean12 = fmean(three_d["corruptions"][c][str(s)] for c in dcc for s in range(1, 6))
    assert info["corruptions_acc"] == info["reported"] == f"{mean15:.2f}"  # `reported` stays the -C number
    assert info["corruptions_acc_3d"] == f"{mean12:.2f}" != info["corruptions_acc"]
    assert info["corruptions_mce"] is not None and info["corruptions_mce_3d"] is None  # no 3DCC normaliser
    assert info["metrics"] == {"x": 1} and info["name"] == "Liu2026Sparse"  # kept; the entry's name replaces

    lines, rows = unaggregated_with_average(folder / "unaggregated_results_3d.csv")
    assert list(rows) == ["Standard_R50", "Liu2026Sparse"] and lines[2][-1] == "0.500000001"  # kept as written
    assert rows["Liu2026Sparse"][0] == {k: three_d["corruptions"][k[0]][str(k[1])] / 100 for k in columns}
    assert rows["Liu2026Sparse"][1] == pytest.approx(mean12 / 100, abs=1e-9)
    lines, rows = unaggregated_with_average(folder / "unaggregated_results_2d.csv")
    assert lines[0][-1] == "average" and lines[1][-1] == "" and list(rows) == ["Liu2026Sparse"]
    assert len(rows["Liu2026Sparse"][0]) == 75 and rows["Liu2026Sparse"][1] == pytest.approx(mean15 / 100)
    assert not (folder / "unaggregated_results.csv").exists()  # RobustBench's ImageNet files are _2d and _3d

    # A 2D export again keeps the 3D fields; a model_info file that is not one stops the export before any write
    assert invoke(cli, "export", files["2d"], "--out", tmp_path / "rb").exit_code == 0
    assert json.loads((folder / "Liu2026Sparse.json").read_text())["corruptions_acc_3d"] == f"{mean12:.2f}"
    before = (folder / "unaggregated_results_2d.csv").read_text()
    for text in ("{not json", "[1, 2]"):
        (folder / "Liu2026Sparse.json").write_text(text)
        bad = invoke(cli, "export", files["2d"], "--out", tmp_path / "rb")
        assert bad.exit_code == 2 and "Liu2026Sparse.json is not a RobustBench model_info file" in bad.stderr
        assert "Traceback" not in bad.stderr and (folder / "unaggregated_results_2d.csv").read_text() == before
        assert (folder / "Liu2026Sparse.json").read_text() == text


def unaggregated_with_average(path: Path) -> tuple[list[list[str]], dict[str, tuple[dict, float]]]:
    lines = list(csv.reader(path.open()))
    assert lines[0][-1] == "average" and lines[1][-1] == ""
    columns = list(zip(lines[0][1:-1], map(int, lines[1][1:-1]), strict=True))
    return lines, {r[0]: (dict(zip(columns, map(float, r[1:-1]), strict=True)), float(r[-1])) for r in lines[2:]}
