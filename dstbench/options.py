"""What the commands share: click options made from `RunConfig`'s fields, and the group that turns user errors
into one-line messages."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from dstbench.config import FIELDS
from dstbench.errors import UserError

# How a saved run is evaluated again (`dstbench eval`, `dstbench frequency`): which test samples, and where.
REEVALUATION_OPTIONS = [
    "max_test_samples",
    "eval_batch_size",
    "data_dir",
    "download",
    "workers",
    "device",
    "precision",
    "channels_last",
    "quiet",
]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_options(names: list[str]):
    """click options for these RunConfig fields; every default is None, meaning 'not given'."""

    def decorate(command):
        for name in reversed(names):
            meta = FIELDS[name].metadata
            if name == "algo_options":
                option = click.option(
                    "--algo-opt", "algo_options", multiple=True, metavar=meta["metavar"], help=meta["help"]
                )
            elif "bool" in str(FIELDS[name].type):
                option = click.option(f"{_flag(name)}/--no-{_flag(name)[2:]}", name, default=None, help=meta["help"])
            else:
                option = click.option(_flag(name), name, default=None, metavar=meta["metavar"], help=meta["help"])
            command = option(command)
        return command

    return decorate


LEADERBOARD_DIR = click.option(
    "--leaderboard",
    "leaderboard_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("leaderboard"),
    show_default=True,
    help="The leaderboard folder of your checkout (it holds entries/).",
)


def given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None and v != ()}


def check_writable(path: Path, option: str, folder: bool = True) -> None:
    """Before any work: a UserError when `path` cannot become the folder (or file) it names: a file where a folder
    goes or the reverse, a file on the way, or a folder it may not write in."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"{option} {path} is a {other}; name a {kind}")
    existing = path if path.exists() and folder else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, so no {kind} can be made below it")
    try:  # a file made and dropped at once, not os.access: it says yes to root, even in /proc
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write in {existing} ({exc.strerror or exc})") from None


class DstbenchGroup(click.Group):
    """Turns `UserError` into click's one-line error with the error's exit code, and so does an OSError naming a
    file (a full disk, a path that cannot be written): what went wrong is the environment's, not dstbench's."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except OSError as exc:
            if exc.filename is None:
                raise
            error = click.ClickException(f"{exc.strerror or exc}: {exc.filename}")
            error.exit_code = UserError.exit_code
            raise error from None
