"""`dstbench leaderboard export`: entries as RobustBench `model_info/<dataset>/corruptions/<Name>.json` files.

RobustBench's corruptions leaderboards are CIFAR-10-C, CIFAR-100-C and ImageNet-C, scored as the mean accuracy
over its 15 benchmark corruptions × severities 1–5 on the whole test set, with accuracies stored as strings. An
entry fits when it is of one of those datasets, on a suite of the same corruptions (generated or the released
files), and has every one of those 75 cells for the whole test set; its `corruptions_acc` is then recomputed over
exactly those cells (an entry may hold the 4 extra corruptions too). `name` is the entry's name (RobustBench puts
the paper's title there: edit it before a pull request) and `reported` is the entry's own number. For ImageNet,
`corruptions_mce` is ImageNet-C's mCE, normalised by AlexNet's errors as RobustBench's is (an entry's own mCE is
relative to its dense baseline, so it is not what RobustBench shows); CIFAR's leaderboards have none. The relative
mCE is not exported: RobustBench has no field for it.

The per-cell accuracies go to RobustBench's `unaggregated_results.csv` beside the files: two header rows (corruption,
severity), then a row per model of accuracies as fractions. Exporting into a RobustBench checkout updates its file:
rows of other models stay as they are, an exported model's row is replaced.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

import click

from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.plugins import Plugins

SUITES = {  # RobustBench dataset -> dstbench suites that score its corruptions
    "cifar10": ("cifar-c", "cifar10-c-files"),
    "cifar100": ("cifar-c", "cifar100-c-files"),
    "imagenet": ("imagenet-c", "imagenet-c-files"),
}
SEVERITIES = (1, 2, 3, 4, 5)
# AlexNet's top-1 error on ImageNet-C per corruption, averaged over the five severities (Hendrycks & Dietterich 2019):
# the normaliser of ImageNet-C's mCE.
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}


def _acc(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def setting_misfit(entry: dict[str, Any]) -> str | None:
    """Why the entry's dataset and suite have no RobustBench corruptions leaderboard, or None."""
    dataset, suite = entry["dataset"], entry["suite"]
    if dataset not in SUITES:
        return f"dataset {dataset!r} has no RobustBench corruptions leaderboard (it has {', '.join(SUITES)})"
    if suite not in SUITES[dataset]:
        return f"suite {suite!r} is not a RobustBench corruption set for {dataset} (use {' or '.join(SUITES[dataset])})"
    return None


def cells_misfit(entry: dict[str, Any], benchmark: tuple[str, ...]) -> str | None:
    """Why the entry lacks what RobustBench scores, or None."""
    missing = [f"{c} {s}" for c in benchmark for s in SEVERITIES if str(s) not in entry["corruptions"].get(c, {})]
    if missing:
        return f"RobustBench averages the {len(benchmark)} benchmark corruptions × severities 1-5; missing {missing[0]}"
    subset = entry["config"].get("max_test_samples")
    if subset:
        return f"it was evaluated on {subset} test samples; RobustBench scores the whole test set"
    return None


def model_info(entry: dict[str, Any], benchmark: tuple[str, ...]) -> dict[str, Any]:
    """RobustBench's field names, in its order, for an entry that fits."""
    grid = entry["corruptions"]
    mpc = fmean(grid[c][str(s)] for c in benchmark for s in SEVERITIES)
    return {
        "link": entry.get("link"),
        "name": entry.get("name") or entry["run_id"],
        "authors": entry.get("authors"),
        "additional_data": entry["additional_data"],
        "number_forward_passes": entry["number_forward_passes"],
        "dataset": entry["dataset"],
        "venue": entry.get("venue"),
        "architecture": entry["model"],
        "eps": None,
        "clean_acc": _acc(entry["clean_acc"]),
        "reported": _acc(mpc),
        "corruptions_acc": _acc(mpc),
        "corruptions_mce": _acc(alexnet_mce(grid, benchmark)) if entry["dataset"] == "imagenet" else None,
        "footnote": entry.get("footnote"),
    }


def alexnet_mce(grid: dict[str, dict[str, float]], benchmark: tuple[str, ...]) -> float:
    """ImageNet-C's mCE (%): per corruption, the error summed over severities 1-5 over AlexNet's, averaged."""
    return 100 * fmean(fmean(1 - grid[c][str(s)] / 100 for s in SEVERITIES) / ALEXNET_ERRORS[c] for c in benchmark)


CSV_NAME = "unaggregated_results.csv"


def read_unaggregated(path: Path, benchmark: tuple[str, ...]) -> tuple[list[tuple[str, int]], dict[str, list[str]]]:
    """The columns (in the file's order) and rows of an existing unaggregated_results.csv; a UserError naming the file
    when it is not one of the benchmark's 15 × 5 cells."""
    columns = [(c, s) for c in benchmark for s in SEVERITIES]
    if not path.exists():
        return columns, {}
    try:
        lines = list(csv.reader(io.StringIO(path.read_text())))
        found = [(c, int(s)) for c, s in zip(lines[0][1:], lines[1][1:], strict=True)]
    except (OSError, UnicodeDecodeError, csv.Error, IndexError, ValueError) as exc:
        raise UserError(f"{path} is not a RobustBench unaggregated results file: {exc}") from None
    if sorted(found) != sorted(columns):
        raise UserError(f"{path} does not have one column per benchmark corruption and severity 1-5; move it away")
    if any(len(row) != len(found) + 1 for row in lines[2:] if row):
        raise UserError(f"{path} has a row whose length differs from its header's")
    return found, {row[0]: row[1:] for row in lines[2:] if row}


def _fraction(accuracy: float) -> str:
    return f"{accuracy / 100:.6f}".rstrip("0").rstrip(".")


def unaggregated_text(columns: list[tuple[str, int]], rows: dict[str, list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *(c for c, _ in columns)])
    writer.writerow(["", *(s for _, s in columns)])
    writer.writerows([name, *values] for name, values in rows.items())
    return out.getvalue()


def _benchmark(plugins: Plugins, suite: str) -> tuple[str, ...]:
    corruptions, _ = plugins.registry.suite(suite).select(("benchmark",), None)
    return tuple(corruptions)


@click.command(
    epilog="""
\b
Example:
  dstbench leaderboard export leaderboard/entries/cifar10/*/*.json --out ~/robustbench
"""
)
@click.argument("entries", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write model_info/ into, e.g. a RobustBench checkout.",
)
@click.pass_context
def export(ctx: click.Context, entries: tuple[Path, ...], out: Path) -> None:
    """Write entries as RobustBench model_info files (CIFAR-10-C, CIFAR-100-C, ImageNet-C entries only).

    Each fitting entry becomes model_info/<dataset>/corruptions/<Name>.json, and its per-cell accuracies a row of
    the unaggregated_results.csv beside it (an existing file, as in a RobustBench checkout, keeps its other rows).
    An entry that does not fit is named with the reason and skipped; exits with 2 when none fits.
    """
    from dstbench.checkpoint import atomic_write, write_json
    from dstbench.entry import load_entry
    from dstbench.leaderboard.submission import PATH_PART

    plugins, fitting = ctx.find_root().obj, []
    for path in entries:
        entry = load_entry(path)
        name = entry.get("name") or entry["run_id"]
        reason = setting_misfit(entry)
        if reason is None:  # a suite of the benchmark's corruptions
            benchmark = _benchmark(plugins, entry["suite"])
            reason = cells_misfit(entry, benchmark)
        if reason is None and not PATH_PART.match(name):
            reason = f"its name {name!r} cannot be a file name; give it one with dstbench leaderboard submit --name"
        if reason:
            click.echo(f"{path}: skipped: {reason}", err=True)
        else:
            fitting.append((path, entry, name, benchmark))
    if not fitting:
        raise UserError(f"none of the {len(entries)} entries fits a RobustBench corruptions leaderboard")
    tables = {}  # dataset folder -> (columns, rows), every existing CSV read before anything is written
    files = []  # (entry path, model_info file, its content)
    for path, entry, name, benchmark in fitting:
        folder = out / "model_info" / entry["dataset"] / "corruptions"
        if folder not in tables:
            tables[folder] = read_unaggregated(folder / CSV_NAME, benchmark)
        columns, rows = tables[folder]
        rows[name] = [_fraction(entry["corruptions"][c][str(s)]) for c, s in columns]
        files.append((path, folder / f"{name}.json", model_info(entry, benchmark)))
    for path, target, info in files:
        write_json(target, info, mode=0o644)
        click.echo(f"{path}: {target}")
    for folder, (columns, rows) in tables.items():
        text = unaggregated_text(columns, rows)
        atomic_write(folder / CSV_NAME, lambda tmp, text=text: tmp.write_text(text), mode=0o644)
        click.echo(f"{folder / CSV_NAME}: {len(rows)} models")
