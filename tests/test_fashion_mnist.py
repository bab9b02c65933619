"""Training and evaluation on real data: Fashion-MNIST from Debian's dataset-fashion-mnist package."""

import json
import os
from pathlib import Path

import pytest
from test_cli import dstbench

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

if not DEBIAN_DIR.exists() and not os.environ.get("CI"):  # CI installs the package, so there it must run
    pytest.skip("apt-get install dataset-fashion-mnist to run this test", allow_module_level=True)


def test_train_and_evaluate_on_real_fashion_mnist(tmp_path):
    out = tmp_path / "run"
    result = dstbench(
        "run",
        "--dataset",
        "fashion-mnist",
        "--model",
        "digits-cnn",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--max-train-samples",
        "8000",
        "--max-test-samples",
        "500",
        "--severities",
        "1,3,5",
        "--device",
        "cpu",
        "--out",
        out,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads((out / "entry.json").read_text())
    assert entry["dataset"] == "fashion-mnist" and entry["training"]["train_samples"] == 8000
    assert entry["evaluation"]["test_samples"] == 500
    assert entry["clean_acc"] > 70  # 10 classes: chance is 10%
    grid = entry["corruptions"]
    assert entry["suite"] == "cifar-c" and len(grid) == 19  # every corruption works on grey 28-px images
    mean = {s: sum(row[s] for row in grid.values()) / len(grid) for s in ("1", "3", "5")}
    assert mean["1"] > mean["3"] > mean["5"]  # stronger corruption hurts more, on average
    assert grid["impulse_noise"]["5"] < entry["clean_acc"]
