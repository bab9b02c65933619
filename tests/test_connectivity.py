"""`dstbench connectivity`: the share of nonzero weights per (output, input) channel pair, and the command."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import run_config

from dstbench.cli import build_cli
from dstbench.report import PlainReporter
from dstbench.runner import execute
from dstbench.sparse.connectivity import layer_connectivity, pair_density


def test_pair_density_of_conv_grouped_conv_and_linear_weights():
    conv = torch.ones(2, 3, 2, 2)
    conv[0, 0] = 0  # pair (0, 0) cut
    conv[1, 2, 0, 0] = 0  # pair (1, 2) at 3/4
    assert torch.equal(pair_density(conv), torch.tensor([[0.0, 1, 1], [1, 1, 0.75]]))
    depthwise = torch.tensor([[[[1.0, 0], [0, 0]]], [[[2.0, 3], [4, 5]]]])  # (2, 1, 2, 2): one input per group
    assert torch.equal(pair_density(depthwise), torch.tensor([[0.25], [1.0]]))
    linear = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    assert torch.equal(pair_density(linear), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    summary, pairs = layer_connectivity("conv", conv)
    assert summary.shape == [2, 3, 2, 2] and (summary.cut, summary.full) == pytest.approx((1 / 6, 4 / 6))
    assert summary.density == pytest.approx(19 / 24) and torch.equal(pairs, pair_density(conv))


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, plugins):
    cfg = run_config(plugins, tmp_path_factory.mktemp("rigl"), algo="rigl", sparsity="0.5")
    execute(cfg, plugins, PlainReporter(quiet=True))
    return cfg


def invoke(plugins, *args):
    return CliRunner().invoke(build_cli(plugins), ["connectivity", *map(str, args)])


def test_the_command_counts_the_trained_weights(plugins, sparse_run, tmp_path):
    result = invoke(plugins, sparse_run.out, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "digits · digits-cnn · rigl 50% sparse · seed 0" in result.output
    written = json.loads((tmp_path / "out" / "connectivity.json").read_text())
    claimed = json.loads((Path(sparse_run.out) / "entry.json").read_text())["sparsity"]["layers"]
    layers = {layer["name"]: layer for layer in claimed}
    for layer in written["layers"]:
        assert layer["density"] == pytest.approx(layers[layer["name"]]["nonzeros"] / layers[layer["name"]]["numel"])
        assert 0 <= layer["cut"] <= 1 - layer["full"]
    assert any(layer["full"] < 1 for layer in written["layers"])  # 50% sparse: some pairs lost weights
    png = tmp_path / "out" / "connectivity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_mode & 0o777 == 0o644


def test_layers_picks_by_glob_and_bad_input_is_one_line(plugins, sparse_run, tmp_path):
    picked = invoke(plugins, sparse_run.out, "--layers", "net.8.*", "--out", tmp_path / "one")
    assert picked.exit_code == 0, picked.output
    assert [layer["name"] for layer in json.loads((tmp_path / "one" / "connectivity.json").read_text())["layers"]] == [
        "net.8.weight"
    ]
    for args, message in (
        ([sparse_run.out, "--layers", "nope*"], "--layers 'nope*' matches no conv or linear layer"),
        ([tmp_path / "missing"], "does not exist"),
    ):
        result = invoke(plugins, *args, "--out", tmp_path / "bad")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "bad").exists()
