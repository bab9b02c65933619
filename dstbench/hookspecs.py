"""Everything a dstbench plugin can implement.

A plugin is a module (or object) with functions marked `@hookimpl` and named like the specs below. Built-in and
third-party plugins are found the same way, through the `dstbench` entry-point group:

    [project.entry-points.dstbench]
    my_plugin = "my_package.my_module"

Registry hooks run once per process and hand the plugin a `register` callback; a plugin never touches global
state. Run hooks fire during `dstbench run`: the trainer calls them for every installed plugin and for the run's
sparsity algorithm, which is registered as a plugin for the run's duration. See `dstbench_plugins/dense.py` and
`tests/example_plugin/` for complete examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from dstbench.algorithm import Algorithm
    from dstbench.corruption import CorruptionSuite
    from dstbench.data import DatasetSpec
    from dstbench.entry import Entry
    from dstbench.models import ModelSpec
    from dstbench.train import EpochStats, Run, Trainer, TrainResult

hookspec = pluggy.HookspecMarker("dstbench")
hookimpl = pluggy.HookimplMarker("dstbench")


# --- Registries --------------------------------------------------------------------------------------------------


@hookspec
def register_algorithms(register: Callable[[type[Algorithm]], None]) -> None:
    """Register sparsity algorithm classes (subclasses of `dstbench.algorithm.Algorithm`), keyed by `cls.name`."""


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register `ModelSpec`s; a spec whose name ends in '/' is a family accepting any '<prefix>/<variant>'."""


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register `DatasetSpec`s: a dataset's shape, normalisation, loader and usual recipe."""


@hookspec
def register_suites(register: Callable[[CorruptionSuite], None]) -> None:
    """Register corruption suites (instances of `dstbench.corruption.CorruptionSuite`)."""


@hookspec
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register trainer classes (subclasses of `dstbench.train.Trainer`), keyed by `cls.name`. A run uses the
    trainer named by `--trainer`, or else the one whose `modality` matches the dataset's and sets `default`."""


@hookspec
def register_commands(register: Callable[[click.Command], None]) -> None:
    """Register click commands or groups; they appear as `dstbench <name>`."""


# --- Run lifecycle (called by the trainer, in this order) ------------------------------------------------------------


@hookspec
def on_run_start(run: Run) -> None:
    """Model, optimizer and data are ready and the algorithm has set up (or restored) its state; no step yet.
    On a resumed run this fires again, with `run.epoch` and `run.step` where training continues."""


@hookspec
def on_step_end(run: Run) -> None:
    """After each optimizer step. `run.step` has been incremented; `.grad` still holds this step's dense gradient
    (gradients are cleared at the start of the next step), and `run.loss` is the step's loss as a device tensor.
    Algorithms that update masks implement this with `tryfirst=True`, so other plugins see the masked weights.
    Keep it cheap: it is on the hot path, and anything that reads a tensor's value waits for the GPU."""


@hookspec
def on_epoch_end(run: Run, stats: EpochStats) -> None:
    """After each epoch's last step and before its checkpoint is written. Raising stops the run; the previous
    epoch's checkpoint stays, and `--resume` continues from it."""


@hookspec
def on_run_end(run: Run, result: TrainResult) -> None:
    """Training finished (not called when it stopped early)."""


# --- Leaderboard ---------------------------------------------------------------------------------------------------


@hookspec
def entry_fields(entry: Entry, run: Run | None) -> dict[str, Any] | None:
    """Extra JSON-serialisable fields for a leaderboard entry. What a plugin returns is stored under
    `entry.extensions[<plugin name>]`. `run` is None when the entry comes from `dstbench eval`."""
