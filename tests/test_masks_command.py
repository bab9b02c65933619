"""`dstbench masks`: layer-wise densities, exact nonzero counts and FLOPs, through click's runner and a subprocess."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from torch import nn

from dstbench.cli import build_cli
from dstbench.hookspecs import hookimpl
from dstbench.models import Classifier, ModelRequest, ModelSpec
from dstbench.plugins import Plugins

RESNET18_WEIGHTS = 11_164_352  # conv and linear weights of cifar-resnet18 with 10 classes


class TinyModels:
    """'tiny-mlp': Linear(3 → 30) and Linear(30 → classes) on the pooled image; 'no-weights': nothing sparsifiable."""

    @hookimpl
    def register_models(self, register):
        register(
            ModelSpec(
                "tiny-mlp",
                lambda r: nn.Sequential(
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(r.in_chans, 30), nn.Linear(30, r.num_classes)
                ),
                "two linear layers",
            )
        )
        register(ModelSpec("no-weights", lambda r: nn.Identity(), "no conv or linear layer"))


@pytest.fixture(scope="module")
def cli():
    return build_cli(Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"tiny": TinyModels()}))


def masks(cli, *args: object) -> dict:
    result = CliRunner().invoke(cli, ["masks", *map(str, args), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("distribution", ["erk", "er"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_nonzeros_meet_the_target_exactly(cli, distribution, sparsity):
    report = masks(cli, "--model", "cifar-resnet18", "--sparsity", sparsity, "--distribution", distribution)
    layers = report["layers"]
    assert len(layers) == 21 and layers[0]["name"] == "net.conv1.weight" and layers[-1]["name"] == "net.fc.weight"
    assert all(isinstance(row["nonzeros"], int) and 0 <= row["nonzeros"] <= row["numel"] for row in layers)
    assert sum(row["numel"] for row in layers) == report["totals"]["sparsifiable_parameters"] == RESNET18_WEIGHTS
    assert sum(row["nonzeros"] for row in layers) == report["totals"]["nonzeros"]
    assert report["totals"]["nonzeros"] == round((1 - sparsity) * RESNET18_WEIGHTS)
    assert report["totals"]["sparsity"] == pytest.approx(sparsity, abs=1e-6)


def test_uniform_keeps_forced_layers_dense(cli):
    layers = masks(cli, "--model", "cifar-resnet18", "--sparsity", 0.7, "--distribution", "uniform", "--dense-last")[
        "layers"
    ]
    assert [row["density"] for row in layers] == [pytest.approx(0.3)] * 20 + [1.0]
    assert layers[-1]["nonzeros"] == layers[-1]["numel"]


def test_dense_first_keeps_the_erk_total_on_target(cli):
    report = masks(cli, "--model", "cifar-resnet18", "--sparsity", 0.9, "--distribution", "erk", "--dense-first")
    first = report["layers"][0]
    assert first["density"] == 1 and first["nonzeros"] == first["numel"]
    assert report["totals"]["nonzeros"] == round(0.1 * RESNET18_WEIGHTS)
    # ERK alone gives tiny-mlp's first layer 0.98 at S = 0.5 (see below); kept dense, it takes all 90 of its
    # weights and the second layer the remaining 195 - 90.
    report = masks(cli, "--model", "tiny-mlp", "--sparsity", 0.5, "--distribution", "erk", "--dense-first")
    assert [row["nonzeros"] for row in report["layers"]] == [90, 105]
    assert [row["density"] for row in report["layers"]] == pytest.approx([1.0, 105 / 300])


def test_erk_on_a_tiny_model_by_hand(cli):
    # shapes (30, 3) and (10, 30): 90 and 300 weights, ERK scores p = (30 + 3) / 90 and (10 + 30) / 300.
    # S = 0.5: ε = 0.5 · 390 / (33 + 40) = 195 / 73, so densities 195/73 · 33/90 and 195/73 · 40/300,
    # nonzeros 88.15 and 106.85 → 88 and 107.
    report = masks(cli, "--model", "tiny-mlp", "--sparsity", 0.5, "--distribution", "erk")
    assert [row["density"] for row in report["layers"]] == pytest.approx([195 / 73 * 33 / 90, 195 / 73 * 40 / 300])
    assert [row["nonzeros"] for row in report["layers"]] == [88, 107]
    # S = 0.4: ε = 234 / 73 gives the first layer 1.18 > 1, so it is dense; then ε = (234 - 90) / 40 and the
    # second layer's density is 3.6 · 40 / 300 = 0.48.
    report = masks(cli, "--model", "tiny-mlp", "--sparsity", 0.4, "--distribution", "erk")
    assert [row["density"] for row in report["layers"]] == pytest.approx([1.0, 0.48])
    assert [row["nonzeros"] for row in report["layers"]] == [90, 144]
    # FLOPs: 2 × (30 · 3) and 2 × (10 · 30) dense; the sparse count scales the second by 0.48.
    assert [row["dense_flops"] for row in report["layers"]] == [180, 600]
    f_dense, f_sparse = 780, 180 + 0.48 * 600
    assert report["totals"]["inference_flops"] == pytest.approx({"dense": f_dense, "sparse": f_sparse})
    training = report["totals"]["training_flops"]
    assert training["dense"] == {"flops": 3 * f_dense, "vs_dense": 1.0}
    assert training["static_sparse"]["flops"] == pytest.approx(3 * f_sparse)
    assert training["rigl"]["flops"] == pytest.approx((3 * f_sparse * 100 + 2 * f_sparse + f_dense) / 101)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnt18"], "unknown model 'resnt18'"),
        (["--model", "digits-cnn", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
        (["--model", "digits-cnn", "--distribution", "erdos"], "unknown distribution 'erdos'"),
        (["--model", "digits-cnn", "--sparsity", "1"], "--sparsity must be in [0, 1)"),
        (["--model", "digits-cnn", "--sparsity", "-0.1"], "--sparsity must be in [0, 1)"),
        (["--model", "digits-cnn", "--sparsity", "0.99", "--dense-first", "--dense-last"], "cannot be met"),
        (["--model", "no-weights"], "no sparsifiable layers"),
        (["--model", "digits-cnn", "--erk-power-scale", "nan"], "--erk-power-scale must be in (0, 10], got nan"),
        (["--model", "digits-cnn", "--erk-power-scale", "inf"], "--erk-power-scale must be in (0, 10], got inf"),
        (["--model", "digits-cnn", "--erk-power-scale", "0"], "--erk-power-scale must be in (0, 10], got 0.0"),
        (["--model", "digits-cnn", "--erk-power-scale", "200"], "--erk-power-scale must be in (0, 10], got 200.0"),
        (["--model", "clip-cnn"], "model 'clip-cnn' takes video input but dataset 'cifar10' is image"),
        (["--model", "digits-cnn", "--dataset", "moving-digits"], "takes image input but dataset 'moving-digits'"),
        (["--model", "digits-cnn", "--frames", "8"], "--frames applies to video datasets; 'cifar10' is image"),
        (["--model", "clip-cnn", "--dataset", "moving-digits", "--frames", "0"], "--frames must be at least 1"),
        (["--model", "digits-cnn", "--image-size", "1"], "cannot take an input of shape 3×1×1: "),
    ],
)
def test_bad_input_is_a_one_line_error(cli, args, message):
    defaults = {"--sparsity": "0.5", "--distribution": "erk"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    result = CliRunner().invoke(cli, ["masks", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_a_video_model_counts_one_clip_of_the_datasets_length(cli):
    report = masks(
        cli, "--model", "clip-cnn", "--dataset", "moving-digits", "--sparsity", "0.5", "--distribution", "erk"
    )
    assert report["input_shape"] == [3, 16, 32, 32] and report["flops"].endswith("per clip")
    shorter = masks(
        cli,
        "--model",
        "clip-cnn",
        "--dataset",
        "moving-digits",
        "--frames",
        "8",
        "--sparsity",
        "0.5",
        "--distribution",
        "erk",
    )
    assert shorter["input_shape"] == [3, 8, 32, 32]
    assert shorter["totals"]["inference_flops"]["dense"] < report["totals"]["inference_flops"]["dense"]


def test_shapes_only_so_any_input_size_fits_in_memory(cli):
    """The model is built on the meta device: MACs of a real CPU model, and a 100,000-px input costs nothing."""
    import torch

    from dstbench.sparse.command import model_and_input_shape
    from dstbench.sparse.flops import layer_macs

    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""})
    net, shape = model_and_input_shape(plugins, "cifar-resnet18", "cifar10", None)
    assert next(net.parameters()).is_meta
    spec, _ = plugins.registry.model("cifar-resnet18")
    real = Classifier(spec.build(ModelRequest(10, 3, 32)), (0.5,) * 3, (0.5,) * 3)
    assert layer_macs(net, shape) == layer_macs(real, (3, 32, 32))
    huge = masks(
        cli, "--model", "cifar-resnet18", "--image-size", "100000", "--sparsity", "0.5", "--distribution", "erk"
    )
    dense = masks(cli, "--model", "cifar-resnet18", "--sparsity", "0.5", "--distribution", "erk")
    conv_share = 100000**2 / 32**2  # every conv output grows with the area; the classifier does not
    assert huge["totals"]["inference_flops"]["dense"] > 0.99 * conv_share * dense["totals"]["inference_flops"]["dense"]
    assert torch.zeros(0).device.type == "cpu"  # the meta device did not leak out of the builder


def test_help_shows_examples(cli):
    result = CliRunner().invoke(cli, ["masks", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "dstbench masks --model cifar-resnet18" in result.output
    assert "2 × the multiply-adds" in result.output


def test_table_through_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "dstbench", "masks", "--model", "cifar-resnet18", "--sparsity", "0.5"]
        + ["--distribution", "erk"],
        capture_output=True,
        text=True,
        env={**os.environ, "DSTBENCH_PLUGINS": "", "COLUMNS": "160"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cifar10 · cifar-resnet18 · 32 px · erk 50% sparse" in out
    assert "net.layer4.1.conv2.weight" in out and "FLOPs = 2 × multiply-adds of conv and linear layers" in out
    assert "1.11 G" in out  # dense inference FLOPs: 2 × 555.4 M multiply-adds
    assert "sparsity 50.00% achieved" in out and "training FLOPs, rigl" in out
