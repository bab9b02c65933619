"""`dstbench leaderboard submit` and `verify`: check an entry's claims against its checkpoint, without retraining.

What is re-checked, in order (a failed identity check stops before the costly ones):
  checkpoint  the model file's sha256 equals the entry's `checkpoint.sha256`
  settings    dataset, model, algorithm, sparsity target and seed of the entry equal the model file's config
  sparsity    every layer's nonzero count, and the global sparsity, counted in the model file's weights
  accuracy    clean accuracy and mPC re-evaluated with the run's own code (`runner.load_data`, `prepare_suite`,
              `evaluate_model`) on the entry's suite, corruptions, severities and corruption seed
  mCE         mCE and relative mCE, each when the entry claims it: recomputed from its cells and its baseline
              entry's (--baseline, else the path its run recorded, else the board's entry of that name); the cells
              themselves are what the accuracy checks re-evaluate. A submitted entry's baseline must be on the
              board, and the entry then records the baseline's name, which every reader can resolve

`submit` evaluates a fixed, seeded subset of n of the run's N test samples (the first n of the permutation the
run's own `--max-test-samples` subset is cut from, so they are test samples the run scored, corrupted identically).
A run stores no per-sample predictions, so the subset accuracy is compared with the entry's full-test-set accuracy:
if the claim is true, it is the accuracy of n samples drawn without replacement from N whose accuracy is the claim,
with σ = sqrt(p(1-p)/n · (N-n)/(N-1)). The tolerance is max(1 point, 3σ): about 1 false refusal in 370 per check from
sampling, and the 1-point floor absorbs CPU/GPU and bf16 rounding. For mPC, σ is the mean of the cells' σ, an
upper bound of the σ of their mean whatever their correlation. `verify` evaluates all N samples, where σ = 0, and
compares every cell within --tolerance points.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from dstbench.errors import UserError
from dstbench.options import LEADERBOARD_DIR, config_options, given

if TYPE_CHECKING:
    from dstbench.evaluate import EvalResult
    from dstbench.plugins import Plugins

FLOOR = 1.0  # accuracy points every accuracy check allows
SUBSET = 500  # test samples `submit` re-evaluates by default
SPARSITY_TOLERANCE = 1e-9  # counts are exact; this only absorbs float rounding
PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")  # also the schema's pattern for `name`
TOLERANCE_TEXT = f"max({FLOOR:g} point, 3σ of the subset's binomial sampling error)"
EVAL_OPTIONS = ["data_dir", "c_dir", "device", "eval_batch_size", "quiet"]
MCE_TOLERANCE = 0.01  # points: the claim and the recomputation are the same arithmetic on the same numbers
BASELINE_METRICS = {"corruptions_mce": "mCE", "corruptions_relative_mce": "relative mCE"}  # relative to a baseline
SHA_SHOWN = 16  # hex digits of a sha256 shown
SHOWN_LAYERS = 10  # differing layers listed one per row; the rest are counted


BASELINE = click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The entry.json the entry's mCE and relative mCE are relative to (default: the path its run recorded, else "
    "the board's entry of that name).",
)


@dataclass(frozen=True)
class Check:
    what: str
    claimed: str
    measured: str
    tolerance: str
    ok: bool


def sampling_sigma(claimed: float, n: int, population: int) -> float:
    """The standard error (accuracy points) of the accuracy of `n` samples drawn without replacement from
    `population` samples whose accuracy is `claimed`."""
    p = min(max(claimed / 100, 0.0), 1.0)
    fpc = max(population - n, 0) / (population - 1) if population > 1 else 0.0
    return 100 * math.sqrt(p * (1 - p) / n * fpc)


def sampling_tolerance(claimed: float, n: int, population: int) -> float:
    """The accuracy points a subset of `n` of `population` samples may differ from the population's `claimed`."""
    return max(FLOOR, 3 * sampling_sigma(claimed, n, population))


def _accuracy_check(what: str, claimed: float, measured: float, tolerance: float) -> Check:
    ok = abs(measured - claimed) <= tolerance
    return Check(what, f"{claimed:.2f}", f"{measured:.2f}", f"±{tolerance:.2f}", ok)


def _checkpoint_check(entry: dict[str, Any], model_path: Path) -> Check:
    from dstbench import checkpoint

    claimed = entry["checkpoint"]["sha256"]
    if not model_path.is_file():
        raise UserError(f"{model_path} does not exist: the entry's checkpoint is needed to check its claims")
    measured = checkpoint.sha256(model_path)
    what = f"checkpoint sha256 ({model_path.name})"
    return Check(what, claimed[:SHA_SHOWN] + "…", measured[:SHA_SHOWN] + "…", "exact", measured == claimed)


def _settings_check(entry: dict[str, Any], saved: dict[str, Any]) -> Check:
    claimed = {
        "dataset": entry["dataset"],
        "model": entry["model"],
        "algo": entry["algorithm"]["name"],
        "sparsity": entry["sparsity"]["target"],
        "seed": entry["seed"],
    }
    measured = {key: saved.get(key) for key in claimed}
    differ = [key for key in claimed if claimed[key] != measured[key]]
    show = differ or list(claimed)
    return Check(
        "settings in the model file",
        ", ".join(f"{k}={claimed[k]}" for k in show),
        ", ".join(f"{k}={measured[k]}" for k in show),
        "exact",
        not differ,
    )


def _sparsity_checks(entry: dict[str, Any], model) -> list[Check]:
    from dstbench import sparse

    layers = sparse.measure(model)
    counted = {layer.name: (layer.nonzeros, layer.numel) for layer in layers}
    claimed = {layer["name"]: (layer["nonzeros"], layer["numel"]) for layer in entry["sparsity"]["layers"]}
    differ = [name for name in dict.fromkeys([*claimed, *counted]) if claimed.get(name) != counted.get(name)]

    def count(pair: tuple[int, int] | None) -> str:
        return "absent" if pair is None else f"{pair[0]:,} of {pair[1]:,} nonzero"

    checks = [
        Check(f"layer {name}", count(claimed.get(name)), count(counted.get(name)), "exact", False)
        for name in differ[:SHOWN_LAYERS]
    ]
    if len(differ) > SHOWN_LAYERS:
        checks.append(Check(f"{len(differ) - SHOWN_LAYERS} more layers", "", "differ", "exact", False))
    if not differ:
        checks.append(Check("layers: nonzeros per layer", f"{len(claimed)} layers", "all equal", "exact", True))
    achieved, measured = entry["sparsity"]["achieved"], sparse.achieved_sparsity(layers)
    ok = abs(achieved - measured) <= SPARSITY_TOLERANCE
    checks.append(Check("sparsity (global)", f"{achieved:.6%}", f"{measured:.6%}", "exact", ok))
    return checks


def find_baseline(entry: dict[str, Any], given_path: Path | None, entries_dir: Path) -> Path | None:
    """The file of the entry's mCE baseline: `given_path`, else the path its run recorded if it exists, else the
    board's entry of that name beside it (entries/<dataset>/<suite>/<name>.json: a baseline shares the entry's
    dataset and suite). None when it claims neither an mCE nor a relative mCE, or records no baseline; a path that
    does not exist when none is found."""
    recorded = entry["evaluation"]["baseline"]
    if given_path is not None or not _claims_baseline_metric(entry) or not recorded:
        return given_path
    if Path(recorded).is_file():
        return Path(recorded)
    beside = _entry_folder(entries_dir, entry) / f"{recorded}.json"
    return beside if PATH_PART.match(recorded) and beside.is_file() else Path(recorded)


def _entry_folder(entries_dir: Path, entry: dict[str, Any]) -> Path:
    return entries_dir / entry["dataset"] / entry["suite"]


def _claims_baseline_metric(entry: dict[str, Any]) -> bool:
    return any(entry[key] is not None for key in BASELINE_METRICS)


def _baseline_check(entry: dict[str, Any], baseline: Path | None, key: str) -> Check | None:
    """The entry's `key` (one of BASELINE_METRICS) against the one its cells and its baseline's give; None when it
    claims none."""
    from dstbench.entry import read_baseline
    from dstbench.evaluate import EvalResult

    claimed = entry[key]
    if claimed is None:
        return None
    what = f"{BASELINE_METRICS[key]} from the entry's cells and its baseline's"
    if baseline is None or not baseline.is_file():
        missing = f"baseline {baseline} not found" if baseline else "no baseline recorded"
        return Check(what, f"{claimed:.2f}", f"{missing}; pass --baseline FILE", f"±{MCE_TOLERANCE}", False)
    result, base = EvalResult.of_entry(entry), EvalResult.of_entry(read_baseline(str(baseline)))
    measured = result.mce(base.corruption_acc) if key == "corruptions_mce" else result.relative_mce(base)
    if measured is None:
        undefined = "undefined: the baseline's accuracy does not drop under some corruption"
        return Check(what, f"{claimed:.2f}", undefined, f"±{MCE_TOLERANCE}", False)
    return _accuracy_check(what, claimed, measured, MCE_TOLERANCE)


def _baseline_on_board(entry: dict[str, Any], baseline: Path | None, entries_dir: Path) -> dict[str, Any]:
    """The entry with its mCE baseline recorded by board name; a UserError when the baseline is not on the board,
    where no reader could check the mCE."""
    if not _claims_baseline_metric(entry) or baseline is None or not baseline.is_file():
        return entry  # nothing to name, or the mCE checks report the missing file
    folder = _entry_folder(entries_dir, entry)
    if baseline.resolve().parent != folder.resolve():
        raise UserError(
            f"the mCE baseline {baseline} is not an entry in {folder} (the board's entries of this dataset and "
            "suite), so no reader could check the mCE: submit the baseline first and pass its entry with --baseline"
        )
    return {**entry, "evaluation": {**entry["evaluation"], "baseline": baseline.stem}}


@dataclass
class Reevaluation:
    checks: list[Check]
    result: EvalResult | None  # None when an identity check failed first
    samples: int


def reproduce(
    plugins: Plugins,
    entry: dict[str, Any],
    model_path: Path,
    samples: int | None,
    runtime: dict[str, Any],
    baseline: Path | None = None,
) -> Reevaluation:
    """Every check of the module docstring; `samples` test samples are evaluated (None: all the run used), mCE and
    relative mCE against the `baseline` file."""
    from dstbench import checkpoint, runner

    checks = [_checkpoint_check(entry, model_path)]
    if not checks[0].ok:
        return Reevaluation(checks, None, 0)
    saved = checkpoint.load_model(model_path)
    checks.append(_settings_check(entry, saved["config"]))
    if not checks[-1].ok:
        return Reevaluation(checks, None, 0)
    ev = entry["evaluation"]
    population = ev["test_samples"]
    n = min(samples or population, population)
    overrides = {
        "baseline": None,  # mCE and relative mCE are checked apart, from the claimed cells (see _baseline_check)
        "suite": ev["suite"],
        "corruptions": ev["corruptions"],
        "severities": ev["severities"],
        "corruption_seed": ev["corruption_seed"],
        "max_test_samples": n,
        "device": "auto",  # not the device of the machine that trained it
        "quiet": False,
        **runtime,
    }
    again = runner.reevaluate(saved, overrides, plugins)
    checks += _sparsity_checks(entry, again.model)
    tested = again.test_samples
    checks.append(Check("test samples evaluated", f"{n:,}", f"{tested:,}", "exact", tested == n))
    checks += [check for key in BASELINE_METRICS if (check := _baseline_check(entry, baseline, key))]
    return Reevaluation(checks, again.evaluation.result, n)


def _subset_accuracy_checks(entry: dict[str, Any], result: EvalResult, n: int) -> list[Check]:
    population = entry["evaluation"]["test_samples"]
    clean_tol = sampling_tolerance(entry["clean_acc"], n, population)
    cells = [acc for row in entry["corruptions"].values() for acc in row.values()]
    mpc_tol = max(FLOOR, 3 * fmean(sampling_sigma(acc, n, population) for acc in cells))
    of = f"{n:,} of {population:,} samples"
    return [
        _accuracy_check(f"clean accuracy ({of})", entry["clean_acc"], result.clean_acc, clean_tol),
        _accuracy_check(f"mPC ({of})", entry["corruptions_acc"], result.mpc, mpc_tol),
    ]


def _cell_checks(entry: dict[str, Any], result: EvalResult, tolerance: float) -> list[Check]:
    return [
        _accuracy_check(
            f"{corruption} severity {severity}", claimed, result.corruption_acc[corruption][int(severity)], tolerance
        )
        for corruption, row in entry["corruptions"].items()
        for severity, claimed in row.items()
    ]


def checks_table(title: str, checks: list[Check]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("check", "entry claims", "measured", "tolerance", ""):
        table.add_column(column, justify="left" if column in ("check", "") else "right", overflow="fold")
    for c in checks:
        table.add_row(c.what, c.claimed, c.measured, c.tolerance, "[green]ok[/]" if c.ok else "[red]differs[/]")
    return table


def grid_table(entry: dict[str, Any], result: EvalResult, tolerance: float) -> Table:
    """The corruption × severity matrix as 'measured (Δ to the entry)', red beyond the tolerance."""
    severities = entry["evaluation"]["severities"]
    table = Table(title="re-evaluated accuracy (Δ to the entry)", title_justify="left")
    table.add_column("corruption")
    for s in severities:
        table.add_column(f"sev {s}", justify="right")

    def cell(claimed: float, measured: float) -> str:
        delta = measured - claimed
        style = "red" if abs(delta) > tolerance else "green"
        return f"[{style}]{measured:.2f} ({delta:+.2f})[/]"

    table.add_row("clean", cell(entry["clean_acc"], result.clean_acc), *[""] * (len(severities) - 1))
    for corruption, row in entry["corruptions"].items():
        table.add_row(corruption, *(cell(row[str(s)], result.corruption_acc[corruption][s]) for s in severities))
    return table


def _refuse(checks: list[Check], what: str) -> None:
    failed = [c for c in checks if not c.ok]
    if not failed:
        return
    shown = "; ".join(
        f"{c.what}: entry {c.claimed}, measured {c.measured} (tolerance {c.tolerance})" for c in failed[:3]
    )
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    error = UserError(f"{what} does not reproduce: {shown}{more}")
    error.exit_code = 1
    raise error


# --- submit: where the entry goes ---------------------------------------------------------------------------------


def _metadata(entry: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """The entry with the submission fields given on the command line; a UserError naming a bad one."""
    from dstbench.entry import violations

    url = metadata.pop("checkpoint_url", None)
    entry = {**entry, **given(metadata)}
    entry["name"] = entry["name"] or entry["run_id"]
    if url is not None:  # where readers download the model; the sha256 still pins which file it must be
        if not re.fullmatch(r"https?://\S{1,192}", url):
            raise UserError(f"--checkpoint-url must be an http(s) URL of at most 200 characters, got {url!r}")
        entry["checkpoint"] = {**entry["checkpoint"], "file": url}
    for key in ("name", "dataset", "suite"):  # they become path parts: never '..', '/' or a hidden name
        if not PATH_PART.match(entry[key]):
            hint = "; pass --name" if key == "name" and "name" not in given(metadata) else ""
            raise UserError(
                f"{key} {entry[key]!r} cannot name an entry file: use letters, digits, '_', '.', '-' "
                f"(starting with a letter or digit, at most 100){hint}"
            )
    problems = violations(entry)
    if problems:
        raise UserError(f"--{problems[0].removeprefix('$.')}")
    return entry


def _refuse_duplicates(entries_dir: Path, entry: dict[str, Any], target: Path) -> None:
    from dstbench.entry import load_entry
    from dstbench.leaderboard.board import SAME_EXPERIMENT, identity

    if target.exists():
        raise UserError(f"{target} exists; choose another --name")
    key = identity(entry)
    for path in sorted(entries_dir.rglob("*.json")):
        try:
            existing = load_entry(path)
        except UserError:
            continue  # `dstbench leaderboard validate` and `render` report it
        if identity(existing) == key:
            raise UserError(
                f"{path} already holds this experiment (same {SAME_EXPERIMENT}); a duplicate is not accepted"
            )


def _commit_hint(leaderboard_dir: Path, target: Path, entry: dict[str, Any]) -> str:
    relative = target.relative_to(leaderboard_dir).as_posix()
    board = shlex.quote(str(leaderboard_dir))
    message = shlex.quote(f"Add {entry['name']}: {entry['algorithm']['name']} {entry['model']} on {entry['dataset']}")
    return (
        "To propose it, render the board and commit both in a branch of your leaderboard checkout, then open a pull "
        f"request:\n  dstbench leaderboard render --leaderboard {board}\n"
        f"  git -C {board} add {shlex.quote(relative)} README.md site/index.html\n"
        f"  git -C {board} commit -m {message}"
    )


SUBMIT_HELP = f"""Check a finished run's entry against its checkpoint and add it to a leaderboard checkout.

\b
Re-checked without retraining:
  the checkpoint's sha256, the settings it was trained with, the nonzero weights of every layer,
  clean accuracy and mPC on a fixed, seeded subset of --subset test samples, each within
  {TOLERANCE_TEXT}
  (the entry's accuracies are of the whole test set; σ = sqrt(p(1-p)/n · (N-n)/(N-1))),
  mCE and relative mCE, if claimed, from the entry's cells and its baseline entry's, which must be on the board
  (--baseline FILE; the entry then records the baseline's name).
A claim that does not reproduce is refused with the numbers side by side (exit 1). Otherwise the entry, with
--name, --link, --authors, --venue and --footnote filled in, is written to
<leaderboard>/entries/<dataset>/<suite>/<name>.json, unless the board already has the same experiment.

\b
Example:
  dstbench leaderboard submit runs/cifar10-cifar-vgg16-rigl-s0.3-seed0 --name Wu2025DSTRobust \\
      --link https://arxiv.org/abs/2410.03030 --authors "Boqian Wu, ..." --venue "ICLR 2025"
"""


@click.command(help=SUBMIT_HELP)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Entry name and file name: <Name><Year><Word>, e.g. Wu2025DSTRobust (default: run id).")
@click.option("--link", help="URL of the paper or code (http or https).")
@click.option("--authors", help="Authors, as one line.")
@click.option("--venue", help="Where it is published, e.g. 'ICLR 2025'.")
@click.option("--footnote", help="A remark shown with the entry.")
@click.option("--checkpoint-url", help="Where the published model.pt can be downloaded (http or https).")
@LEADERBOARD_DIR
@click.option(
    "--subset",
    type=click.IntRange(min=2),
    default=SUBSET,
    show_default=True,
    help="Test samples to re-evaluate (all of them when the run used fewer).",
)
@BASELINE
@config_options(EVAL_OPTIONS)
@click.pass_context
def submit(
    ctx: click.Context, run_dir: Path, leaderboard_dir: Path, subset: int, baseline: Path | None, **options
) -> None:
    from dstbench import checkpoint
    from dstbench.entry import load_entry

    metadata = {key: options.pop(key) for key in ("name", "link", "authors", "venue", "footnote", "checkpoint_url")}
    claimed = load_entry(run_dir / "entry.json")
    model_path = run_dir / Path(claimed["checkpoint"]["file"]).name
    entry = _metadata(claimed, metadata)
    entries_dir = leaderboard_dir / "entries"
    if not entries_dir.is_dir():
        raise UserError(f"{leaderboard_dir} is not a leaderboard folder (it has no entries/); pass --leaderboard DIR")
    target = _entry_folder(entries_dir, entry) / f"{entry['name']}.json"
    _refuse_duplicates(entries_dir, entry, target)
    baseline = find_baseline(entry, baseline, entries_dir)
    entry = _baseline_on_board(entry, baseline, entries_dir)
    check = reproduce(ctx.find_root().obj, entry, model_path, subset, given(options), baseline)
    checks = check.checks
    if check.result is not None:
        checks += _subset_accuracy_checks(entry, check.result, check.samples)
    Console().print(checks_table(f"{run_dir / 'entry.json'}: the claims, re-checked", checks))
    _refuse(checks, f"the entry of {run_dir}")
    checkpoint.write_json(target, entry, mode=0o644)  # a file to commit
    click.echo(f"wrote {target}")
    click.echo(_commit_hint(leaderboard_dir, target, entry))


@click.command(
    epilog="""
\b
Example:
  dstbench leaderboard verify leaderboard/entries/cifar10/cifar-c/Wu2025DSTRobust.json --checkpoint model.pt \\
      --device cuda
"""
)
@click.argument("entry_path", metavar="ENTRY", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    "model_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The entry's model file (model.pt); its sha256 must be the entry's.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=FLOOR,
    show_default=True,
    help="Accuracy points each cell may differ by (CPU/GPU and bf16 rounding).",
)
@BASELINE
@LEADERBOARD_DIR
@config_options(EVAL_OPTIONS)
@click.pass_context
def verify(
    ctx: click.Context,
    entry_path: Path,
    model_path: Path,
    tolerance: float,
    baseline: Path | None,
    leaderboard_dir: Path,
    **options,
) -> None:
    """Re-evaluate an entry's checkpoint on every corruption × severity and compare each cell with the entry.

    Also checks the checkpoint's sha256, its settings, its per-layer sparsity and, if it claims them, its mCE and
    relative mCE against its --baseline entry. Exits with 1 when anything differs by more than --tolerance.
    """
    from dstbench.entry import load_entry

    if not math.isfinite(tolerance):
        raise UserError(f"--tolerance must be a number of points, got {tolerance}")
    entry = load_entry(entry_path)
    baseline = find_baseline(entry, baseline, leaderboard_dir / "entries")
    check = reproduce(ctx.find_root().obj, entry, model_path, None, given(options), baseline)
    console, checks, cells = Console(), check.checks, []
    if check.result is not None:
        console.print(grid_table(entry, check.result, tolerance))
        checks += [
            _accuracy_check("clean accuracy", entry["clean_acc"], check.result.clean_acc, tolerance),
            _accuracy_check("mPC", entry["corruptions_acc"], check.result.mpc, tolerance),
        ]
        cells = _cell_checks(entry, check.result, tolerance)
    console.print(checks_table(f"{entry_path}: the claims, re-checked", checks))
    _refuse(checks + cells, str(entry_path))
    click.echo(f"{entry_path}: every claim reproduces (cells within ±{tolerance:g} points)")
