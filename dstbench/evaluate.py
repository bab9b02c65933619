"""Clean and corrupted accuracy of a model, and the robustness metrics derived from them.

Batches stream through corruption and model on the device; correct counts accumulate there and are read once
at the end. Each test batch is loaded once and corrupted for every (corruption, severity) cell in turn, so data
that streams from disk is decoded once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dstbench.corruption import SampleRNG
from dstbench.distributed import Distributed
from dstbench.entry import entry_grid
from dstbench.errors import UserError
from dstbench.train import model_input

if TYPE_CHECKING:
    from dstbench.corruption import CorruptionSuite
    from dstbench.data import ImageData
    from dstbench.report import Reporter

MIN_DROP = 1e-9  # accuracy points: a smaller summed drop of the baseline is float rounding of none


@dataclass(frozen=True)
class EvalResult:
    clean_acc: float  # percent
    corruption_acc: dict[str, dict[int, float]]  # corruption -> severity -> percent
    num_samples: int

    @property
    def mpc(self) -> float:
        """Mean accuracy over every (corruption, severity) cell (the paper's mPC; RobustBench's corruptions_acc when
        the cells are its 15 corruptions × 5 severities)."""
        return fmean(acc for row in self.corruption_acc.values() for acc in row.values())

    @property
    def rpc(self) -> float:
        return self.mpc / self.clean_acc if self.clean_acc else 0.0

    @classmethod
    def of_entry(cls, entry: dict[str, Any]) -> EvalResult:
        """The accuracies an entry records."""
        return cls(entry["clean_acc"], entry_grid(entry), entry["evaluation"]["test_samples"])

    def mce(self, baseline: dict[str, dict[int, float]]) -> float:
        """Mean corruption error relative to a baseline's accuracies (Hendrycks & Dietterich), in percent:
        the mean over corruptions of Σ_s error / Σ_s baseline error, over this result's cells (a baseline may have
        more)."""
        ratios = []
        for corruption, row in self.corruption_acc.items():
            base = _baseline_row(baseline, corruption, row, "mCE")
            base_error = sum(100 - base[s] for s in row)
            if base_error <= 0:
                raise UserError(f"the baseline makes no errors on {corruption}; mCE is undefined")
            ratios.append(sum(100 - acc for acc in row.values()) / base_error)
        return 100 * fmean(ratios)

    def relative_ces(self, baseline: EvalResult) -> dict[str, float | None]:
        """Relative corruption error of each corruption (Hendrycks & Dietterich): Σ_s (error − clean error) /
        Σ_s (baseline error − baseline clean error), how much accuracy drops under it against how much the
        baseline's drops, over this result's cells. None where the baseline's accuracy does not drop (Σ_s ≤ 0, up to
        float rounding): the ratio is undefined there."""
        ces: dict[str, float | None] = {}
        for corruption, row in self.corruption_acc.items():
            base = _baseline_row(baseline.corruption_acc, corruption, row, "relative mCE")
            base_drop = sum(baseline.clean_acc - base[s] for s in row)
            drop = sum(self.clean_acc - acc for acc in row.values())
            ces[corruption] = drop / base_drop if base_drop > MIN_DROP else None
        return ces

    def relative_mce(self, baseline: EvalResult) -> float | None:
        """Relative mCE, in percent: the mean of `relative_ces`. Negative when accuracy rises under corruption;
        None when one of them is undefined, since a mean over fewer corruptions would not compare with others."""
        ces = list(self.relative_ces(baseline).values())
        return None if None in ces else 100 * fmean(ces)


def _baseline_row(
    baseline: dict[str, dict[int, float]], corruption: str, severities: Iterable[int], metric: str
) -> dict[int, float]:
    """The baseline's accuracies on `corruption`; a UserError when it lacks one of these severities."""
    base = baseline.get(corruption, {})
    missing = sorted(set(severities) - set(base))
    if missing:
        at = "any severity" if not base else f"severities {', '.join(map(str, missing))}"
        raise UserError(
            f"the baseline has no results for {corruption} at {at}; {metric} needs its errors on every "
            "corruption and severity evaluated"
        )
    return base


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageData,
    suite: CorruptionSuite,
    corruptions: tuple[str, ...],
    severities: tuple[int, ...],
    *,
    device: torch.device,
    batch_size: int,
    seed: int,
    bf16: bool,
    channels_last: bool,
    reporter: Reporter,
    dist: Distributed | None = None,
) -> EvalResult:
    """Accuracy on the clean data and on every (corruption, severity) cell: corrupted on the fly from the clean
    batches, or read from the suite's released files. Under torch.distributed each process evaluates every n-th
    sample and the counts are summed, so every process returns the same result."""
    model.eval()
    dist = dist or Distributed()
    cells = [(c, s) for c in corruptions for s in severities]
    released = {cell: suite.released(*cell) for cell in cells}
    generated = [cell for cell in cells if released[cell] is None]
    correct = torch.zeros(1 + len(cells), dtype=torch.int64, device=device)
    counts = torch.zeros(1 + len(cells), dtype=torch.int64, device=device)

    def score(images: torch.Tensor, labels: torch.Tensor, i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(model_input(images, channels_last))
        correct[i] += (logits.argmax(1) == labels).sum()
        counts[i] += len(labels)

    shard = _shard(data, dist)
    total_work = len(shard) * (1 + len(generated)) + sum(len(_shard(d, dist)) for d in released.values() if d)
    unit = "clip" if suite.modality == "video" else "img"
    with reporter.task(f"evaluating on {suite.name}", total=total_work, unit=unit) as task:
        for batch in shard.batches(batch_size, device, train=False):
            score(batch.images, batch.labels, 0)
            for cell, rng in zip(generated, SampleRNG.for_cells(seed, suite.name, generated, batch.ids), strict=True):
                score(suite.corrupt(batch.images, *cell, rng), batch.labels, 1 + cells.index(cell))
            task.advance(len(batch.ids) * (1 + len(generated)))
        for cell, cell_data in released.items():
            if cell_data is None:
                continue
            for batch in _shard(cell_data, dist).batches(batch_size, device, train=False):
                score(batch.images, batch.labels, 1 + cells.index(cell))
                task.advance(len(batch.ids))
    accuracy = (100 * dist.sum(correct).double() / dist.sum(counts).clamp_min(1).double()).tolist()
    grid: dict[str, dict[int, float]] = {c: {} for c in corruptions}
    for (corruption, severity), acc in zip(cells, accuracy[1:], strict=True):
        grid[corruption][severity] = acc
    return EvalResult(accuracy[0], grid, len(data))


def _shard(data: ImageData, dist: Distributed) -> ImageData:
    return data.subset(torch.arange(dist.rank, len(data), dist.world_size)) if dist.enabled else data
