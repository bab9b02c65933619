"""The leaderboard as data: the valid entries of `<leaderboard>/entries/**/*.json`, one table per dataset × suite
× evaluation grid, every cell already formatted, the dense baseline of each model marked and each DST entry's Δ to it.

Entries are read through `dstbench.entry.load_entry` (validated, any schema version migrated to the current one);
an invalid file, or a second entry of the same experiment, is left out and described on one line. Only entries of
the same grid (corruptions, severities, test samples) share a table and a Δ: an mPC over 15 corruptions is not
comparable with one over 19. Entries are sorted by a total order, so the same entries always give the same
`Board`, whatever the order of the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any
from urllib.parse import quote, urlsplit

from dstbench.config import RunConfig
from dstbench.errors import UserError
from dstbench.grid import Grid, describe_grid, evaluation_grid

BASELINE_ALGORITHM = "dense"
MEAN_MARK = "†"  # on a Δ measured against the mean of the dense seeds, not the same seed
ERROR_LIMIT = 300  # characters of a violation quoted in the one-line error
PARAMS_LIMIT = 60  # characters of the algorithm parameters shown in the table (all of them in the tooltip)


# --- the board: what both outputs show ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    numeric: bool
    help: str


COLUMNS = (
    Column("name", "Entry", False, "The entry's name (its run id when it has none), linked to its paper"),
    Column("model", "Model", False, "Architecture"),
    Column("algorithm", "Algorithm", False, "Training algorithm and its parameters"),
    Column("target", "Target sparsity", True, "Fraction of zero weights the run aimed at"),
    Column("sparsity", "Sparsity", True, "Fraction of zero weights counted in the final model"),
    Column("seed", "Seed", True, "Training seed"),
    Column("clean", "Clean", True, "Top-1 accuracy (%) on the clean test set"),
    Column("mpc", "mPC", True, "Mean accuracy (%) over the table's corruptions and severities"),
    Column("rpc", "rPC", True, "mPC / clean accuracy"),
    Column("mce", "mCE", True, "Mean corruption error (%) relative to the entry's baseline, when it has one"),
    Column(
        "relative_mce",
        "Relative mCE",
        True,
        "Accuracy drop under corruption relative to the baseline's (%), when the baseline's drops under each one",
    ),
    Column("d_clean", "Δ clean", True, "Clean accuracy minus the dense run's of the same model and seed"),
    Column("d_mpc", "Δ mPC", True, "mPC minus the dense run's of the same model and seed"),
    Column("cost", "Training", True, "Wall time, throughput and device of training (sorts by wall time)"),
)

DELTA_NOTE = (
    "Δ: difference to the dense entry of the same model, dataset, suite, grid, training recipe and seed; "
    f"{MEAN_MARK} marks a difference to the mean of the dense seeds, where no dense entry has the same seed."
)
_DEFAULTS = RunConfig().to_dict()
SAME_EXPERIMENT = "algorithm, parameters, sparsity, model, dataset, suite, seed, training recipe and evaluation grid"

# Config keys that do not tell experiments apart: how a run was executed, and what `identity` holds otherwise (the
# resolved algorithm options, the evaluation grid; a corruption seed draws other images of the same grid).
NOT_RECIPE = frozenset(
    {
        *("out", "resume", "quiet", "device", "workers", "data_dir", "download", "skip_bad", "eval_batch_size"),
        *("c_dir", "baseline", "precision", "channels_last"),
        *("algo", "algo_options", "sparsity", "distribution", "dataset", "model", "seed", "suite"),
        *("corruptions", "severities", "max_test_samples", "corruption_seed"),
    }
)


@dataclass(frozen=True)
class Cell:
    """A formatted value; `value` is what the column sorts by (None sorts last) and what a heat map colours."""

    text: str
    value: float | str | None = None
    title: str | None = None  # tooltip
    href: str | None = None  # http(s) only


@dataclass(frozen=True)
class Link:
    label: str
    href: str


@dataclass(frozen=True)
class HeatMap:
    """Accuracy per corruption (rows) and severity (columns), each row ending with its mean."""

    corruptions: list[str]
    severities: list[str]
    cells: list[list[Cell]]


@dataclass(frozen=True)
class Detail:
    heatmap: HeatMap
    facts: list[tuple[str, str]]
    links: list[Link]


@dataclass(frozen=True)
class Row:
    id: str
    baseline: bool  # a dense entry: what the other rows are compared with
    algorithm: str
    target_sparsity: float
    footnote: str
    cells: dict[str, Cell]
    detail: Detail


@dataclass(frozen=True)
class Table:
    id: str
    dataset: str
    suite: str
    grid: str  # what the table's mPC averages over
    rows: list[Row]  # by mPC, best first
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Board:
    tables: list[Table]
    algorithms: list[str]
    columns: tuple[Column, ...] = COLUMNS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedEntry:
    path: str  # relative to the entries folder, with '/'
    data: Mapping[str, Any]


# --- reading entries ---------------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = ERROR_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def load_entries(entries_dir: Path) -> tuple[list[LoadedEntry], list[str]]:
    """The `*.json` files below `entries_dir` that `dstbench.entry.load_entry` accepts (validated and migrated to
    the current schema version), and one line naming each file it refuses and why: invalid, or the same experiment
    as a file before it in path order."""
    from dstbench.entry import load_entry

    if not entries_dir.is_dir():
        raise UserError(f"no entries folder at {entries_dir}; give the leaderboard folder with --leaderboard")
    loaded, refused, experiments = [], [], {}
    for path in sorted(entries_dir.rglob("*.json")):
        try:
            data = load_entry(path)
        except UserError as exc:
            refused.append(_one_line(str(exc)))
            continue
        relative = path.relative_to(entries_dir).as_posix()
        first = experiments.setdefault(identity(data), relative)
        if first != relative:
            refused.append(f"{path}: the same experiment as entries/{first} ({SAME_EXPERIMENT}); remove one")
        else:
            loaded.append(LoadedEntry(relative, data))
    return loaded, refused


# --- what an entry says, for schema versions 1 and 2 -------------------------------------------------------------


def _text(value: Any) -> str:
    """A text field as one string; a list (of authors, say) joined by commas."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(_text, value))
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def http_url(value: Any) -> str | None:
    """`value` as a link target when it is an http(s) URL, percent-encoding anything that could end a link."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(value.strip(), safe=":/?#@!$&'*+,;=%~[]")


def _name(entry: Mapping[str, Any]) -> str:
    return _text(entry.get("name")) or entry["run_id"]


def _is_baseline(entry: Mapping[str, Any]) -> bool:
    return entry["algorithm"]["name"] == BASELINE_ALGORITHM


def _setting(entry: Mapping[str, Any]) -> tuple:
    """What a dense baseline must share with an entry, besides the seed: a Δ to a dense model trained for other
    epochs, or with another learning rate, would measure the recipe rather than the sparsity."""
    config = {**_DEFAULTS, **entry["config"]}  # a setting added since an entry was written has its default there
    recipe = {key: value for key, value in config.items() if key not in NOT_RECIPE}
    return entry["dataset"], entry["suite"], evaluation_grid(entry), entry["model"], json.dumps(recipe, sort_keys=True)


def identity(entry: Mapping[str, Any]) -> tuple:
    """What makes two entries the same experiment (SAME_EXPERIMENT): a second one is a duplicate."""
    algorithm, sparsity = entry["algorithm"], entry["sparsity"]
    return (
        algorithm["name"],
        json.dumps(algorithm["params"], sort_keys=True),
        sparsity["target"],
        sparsity["distribution"],
        *_setting(entry),
        entry["seed"],
    )


def _order(loaded: LoadedEntry) -> tuple:
    """A total order on entries, so the board never depends on the order files were found in: within a dataset
    and suite the fullest grid first."""
    entry = loaded.data
    corruptions, severities, samples = evaluation_grid(entry)
    return (
        entry["dataset"],
        entry["suite"],
        -len(corruptions),
        -len(severities),
        -samples,
        corruptions,
        severities,
        entry["model"],
        entry["algorithm"]["name"],
        entry["sparsity"]["target"],
        entry["seed"],
        _name(entry),
        loaded.path,
    )


# --- formatting --------------------------------------------------------------------------------------------------


def _percent(fraction: float, digits: int) -> str:
    return f"{100 * fraction:.{digits}f}%"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_text(value)}" for key, value in sorted(params.items()))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Δ to the dense baseline -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The dense numbers an entry is compared with, and which dense entries they come from."""

    clean: float
    mpc: float
    same_seed: bool
    note: str


def _reference(entry: Mapping[str, Any], dense: list[Mapping[str, Any]]) -> Reference | None:
    """The dense entry of the same seed (the mean if several), else the mean over all dense seeds."""
    if not dense or _is_baseline(entry):
        return None
    same_seed = [d for d in dense if d["seed"] == entry["seed"]]
    chosen = same_seed or dense
    if same_seed:
        note = f"vs dense, seed {entry['seed']}: {', '.join(_name(d) for d in chosen)}"
    else:
        seeds = ", ".join(str(s) for s in sorted({d["seed"] for d in dense}))
        note = f"vs the mean of the dense seeds {seeds} (no dense entry has seed {entry['seed']})"
    return Reference(
        fmean(d["clean_acc"] for d in chosen), fmean(d["corruptions_acc"] for d in chosen), bool(same_seed), note
    )


def _delta_cells(entry: Mapping[str, Any], reference: Reference | None) -> dict[str, Cell]:
    """Δ clean and Δ mPC to the dense reference, or why there is none."""
    if _is_baseline(entry):
        missing = Cell("baseline", None, "the dense baseline of this model")
        return {"d_clean": missing, "d_mpc": missing}
    if reference is None:
        missing = Cell("—", None, "no dense entry of this model, dataset, suite and grid")
        return {"d_clean": missing, "d_mpc": missing}
    mark = "" if reference.same_seed else MEAN_MARK

    def difference(value: float) -> Cell:
        shown = round(value, 2) + 0.0  # never '-0.00'
        return Cell(f"{shown:+.2f}{mark}", value, reference.note)

    return {
        "d_clean": difference(entry["clean_acc"] - reference.clean),
        "d_mpc": difference(entry["corruptions_acc"] - reference.mpc),
    }


# --- rows and tables ---------------------------------------------------------------------------------------------


def _cells(entry: Mapping[str, Any], reference: Reference | None) -> dict[str, Cell]:
    """Every column's cell for one entry."""
    algorithm, sparsity, training = entry["algorithm"], entry["sparsity"], entry["training"]
    params = _params(algorithm["params"])
    wall_time = training["wall_time_s"]
    cost = f"{_duration(wall_time)} · {training['images_per_s']:,.0f} img/s · {training['device']}"
    algorithm_text = f"{algorithm['name']} ({_shorten(params, PARAMS_LIMIT)})" if params else algorithm["name"]
    credit = " · ".join(text for text in (_text(entry.get("authors")), _text(entry.get("venue"))) if text)
    return {
        "name": Cell(_name(entry), _name(entry), credit or None, http_url(entry.get("link"))),
        "model": Cell(entry["model"], entry["model"]),
        "algorithm": Cell(algorithm_text, algorithm["name"], params or None),
        "target": Cell(_percent(sparsity["target"], 1), sparsity["target"]),
        "sparsity": Cell(_percent(sparsity["achieved"], 2), sparsity["achieved"]),
        "seed": Cell(str(entry["seed"]), entry["seed"]),
        "clean": Cell(f"{entry['clean_acc']:.2f}", entry["clean_acc"]),
        "mpc": Cell(f"{entry['corruptions_acc']:.2f}", entry["corruptions_acc"]),
        "rpc": Cell(f"{entry['rpc']:.3f}", entry["rpc"]),
        "mce": _baseline_cell(entry, entry["corruptions_mce"]),
        "relative_mce": _baseline_cell(entry, entry["corruptions_relative_mce"]),
        **_delta_cells(entry, reference),
        "cost": Cell(cost, wall_time, f"{wall_time:.0f} s of training"),
    }


def _baseline_cell(entry: Mapping[str, Any], value: float | None) -> Cell:
    """A metric relative to the entry's baseline, which its tooltip names."""
    return Cell("—", None) if value is None else Cell(f"{value:.1f}", value, entry["evaluation"]["baseline"])


def _heatmap(entry: Mapping[str, Any]) -> HeatMap:
    corruptions = entry["evaluation"]["corruptions"]
    severities = [str(s) for s in sorted(entry["evaluation"]["severities"])]
    rows = []
    for corruption in corruptions:
        accuracies = [entry["corruptions"][corruption][s] for s in severities]
        rows.append([Cell(f"{acc:.1f}", acc) for acc in [*accuracies, fmean(accuracies)]])
    return HeatMap(list(corruptions), severities, rows)


def _facts(entry: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """What the detail view lists besides the heat map: provenance, settings, environment, checkpoint."""
    algorithm, training, evaluation = entry["algorithm"], entry["training"], entry["evaluation"]
    environment, checkpoint = entry["environment"], entry["checkpoint"]
    facts = [
        ("Run", entry["run_id"]),
        ("Authors", _text(entry.get("authors"))),
        ("Venue", _text(entry.get("venue"))),
        ("Note", _text(entry.get("footnote"))),
        ("Algorithm", f"{algorithm['name']} ({algorithm['plugin']} {algorithm['version']})"),
        ("Parameters", _params(algorithm["params"])),
        ("Distribution", _text(entry["sparsity"]["distribution"])),
        (
            "Training",
            f"{training['trainer']}, {training['epochs']} epochs, {training['steps']} steps, "
            f"batch {training['batch_size']}, {training['precision']}, {training['device']}, "
            f"{_duration(training['wall_time_s'])}, {training['images_per_s']:,.0f} img/s",
        ),
        (
            "Evaluation",
            f"{evaluation['suite']}, corruption seed {evaluation['corruption_seed']}, "
            f"{evaluation['test_samples']} test samples",
        ),
        ("Extra data", "yes" if entry["additional_data"] else "no"),
        (
            "Environment",
            f"dstbench {environment['dstbench']}, torch {environment['torch']}, python {environment['python']}, "
            f"CUDA {environment['cuda'] or 'none'}, commit {environment['git_commit'] or 'unknown'}",
        ),
        ("Checkpoint", f"{checkpoint['file']} (sha256 {checkpoint['sha256']})"),
        ("Entry file", f"entries/{path}"),
        ("Created", entry["created"]),
    ]
    return [(label, text) for label, text in facts if text]


def _links(entry: Mapping[str, Any]) -> list[Link]:
    candidates = (("paper", entry.get("link")), ("checkpoint", entry["checkpoint"]["file"]))
    return [Link(label, url) for label, value in candidates if (url := http_url(value))]


def _row(row_id: str, loaded: LoadedEntry, reference: Reference | None) -> Row:
    entry = loaded.data
    return Row(
        id=row_id,
        baseline=_is_baseline(entry),
        algorithm=entry["algorithm"]["name"],
        target_sparsity=entry["sparsity"]["target"],
        footnote=_text(entry.get("footnote")),
        cells=_cells(entry, reference),
        detail=Detail(_heatmap(entry), _facts(entry, loaded.path), _links(entry)),
    )


def _by_mpc(row: Row) -> float:
    """Best mPC first."""
    return -row.cells["mpc"].value


def build_board(entries: Iterable[LoadedEntry]) -> Board:
    """One table per dataset × suite (in name order) × grid (the fullest first), its rows by mPC, best first."""
    ordered = sorted(entries, key=_order)
    dense: dict[tuple, list[Mapping[str, Any]]] = {}
    for loaded in ordered:
        if _is_baseline(loaded.data):
            dense.setdefault(_setting(loaded.data), []).append(loaded.data)
    tables: dict[tuple[str, str, Grid], list[Row]] = {}
    for number, loaded in enumerate(ordered):
        reference = _reference(loaded.data, dense.get(_setting(loaded.data), []))
        table = (loaded.data["dataset"], loaded.data["suite"], evaluation_grid(loaded.data))
        tables.setdefault(table, []).append(_row(f"entry-{number}", loaded, reference))
    return Board(
        tables=[
            Table(f"table-{number}", dataset, suite, describe_grid(cells), sorted(rows, key=_by_mpc), _notes(rows))
            for number, ((dataset, suite, cells), rows) in enumerate(tables.items())
        ],
        algorithms=sorted({loaded.data["algorithm"]["name"] for loaded in ordered}),
    )


def _notes(rows: list[Row]) -> list[str]:
    compared = any(row.cells["d_mpc"].value is not None for row in rows)
    return [DELTA_NOTE] if compared else []
