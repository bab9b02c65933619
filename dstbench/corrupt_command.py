"""`dstbench corrupt`: corrupt image files, or a dataset's first test samples, and write the results as PNGs.

Each sample is corrupted exactly as the evaluation corrupts it: its random numbers come from
`SampleRNG.for_samples(seed, suite, corruption, severity, ids=[id])`, where the id of a file is its position in the
argument list and the id of a dataset sample its test id. Everything is read, checked and corrupted before the
first file is written, so bad input leaves nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
import torch

from dstbench.config import split_list
from dstbench.corruption import SampleRNG, parse_severities
from dstbench.data.sources import describe
from dstbench.errors import UserError
from dstbench.options import check_writable
from dstbench.report import make_reporter

if TYPE_CHECKING:
    from dstbench.corruption import CorruptionSuite
    from dstbench.plugins import Plugins
    from dstbench.report import Reporter

EXAMPLES = """
\b
Examples:
  dstbench corrupt photo.png --suite cifar-c-noise --corruption gaussian_noise --severity 3 --out corrupted
  dstbench corrupt a.png b.jpg --suite cifar-c --corruption noise,contrast --severities 1-5 --out corrupted
  dstbench corrupt photo.png --suite imagenet-c --grid --out preview       one image, every corruption x severity
  dstbench corrupt --dataset cifar10 --data-dir ~/data --samples 8 --suite cifar-c --severity 5 --out seen
\b
Files are named <stem>_<corruption>_s<severity>.png (a dataset sample's stem is <dataset>_<test id>); --grid writes
grid_<suite>.png instead: a row per corruption and image, a clean column, then a column per severity.
Grey images (1-, 8- and 16-bit) are corrupted as 8-bit grey; RGBA and other modes are converted to RGB
(transparency dropped), with a note; 32-bit integer or float images are refused.
"""

SEED_LIMIT = 2**32
GRID_PADDING = 2  # white pixels between the cells of a grid


@dataclass(frozen=True)
class Sample:
    """One image to corrupt: uint8 (C, H, W), the id that seeds its random numbers, and the stem of its outputs."""

    image: torch.Tensor
    id: int
    stem: str


@click.command(epilog=EXAMPLES)
@click.argument("images", nargs=-1, metavar="[IMAGE]...")
@click.option("--suite", "suite_name", required=True, help="Corruption suite (see `dstbench list --kind suite`).")
@click.option(
    "--corruption",
    "corruption_names",
    multiple=True,
    metavar="C[,C]",
    help="Corruptions or subsets (repeatable or comma-separated); default: all of the suite's.",
)
@click.option("--severity", "--severities", "severity_text", metavar="S", help="'3', '1,3,5' or '1-5'; default: all.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs (created if needed).")
@click.option("--seed", default=0, show_default=True, type=int, help="The evaluation's --corruption-seed.")
@click.option("--dataset", help="Corrupt the first --samples test samples of this dataset instead of files.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the dataset is, as for `dstbench run`.")
@click.option("--samples", type=int, help="How many test samples of --dataset  [default: 8]")
@click.option("--grid", is_flag=True, help="Write one preview grid instead of a file per image and cell.")
@click.pass_context
def corrupt(
    ctx: click.Context,
    images: tuple[str, ...],
    suite_name: str,
    corruption_names: tuple[str, ...],
    severity_text: str | None,
    out: Path,
    seed: int,
    dataset: str | None,
    data_dir: Path | None,
    samples: int | None,
    grid: bool,
) -> None:
    """Corrupt images with a suite, as the evaluation does, and write the results as lossless PNGs of the same size.

    IMAGE files (any format PIL reads) or, with --dataset, a dataset's first test samples, which are then exactly
    the images the evaluation scores with the same --corruption-seed.
    """
    plugins: Plugins = ctx.find_root().obj
    reporter = make_reporter()
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"--seed must be in [0, 2**32), got {seed}")
    check_writable(out, "--out")
    suite = plugins.registry.suite(suite_name)
    if suite.modality != "image":
        raise UserError(f"dstbench corrupt writes images; suite '{suite_name}' corrupts {suite.modality}")
    try:
        names = [name for text in corruption_names for name in split_list(text)]
    except ValueError as exc:
        raise UserError(f"--corruption: {exc}") from None
    if corruption_names and not names:
        raise UserError("--corruption is empty; name corruptions or subsets, or leave it out for all")
    severities = parse_severities(severity_text) if severity_text is not None else None
    corruptions, severities = suite.select(names or None, severities)
    inputs = _inputs(plugins, images, dataset, data_dir, samples, reporter)
    for sample in inputs:
        height, width = sample.image.shape[1:]
        if suite.square_only and height != width:
            raise UserError(f"suite '{suite.name}' corrupts square images only; {sample.stem} is {width}x{height} px")
        suite.check_input(sample.image.shape[0], min(height, width), corruptions)
    outputs = _outputs(suite, inputs, corruptions, severities, seed, grid, reporter)
    _write_pngs(outputs, out)
    reporter.info(f"wrote {len(outputs)} PNG file(s) to {out}")


def _outputs(
    suite: CorruptionSuite,
    inputs: list[Sample],
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    seed: int,
    grid: bool,
    reporter: Reporter,
) -> dict[str, torch.Tensor]:
    """The images to write, by file name: one per sample and cell, or the grid."""
    if grid and len({tuple(sample.image.shape[1:]) for sample in inputs}) > 1:
        raise UserError("--grid needs images of one size; these differ in size")
    cells = [(c, s) for c in corruptions for s in severities]
    corrupted = {cell: [_corrupt(suite, sample, *cell, seed) for sample in inputs] for cell in cells}
    if grid:
        columns = ", ".join(f"severity {s}" for s in severities)
        reporter.info(f"grid rows: {', '.join(corruptions)}, each for every image; columns: clean, {columns}")
        return {f"grid_{suite.name}.png": _grid(inputs, corrupted, corruptions, severities)}
    return {
        f"{sample.stem}_{c}_s{s}.png": image
        for (c, s), row in corrupted.items()
        for sample, image in zip(inputs, row, strict=True)
    }


def _inputs(
    plugins: Plugins,
    images: tuple[str, ...],
    dataset: str | None,
    data_dir: Path | None,
    samples: int | None,
    reporter: Reporter,
) -> list[Sample]:
    """The samples to corrupt: the image files, or the dataset's first test samples."""
    if dataset is None:
        if samples is not None or data_dir is not None:
            raise UserError("--samples and --data-dir need --dataset")
        if not images:
            raise UserError("give image files to corrupt, or --dataset NAME for a dataset's test samples")
        return _file_samples(images, reporter)
    if images:
        raise UserError("give image files or --dataset, not both")
    return _dataset_samples(plugins, dataset, data_dir, 8 if samples is None else samples, reporter)


def _file_samples(paths: tuple[str, ...], reporter: Reporter) -> list[Sample]:
    """Each file as a sample whose id is its position in the argument list; stems must differ."""
    stems = [Path(path).stem for path in paths]
    repeated = next((stem for stem in stems if stems.count(stem) > 1), None)
    if repeated is not None:
        raise UserError(f"two images are named '{repeated}', so their outputs would collide; rename one")
    return [
        Sample(_read_image(path, reporter), position, stem)
        for position, (path, stem) in enumerate(zip(paths, stems, strict=True))
    ]


def _read_image(path: str, reporter: Reporter) -> torch.Tensor:
    """A file as uint8 (C, H, W): grey images keep one channel, RGB three; other modes become RGB, with a note."""
    from PIL import Image

    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give image files")
    if not os.path.isfile(path):
        raise UserError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            pixels = _pixels(image, path, reporter)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot read image {path} ({describe(exc)})") from None
    tensor = torch.from_numpy(pixels)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _pixels(image, path: str, reporter: Reporter) -> np.ndarray:
    """8-bit grey or RGB pixels of a PIL image: 16-bit grey scaled to 8 bits, other modes converted, with a note."""
    if image.mode in ("L", "RGB"):
        return np.array(image)
    if image.mode in ("I", "F"):  # no range to scale from
        raise UserError(f"{path} is a 32-bit ({image.mode}) image; save it as 8-bit grey or RGB")
    grey = image.mode == "1" or image.mode.startswith(("I;16", "LA"))
    transparent = "A" in image.mode or "transparency" in image.info
    dropped = ", transparency dropped" if transparent else ""
    reporter.info(f"{path} is a {image.mode} image; corrupting it as {'8-bit grey' if grey else 'RGB'}{dropped}")
    if image.mode.startswith("I;16"):
        from dstbench.data.sources import grey_to_8_bit

        return np.array(grey_to_8_bit(image))
    return np.array(image.convert("L" if grey else "RGB"))


def _dataset_samples(
    plugins: Plugins, name: str, data_dir: Path | None, count: int, reporter: Reporter
) -> list[Sample]:
    """The first `count` test samples of a dataset (fewer if it has fewer), identified by their test ids."""
    from dstbench.data import LoadRequest, StreamImages
    from dstbench.runner import cache_dir

    if count < 1:
        raise UserError(f"--samples must be at least 1, got {count}")
    spec = plugins.registry.dataset(name)
    if spec.modality != "image":
        raise UserError(f"dstbench corrupt writes images; dataset '{name}' holds {spec.modality}")
    test = spec.load(LoadRequest(data_dir.expanduser() if data_dir else None, False, cache_dir(), reporter)).test
    test = test.subset(torch.arange(min(count, len(test))))
    if isinstance(test, StreamImages):
        test.workers = 0  # a handful of samples: not worth starting worker processes
    batch = next(test.batches(len(test), torch.device("cpu"), train=False))
    return [Sample(image, int(i), f"{name}_{int(i)}") for image, i in zip(batch.images, batch.ids, strict=True)]


def _corrupt(suite: CorruptionSuite, sample: Sample, corruption: str, severity: int, seed: int) -> torch.Tensor:
    rng = SampleRNG.for_samples(seed, suite.name, corruption, severity, ids=torch.tensor([sample.id]))
    return suite.corrupt(sample.image[None], corruption, severity, rng)[0]


def _grid(
    inputs: list[Sample],
    corrupted: dict[tuple[str, int], list[torch.Tensor]],
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
) -> torch.Tensor:
    """uint8 (3, H', W'): for every corruption and image a row of the clean image and its corrupted versions."""
    from torchvision.utils import make_grid

    cells = [
        image.expand(3, -1, -1)
        for corruption in corruptions
        for position, sample in enumerate(inputs)
        for image in (sample.image, *(corrupted[(corruption, s)][position] for s in severities))
    ]
    return make_grid(torch.stack(cells), nrow=1 + len(severities), padding=GRID_PADDING, pad_value=255)


def _write_pngs(outputs: dict[str, torch.Tensor], out: Path) -> None:
    """Each uint8 (C, H, W) image as a PNG in `out`, written under a temporary name and then renamed into place."""
    from PIL import Image

    from dstbench.checkpoint import atomic_write

    for name, image in outputs.items():
        picture = Image.fromarray(image.permute(1, 2, 0).squeeze(2).contiguous().numpy())
        atomic_write(out / name, lambda tmp, picture=picture: picture.save(tmp, format="PNG"), mode=0o644)
