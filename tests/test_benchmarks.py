"""The benchmark scripts a GPU session runs (`benchmarks/gpu_session.sh`), run on the CPU at tiny sizes: device time
is scarce, so a script must not first break there. Only that each runs and reports; the numbers mean nothing here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = {
    "train_throughput.py": ["--model", "digits-cnn", "--batch-size", "16", "--steps", "2", "--images", "64"],
    "dst_throughput.py": [
        "--model", "digits-cnn", "--batch-size", "16", "--images", "64", "--epochs", "2", "--update-interval", "2",
    ],
    "corruption_speed.py": [
        "--images-32", "8", "--images-224", "2", "--reference-images-32", "2", "--reference-images-224", "2",
        "--eval-images", "8", "--workers", "1",
    ],
    "compile_speed.py": [
        "--sizes", "32", "--images-32", "16", "--only", "gaussian_noise,contrast", "--repeats", "1",
    ],
    "video_bench.py": [
        "--train-clips", "4", "--batch-size", "2", "--frames", "4", "--size", "32", "--epochs", "2",
        "--decode-clips", "8", "--corrupt-clips", "2", "--severities", "1",
    ],
}  # fmt: skip


def run_benchmark(script: str, tmp_path: Path) -> dict:
    env = {**os.environ, "DSTBENCH_DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    report = tmp_path / "report.json"
    args = [sys.executable, str(BENCHMARKS / script), "--device", "cpu", *TINY[script], "--json", str(report)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.parametrize("script", ["train_throughput.py", "dst_throughput.py", "video_bench.py"])
def test_training_benchmarks_run_on_the_cpu(script, tmp_path):
    report = run_benchmark(script, tmp_path)
    assert report["device"].startswith("cpu")
    if script == "dst_throughput.py":
        assert {"dense", "rigl", "set", "mest", "static"} <= set(report["algorithms"])


def test_corruption_benchmark_runs_on_the_cpu(tmp_path):
    report = run_benchmark("corruption_speed.py", tmp_path)
    for resolution in ("32px", "224px"):
        result = report["resolutions"][resolution]
        assert len(result["ops_per_call"]) == 19 and all(n > 0 for n in result["ops_per_call"].values())
        assert set(result["ours_img_s"]) == set(result["ops_per_call"])
        for corruption, ops in result["ops_per_call"].items():  # views are operations, not kernels
            assert 0 < result["kernels_per_call"][corruption] < ops
        moved = result["mb_per_call"]  # JPEG's work is libjpeg's, on the host: its kernels move almost nothing
        assert moved["jpeg_compression"] < moved["contrast"] < moved["spatter"]
        assert all(rate > 0 for rate in result["ours_img_s"].values())
        whole = result["whole_suite_img_s_by_batch"]  # both batch sizes capped at the images there are
        assert list(whole) == ["8" if resolution == "32px" else "2"] and all(rate > 0 for rate in whole.values())
    assert report["evaluation"]["forward_passes"] == 8 * 96 and report["evaluation"]["ratio"] > 0


def test_compile_benchmark_runs_on_the_cpu(tmp_path):
    """Inductor compiles on the CPU too (C++ where a GPU gets Triton): fused kernels, no graph breaks, the eager
    images within a level."""
    report = run_benchmark("compile_speed.py", tmp_path)
    result = report["32px"]
    assert list(result["corruptions"]) == ["gaussian_noise", "contrast"] and result["batch"] == 16
    for row in result["corruptions"].values():
        assert 0 < row["compiled_kernels"] < row["eager_kernels"] and row["graph_breaks"] == 0
        assert 0 < row["compiled_mb"] < row["eager_mb"]
        assert row["max_difference"] <= 1 and row["share_differing"] < 1e-3
        assert row["compile_s"] > 0 and row["eager_img_s"] > 0 and row["compiled_img_s"] > 0
    assert result["all_measured"]["corruptions"] == 2 and result["all_measured"]["compile_s"] > 0
    assert "224px" not in report


def test_compile_benchmark_names_the_valid_corruptions(tmp_path):
    args = [sys.executable, str(BENCHMARKS / "compile_speed.py"), "--device", "cpu", "--only", "fogg"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "fogg" in done.stderr and "gaussian_noise" in done.stderr


def test_compile_benchmark_records_a_corruption_that_does_not_compile(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import compile_speed
    import torch

    from dstbench.plugins import Plugins

    def refuse(function, **options):
        def call(*args):
            raise RuntimeError("Cannot find a working triton installation")

        return call

    suite = Plugins.load().registry.suite("cifar-c")
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    good = compile_speed.measure(suite, "contrast", images, 1, "default")
    monkeypatch.setattr(torch, "compile", refuse)
    bad = compile_speed.measure(suite, "contrast", images, 1, "default")
    assert bad == {"error": "RuntimeError: Cannot find a working triton installation"}
    assert compile_speed.summary({"contrast": bad}) == {"corruptions": 0}
    assert compile_speed.summary({"contrast": good, "fog": bad})["corruptions"] == 1
