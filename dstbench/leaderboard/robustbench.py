"""`dstbench leaderboard export`: entries as RobustBench `model_info/<dataset>/corruptions/<Name>.json` files.

RobustBench's corruptions leaderboards are CIFAR-10-C, CIFAR-100-C, ImageNet-C and ImageNet-3DCC, each scored as the
mean accuracy over its corruptions (the 15 benchmark ones of -C, all 12 of 3DCC) × severities 1–5, with accuracies
stored as strings. An entry fits when it is of one of those datasets, on a suite of the same corruptions (generated
or the released files), and has every cell of that grid for the whole test set; its accuracy is then recomputed over
exactly those cells (an entry may hold the 4 extra corruptions too). RobustBench's own ImageNet numbers are over a
fixed 5,000 of the 50,000 validation images, an exported entry's over all of them. `name` is the entry's
name (RobustBench puts the paper's title there: edit it before a pull request) and `reported` is the entry's own
-C number. ImageNet's 2D and 3D results are fields of one file per model (`corruptions_acc`, `corruptions_acc_3d`),
so exporting into an existing file updates its fields and keeps the others. ImageNet-C's `corruptions_mce` is
normalised by AlexNet's errors as RobustBench's is (an entry's own mCE is relative to its dense baseline, so it is
not what RobustBench shows); CIFAR's leaderboards have none, and `corruptions_mce_3d` stays null: its normaliser,
AlexNet's per-corruption ImageNet-3DCC errors, is in no published table dstbench found. The relative mCE
is not exported: RobustBench has no field for it.

The per-cell accuracies go to the board's unaggregated results CSV beside the files (CIFAR's
`unaggregated_results.csv`; ImageNet's `unaggregated_results_2d.csv` and `_3d.csv`, which end in an `average`
column): two header rows (corruption, severity), then a row per model of accuracies as fractions. Exporting into a
RobustBench checkout updates its file: rows of other models stay as they are, an exported model's row is replaced.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

import click

from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.plugins import Plugins


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


@dataclass(frozen=True)
class Board:
    """One RobustBench corruptions leaderboard: the dstbench suites that score it, the subset of their corruptions it
    averages (None: all), the model_info fields it fills, the baseline errors its mCE is normalised by (None: the
    field stays null) and the CSV of per-cell results beside the files."""

    dataset: str
    suites: tuple[str, ...]
    subset: str | None
    acc_field: str
    mce_field: str
    mce_baseline: dict[str, float] | None
    csv_name: str
    average_column: bool


_2D = ("benchmark", "corruptions_acc", "corruptions_mce")
BOARDS = (
    Board("cifar10", ("cifar-c", "cifar10-c-files"), *_2D, None, "unaggregated_results.csv", False),
    Board("cifar100", ("cifar-c", "cifar100-c-files"), *_2D, None, "unaggregated_results.csv", False),
    Board("imagenet", ("imagenet-c", "imagenet-c-files"), *_2D, ALEXNET_ERRORS, "unaggregated_results_2d.csv", True),
    Board("imagenet", ("imagenet-3dcc-files",), None, "corruptions_acc_3d", "corruptions_mce_3d", None,
          "unaggregated_results_3d.csv", True),
)  # fmt: skip


def _acc(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def board_of(entry: dict[str, Any]) -> Board:
    """The leaderboard the entry's dataset and suite score, or a UserError saying why there is none."""
    dataset, suite = entry["dataset"], entry["suite"]
    boards = [board for board in BOARDS if board.dataset == dataset]
    if not boards:
        datasets = ", ".join(dict.fromkeys(board.dataset for board in BOARDS))
        raise UserError(f"dataset {dataset!r} has no RobustBench corruptions leaderboard (it has {datasets})")
    for board in boards:
        if suite in board.suites:
            return board
    suites = " or ".join(s for board in boards for s in board.suites)
    raise UserError(f"suite {suite!r} is not a RobustBench corruption set for {dataset} (use {suites})")


def cells_misfit(entry: dict[str, Any], corruptions: tuple[str, ...]) -> str | None:
    """Why the entry lacks what RobustBench scores, or None."""
    missing = [f"{c} {s}" for c in corruptions for s in SEVERITIES if str(s) not in entry["corruptions"].get(c, {})]
    if missing:
        return f"RobustBench averages {len(corruptions)} corruptions × severities 1-5; missing {missing[0]}"
    subset = entry["config"].get("max_test_samples")
    if subset:
        return f"it was evaluated on {subset} test samples; RobustBench scores the whole test set"
    return None


def model_info(entry: dict[str, Any], board: Board, corruptions: tuple[str, ...]) -> dict[str, Any]:
    """RobustBench's field names, in its order, for an entry that fits the board."""
    grid = entry["corruptions"]
    mean = fmean(grid[c][str(s)] for c in corruptions for s in SEVERITIES)
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
        "reported": _acc(mean) if board.subset == "benchmark" else None,  # a paper's number is its -C one
        board.acc_field: _acc(mean),
        board.mce_field: None if board.mce_baseline is None else _acc(mce(grid, corruptions, board.mce_baseline)),
        "footnote": entry.get("footnote"),
    }


def mce(grid: dict[str, dict[str, float]], corruptions: tuple[str, ...], baseline: dict[str, float]) -> float:
    """ImageNet-C's mCE (%): per corruption, the error summed over severities 1-5 over the baseline's, averaged."""
    return 100 * fmean(fmean(1 - grid[c][str(s)] / 100 for s in SEVERITIES) / baseline[c] for c in corruptions)


def read_model_info(path: Path) -> dict[str, Any]:
    """An existing model_info file's fields ({} when there is none); a UserError naming a file that is not one."""
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not a RobustBench model_info file: {exc}") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a RobustBench model_info file: it holds no JSON object")
    return info


def update_model_info(info: dict[str, Any], exported: dict[str, Any]) -> None:
    """RobustBench's own rule: a known value replaces the file's, a null one fills only a field the file lacks."""
    for key, value in exported.items():
        if value is not None or key not in info:
            info[key] = value


@dataclass
class Unaggregated:
    """A board's per-cell CSV: its (corruption, severity) columns in the file's order, and per model its cells and,
    where the file has that column, its average, all as the file's text."""

    columns: list[tuple[str, int]]
    average_column: bool
    rows: dict[str, tuple[list[str], str | None]]

    def put(self, name: str, accuracies: dict[str, dict[str, float]]) -> None:
        cells = [accuracies[c][str(s)] / 100 for c, s in self.columns]
        average = _fraction(fmean(cells), digits=9) if self.average_column else None
        self.rows[name] = ([_fraction(cell) for cell in cells], average)

    def text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        tail = int(self.average_column)  # 1: the file ends in an average column
        writer.writerow(["", *(c for c, _ in self.columns), *["average"][:tail]])
        writer.writerow(["", *(s for _, s in self.columns), *[""][:tail]])
        writer.writerows([name, *cells, *[average][:tail]] for name, (cells, average) in self.rows.items())
        return out.getvalue()


def read_unaggregated(path: Path, board: Board, corruptions: tuple[str, ...]) -> Unaggregated:
    """An existing per-cell CSV (a new one in the board's layout when there is none); a UserError naming the file
    when it does not hold exactly the board's cells."""
    columns = [(c, s) for c in corruptions for s in SEVERITIES]
    if not path.exists():
        return Unaggregated(columns, board.average_column, {})
    try:
        lines = [line for line in csv.reader(io.StringIO(path.read_text())) if line]
        average = lines[0][-1] == "average"
        names, severities = lines[0][1 : len(lines[0]) - average], lines[1][1 : len(lines[0]) - average]
        found = [(c, int(s)) for c, s in zip(names, severities, strict=True)]
    except IndexError:
        header = "it lacks the two header rows"
        raise UserError(f"{path} is not a RobustBench unaggregated results file: {header}") from None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise UserError(f"{path} is not a RobustBench unaggregated results file: {exc}") from None
    if sorted(found) != sorted(columns):
        raise UserError(f"{path} does not have one column per corruption of the board and severity 1-5; move it away")
    if any(len(row) != len(lines[0]) for row in lines[2:]):
        raise UserError(f"{path} has a row whose length differs from its header's")
    rows = {row[0]: (row[1 : len(found) + 1], row[-1] if average else None) for row in lines[2:]}
    return Unaggregated(found, average, rows)


def _fraction(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _corruptions(plugins: Plugins, board: Board, suite: str) -> tuple[str, ...]:
    corruptions, _ = plugins.registry.suite(suite).select(board.subset and (board.subset,), None)
    return corruptions


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
    """Write entries as RobustBench model_info files (CIFAR-10-C, CIFAR-100-C, ImageNet-C, ImageNet-3DCC entries).

    Each fitting entry becomes model_info/<dataset>/corruptions/<Name>.json (an ImageNet-C and an ImageNet-3DCC
    entry of one name share it), and its per-cell accuracies a row of the board's unaggregated results CSV beside
    it. Existing files, as in a RobustBench checkout, keep their other fields and rows. An entry that does not fit
    is named with the reason and skipped; exits with 2 when none fits.
    """
    from dstbench.checkpoint import atomic_write, write_json
    from dstbench.entry import load_entry
    from dstbench.leaderboard.submission import PATH_PART
    from dstbench.options import check_writable

    check_writable(out, "--out")
    plugins = ctx.find_root().obj
    infos: dict[Path, dict[str, Any]] = {}  # model_info file -> its fields, every existing file read first
    tables: dict[Path, Unaggregated] = {}  # CSV -> its columns and rows, likewise
    exported: dict[tuple[Path, Path], Path] = {}  # (model_info file, CSV) -> the entry exported there
    for path in entries:
        entry = load_entry(path)
        name = entry.get("name") or entry["run_id"]
        try:
            board = board_of(entry)
        except UserError as exc:
            click.echo(f"{path}: skipped: {exc}", err=True)
            continue
        folder = out / "model_info" / board.dataset / "corruptions"
        target, table = folder / f"{name}.json", folder / board.csv_name
        corruptions = _corruptions(plugins, board, entry["suite"])
        reason = cells_misfit(entry, corruptions)
        if reason is None and not PATH_PART.match(name):
            reason = f"its name {name!r} cannot be a file name; give it one with dstbench leaderboard submit --name"
        if reason is None and (target, table) in exported:
            reason = f"{exported[target, table]} already exports as {name!r} to the same leaderboard"
        if reason:
            click.echo(f"{path}: skipped: {reason}", err=True)
            continue
        exported[target, table] = path
        if target not in infos:
            infos[target] = read_model_info(target)
        if table not in tables:
            tables[table] = read_unaggregated(table, board, corruptions)
        update_model_info(infos[target], model_info(entry, board, corruptions))
        tables[table].put(name, entry["corruptions"])
    if not exported:
        raise UserError(f"none of the {len(entries)} entries fits a RobustBench corruptions leaderboard")
    for target, info in infos.items():
        write_json(target, info, mode=0o644)
    for table, content in tables.items():
        text = content.text()
        atomic_write(table, lambda tmp, text=text: tmp.write_text(text), mode=0o644)
    for (target, _), path in exported.items():  # once everything is written
        click.echo(f"{path}: {target}")
    for table, content in tables.items():
        click.echo(f"{table}: {len(content.rows)} models")
