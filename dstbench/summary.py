"""The summary of a sweep: per algorithm × sparsity, clean accuracy and mPC over seeds, and the difference to dense
training paired by seed with its t interval, so a reader sees whether a gain is larger than the noise between seeds;
and, as in the paper's figures, the relative accuracy gain over dense of every corruption × severity cell.

`summarize` (entry dicts -> `Summary`) is a pure function; `summary_tables`, `plot` and `plot_gains` render its
result, and `write_summary` writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean, stdev
from typing import TYPE_CHECKING, Any

from dstbench.errors import UserError
from dstbench.grid import describe_grid, evaluation_grid

if TYPE_CHECKING:
    from rich.console import Group

CONFIDENCE = 0.95
BASELINE = "dense"


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample standard deviation (ddof=1); None for a single value

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(fmean(values), stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class Difference:
    """Mean difference to the baseline over the seeds both have, and its t interval (None below 2 seeds)."""

    seeds: list[int]
    mean: float
    low: float | None
    high: float | None
    significant: bool  # the interval excludes 0

    @classmethod
    def paired(cls, values: Mapping[int, float], baseline: Mapping[int, float]) -> Difference | None:
        seeds = sorted(values.keys() & baseline.keys())
        if not seeds:
            return None
        diffs = [values[s] - baseline[s] for s in seeds]
        mean = fmean(diffs)
        if len(diffs) < 2:
            return cls(seeds, mean, None, None, False)
        from scipy.stats import t

        half = float(t.ppf((1 + CONFIDENCE) / 2, len(diffs) - 1)) * stdev(diffs) / math.sqrt(len(diffs))
        return cls(seeds, mean, mean - half, mean + half, not mean - half <= 0 <= mean + half)


@dataclass(frozen=True)
class RunMetrics:
    run_id: str
    dataset: str
    model: str
    suite: str
    grid: str  # what mPC averages over: corruptions, severities, test samples
    algorithm: str
    sparsity: float  # the target
    achieved_sparsity: float
    seed: int
    clean_acc: float
    corruptions_acc: float  # mPC
    rpc: float
    corruptions_mce: float | None
    corruptions_relative_mce: float | None
    wall_time_s: float
    corruptions: dict[str, dict[str, float]]  # accuracy (%) per corruption and severity

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> RunMetrics:
        return cls(
            run_id=entry["run_id"],
            dataset=entry["dataset"],
            model=entry["model"],
            suite=entry["suite"],
            grid=describe_grid(evaluation_grid(entry)),
            algorithm=entry["algorithm"]["name"],
            sparsity=entry["sparsity"]["target"],
            achieved_sparsity=entry["sparsity"]["achieved"],
            seed=entry["seed"],
            clean_acc=entry["clean_acc"],
            corruptions_acc=entry["corruptions_acc"],
            rpc=entry["rpc"],
            corruptions_mce=entry["corruptions_mce"],
            corruptions_relative_mce=entry["corruptions_relative_mce"],
            wall_time_s=entry["training"]["wall_time_s"],
            corruptions=entry["corruptions"],
        )

    @property
    def setting(self) -> tuple[str, str, str, str]:
        """What runs must share to be compared: mPCs over other grids do not compare."""
        return self.dataset, self.model, self.suite, self.grid

    @property
    def group(self) -> tuple[str, str, str, str, str, float]:
        return (*self.setting, self.algorithm, self.sparsity)


@dataclass(frozen=True)
class Row:
    """One algorithm at one sparsity, over its seeds, compared with the baseline of the same setting: the baseline's
    runs at the same sparsity, or at its only one (dense training's 0)."""

    dataset: str
    model: str
    suite: str
    grid: str
    algorithm: str
    sparsity: float
    seeds: list[int]
    clean_acc: Stat
    corruptions_acc: Stat
    rpc: Stat
    clean_acc_vs_baseline: Difference | None
    corruptions_acc_vs_baseline: Difference | None
    # 100 · (acc − baseline acc) / baseline acc per corruption and severity, averaged over the seeds both have (None
    # where the baseline's accuracy is 0 for one of them); None without a baseline.
    cell_gains: dict[str, dict[str, float | None]] | None

    def top_gain(self) -> tuple[str, str, float] | None:
        """The cell with the largest relative gain: (corruption, severity, gain)."""
        cells = [(c, sev, g) for c, row in (self.cell_gains or {}).items() for sev, g in row.items() if g is not None]
        return max(cells, key=lambda cell: cell[2], default=None)

    @property
    def setting(self) -> tuple[str, str, str, str]:
        return self.dataset, self.model, self.suite, self.grid


@dataclass(frozen=True)
class Summary:
    baseline: str
    confidence: float
    rows: list[Row]
    runs: list[RunMetrics]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Baselines = dict[float, dict[int, RunMetrics]]  # the baseline's runs of a setting by sparsity and seed


def summarize(entries: Iterable[Mapping[str, Any]], baseline: str = BASELINE) -> Summary:
    """Rows per dataset × model × suite × grid × algorithm × sparsity, in the order they first appear."""
    runs = [RunMetrics.of(entry) for entry in entries]
    groups: dict[tuple, dict[int, RunMetrics]] = {}
    for run in runs:
        seeds = groups.setdefault(run.group, {})
        if run.seed in seeds:
            raise UserError(f"runs {seeds[run.seed].run_id} and {run.run_id} are the same algorithm, sparsity and seed")
        seeds[run.seed] = run
    baselines: dict[tuple, Baselines] = {}  # setting -> sparsity -> seed -> run
    for (*setting, algorithm, sparsity), seeds in groups.items():
        if algorithm == baseline:
            baselines.setdefault(tuple(setting), {})[sparsity] = seeds
    return Summary(baseline, CONFIDENCE, [_row(seeds, baselines, baseline) for seeds in groups.values()], runs)


def _row(by_seed: dict[int, RunMetrics], baselines: dict[tuple, Baselines], baseline: str) -> Row:
    first = next(iter(by_seed.values()))
    by_sparsity = baselines.get(first.setting, {}) if first.algorithm != baseline else {}
    only = next(iter(by_sparsity.values())) if len(by_sparsity) == 1 else None
    reference = by_sparsity.get(first.sparsity, only)

    def versus(metric: str) -> Difference | None:
        if reference is None:
            return None
        values = {seed: getattr(run, metric) for seed, run in by_seed.items()}
        return Difference.paired(values, {seed: getattr(run, metric) for seed, run in reference.items()})

    return Row(
        *first.group,
        seeds=sorted(by_seed),
        clean_acc=Stat.of([run.clean_acc for run in by_seed.values()]),
        corruptions_acc=Stat.of([run.corruptions_acc for run in by_seed.values()]),
        rpc=Stat.of([run.rpc for run in by_seed.values()]),
        clean_acc_vs_baseline=versus("clean_acc"),
        corruptions_acc_vs_baseline=versus("corruptions_acc"),
        cell_gains=_cell_gains(by_seed, reference) if reference else None,
    )


def _cell_gains(
    by_seed: dict[int, RunMetrics], reference: dict[int, RunMetrics]
) -> dict[str, dict[str, float | None]] | None:
    """Relative gain (%) of each cell both grids hold, averaged over the seeds both have."""
    seeds = sorted(by_seed.keys() & reference.keys())
    if not seeds:
        return None
    gains: dict[str, dict[str, float | None]] = {}
    for corruption, severities in by_seed[seeds[0]].corruptions.items():
        for severity in severities:
            pairs = [
                (
                    by_seed[s].corruptions.get(corruption, {}).get(severity),
                    reference[s].corruptions.get(corruption, {}).get(severity),
                )
                for s in seeds
            ]
            if any(acc is None or base is None for acc, base in pairs):
                continue
            defined = all(base > 0 for _, base in pairs)
            gain = fmean(100 * (acc - base) / base for acc, base in pairs) if defined else None
            gains.setdefault(corruption, {})[severity] = gain
    return gains


def _settings(summary: Summary) -> dict[tuple[str, str, str, str], list[Row]]:
    rows: dict[tuple[str, str, str, str], list[Row]] = {}
    for row in summary.rows:
        rows.setdefault(row.setting, []).append(row)
    return rows


def _stat_cell(stat: Stat) -> str:
    return f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


def _difference_cell(diff: Difference | None) -> str:
    if diff is None:
        return "—"
    if diff.low is None:
        return f"{diff.mean:+.2f} n/a"
    text = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    return f"[bold {'green' if diff.mean > 0 else 'red'}]{text} *[/]" if diff.significant else text


def _top_gain_cell(row: Row) -> str:
    top = row.top_gain()
    return "—" if top is None else f"{top[0]} {top[1]}: {top[2]:+.1f}%"


def summary_tables(summary: Summary) -> Group:
    """A table per dataset × model × suite × grid: accuracies over seeds and the paired difference to the baseline."""
    from rich.console import Group
    from rich.table import Table

    caption = (
        f"mean ± std over seeds; Δ: mean difference to {summary.baseline} paired by seed "
        f"[{summary.confidence:.0%} t interval]; * the interval excludes 0; top cell gain: the corruption and "
        f"severity whose accuracy gains most relative to {summary.baseline} (every cell: gains.png)"
    )
    tables = []
    for setting, rows in _settings(summary).items():
        table = Table(title=" · ".join(setting), title_justify="left", caption=caption, caption_justify="left")
        for column in ("algorithm", "sparsity", "n", "clean", "mPC", "rPC", "Δ clean", "Δ mPC", "top cell gain"):
            table.add_column(column, justify="left" if column == "algorithm" else "right")
        for row in rows:
            table.add_row(
                f"[bold cyan]{row.algorithm}[/]",
                f"{row.sparsity:g}",
                str(len(row.seeds)),
                _stat_cell(row.clean_acc),
                _stat_cell(row.corruptions_acc),
                f"{row.rpc.mean:.3f}",
                _difference_cell(row.clean_acc_vs_baseline),
                _difference_cell(row.corruptions_acc_vs_baseline),
                _top_gain_cell(row),
            )
        tables.append(table)
    return Group(*tables)


PANELS = (("corruptions_acc", "mPC (%)"), ("clean_acc", "clean accuracy (%)"))


def plot(summary: Summary, path: Path) -> None:
    """mPC and clean accuracy against sparsity: a line per algorithm with std error bars, the baseline as a band."""
    from matplotlib.figure import Figure

    from dstbench.checkpoint import atomic_write

    settings = _settings(summary)
    figure = Figure(figsize=(5 * len(PANELS), 4 * len(settings)), layout="constrained")
    axes = figure.subplots(len(settings), len(PANELS), squeeze=False)
    for panels, (setting, rows) in zip(axes, settings.items(), strict=True):
        for ax, (metric, label) in zip(panels, PANELS, strict=True):
            _plot_panel(ax, rows, metric, summary.baseline)
            ax.set(title=_title(setting), xlabel="sparsity", ylabel=label)
            ax.legend()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def _title(setting: tuple[str, str, str, str]) -> str:
    return f"{' · '.join(setting[:3])}\n{setting[3]}"


def _plot_panel(ax, rows: list[Row], metric: str, baseline: str) -> None:
    for algorithm in dict.fromkeys(row.algorithm for row in rows):
        points = sorted((row.sparsity, getattr(row, metric)) for row in rows if row.algorithm == algorithm)
        stats = [stat for _, stat in points]
        if algorithm == baseline and len(stats) == 1:  # dense training: one level to compare every sparsity with
            mean, std = stats[0].mean, stats[0].std or 0.0
            ax.axhspan(mean - std, mean + std, color="gray", alpha=0.2)
            ax.axhline(mean, color="gray", linestyle="--", label=f"{algorithm} (mean ± std)")
        else:
            errors = [stat.std or 0.0 for stat in stats]
            xs = [x for x, _ in points]
            ax.errorbar(xs, [s.mean for s in stats], yerr=errors, marker="o", capsize=3, label=algorithm)


def plot_gains(summary: Summary, path: Path) -> bool:
    """Heat maps of the relative accuracy gain of every corruption (rows) × severity (columns) cell, a panel per
    algorithm × sparsity: per dataset × model × suite, a row of panels per algorithm (by sparsity), on one colour
    scale centred at 0. Writes nothing and returns False when no row has a baseline to compare with."""
    import numpy as np
    from matplotlib.figure import Figure

    from dstbench.checkpoint import atomic_write

    blocks = []  # per setting: its rows by algorithm, in order of sparsity
    for setting, rows in _settings(summary).items():
        by_algorithm: dict[str, list[Row]] = {}
        for row in sorted((row for row in rows if row.cell_gains), key=lambda row: row.sparsity):
            by_algorithm.setdefault(row.algorithm, []).append(row)
        if by_algorithm:
            blocks.append((setting, by_algorithm))
    if not blocks:
        return False
    columns = max(len(rows) for _, by_algorithm in blocks for rows in by_algorithm.values())
    lines = sum(len(by_algorithm) for _, by_algorithm in blocks)
    tallest = max(len(row.cell_gains or {}) for _, by_algorithm in blocks for r in by_algorithm.values() for row in r)
    figure = Figure(figsize=(1.6 + 2.4 * columns, (1.2 + 0.28 * tallest) * lines), layout="constrained")
    axes = iter(figure.subplots(lines, columns, squeeze=False))
    for setting, by_algorithm in blocks:
        grids = [row.cell_gains or {} for rows in by_algorithm.values() for row in rows]
        corruptions = list(dict.fromkeys(c for grid in grids for c in grid))
        severities = sorted({s for grid in grids for cells in grid.values() for s in cells}, key=int)
        every = np.array([[[g.get(c, {}).get(s) for s in severities] for c in corruptions] for g in grids], float)
        limit = max(1.0, float(np.nanmax(np.abs(every)))) if np.isfinite(every).any() else 1.0
        block_axes = []
        for algorithm, rows in by_algorithm.items():
            panels = next(axes)
            for ax in panels[len(rows) :]:
                ax.set_axis_off()
            for ax, row in zip(panels, rows, strict=False):
                cells = row.cell_gains or {}
                grid = np.array([[cells.get(c, {}).get(s) for s in severities] for c in corruptions], float)
                image = ax.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
                for (y, x), gain in np.ndenumerate(grid):
                    label = "n/a" if np.isnan(gain) else "0" if round(gain) == 0 else f"{gain:+.0f}"
                    ax.text(x, y, label, ha="center", va="center", fontsize=6)
                ax.set(title=f"{algorithm} {row.sparsity:g}", xlabel="severity")
                ax.set_xticks(range(len(severities)), severities)
                ax.set_yticks(range(len(corruptions)), corruptions if ax is panels[0] else [], fontsize=7)
                block_axes.append(ax)
            panels[0].set_ylabel(_title(setting))
        figure.colorbar(image, ax=block_axes, label=f"accuracy gain over {summary.baseline} (%)")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return True


def write_summary(summary: Summary, folder: Path, missing: list[str]) -> str:
    """Write summary.json, summary.png and, when some row has a baseline, gains.png; a line naming them."""
    from dstbench.checkpoint import write_json

    json_path, png_path, gains_path = folder / "summary.json", folder / "summary.png", folder / "gains.png"
    write_json(json_path, {**summary.to_dict(), "missing": missing})
    plot(summary, png_path)
    if plot_gains(summary, gains_path):
        return f"summary: {json_path}  plot: {png_path}  gains: {gains_path}"
    gains_path.unlink(missing_ok=True)  # an earlier summary's, with a baseline these runs no longer have
    return f"summary: {json_path}  plot: {png_path}"
