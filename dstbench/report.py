"""The one place that prints. Progress and log lines go to stderr, results (tables, JSON) to stdout.

`RichReporter` draws live progress bars with img/s and ETA on a terminal; `PlainReporter` writes plain lines for
logs and scripts (no TTY), and with `quiet` only warnings and results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Task(Protocol):
    def advance(self, n: int, **stats: str) -> None:
        """`n` more units done; `stats` (e.g. loss="0.31") are shown beside the bar."""

    def describe(self, description: str) -> None: ...


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def result(self, renderable: RenderableType | str) -> None:
        """A result (table, path, JSON) for stdout; printed in every mode."""

    def task(self, description: str, total: int, unit: str = "img") -> Iterator[Task]:
        """A context manager: progress over `total` units."""


class _Speed(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {task.fields['unit']}/s" if speed else "", style="cyan")


class _RichTask:
    def __init__(self, progress: Progress, task_id):
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int, **stats: str) -> None:
        fields = {"stats": "  ".join(f"{k} {v}" for k, v in stats.items())} if stats else {}
        self.progress.update(self.task_id, advance=n, **fields)

    def describe(self, description: str) -> None:
        self.progress.update(self.task_id, description=description)


class RichReporter:
    def __init__(self, console: Console | None = None, out: Console | None = None):
        self.console = console or Console(stderr=True)
        self.out = out or Console()

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def result(self, renderable: RenderableType | str) -> None:
        self.out.print(renderable)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "img") -> Iterator[Task]:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            _Speed(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            transient=False,
        )
        with progress:
            yield _RichTask(progress, progress.add_task(description, total=total, unit=unit, stats=""))


class _PlainTask:
    def __init__(self, reporter: PlainReporter, description: str, total: int, unit: str):
        self.reporter, self.description, self.total, self.unit = reporter, description, total, unit
        self.done, self.stats, self.start = 0, {}, time.perf_counter()

    def advance(self, n: int, **stats: str) -> None:
        self.done += n
        self.stats.update(stats)

    def describe(self, description: str) -> None:
        self.description = description

    def finish(self) -> None:
        seconds = time.perf_counter() - self.start
        rate = f", {self.done / seconds:,.0f} {self.unit}/s" if seconds > 0 else ""
        stats = "".join(f", {k} {v}" for k, v in self.stats.items())
        self.reporter.info(
            f"{self.description}: {self.done:,}/{self.total:,} {self.unit} in {seconds:.1f}s{rate}{stats}"
        )


class PlainReporter:
    """Plain lines; `quiet`: no progress or info, `warnings`: False also silences warnings (torch.distributed's
    processes other than rank 0, which would repeat rank 0's)."""

    def __init__(self, quiet: bool = False, warnings: bool = True):
        self.quiet, self.warnings = quiet, warnings
        self.out = Console(file=sys.stdout, no_color=True, soft_wrap=True, width=160)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(Text.from_markup(message).plain, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        if self.warnings:
            print(f"warning: {Text.from_markup(message).plain}", file=sys.stderr, flush=True)

    def result(self, renderable: RenderableType | str) -> None:
        self.out.print(renderable, highlight=False)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "img") -> Iterator[Task]:
        task = _PlainTask(self, description, total, unit)
        yield task
        task.finish()


def make_reporter(quiet: bool = False) -> Reporter:
    """Live bars on a terminal; plain lines when quiet or when stderr is not a TTY."""
    if quiet or not sys.stderr.isatty():
        return PlainReporter(quiet=quiet)
    return RichReporter()
