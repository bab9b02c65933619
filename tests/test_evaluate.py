import json

import pytest
import torch
from torch import nn

from dstbench.corruption import CorruptionSuite
from dstbench.data import StreamImages, TensorImages
from dstbench.errors import UserError
from dstbench.evaluate import EvalResult, evaluate
from dstbench.report import PlainReporter

CPU = torch.device("cpu")


def test_mpc_rpc_mce_by_hand():
    result = EvalResult(80.0, {"a": {1: 70.0, 2: 50.0}, "b": {1: 60.0, 2: 40.0}}, 100)
    assert result.mpc == pytest.approx(55.0)
    assert result.rpc == pytest.approx(55.0 / 80.0)
    baseline = {"a": {1: 40.0, 2: 20.0}, "b": {1: 60.0, 2: 40.0}}
    # a: (30 + 50) / (60 + 80) = 4/7; b: (40 + 60) / (40 + 60) = 1
    assert result.mce(baseline) == pytest.approx(100 * (4 / 7 + 1) / 2)
    assert result.mce(result.corruption_acc) == pytest.approx(100.0)


def test_mce_needs_the_baselines_errors_on_every_cell():
    result = EvalResult(80.0, {"a": {1: 70.0, 2: 50.0}}, 100)
    with pytest.raises(UserError, match="no results for a at severities 2;"):
        result.mce({"a": {1: 40.0}})
    with pytest.raises(UserError, match="no results for a at any severity;"):
        result.mce({"b": {1: 40.0, 2: 30.0}})
    wider = {"a": {1: 40.0, 2: 20.0, 3: 10.0}, "b": {1: 50.0}}  # more cells than the result: those are left out
    assert result.mce(wider) == pytest.approx(100 * (30 + 50) / (60 + 80))
    with pytest.raises(UserError, match="makes no errors"):
        result.mce({"a": {1: 100.0, 2: 100.0}})


def test_relative_mce_by_hand():
    result = EvalResult(80.0, {"a": {1: 70.0, 2: 50.0}, "b": {1: 60.0, 2: 40.0}}, 100)
    baseline = EvalResult(90.0, {"a": {1: 40.0, 2: 20.0}, "b": {1: 60.0, 2: 40.0}}, 100)
    # a: (10 + 30) / (50 + 70) = 1/3; b: (20 + 40) / (30 + 50) = 3/4
    assert result.relative_ces(baseline) == {"a": pytest.approx(1 / 3), "b": pytest.approx(3 / 4)}
    assert result.relative_mce(baseline) == pytest.approx(100 * (1 / 3 + 3 / 4) / 2)
    assert result.relative_mce(result) == pytest.approx(100.0)
    sharper = EvalResult(80.0, {"a": {1: 85.0, 2: 81.0}, "b": {1: 60.0, 2: 40.0}}, 100)  # a: accuracy rises by 6
    assert sharper.relative_mce(baseline) == pytest.approx(100 * (-6 / 120 + 3 / 4) / 2)


def test_relative_mce_is_undefined_where_the_baseline_is_not_hurt():
    result = EvalResult(80.0, {"a": {1: 70.0, 2: 50.0}, "b": {1: 60.0, 2: 40.0}}, 100)
    for unhurt in ({1: 95.0, 2: 85.0}, {1: 92.0, 2: 90.0}):  # Σ_s of the baseline's drops: 0, then -2
        baseline = EvalResult(90.0, {"a": {1: 40.0, 2: 20.0}, "b": unhurt}, 100)
        assert result.relative_ces(baseline) == {"a": pytest.approx(1 / 3), "b": None}
        assert result.relative_mce(baseline) is None
    # Drops of ±1 sample that cancel to float rounding (2e-16), not to 0: still undefined, never a ratio of 1e17
    rounding = EvalResult(100 * 5 / 450, {"a": {1: 100 * 6 / 450, 2: 100 * 4 / 450}, "b": {1: 0.0, 2: 0.0}}, 450)
    assert result.relative_ces(rounding)["a"] is None and result.relative_mce(rounding) is None


def test_relative_mce_needs_the_baselines_accuracy_on_every_cell():
    result = EvalResult(80.0, {"a": {1: 70.0, 2: 50.0}}, 100)
    with pytest.raises(UserError, match="no results for a at severities 2; relative mCE needs"):
        result.relative_mce(EvalResult(90.0, {"a": {1: 40.0}}, 100))
    with pytest.raises(UserError, match="no results for a at any severity;"):
        result.relative_mce(EvalResult(90.0, {"b": {1: 40.0, 2: 30.0}}, 100))
    wider = EvalResult(90.0, {"a": {1: 40.0, 2: 20.0, 3: 10.0}, "b": {1: 50.0}}, 100)  # the extra cells are left out
    assert result.relative_mce(wider) == pytest.approx(100 * (10 + 30) / (50 + 70))


class Shift(CorruptionSuite):
    """Severity s adds s to every pixel value, plus per-sample noise from the stream."""

    name = "shift"
    description = "test suite"
    corruptions = ("shift", "noisy")
    severities = (1, 2)

    def corrupt(self, images, corruption, severity, rng):
        out = images.to(torch.int16) + severity
        if corruption == "noisy":
            out = out + ((rng.uniform(images.shape[1:]) - 0.5) * 60).to(torch.int16)
        return out.clamp(0, 255).to(torch.uint8)


class Threshold(nn.Module):
    """Class 1 when the mean pixel is above a threshold: accuracy depends on exactly which pixels changed."""

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([-score, score], dim=1)


def _data(n=37):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(100, 156, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    return TensorImages(images, labels)


def _evaluate(data, batch_size, seed=0):
    return evaluate(
        Threshold(),
        data,
        Shift(),
        ("shift", "noisy"),
        (1, 2),
        device=CPU,
        batch_size=batch_size,
        seed=seed,
        bf16=False,
        channels_last=False,
        reporter=PlainReporter(quiet=True),
    )


def test_grid_is_complete_and_clean_is_uncorrupted():
    result = _evaluate(_data(), 8)
    assert result.clean_acc == 100.0
    assert set(result.corruption_acc) == {"shift", "noisy"}
    assert all(set(row) == {1, 2} for row in result.corruption_acc.values())
    assert result.corruption_acc["noisy"][2] < 100.0


def test_results_do_not_depend_on_batch_size_or_order_but_on_the_seed():
    data = _data()
    by_batch = [_evaluate(data, size) for size in (1, 5, 37, 100)]
    assert all(r == by_batch[0] for r in by_batch)
    reversed_data = data.subset(torch.arange(len(data) - 1, -1, -1))
    assert _evaluate(reversed_data, 6) == by_batch[0]
    assert _evaluate(data, 5, seed=1).corruption_acc["noisy"] != by_batch[0].corruption_acc["noisy"]


class Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise UserError(f"cannot decode /data/img{i}.jpg")


def test_worker_errors_keep_their_one_line_message():
    data = StreamImages(Unreadable(), torch.zeros(4), workers=1)
    with pytest.raises(UserError) as info:
        next(data.batches(2, CPU, train=False))
    assert str(info.value) == "cannot decode /data/img0.jpg"


def test_baseline_entry_adds_mce_and_relative_mce(plugins, tmp_path, finished_run):
    from conftest import WarningsReporter, run_config

    from dstbench.runner import execute

    baseline = f"{finished_run.out}/entry.json"
    reporter = WarningsReporter()
    entry = execute(run_config(plugins, tmp_path, baseline=baseline), plugins, reporter)
    assert entry.corruptions_mce == pytest.approx(100.0)  # the same training as the baseline
    # A model this small can score as well under mild noise as without: its relative mCE is then undefined
    grid = entry.corruptions
    unhurt = [c for c, row in grid.items() if sum(entry.clean_acc - acc for acc in row.values()) <= 0]
    if unhurt:
        assert entry.corruptions_relative_mce is None
        assert reporter.warnings == [
            f"no relative mCE: the baseline's accuracy does not drop under {', '.join(unhurt)}"
        ]
    else:
        assert entry.corruptions_relative_mce == pytest.approx(100.0) and reporter.warnings == []
    assert entry.evaluation.baseline == baseline
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(UserError, match="is not a valid entry"):
        execute(run_config(plugins, tmp_path / "b", baseline=str(broken)), plugins, PlainReporter(quiet=True))
