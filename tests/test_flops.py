"""FLOP counting: multiply-adds of conv and linear layers, checked by hand, and RigL's training-cost formulas."""

import pytest
import torch
from torch import nn

from dstbench.models import ModelRequest
from dstbench.sparse import sparsifiable
from dstbench.sparse.flops import layer_macs, sparse_macs, training_flops


class Handmade(nn.Module):
    """A grouped strided conv, a linear over tokens, a linear called twice, and one never called."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.norm = nn.BatchNorm2d(8)
        self.proj = nn.Linear(8, 6)
        self.shared = nn.Linear(6, 6)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))  # (1, 8, 4, 4)
        tokens = x.flatten(2).transpose(1, 2)  # (1, 16, 8): 16 tokens of width 8
        return self.shared(self.shared(self.proj(tokens)))


def test_layer_macs_by_hand():
    model = Handmade().train()
    macs = layer_macs(model, (4, 8, 8))
    assert macs == {
        "conv.weight": 8 * 4 * 4 * (4 // 2) * 3 * 3,  # output elements × in_channels / groups × kernel
        "proj.weight": 16 * 6 * 8,  # output elements (16 tokens × 6) × in_features
        "shared.weight": 2 * 16 * 6 * 6,  # both calls
        "unused.weight": 0,
    }
    assert list(macs) == list(sparsifiable(model))
    assert model.training  # counted in eval mode, then put back


class Functional(nn.Module):
    """Layers whose weights are used without calling them, as Video Swin's attention uses `qkv.weight`."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8, bias=False)
        self.conv = nn.Conv1d(8, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 5, 8), five tokens
        qkv = nn.functional.linear(x, self.qkv.weight, self.qkv.bias)  # (1, 5, 24)
        mixed = torch.matmul(qkv[..., :8].unsqueeze(1).expand(1, 2, 5, 8), self.proj.weight.t())  # batched
        return nn.functional.conv1d(mixed[:, 0].transpose(1, 2), self.conv.weight)  # (1, 4, 3)


def test_layer_macs_count_weights_used_without_calling_their_layer():
    model = Functional()
    assert layer_macs(model, (5, 8)) == {
        "qkv.weight": 5 * 8 * 24,
        "proj.weight": 2 * 5 * 8 * 8,
        "conv.weight": 4 * 3 * 8 * 3,
    }
    on_meta = layer_macs(Functional().to("meta"), (5, 8))  # storages told apart without data
    assert on_meta == layer_macs(model, (5, 8))


def test_video_swin_attention_counts(plugins):
    spec, variant = plugins.registry.model("swin3d_t")
    model = spec.build(ModelRequest(10, 3, 32, variant, frames=8)).to("meta")
    macs = layer_macs(model, (3, 8, 32, 32))
    attention = {name: count for name, count in macs.items() if ".attn." in name}
    assert len(attention) == 24 and all(count > 0 for count in attention.values())
    assert all(count > 0 for count in macs.values())


def cifar_resnet18_macs(num_classes: int) -> int:
    """Conv and linear multiply-adds of a CIFAR-stem ResNet-18 on a 32-px image, layer by layer."""
    total = 32 * 32 * 64 * 3 * 9  # 3×3 stem, stride 1
    channels, side = 64, 32
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        side //= stride
        outputs = side * side * width
        total += outputs * channels * 9 + outputs * width * 9  # first block: (strided) conv1, conv2
        if channels != width:
            total += outputs * channels  # its 1×1 downsample
        total += 2 * outputs * width * 9  # second block
        channels = width
    return total + channels * num_classes


def test_cifar_resnet18_macs(plugins):
    spec, variant = plugins.registry.model("cifar-resnet18")
    model = spec.build(ModelRequest(10, 3, 32, variant))
    measured = sum(layer_macs(model, (3, 32, 32)).values())
    assert measured == cifar_resnet18_macs(10) == 555_422_720  # fvcore's conv + linear count agrees
    assert measured == pytest.approx(0.556e9, rel=0.02)


def test_sparse_macs_scales_by_density_and_keeps_unlisted_layers_dense():
    assert sparse_macs({"a.weight": 100, "b.weight": 40}, {"a.weight": 0.25}) == 25 + 40


def test_training_flops_follow_rigl():
    cost = training_flops(sparse=1.0, dense=4.0, delta_t=1)
    assert (cost.dense, cost.static_sparse, cost.rigl) == (12.0, 3.0, (3 + 2 + 4) / 2)
    cost = training_flops(sparse=2.0, dense=10.0, delta_t=100)
    assert cost.rigl == pytest.approx((3 * 2 * 100 + 2 * 2 + 10) / 101)
    assert cost.static_sparse < cost.rigl < cost.dense
    assert training_flops(sparse=5.0, dense=5.0, delta_t=100).rigl == pytest.approx(15.0)
    with pytest.raises(ValueError, match="delta_t"):
        training_flops(sparse=1.0, dense=1.0, delta_t=0)
