"""The `dstbench` command. User errors print one line and exit with code 2; there is no traceback for them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from dstbench import __version__
from dstbench.config import FIELDS
from dstbench.errors import PluginError, UserError
from dstbench.options import REEVALUATION_OPTIONS, DstbenchGroup, check_writable, config_options, given
from dstbench.plugins import Plugins, get_plugins
from dstbench.report import make_reporter

RUN_EXAMPLES = """
\b
Examples:
  dstbench run                                   dense training on the embedded digits (< 1 min on a laptop)
  dstbench run --algo rigl --sparsity 0.3        RigL, 30% of the weights zero (ERK distribution)
  dstbench run --algo set --sparsity 0.5 --algo-opt update_interval=200 --distribution uniform
  dstbench run --epochs 5 --severities 3,5       shorter training, evaluated at two severities
  dstbench run --dataset fashion-mnist --model digits-cnn --max-train-samples 10000
  dstbench run --dataset cifar10 --data-dir ~/data --model cifar-resnet18 --device cuda
  dstbench run --config recipe.toml --seed 1     settings from a TOML file; flags override it
  dstbench run --out runs/a --resume             continue an interrupted run
"""


def _plugins(ctx: click.Context) -> Plugins:
    return ctx.find_root().obj


@click.command(epilog=RUN_EXAMPLES)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file of settings (flags win).")
@config_options(list(FIELDS))
@click.pass_context
def run(ctx: click.Context, config_file: str | None, **flags) -> None:
    """Train a model, evaluate it on clean and corrupted test data, and write a leaderboard entry."""
    from dstbench import config, runner, tables

    plugins = _plugins(ctx)
    flags = given(flags)
    resumed = flags.get("out") and flags.get("resume")  # the other settings default to the run's own
    saved = runner.saved_settings(runner.RunDir(Path(flags["out"]))) if resumed else None
    cfg = config.resolve(flags, config_file, plugins.registry, saved)
    reporter = make_reporter(cfg.quiet)
    out = runner.run_dir_of(cfg)
    check_writable(out.path, "--out")
    try:
        entry = runner.execute(cfg, plugins, reporter)
    except KeyboardInterrupt:
        then = f"continue with: dstbench run --out {out.path} --resume" if out.has_run() else "nothing was saved yet"
        error = click.ClickException(f"interrupted; {then}")
        error.exit_code = 130
        raise error from None
    if entry is None:  # a torch.distributed process other than rank 0
        return
    reporter.result(tables.results(entry.to_dict()))
    reporter.result(f"entry: {out.entry}")


EVAL_OPTIONS = ["suite", "c_dir", "corruptions", "severities", "corruption_seed", "baseline", *REEVALUATION_OPTIONS]


@click.command(name="eval")
@click.argument("path", type=click.Path(path_type=Path))
@config_options(EVAL_OPTIONS)
@click.option(
    "--entry",
    "entry_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as an entry JSON here.",
)
@click.pass_context
def eval_(ctx: click.Context, path: Path, entry_path: Path | None, **flags) -> None:
    """Re-evaluate a finished run (its directory or model.pt), optionally on another suite or severities.

    \b
    Examples:
      dstbench eval runs/digits-digits-cnn-dense-seed0
      dstbench eval runs/x/model.pt --severities 5 --entry sev5.json
    """
    from dstbench import checkpoint, runner, tables

    plugins = _plugins(ctx)
    model_path = path / "model.pt" if path.is_dir() else path
    if entry_path:
        check_writable(entry_path, "--entry", folder=False)
        for own in (model_path, model_path.parent / "entry.json"):
            if entry_path.resolve() == own.resolve():
                raise UserError(f"--entry {entry_path} is the run's own {own.name}; write the new entry elsewhere")
    saved = checkpoint.load_model(model_path)
    result = checkpoint.training_record(saved, model_path)
    again = runner.reevaluate(saved, given(flags), plugins)
    algorithm = plugins.registry.algorithm(again.cfg.algo).from_config(again.cfg)
    entry = runner.make_entry(
        again.cfg, plugins, again.model, algorithm, result, again.evaluation, model_path, again.device, None
    )
    again.reporter.result(tables.results(entry.to_dict()))
    if entry_path:
        runner.write_entry(entry_path, entry)
        again.reporter.result(f"entry: {entry_path}")


@click.command(
    name="list",
    epilog="""
\b
Examples:
  dstbench list                          every kind, as tables
  dstbench list --kind suite             the corruption suites and their corruptions
  dstbench list --kind algorithm --json
""",
)
@click.option(
    "--kind",
    type=click.Choice(["algorithm", "model", "dataset", "suite", "trainer", "command"]),
    multiple=True,
    help="Only these kinds (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def list_(ctx: click.Context, kind: tuple[str, ...], as_json: bool) -> None:
    """List installed algorithms, models, datasets, corruption suites and trainers, with the plugin each is from."""
    from dstbench import tables
    from dstbench.registry import KINDS

    plugins = _plugins(ctx)
    kinds = kind or [k for k in KINDS if k != "command"]
    if as_json:
        click.echo(json.dumps({k: tables.registry_rows(plugins, k) for k in kinds}, indent=2))
        return
    reporter = make_reporter()
    for k in kinds:
        reporter.result(tables.rows_table(f"{k}s", tables.registry_rows(plugins, k)))


@click.command(
    epilog="""
\b
Examples:
  dstbench plugins                       built-in and installed plugins, broken ones with the reason
  DSTBENCH_PLUGINS= dstbench plugins     the built-ins alone
"""
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List loaded plugins, where they come from, what they register and which hooks they implement.

    Set DSTBENCH_PLUGINS=name,name to load only these third-party plugins (empty: none).
    """
    from dstbench import tables

    loaded = _plugins(ctx)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(info) for info in loaded.infos.values()], indent=2))
        return
    make_reporter().result(tables.rows_table("plugins", tables.plugin_rows(loaded)))


def build_cli(loaded: Plugins) -> click.Group:
    @click.group(cls=DstbenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
    @click.version_option(__version__, prog_name="dstbench")
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        """dstbench: does dynamic sparse training make vision models more robust to image and video corruptions?

        \b
        Start with:  dstbench run            (dense training + corruption evaluation on the embedded digits)
                     dstbench list           (algorithms, models, datasets, corruption suites)
        """
        ctx.obj = loaded

    from dstbench.compare import compare
    from dstbench.corrupt_command import corrupt
    from dstbench.frequency import frequency
    from dstbench.leaderboard import leaderboard
    from dstbench.sparse.command import masks
    from dstbench.sparse.connectivity import connectivity
    from dstbench.sweep import sweep

    commands = (run, eval_, list_, plugins, leaderboard, masks, connectivity, sweep, compare, corrupt, frequency)
    for command in commands:
        cli.add_command(command)
    try:
        extra = loaded.registry.entries["command"].values()
    except PluginError:
        extra = []  # the clash is reported by every command that needs the registry
    for item in extra:
        if item.obj.name in cli.commands:
            click.echo(
                f"warning: plugin '{item.plugin}' registers command '{item.obj.name}', which exists; skipped", err=True
            )
        else:
            cli.add_command(item.obj)
    return cli


def main() -> None:
    loaded = get_plugins()
    for info in loaded.broken():
        click.echo(
            f"warning: plugin '{info.name}' ({info.distribution} {info.version}) skipped: {info.error}", err=True
        )
    build_cli(loaded)(prog_name="dstbench")
