"""`dstbench compare`: a sweep's summary for any finished runs or leaderboard entries, e.g. runs made one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dstbench.errors import UserError
from dstbench.options import check_writable

EXAMPLES = """
\b
Examples:
  dstbench compare runs/                                         # every run folder below runs/
  dstbench compare runs/cifar10-*-seed* --out comparison/        # + summary.json, summary.png, gains.png
  dstbench compare leaderboard/entries/cifar10/cifar-c/*.json --baseline-algo static
"""


def entry_files(paths: tuple[Path, ...]) -> list[Path]:
    """The entries the paths name: an entry file itself, a run folder's entry.json, or every entry.json below a
    folder that is no run folder; each once, in order."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif (path / "entry.json").is_file():
            found.append(path / "entry.json")
        elif path.is_dir():
            below = sorted(path.rglob("entry.json"))
            if not below:
                raise UserError(f"{path} holds no entry.json; give run folders, folders of runs or entry files")
            found.extend(below)
        else:
            raise UserError(f"{path} does not exist; give run folders, folders of runs or entry files")
    return list(dict.fromkeys(file.resolve() for file in found))


@click.command(epilog=EXAMPLES)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--baseline-algo",
    default="dense",
    show_default=True,
    metavar="NAME",
    help="The algorithm every other one is compared with, run by run of the same seed.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for summary.json, summary.png and gains.png; without it the tables are only printed.",
)
def compare(paths: tuple[Path, ...], baseline_algo: str, out: Path | None) -> None:
    """Compare finished runs with a baseline, as a sweep does: per dataset × model × suite and algorithm ×
    sparsity, clean accuracy and mPC over seeds, the difference to the baseline paired by seed with its 95% t
    interval, and the corruption × severity cell that gains most (every cell's gain in gains.png)."""
    from dstbench.entry import load_entry
    from dstbench.report import make_reporter
    from dstbench.summary import summarize, summary_tables, write_summary

    if out is not None:
        check_writable(out, "--out")
    entries: list[dict[str, Any]] = [load_entry(file) for file in entry_files(paths)]
    summary = summarize(entries, baseline_algo)
    reporter = make_reporter()
    reporter.result(summary_tables(summary))
    if not any(row.algorithm == baseline_algo for row in summary.rows):
        algorithms = ", ".join(dict.fromkeys(row.algorithm for row in summary.rows))
        reporter.warn(f"no {baseline_algo} run among them ({algorithms}): nothing to compare with; see --baseline-algo")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    reporter.result(write_summary(summary, out, []))
