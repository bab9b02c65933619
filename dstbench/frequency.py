"""`dstbench frequency`: radius–accuracy curves, the paper's frequency analysis (Wu et al. 2025, Sec. 5), after Wang
et al., "High-frequency component helps explain the generalization of CNNs" (CVPR 2020, code HaohanWang/HFC).

Every clean test image is filtered in the 2-D Fourier domain, per channel, in its [0, 1] scale (before the model's
normalisation), with a radial mask of radius r: the low-pass image keeps the frequencies at distance < r from the
centre of the fftshift-ed spectrum, the high-pass image keeps the rest (1 − mask), and both are the real part of the
inverse FFT. The model's accuracy on each, against r, shows how much it relies on high frequencies.

Conventions:
- the centre is where fftshift puts the DC term, (H // 2, W // 2): HFC's (size / 2, size / 2) for the even sizes of
  every image dataset here (28, 32, 64, 224 px); at an odd size HFC's centre would sit half a pixel off the DC term;
- distance < r, strictly, as in HFC: r = 0 keeps nothing, r = 1 the DC term alone (each channel's mean), and any
  r above the largest distance sqrt((H // 2)² + (W // 2)²) keeps everything;
- no clipping, as in HFC: a high-pass image is centred on 0 (its mean went with the DC term), so clipping it to
  [0, 1] would erase half of it, and unclipped low + high is the image;
- the high-pass image is computed as image − low-pass, which equals HFC's inverse FFT of the spectrum × (1 − mask)
  (the inverse FFT is linear) at half the cost; a mask of all zeros or all ones gives 0 or the image itself, exactly.

The filter runs batched on the batch's device (a real FFT of the whole batch, one mask per radius built once on the
device), and correct counts accumulate there, read once per run at the end.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import torch
from torch import nn

from dstbench.errors import UserError
from dstbench.options import REEVALUATION_OPTIONS, check_writable, config_options, given

if TYPE_CHECKING:
    from rich.table import Table

    from dstbench.config import RunConfig
    from dstbench.data import ImageData
    from dstbench.plugins import Plugins
    from dstbench.report import Reporter

EXAMPLES = """
\b
Examples:
  dstbench frequency runs/digits-digits-cnn-dense-seed0 runs/digits-digits-cnn-rigl-s0.3-seed0
  dstbench frequency runs/a runs/b/model.pt --radii 0-16 --out figures/frequency
  dstbench frequency sweeps/cifar10-cifar-vgg16/runs/* --radii 0,2,4,8,12,16 --device cuda
  dstbench frequency runs/a --max-test-samples 1000 --eval-batch-size 250 --quiet
"""

# Settings that decide which test set `runner.load_data` returns: runs that agree on them share one load.
DATA_SETTINGS = (
    "dataset",
    "data_dir",
    "download",
    "max_train_samples",
    "max_test_samples",
    "workers",
    "split",
    "frames",
    "frame_stride",
    "skip_bad",
    "clip_cache_gib",
)


# --- the filter ---------------------------------------------------------------------------------------------------


def max_distance(height: int, width: int) -> float:
    """The largest distance from the spectrum's centre (H // 2, W // 2) to a frequency: that of the corner (0, 0)."""
    return math.hypot(height // 2, width // 2)


def default_radii(height: int, width: int) -> tuple[int, ...]:
    """Every integer from 0 to the first one above the largest distance, where the low-pass keeps everything:
    0..23 at 32 px, 0..20 at 28 px, 0..159 at 224 px."""
    return tuple(range(math.floor(max_distance(height, width)) + 2))


def parse_radii(text: str) -> tuple[int, ...]:
    """'8' -> (8,), '2,4,8' -> (2, 4, 8), '0-16' -> (0, 1, ..., 16); items combine ('0-4,8'). Sorted, unique."""
    radii: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?", item)
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise UserError(
                f"invalid --radii '{text}'; write whole numbers from 0 to 999,999, e.g. '8', '2,4,8' or '0-16'"
            )
        radii.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return tuple(sorted(radii))


def radial_masks(radii: tuple[int, ...], height: int, width: int, device: torch.device) -> torch.Tensor:
    """bool (R, H, W): mask k is True at the frequencies at distance < radii[k] from the centre of the fftshift-ed
    spectrum, as HFC's `mask_radial`, laid out unshifted (ifftshift-ed: the DC term at [0, 0]) as torch.fft's
    spectra are. Squared distances are integers, so the comparison is exact; built on the device."""
    i = torch.arange(height, device=device) - height // 2
    j = torch.arange(width, device=device) - width // 2
    squared = i[:, None] ** 2 + j[None, :] ** 2
    limits = torch.tensor(radii, dtype=torch.int64, device=device) ** 2
    return torch.fft.ifftshift(squared[None] < limits[:, None, None], dim=(-2, -1))


class RadialFilter:
    """Low-pass and high-pass filters at a set of radii for (..., H, W) float images. The masks are symmetric
    (the distance of f and −f is the same), so the filtered spectrum stays Hermitian and the real FFT's half
    spectrum carries all of it: irfft2(rfft2(x) · mask) is the real part of ifft2(fft2(x) · mask)."""

    def __init__(self, radii: tuple[int, ...], height: int, width: int, device: torch.device):
        self.radii, self.size = radii, (height, width)
        masks = radial_masks(radii, height, width, device)
        self.half_masks = masks[..., : width // 2 + 1].to(torch.float32)
        largest = (height // 2) ** 2 + (width // 2) ** 2
        # Decided on the host from the radii, so that no batch asks the device: nothing kept, or everything.
        self.empty = [r == 0 for r in radii]
        self.full = [r * r > largest for r in radii]

    def spectrum(self, images: torch.Tensor) -> torch.Tensor:
        """The real FFT of every channel of every image: what `low_pass` takes."""
        if tuple(images.shape[-2:]) != self.size:
            raise ValueError(f"images of {tuple(images.shape[-2:])} px; this filter is for {self.size}")
        return torch.fft.rfft2(images)

    def low_pass(self, images: torch.Tensor, spectrum: torch.Tensor, k: int) -> torch.Tensor:
        """The images keeping only the frequencies at distance < radii[k]."""
        if self.empty[k]:
            return torch.zeros_like(images)
        if self.full[k]:
            return images
        return torch.fft.irfft2(spectrum * self.half_masks[k], s=self.size)

    def __call__(self, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-pass, high-pass) images at radii[k]; low + high = the images."""
        low = self.low_pass(images, self.spectrum(images), k)
        return low, images - low


# --- the evaluation -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """A model's accuracy (%) on the clean test set and on its low- and high-pass filtered images, per radius."""

    clean_acc: float
    low: list[float]
    high: list[float]
    test_samples: int


@torch.no_grad()
def radius_accuracy(
    model: nn.Module,
    data: ImageData,
    radii: tuple[int, ...],
    *,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    channels_last: bool,
    reporter: Reporter,
    description: str = "frequency",
) -> Curves:
    """Accuracy on every test image, low-pass filtered and high-pass filtered at every radius. Each batch is
    transformed once and filtered for every radius in turn; correct counts stay on the device until the end."""
    from dstbench.train import model_input

    model.eval()
    filters: dict[tuple[int, int], RadialFilter] = {}
    correct = torch.zeros(1 + 2 * len(radii), dtype=torch.int64, device=device)
    samples = 0

    def score(images: torch.Tensor, labels: torch.Tensor, i: int) -> None:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        correct[i] += (logits.argmax(1) == labels).sum()

    with reporter.task(description, total=len(data) * (1 + 2 * len(radii)), unit="img") as task:
        for batch in data.batches(batch_size, device, train=False):
            images = model_input(batch.images, channels_last=False)
            size = tuple(images.shape[-2:])
            if size not in filters:  # one set of masks per image size (every batch has the same one)
                filters[size] = RadialFilter(radii, *size, device)
            radial = filters[size]
            score(images, batch.labels, 0)
            spectrum = radial.spectrum(images)
            for k in range(len(radii)):
                low = radial.low_pass(images, spectrum, k)
                score(low, batch.labels, 1 + k)
                score(images - low, batch.labels, 1 + len(radii) + k)
            samples += len(batch.labels)
            task.advance(len(batch.labels) * (1 + 2 * len(radii)))
    accuracy = (100 * correct.double() / max(samples, 1)).tolist()
    return Curves(accuracy[0], accuracy[1 : 1 + len(radii)], accuracy[1 + len(radii) :], samples)


# --- the command --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCurves:
    label: str
    path: str
    run_id: str
    dataset: str
    model: str
    algo: str
    sparsity: float
    seed: int
    clean_acc: float
    test_samples: int
    low: list[float]
    high: list[float]


@dataclass
class _Saved:
    path: Path  # as given
    model_path: Path
    saved: dict[str, Any]
    cfg: RunConfig | None = None


def _load_runs(paths: tuple[Path, ...]) -> list[_Saved]:
    from dstbench import checkpoint

    runs = []
    for path in paths:
        if path.is_dir() and not (path / "model.pt").exists():
            raise UserError(f"{path} holds no model.pt: not a finished run (give a run folder or its model.pt)")
        model_path = path / "model.pt" if path.is_dir() else path
        runs.append(_Saved(path, model_path, checkpoint.load_model(model_path)))
    return runs


def _check_images(runs: list[_Saved], plugins: Plugins) -> tuple[str, int]:
    """The runs' one image dataset and its image size; a UserError for a video run or runs of different datasets."""
    specs = []
    for run in runs:
        spec = plugins.registry.dataset(run.saved["config"].get("dataset"))
        if spec.modality != "image":
            raise UserError(
                f"{run.path} is a run on {spec.modality} dataset '{spec.name}'; the frequency analysis is for images"
            )
        specs.append(spec)
    first = specs[0]
    for run, spec in zip(runs, specs, strict=True):
        if (spec.name, spec.image_size) != (first.name, first.image_size):
            raise UserError(
                f"the runs must share a dataset and image size: {runs[0].path} is on {first.name} at "
                f"{first.image_size} px, {run.path} on {spec.name} at {spec.image_size} px"
            )
    return specs[0].name, specs[0].image_size


def _labels(configs: list[RunConfig], paths: list[Path]) -> list[str]:
    """'<algo> [<sparsity>] seed <seed>', with the model when the runs differ in it and the folder where two labels
    would be the same."""
    models = {cfg.model for cfg in configs}
    labels = []
    for cfg in configs:
        parts = [cfg.model] if len(models) > 1 else []
        parts.append(cfg.algo)
        if cfg.sparsity:
            parts.append(f"{cfg.sparsity:.0%}")
        parts.append(f"seed {cfg.seed}")
        labels.append(" ".join(parts))
    counts = {label: labels.count(label) for label in labels}
    return [
        f"{label} ({path.parent.name if path.name == 'model.pt' else path.name})" if counts[label] > 1 else label
        for label, path in zip(labels, paths, strict=True)
    ]


def _data_key(cfg: RunConfig) -> tuple:
    return tuple(str(getattr(cfg, name)) for name in DATA_SETTINGS)


def analyse(runs: list[_Saved], radii: tuple[int, ...], plugins: Plugins, reporter: Reporter) -> list[RunCurves]:
    """Each run's model on its own clean test set (loaded as `dstbench eval` loads it, once for runs that agree
    on how), at every radius."""
    from dstbench import runner
    from dstbench.train import resolve_precision

    labels = _labels([run.cfg for run in runs], [run.path for run in runs])
    loaded: dict[tuple, Any] = {}
    results = []
    for run, label in zip(runs, labels, strict=True):
        cfg = run.cfg
        model, device, channels_last = runner.saved_model(run.saved, cfg, plugins)
        key = (_data_key(cfg), str(device))
        if key not in loaded:
            loaded.clear()  # one test set held at a time
            loaded[key] = runner.load_data(cfg, plugins, reporter, device).test
        curves = radius_accuracy(
            model,
            loaded[key],
            radii,
            device=device,
            batch_size=cfg.eval_batch_size,
            bf16=resolve_precision(cfg.precision, device) == "bf16",
            channels_last=channels_last,
            reporter=reporter,
            description=f"frequency: {label}",
        )
        results.append(
            RunCurves(
                label=label,
                path=str(run.model_path),
                run_id=cfg.run_id,
                dataset=cfg.dataset,
                model=cfg.model,
                algo=cfg.algo,
                sparsity=cfg.sparsity,
                seed=cfg.seed,
                clean_acc=curves.clean_acc,
                test_samples=curves.test_samples,
                low=curves.low,
                high=curves.high,
            )
        )
        del model
    return results


def frequency_table(results: list[RunCurves], radii: tuple[int, ...], title: str) -> Table:
    """A row per radius, a low-pass and a high-pass column per run, and the clean accuracy last."""
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        caption="accuracy (%); low: frequencies at distance < r kept, high: the rest",
        caption_justify="left",
    )
    table.add_column("r", justify="right", style="bold cyan")
    for result in results:
        table.add_column(f"{result.label}\nlow", justify="right")
        table.add_column(f"{result.label}\nhigh", justify="right")
    for k, radius in enumerate(radii):
        table.add_row(str(radius), *(f"{acc:.2f}" for r in results for acc in (r.low[k], r.high[k])))
    table.add_section()
    table.add_row("clean", *(f"{acc:.2f}" for r in results for acc in (r.clean_acc, r.clean_acc)))
    return table


def plot(results: list[RunCurves], radii: tuple[int, ...], title: str, path: Path) -> None:
    """Two panels, low-pass and high-pass: accuracy against radius, a line per run."""
    from matplotlib.figure import Figure

    from dstbench.checkpoint import atomic_write

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (kind, name) in zip(axes, (("low", "low-pass"), ("high", "high-pass")), strict=True):
        for result in results:
            linestyle = "--" if result.algo == "dense" else "-"
            ax.plot(radii, getattr(result, kind), marker="o", markersize=3, linestyle=linestyle, label=result.label)
        ax.set(title=f"{name} · {title}", xlabel="radius r", ylim=(-2, 102))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120), mode=0o644)


def write_results(
    results: list[RunCurves], radii: tuple[int, ...], dataset: str, image_size: int, out: Path
) -> tuple[Path, Path]:
    from dstbench.checkpoint import write_json

    json_path, png_path = out / "frequency.json", out / "frequency.png"
    data = {
        "dataset": dataset,
        "image_size": image_size,
        "radii": list(radii),
        "max_distance": max_distance(image_size, image_size),
        "filter": (
            "per channel, on [0, 1] images before normalisation: low-pass keeps the frequencies at distance < r "
            "from (size // 2, size // 2) of the fftshift-ed 2-D spectrum, high-pass the rest; real part of the "
            "inverse FFT, not clipped (Wang et al. 2020, HFC)"
        ),
        "runs": [asdict(result) for result in results],
    }
    write_json(json_path, data, mode=0o644)
    plot(results, radii, f"{dataset} · {image_size} px", png_path)
    return json_path, png_path


@click.command(epilog=EXAMPLES)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--radii",
    metavar="R",
    help="Radii: '0-16', '2,4,8' or both ('0-4,8') [default: 0 to the first above the largest distance, "
    "0..23 at 32 px].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for frequency.json and frequency.png [default: the first run's folder/frequency].",
)
@config_options(REEVALUATION_OPTIONS)
@click.pass_context
def frequency(ctx: click.Context, runs: tuple[Path, ...], radii: str | None, out: Path | None, **flags) -> None:
    """Radius–accuracy curves (the paper's Sec. 5, after Wang et al. 2020): accuracy of each run's model on its
    clean test images low-pass and high-pass filtered in the Fourier domain, against the filter's radius.

    RUNS are run folders or model.pt files, all on one image dataset. Low-pass keeps the frequencies at distance
    < r from the centre of the shifted spectrum, high-pass the rest; images are filtered per channel in [0, 1],
    before normalisation, and not clipped.
    """
    from dstbench.report import make_reporter
    from dstbench.runner import saved_config

    plugins = ctx.find_root().obj
    flags = given(flags)
    chosen = parse_radii(radii) if radii is not None else None
    saved = _load_runs(runs)
    dataset, image_size = _check_images(saved, plugins)
    for run in saved:
        run.cfg = saved_config(run.saved, flags, plugins)
    out = out or (saved[0].model_path.parent / "frequency")
    check_writable(out, "--out")
    useful = default_radii(image_size, image_size)
    if chosen is not None and chosen[-1] > useful[-1]:
        raise UserError(
            f"--radii {radii}: at {image_size} px the low-pass keeps every frequency from radius {useful[-1]} on; "
            f"give radii from 0 to {useful[-1]}"
        )
    chosen = chosen if chosen is not None else useful
    reporter = make_reporter(flags.get("quiet", False))
    results = analyse(saved, chosen, plugins, reporter)
    sizes = sorted({result.test_samples for result in results})
    if len(sizes) > 1:
        reporter.warn(
            f"the runs' test sets differ in size ({', '.join(map(str, sizes))} samples, each run's own "
            "--max-test-samples); pass --max-test-samples to compare them on one"
        )
    title = f"{dataset} · {image_size} px · radius–accuracy"
    reporter.result(frequency_table(results, chosen, title))
    json_path, png_path = write_results(results, chosen, dataset, image_size, out)
    reporter.result(f"frequency: {json_path} {png_path}")
