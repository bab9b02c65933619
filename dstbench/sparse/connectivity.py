"""`dstbench connectivity`: which input → output channel pairs a trained sparse model still connects, as the
heat maps of the paper's Sec. 5 (the share of nonzero weights of every (output, input) channel pair of a layer).

A pair's density is the fraction of its kernel's weights that are nonzero (1 or 0 for a linear layer), counted in
the trained weights as `leaderboard submit` counts them. A dense model is 1 everywhere; DST models cut whole pairs.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import torch

from dstbench.errors import UserError
from dstbench.options import check_writable

if TYPE_CHECKING:
    from rich.table import Table

EXAMPLES = """
\b
Examples:
  dstbench connectivity runs/digits-digits-cnn-rigl-s0.3-seed0
  dstbench connectivity runs/x/model.pt --layers 'net.layer4.*' --out figures/rigl
"""
MAX_PANELS = 16  # heat maps in one figure; --layers picks others


def pair_density(weight: torch.Tensor) -> torch.Tensor:
    """float (out, in) of a conv (out, in / groups, *kernel) or linear (out, in) weight: the share of each channel
    pair's weights that are nonzero."""
    nonzero = weight.detach() != 0
    return nonzero.flatten(2).float().mean(2) if nonzero.ndim > 2 else nonzero.float()


@dataclass(frozen=True)
class LayerConnectivity:
    name: str
    shape: list[int]
    density: float  # nonzero weights / weights
    cut: float  # share of channel pairs with no weight left
    full: float  # share of channel pairs with every weight left


def layer_connectivity(name: str, weight: torch.Tensor) -> tuple[LayerConnectivity, torch.Tensor]:
    pairs = pair_density(weight)
    summary = LayerConnectivity(
        name,
        list(weight.shape),
        float((weight != 0).float().mean()),
        float((pairs == 0).float().mean()),
        float((pairs == 1).float().mean()),
    )
    return summary, pairs


def connectivity_table(layers: list[LayerConnectivity], title: str) -> Table:
    from rich.table import Table

    table = Table(
        title=title, title_justify="left", caption="pairs: (output, input) channel pairs", caption_justify="left"
    )
    for column in ("layer", "shape", "density", "pairs cut", "pairs full"):
        table.add_column(column, justify="left" if column in ("layer", "shape") else "right")
    for layer in layers:
        shape = "×".join(map(str, layer.shape))
        table.add_row(layer.name, shape, f"{layer.density:.4f}", f"{layer.cut:.2%}", f"{layer.full:.2%}")
    return table


def plot(maps: dict[str, torch.Tensor], title: str, path: Path) -> None:
    """One heat map per layer (outputs down, inputs across), nonzero share 0 (white) to 1 (dark)."""
    from matplotlib.figure import Figure

    from dstbench.checkpoint import atomic_write

    columns = min(4, len(maps))
    rows = math.ceil(len(maps) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.0 * rows + 0.6), layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, (name, pairs) in zip(axes, maps.items(), strict=False):
        image = ax.imshow(pairs.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set(title=name, xlabel="input channel", ylabel="output channel")
        ax.title.set_fontsize(8)
    for ax in axes[len(maps) :]:
        ax.set_axis_off()
    figure.colorbar(image, ax=axes[: len(maps)].tolist(), shrink=0.6, label="nonzero share")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110), mode=0o644)


@click.command(epilog=EXAMPLES)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--layers", metavar="PATTERN", help="Only layers whose names match this glob, e.g. 'net.layer4.*'.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for connectivity.json and connectivity.png [default: the run's folder/connectivity].",
)
@click.pass_context
def connectivity(ctx: click.Context, run: Path, layers: str | None, out: Path | None) -> None:
    """Which (output, input) channel pairs of each conv and linear layer a trained model still connects: a table
    per layer (density, pairs cut, pairs full) and heat maps of every pair's share of nonzero weights (the first
    16 layers, or those --layers picks)."""
    from dstbench import checkpoint
    from dstbench.report import make_reporter
    from dstbench.runner import saved_config, saved_model
    from dstbench.sparse import sparsifiable

    plugins = ctx.find_root().obj
    model_path = run / "model.pt" if run.is_dir() else run
    saved = checkpoint.load_model(model_path)
    cfg = saved_config(saved, {"device": "cpu"}, plugins)
    model, _, _ = saved_model(saved, cfg, plugins)
    weights = {n: w for n, w in sparsifiable(model).items() if layers is None or fnmatch.fnmatchcase(n, layers)}
    if not weights:
        names = ", ".join(list(sparsifiable(model))[:4])
        raise UserError(f"--layers {layers!r} matches no conv or linear layer of {model_path} (e.g. {names}, ...)")
    out = out or model_path.parent / "connectivity"
    check_writable(out, "--out")
    summaries, maps = [], {}
    for name, weight in weights.items():
        summary, pairs = layer_connectivity(name, weight)
        summaries.append(summary)
        if len(maps) < MAX_PANELS:
            maps[name] = pairs
    sparsity = f"{cfg.sparsity:.0%} sparse" if cfg.sparsity else "dense"
    title = f"{cfg.dataset} · {cfg.model} · {cfg.algo} {sparsity} · seed {cfg.seed}"
    reporter = make_reporter()
    reporter.result(connectivity_table(summaries, title))
    checkpoint.write_json(
        out / "connectivity.json", {"run": str(model_path), "layers": [asdict(s) for s in summaries]}, mode=0o644
    )
    plot(maps, title, out / "connectivity.png")
    reporter.result(f"connectivity: {out / 'connectivity.json'} {out / 'connectivity.png'}")
