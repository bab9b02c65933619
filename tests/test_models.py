from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from dstbench.errors import UserError
from dstbench.models import ModelRequest, ModelSpec
from dstbench_plugins import models as plugin


def _collect_specs() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    plugin.register_models(specs.append)
    return {spec.name: spec for spec in specs}


SPECS = _collect_specs()
MODELS = [name for name, spec in SPECS.items() if not spec.is_family]
CIFAR_RESNETS = ["cifar-resnet18", "cifar-resnet34", "cifar-resnet50"]


def _smallest_size(name: str) -> int:
    return 32 if name.startswith(("cifar-", "digits-")) else 64


def build(name: str, in_chans: int = 3, image_size: int | None = None, num_classes: int = 10) -> nn.Module:
    spec_name, _, variant = name.partition("/")
    spec = SPECS[f"{spec_name}/"] if variant else SPECS[name]
    size = image_size or _smallest_size(name)
    return spec.build(ModelRequest(num_classes, in_chans, size, variant or None))


def forward(model: nn.Module, in_chans: int, size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, in_chans, size, size))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names() -> None:
    assert set(SPECS) == {
        *CIFAR_RESNETS,
        "cifar-efficientnet-b0",
        "cifar-vgg16",
        "cifar-vgg16-like",
        "cifar-deit-tiny",
        "digits-cnn",
        "resnet18",
        "resnet50",
        "efficientnet-b0",
        "deit-small",
        "deit-base",
        "timm/",
    }
    assert all(spec.description and "\n" not in spec.description for spec in SPECS.values())


def test_importing_the_plugin_does_not_import_timm() -> None:
    code = "import sys, dstbench_plugins.models; assert 'timm' not in sys.modules, 'timm imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("in_chans", [3, 1])
@pytest.mark.parametrize("name", MODELS)
def test_builds_and_forwards(name: str, in_chans: int) -> None:
    size = _smallest_size(name)
    logits = forward(build(name, in_chans, num_classes=7), in_chans, size)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", [name for name in MODELS if name.startswith("cifar-")])
def test_cifar_models_take_fashion_mnist_images(name: str) -> None:
    """Fashion-MNIST is 1-channel 28 px: five 2x2 max-pools must not shrink VGG's 28 px to nothing."""
    model = build(name, in_chans=1, image_size=28)
    assert forward(model, 1, 28).shape == (2, 10)


@pytest.mark.parametrize(("in_chans", "size"), [(3, 32), (1, 28), (3, 16)])
def test_digits_cnn_takes_small_images(in_chans: int, size: int) -> None:
    assert forward(build("digits-cnn", in_chans, size), in_chans, size).shape == (2, 10)


@pytest.mark.parametrize("name", MODELS + ["timm/resnet10t"])
def test_same_seed_same_parameters(name: str) -> None:
    torch.manual_seed(0)
    first = build(name).state_dict()
    torch.manual_seed(0)
    second = build(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("name", [*CIFAR_RESNETS, "cifar-efficientnet-b0"])
def test_cifar_stem_is_3x3_stride_1_without_max_pool(name: str) -> None:
    model = build(name, in_chans=1)
    stem = model.conv1 if name in CIFAR_RESNETS else model.conv_stem
    assert (stem.in_channels, stem.kernel_size, stem.stride) == (1, (3, 3), (1, 1))
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())
    # The net downsamples 8× (ResNet) or 16× (EfficientNet) in its stages alone, not 32× as with an ImageNet stem.
    with torch.no_grad():
        features = model.eval().forward_features(torch.randn(1, 1, 32, 32))
    assert features.shape[-1] == (4 if name in CIFAR_RESNETS else 2)


def test_cifar_vgg16_layout() -> None:
    model = build("cifar-vgg16", num_classes=100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13
    assert all(conv.kernel_size == (3, 3) and conv.stride == (1, 1) for conv in convs)
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 100)]


def test_cifar_vgg16_like_is_sparselearnings() -> None:
    """VGG16('like') of sparselearning: 13 biased 3×3 convs with batch norm, Linear(512, 512), ReLU, BatchNorm1d,
    Linear: its parameter count by hand."""
    model = build("cifar-vgg16-like", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and all(conv.bias is not None for conv in convs)
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 10)]
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    conv_params = sum(9 * i * o + o + 2 * o for i, o in zip(widths[:-1], widths[1:], strict=True))  # +bias, BN
    assert n_params(model) == conv_params + (512 * 512 + 512) + 2 * 512 + (512 * 10 + 10)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar-resnet18", 11.17e6),
        ("cifar-resnet34", 21.28e6),
        ("cifar-resnet50", 23.52e6),
        ("cifar-vgg16", 14.72e6),
        ("cifar-efficientnet-b0", 4.02e6),
        ("cifar-deit-tiny", 5.36e6),
        ("digits-cnn", 24.3e3),
    ],
)
def test_parameter_counts(name: str, expected: float) -> None:
    assert n_params(build(name)) == pytest.approx(expected, rel=0.02)


def test_timm_family_builds_any_timm_model() -> None:
    model = build("timm/resnet10t", in_chans=1, image_size=32)
    assert forward(model, 1, 32).shape == (2, 10)


def test_timm_family_builds_transformers_at_the_requested_size() -> None:
    assert forward(build("timm/vit_tiny_patch16_224", image_size=32), 3, 32).shape == (2, 10)


def test_timm_family_suggests_close_names() -> None:
    with pytest.raises(UserError, match="did you mean .*resnet50"):
        build("timm/resnet5O")
    with pytest.raises(UserError, match=r"timm has no model 'not-a-model'.*timm\.list_models\(\)"):
        build("timm/not-a-model")


@pytest.mark.parametrize(
    ("name", "size", "patch"),
    [("deit-small", 40, 16), ("cifar-deit-tiny", 30, 4), ("timm/vit_tiny_patch16_224", 40, 16)],
)
def test_patch_size_must_divide_image_size(name: str, size: int, patch: int) -> None:
    with pytest.raises(UserError, match=f"{patch}-px patches.*image size {size}.*multiple of {patch}"):
        build(name, image_size=size)
