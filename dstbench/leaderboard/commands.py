"""The `dstbench leaderboard` command group."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dstbench.options import DstbenchGroup


@click.group(cls=DstbenchGroup)
def leaderboard() -> None:
    """Leaderboard entries: check, submit, verify, render and export them.

    \b
    Examples:
      dstbench leaderboard validate leaderboard/entries/*/*/*.json
      dstbench leaderboard submit runs/cifar10-cifar-vgg16-rigl-s0.3-seed0 --name Wu2025DSTRobust
      dstbench leaderboard render
    """


@leaderboard.command(
    epilog="""
\b
Example:
  dstbench leaderboard validate runs/*/entry.json leaderboard/entries/*/*/*.json
"""
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check entry JSON files against the schema; print each violation with its JSON path.

    Exits with 1 when any file is invalid.
    """
    from dstbench.entry import checked_file
    from dstbench.leaderboard.schema_versions import migration_note

    bad = 0
    for file in files:
        data, problems = checked_file(file)
        bad += bool(problems)
        for problem in problems:
            click.echo(f"{file}: {problem}")
        if not problems:
            click.echo(f"{file}: ok{migration_note(data)}")
    if bad:
        click.echo(f"{bad} of {len(files)} file(s) invalid", err=True)
        sys.exit(1)


from dstbench.leaderboard.render import render  # noqa: E402

leaderboard.add_command(render)

from dstbench.leaderboard.robustbench import export  # noqa: E402
from dstbench.leaderboard.submission import submit, verify  # noqa: E402

for _command in (submit, verify, export):
    leaderboard.add_command(_command)
