"""Video models: every one builds, forwards small clips, drops out before its classifier, is seeded, refuses what
it cannot take, and shows its 3D convs to dynamic sparse training."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dstbench.cli import build_cli
from dstbench.errors import UserError
from dstbench.models import ModelRequest, ModelSpec
from dstbench.plugins import Plugins
from dstbench.sparse import SPARSIFIABLE, sparsifiable
from dstbench.sparse.distributions import densities
from dstbench_plugins import video_models

SPECS: dict[str, ModelSpec] = {}
video_models.register_models(lambda spec: SPECS.setdefault(spec.name, spec))
TORCHVISION = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "swin3d_t"]
PYTORCHVIDEO = ["slow_r50", "i3d_r50"]
# (frames, pixels) each model is tested at: the smallest it takes where it has a minimum, 8×32 otherwise
CLIPS = {name: (8, 32) for name in SPECS} | {"s3d": (5, 17), "i3d_r50": (2, 32), "clip-cnn": (4, 7)}
CLASSES = 7


def build(name: str, frames: int, pixels: int, in_chans: int = 3, seed: int = 0) -> nn.Module:
    """The model, seeded; a pytorchvideo model is skipped where the optional extra is not installed."""
    if name in PYTORCHVIDEO:
        pytest.importorskip("pytorchvideo", reason="the optional video extra is not installed")
    torch.manual_seed(seed)
    return SPECS[name].build(ModelRequest(CLASSES, in_chans, pixels, frames=frames))


@pytest.fixture(scope="module", params=list(SPECS))
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    name = request.param
    return name, build(name, *CLIPS[name]).eval()


def forward(model: nn.Module, frames: int, pixels: int, in_chans: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, in_chans, frames, pixels, pixels))


def test_registered_names() -> None:
    assert set(SPECS) == {*TORCHVISION, *PYTORCHVIDEO, "clip-cnn"}
    for spec in SPECS.values():
        assert spec.modality == "video" and spec.description and "\n" not in spec.description


def test_importing_the_plugin_imports_neither_torchvision_nor_pytorchvideo() -> None:
    code = (
        "import sys, dstbench_plugins.video_models\n"
        "assert not {'torchvision', 'pytorchvideo'} & set(sys.modules), 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_forward_gives_finite_logits(built: tuple[str, nn.Module]) -> None:
    name, model = built
    logits = forward(model, *CLIPS[name])
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()


def test_dropout_half_runs_right_before_the_classifier(built: tuple[str, nn.Module]) -> None:
    name, model = built
    calls: list[nn.Module] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda m, args, out: calls.append(m)) for m in leaves]
    forward(model, *CLIPS[name])
    for handle in handles:
        handle.remove()
    classifier = max(i for i, m in enumerate(calls) if isinstance(m, SPARSIFIABLE))
    before = calls[classifier - 1]
    assert isinstance(before, nn.Dropout) and before.p == 0.5


def test_channels_last_3d_gives_the_same_logits(built: tuple[str, nn.Module]) -> None:
    name, model = built
    frames, pixels = CLIPS[name]
    clips = torch.randn(2, 3, frames, pixels, pixels)
    with torch.no_grad():
        expected = model(clips)
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
        found = fast(clips.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)


def test_same_seed_same_parameters(built: tuple[str, nn.Module]) -> None:
    name, model = built
    again = build(name, *CLIPS[name]).state_dict()
    assert all(torch.equal(value, again[key]) for key, value in model.state_dict().items())


def test_other_seed_other_parameters() -> None:
    a, b = build("clip-cnn", 16, 32), build("clip-cnn", 16, 32, seed=1)
    assert not torch.equal(a[0].weight, b[0].weight)


def test_dst_sparsifies_every_conv3d(built: tuple[str, nn.Module]) -> None:
    _, model = built
    conv3d = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    weights = sparsifiable(model)
    assert conv3d and conv3d <= set(weights)
    assert all(weights[n].ndim == 5 for n in conv3d)


def test_erk_densities_count_the_temporal_kernel() -> None:
    model = build("clip-cnn", 16, 32, seed=0)
    shapes = {name: tuple(w.shape) for name, w in sparsifiable(model).items()}
    assert shapes == {
        "0.weight": (16, 3, 3, 3, 3),
        "4.weight": (32, 16, 3, 3, 3),
        "8.weight": (64, 32, 3, 3, 3),
        "14.weight": (CLASSES, 64),
    }
    found = densities(shapes, 0.5, "erk")
    # By hand: ERK's score × size is the sum of the dims, kernel T, H, W included. The linear layer (71/448) and
    # conv1 (28/1296) would exceed density 1 and stay dense, leaving 0.5 · 70864 - 448 - 1296 weights for conv2
    # (sum 57, size 13824) and conv3 (sum 105, size 55296).
    epsilon = (0.5 * 70864 - 448 - 1296) / (57 + 105)
    assert found["14.weight"] == found["0.weight"] == 1.0
    assert found["4.weight"] == pytest.approx(epsilon * 57 / 13824, rel=1e-12)
    assert found["8.weight"] == pytest.approx(epsilon * 105 / 55296, rel=1e-12)
    assert found["4.weight"] == pytest.approx(0.8574, abs=1e-4)  # 0.8601 if the sum left out T (54)


@pytest.mark.parametrize(("name", "frames", "pixels"), [("s3d", 4, 32), ("s3d", 8, 16), ("i3d_r50", 1, 32)])
def test_clips_below_a_models_minimum_are_refused(name: str, frames: int, pixels: int) -> None:
    with pytest.raises(UserError, match=f"model '{name}' takes clips of at least"):
        build(name, frames, pixels)


def test_clip_cnn_refuses_too_few_frames() -> None:
    with pytest.raises(UserError, match="at least 4 frames of 7 px, got 3 frames of 32 px"):
        build("clip-cnn", 3, 32)


@pytest.mark.parametrize(("frames", "pixels"), [(7, 32), (8, 30), (16, 114)])
def test_swin3d_t_refuses_clips_it_would_pad(frames: int, pixels: int) -> None:
    with pytest.raises(UserError, match=r"even number of frames and a multiple of 4 px \(e\.g\. 8×32") as error:
        build("swin3d_t", frames, pixels)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_refuse_grey_clips(name: str) -> None:
    with pytest.raises(UserError, match="takes RGB clips"):
        build(name, 8, 32, in_chans=1)


@pytest.mark.parametrize("name", ["clip-cnn", "slow_r50"])
def test_other_models_take_any_channel_count(name: str) -> None:
    assert forward(build(name, 8, 32, in_chans=1).eval(), 8, 32, in_chans=1).shape == (2, CLASSES)


def test_without_pytorchvideo_list_works_and_its_models_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m.partition(".")[0] == "pytorchvideo"] + ["pytorchvideo"]:
        monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    for name in PYTORCHVIDEO:
        with pytest.raises(UserError, match=r"^model '\w+' needs pytorchvideo .*; pip install 'dstbench\[video\]'$"):
            SPECS[name].build(ModelRequest(CLASSES, 3, 32, frames=8))
    cli = build_cli(Plugins.load(env={"DSTBENCH_PLUGINS": ""}))
    result = CliRunner().invoke(cli, ["list", "--kind", "model"])
    assert result.exit_code == 0 and "slow_r50" in result.output
