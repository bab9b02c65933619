"""`dstbench masks`: the layer-wise densities a sparsity distribution gives a model, and what they save in FLOPs."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import click
import torch
from rich.console import Group
from rich.table import Table
from torch import nn

from dstbench.errors import UserError
from dstbench.models import Classifier, ModelRequest
from dstbench.report import make_reporter
from dstbench.sparse import first_and_last, sparsifiable
from dstbench.sparse.distributions import DISTRIBUTIONS, MAX_ERK_POWER_SCALE, densities, nonzero_counts
from dstbench.sparse.flops import CONVENTION, FLOPS_PER_MAC, layer_macs, sparse_macs, training_flops

if TYPE_CHECKING:
    from dstbench.plugins import Plugins

EXAMPLES = """
\b
Examples:
  dstbench masks --model cifar-resnet18 --sparsity 0.5 --distribution erk
  dstbench masks --model cifar-vgg16 --sparsity 0.9 --distribution uniform --dense-first --dense-last
  dstbench masks --model resnet50 --image-size 224 --sparsity 0.8 --distribution erk --format json
  dstbench masks --model r3d_18 --dataset ucf101 --frames 16 --sparsity 0.5 --distribution erk
"""


def model_and_input_shape(
    plugins: Plugins, model: str, dataset: str, image_size: int | None, frames: int | None = None
) -> tuple[nn.Module, tuple[int, ...]]:
    """The model a run on `dataset` would train (wrapped in its `Classifier`, so layer names match a run's), and one
    input sample's shape: (C, H, W), or (C, T, H, W) for video. The model lives on the meta device: only shapes are
    computed, so nothing is loaded and any input size costs no memory."""
    spec, variant = plugins.registry.model(model)
    data = plugins.registry.dataset(dataset)
    if spec.modality != data.modality:
        raise UserError(f"model '{model}' takes {spec.modality} input but dataset '{dataset}' is {data.modality}")
    size = image_size or data.image_size
    if data.modality == "video":
        frames = frames or data.recipe.get("frames")
        if frames is None:
            raise UserError(f"dataset '{dataset}' has no default clip length; pass --frames")
        shape = (data.channels, frames, size, size)
    elif frames is not None:
        raise UserError(f"--frames applies to video datasets; '{dataset}' is {data.modality}")
    else:
        shape = (data.channels, size, size)
    with torch.device("meta"):
        net = Classifier(
            spec.build(ModelRequest(data.num_classes, data.channels, size, variant, frames)), data.mean, data.std
        )
    return net, shape


def mask_report(
    model: nn.Module,
    input_shape: tuple[int, ...],
    sparsity: float,
    distribution: str,
    *,
    dense_first: bool = False,
    dense_last: bool = False,
    erk_power_scale: float = 1.0,
    delta_t: int = 100,
) -> dict[str, Any]:
    """Every sparsifiable layer's density, nonzeros and FLOPs under `distribution`, and the model's totals."""
    weights = sparsifiable(model)
    shapes = {name: tuple(weight.shape) for name, weight in weights.items()}
    dense = first_and_last(weights, first=dense_first, last=dense_last)
    layer_densities = densities(shapes, sparsity, distribution, dense=dense, erk_power_scale=erk_power_scale)
    nonzeros = nonzero_counts(shapes, layer_densities)
    try:
        macs = layer_macs(model, input_shape)
    except RuntimeError as exc:  # e.g. an input smaller than the model's kernels and poolings
        reason = str(exc).strip().splitlines()[0]
        raise UserError(
            f"the model cannot take an input of shape {'×'.join(map(str, input_shape))}: {reason}"
        ) from None
    dense_flops = FLOPS_PER_MAC * sum(macs.values())
    sparse_flops = FLOPS_PER_MAC * sparse_macs(macs, layer_densities)
    training = training_flops(sparse_flops, dense_flops, delta_t)
    sizes = {name: weight.numel() for name, weight in weights.items()}
    return {
        "input_shape": list(input_shape),
        "sparsity": sparsity,
        "distribution": distribution,
        "dense_first": dense_first,
        "dense_last": dense_last,
        "erk_power_scale": erk_power_scale,
        "delta_t": delta_t,
        "flops": f"{CONVENTION}, per {'clip' if len(input_shape) == 4 else 'image'}",
        "layers": [
            {
                "name": name,
                "shape": list(shape),
                "density": layer_densities[name],
                "nonzeros": nonzeros[name],
                "numel": sizes[name],
                "dense_flops": FLOPS_PER_MAC * macs[name],
                "sparse_flops": FLOPS_PER_MAC * macs[name] * layer_densities[name],
            }
            for name, shape in shapes.items()
        ],
        "totals": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "sparsifiable_parameters": sum(sizes.values()),
            "nonzeros": sum(nonzeros.values()),
            "sparsity": 1 - sum(nonzeros.values()) / sum(sizes.values()),
            "inference_flops": {"dense": dense_flops, "sparse": sparse_flops},
            "training_flops": {
                method: {"flops": flops, "vs_dense": flops / training.dense if training.dense else 1.0}
                for method, flops in dataclasses.asdict(training).items()
            },
        },
    }


def _si(value: float) -> str:
    """Three significant digits and an SI prefix: 1234567 -> '1.23 M', 27e6 -> '27.0 M'."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:#.3g}".rstrip(".") + f" {prefix}"
    return f"{value:#.3g}".rstrip(".")


def report_tables(report: dict[str, Any], title: str) -> Group:
    """The per-layer table and the totals table of a `mask_report`."""
    layers = Table(title=title, title_justify="left", caption=report["flops"], caption_justify="left")
    for column in ("layer", "shape", "density", "nonzeros", "of", "FLOPs dense", "FLOPs sparse"):
        layers.add_column(column, justify="left" if column in ("layer", "shape") else "right")
    for row in report["layers"]:
        layers.add_row(
            row["name"],
            "×".join(map(str, row["shape"])),
            f"[bold]{row['density']:.4f}[/]" if row["density"] == 1 else f"{row['density']:.4f}",
            f"{row['nonzeros']:,}",
            f"{row['numel']:,}",
            _si(row["dense_flops"]),
            _si(row["sparse_flops"]),
        )
    totals = report["totals"]
    inference, training = totals["inference_flops"], totals["training_flops"]
    summary = Table(title="totals", title_justify="left", show_header=False)
    summary.add_column(style="bold cyan")
    summary.add_column(justify="right")
    summary.add_column()
    summary.add_row("parameters", f"{totals['parameters']:,}", f"{totals['sparsifiable_parameters']:,} sparsifiable")
    summary.add_row("nonzeros", f"{totals['nonzeros']:,}", f"sparsity {totals['sparsity']:.2%} achieved")
    summary.add_row("inference FLOPs, dense", _si(inference["dense"]), "f_D")
    summary.add_row(
        "inference FLOPs, sparse", _si(inference["sparse"]), f"f_S = {training['static_sparse']['vs_dense']:.3f} f_D"
    )
    notes = {
        "dense": "3·f_D",
        "static_sparse": "3·f_S (static mask, SET)",
        "rigl": f"(3·f_S·ΔT + 2·f_S + f_D) / (ΔT + 1), ΔT = {report['delta_t']}",
    }
    for method, cost in training.items():
        summary.add_row(
            f"training FLOPs, {method.replace('_', ' ')}",
            _si(cost["flops"]),
            f"{cost['vs_dense']:.3f}× dense  {notes[method]}",
        )
    return Group(layers, summary)


@click.command(epilog=EXAMPLES)
@click.option("--model", required=True, help="Model name (see `dstbench list --kind model`).")
@click.option("--sparsity", type=float, required=True, help="Target fraction of zero weights, in [0, 1).")
@click.option(
    "--distribution", required=True, metavar="|".join(DISTRIBUTIONS), help="Layer-wise sparsity distribution."
)
@click.option("--dense-first", is_flag=True, help="Keep the first conv/linear layer dense.")
@click.option("--dense-last", is_flag=True, help="Keep the last conv/linear layer (the classifier) dense.")
@click.option("--erk-power-scale", type=float, default=1.0, show_default=True, help="Exponent on the ERK scores.")
@click.option(
    "--dataset", default="cifar10", show_default=True, help="Sets classes, channels and image size; no data is read."
)
@click.option("--image-size", type=int, help="Input side in pixels [default: the dataset's].")
@click.option("--frames", type=int, help="Frames per clip, for video models [default: the dataset's].")
@click.option("--delta-t", type=int, default=100, show_default=True, help="Steps between RigL mask updates (ΔT).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Rich tables, or one JSON document (layers and totals).",
)
@click.pass_context
def masks(
    ctx: click.Context,
    model: str,
    sparsity: float,
    distribution: str,
    dense_first: bool,
    dense_last: bool,
    erk_power_scale: float,
    dataset: str,
    image_size: int | None,
    frames: int | None,
    delta_t: int,
    output_format: str,
) -> None:
    """Show each layer's density, nonzeros and FLOPs under a sparsity distribution, and the model's inference and
    training FLOPs (dense, static sparse / SET, RigL), as RigL's appendix counts them.

    FLOPs are 2 × the multiply-adds of conv and linear layers, per image, counted in one forward pass.
    """
    if not 0 <= sparsity < 1:
        raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
    if not 0 < erk_power_scale <= MAX_ERK_POWER_SCALE:
        raise UserError(f"--erk-power-scale must be in (0, {MAX_ERK_POWER_SCALE}], got {erk_power_scale}")
    if image_size is not None and image_size < 1:
        raise UserError(f"--image-size must be a positive number of pixels, got {image_size}")
    if frames is not None and frames < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    if delta_t < 1:
        raise UserError(f"--delta-t must be at least 1 step, got {delta_t}")
    net, input_shape = model_and_input_shape(ctx.find_root().obj, model, dataset, image_size, frames)
    report = mask_report(
        net,
        input_shape,
        sparsity,
        distribution,
        dense_first=dense_first,
        dense_last=dense_last,
        erk_power_scale=erk_power_scale,
        delta_t=delta_t,
    )
    report = {"model": model, "dataset": dataset, **report}
    if output_format == "json":
        click.echo(json.dumps(report, indent=2))
        return
    kept = [label for label, flag in (("first", dense_first), ("last", dense_last)) if flag]
    clip = f"{input_shape[1]} frames of " if len(input_shape) == 4 else ""
    title = f"{dataset} · {model} · {clip}{input_shape[-1]} px · {distribution} {sparsity:.0%} sparse" + (
        f" · {' and '.join(kept)} dense" if kept else ""
    )
    make_reporter().result(report_tables(report, title))
