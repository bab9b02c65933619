"""Rich tables for results, registries and plugins."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from dstbench.plugins import Plugins


def _acc_style(acc: float, clean: float) -> str:
    """Green near the clean accuracy, red when a corruption halves it."""
    ratio = acc / clean if clean else 0
    return "green" if ratio >= 0.9 else "yellow" if ratio >= 0.5 else "red"


def results(entry: dict[str, Any]) -> Group:
    """The corruption × severity grid of an entry with row means, and a line of the summary metrics."""
    severities = entry["evaluation"]["severities"]
    clean = entry["clean_acc"]
    algorithm = entry["algorithm"]["name"]
    if entry["sparsity"]["target"]:
        algorithm += f" {entry['sparsity']['target']:.0%} sparse"
    title = f"{entry['dataset']} · {entry['model']} · {algorithm} · seed {entry['seed']} · {entry['suite']}"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("corruption")
    for s in severities:
        table.add_column(f"sev {s}", justify="right")
    table.add_column("mean", justify="right", style="bold")
    for name, row in entry["corruptions"].items():
        accs = [row[str(s)] for s in severities]
        cells = [f"[{_acc_style(a, clean)}]{a:.2f}[/]" for a in accs]
        table.add_row(name, *cells, f"{sum(accs) / len(accs):.2f}")
    summary = (
        f"clean [bold]{clean:.2f}%[/]   mPC [bold]{entry['corruptions_acc']:.2f}%[/]   rPC {entry['rpc']:.3f}   "
        f"mCE {_optional_percent(entry['corruptions_mce'])}   "
        f"relative mCE {_optional_percent(entry['corruptions_relative_mce'])}   "
        f"sparsity {entry['sparsity']['achieved']:.1%} achieved"
    )
    return Group(table, Text.from_markup(summary))


def _optional_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _extra_columns(kind: str, obj: Any) -> dict[str, str]:
    if kind == "dataset":
        return {
            "classes": str(obj.num_classes),
            "images": f"{obj.channels}×{obj.image_size}²",
            "modality": obj.modality,
        }
    if kind == "suite":
        return {
            "corruptions": f"{len(obj.corruptions)}: {', '.join(obj.corruptions)}",
            "subsets (--corruptions)": ", ".join(f"{name} ({len(names)})" for name, names in obj.subsets.items())
            or "—",
            "severities": ",".join(map(str, obj.severities)),
            "resolution": obj.resolution,
        }
    if kind == "trainer":
        return {"modality": obj.modality, "default": "yes" if obj.default else ""}
    if kind == "algorithm":  # the options --algo-opt sets, with their defaults
        options = ", ".join(f"{f.name}={_option_default(f)}" for f in dataclasses.fields(obj.Options))
        return {"sparse": "yes" if obj.sparse else "no", "options (--algo-opt)": options or "—"}
    return {}


def _option_default(option: dataclasses.Field) -> Any:
    if option.default is not dataclasses.MISSING:
        return option.default
    return option.default_factory() if option.default_factory is not dataclasses.MISSING else "(required)"


def registry_rows(plugins: Plugins, kind: str) -> list[dict[str, str]]:
    rows = []
    for name, item in sorted(plugins.registry.entries[kind].items()):
        description = getattr(item.obj, "description", None) or getattr(item.obj, "help", None) or ""
        rows.append(
            {
                "name": name,
                **_extra_columns(kind, item.obj),
                "description": description.split("\n")[0],
                "plugin": item.plugin,
                "from": f"{item.distribution} {item.version}",
            }
        )
    return rows


def rows_table(title: str, rows: list[dict[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in rows[0] if rows else ["name"]:
        table.add_column(column, overflow="fold", style="bold cyan" if column == "name" else None)
    for row in rows:
        table.add_row(*row.values())
    return table


def plugin_rows(plugins: Plugins) -> list[dict[str, str]]:
    return [
        {
            "plugin": info.name,
            "from": f"{info.distribution} {info.version}",
            "kind": "built-in" if info.builtin else "external",
            "status": f"[red]skipped: {info.error}[/]" if info.error else "[green]ok[/]",
            "registers": "; ".join(f"{k}: {', '.join(v)}" for k, v in info.registered.items()),
            "hooks": ", ".join(info.hooks),
        }
        for info in plugins.infos.values()
    ]
