"""Built-in video models: torchvision's video networks, pytorchvideo's 3D ResNet-50s (the paper's "slow" 3D
ResNet-50 and I3D-ResNet-50) and a tiny 3D CNN for CPU runs. Every model takes normalised clips (N, C, T, H, W)
and returns (N, classes) logits, has dropout 0.5 before its classifier (the paper's video recipe) and pools
adaptively, so clips smaller than Kinetics' 16×224×224 work. Nothing is pretrained.

torchvision.models.video and pytorchvideo are imported inside the build functions, which keeps them out of every
CLI command's start-up. pytorchvideo is an optional extra (`pip install 'dstbench[video]'`); without it the other
models work and its models explain how to get it. The parts of pytorchvideo 0.1.5 used here import cleanly with
current torchvision (only `pytorchvideo.transforms` needs the removed `torchvision.transforms.functional_tensor`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

from torch import nn

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.models import ModelRequest, ModelSpec

Build = Callable[[ModelRequest], nn.Module]

DROPOUT = 0.5  # before the final linear layer, as in the paper's video recipe
SWIN_PATCH = (2, 4, 4)  # swin3d_t's patch: frames × pixels × pixels


def with_dropout(model: nn.Module, head: str) -> nn.Module:
    """Put dropout in front of the model's classifier attribute `head`, keeping the classifier's weights."""
    setattr(model, head, nn.Sequential(nn.Dropout(DROPOUT), getattr(model, head)))
    return model


def _torchvision(name: str, request: ModelRequest, **kwargs: object) -> nn.Module:
    """torchvision's video model `name`, randomly initialised; its stems take RGB clips only."""
    if request.in_chans != 3:
        raise UserError(f"model '{name}' takes RGB clips (3 channels); this dataset has {request.in_chans}")
    from torchvision.models import video

    return getattr(video, name)(weights=None, num_classes=request.num_classes, **kwargs)


def torchvision_resnet3d(name: str) -> Build:
    """r3d_18, mc3_18 or r2plus1d_18: adaptive pooling already, no dropout before `fc` until we add it."""
    return lambda request: with_dropout(_torchvision(name, request), "fc")


def check_clip_size(name: str, request: ModelRequest, min_frames: int, min_pixels: int) -> None:
    """Refuse clips too small for the model's downsampling, which would fail deep inside its forward pass."""
    if request.image_size < min_pixels or (request.frames or min_frames) < min_frames:
        raise UserError(
            f"model '{name}' takes clips of at least {min_frames} frames of {min_pixels} px, "
            f"got {request.frames or '?'} frames of {request.image_size} px"
        )


def build_s3d(request: ModelRequest) -> nn.Module:
    """S3D has dropout before its 1×1×1-conv classifier; its fixed (2, 7, 7) average pool, sized for 16×224×224
    clips, becomes a global one (the same output at that size). It downsamples T by 8 and H, W by 32."""
    check_clip_size("s3d", request, 5, 17)
    model = _torchvision("s3d", request, dropout=DROPOUT)
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    return model


def check_swin_grid(request: ModelRequest) -> None:
    """Refuse clips that swin3d_t's patch embedding would silently zero-pad to whole 2×4×4 patches."""
    frames, pixels = SWIN_PATCH[0], SWIN_PATCH[1]
    if request.image_size % pixels or (request.frames or frames) % frames:
        raise UserError(
            f"model 'swin3d_t' cuts clips into {frames}-frame × {pixels}-px patches, so "
            f"{request.frames or '?'} frames of {request.image_size} px do not work; use an even number of frames "
            f"and a multiple of {pixels} px (e.g. 8×32, 16×112, 16×224)"
        )


def build_swin3d_t(request: ModelRequest) -> nn.Module:
    check_swin_grid(request)
    return with_dropout(_torchvision("swin3d_t", request), "head")


def import_pytorchvideo_hub(name: str) -> ModuleType:
    """pytorchvideo's ResNet builders, or a UserError saying how to install them. Its import of models that
    `torch.jit.script` at import time prints a FutureWarning that says nothing to a dstbench user; it is muted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from pytorchvideo.models.hub import resnet
    except ImportError as exc:
        raise UserError(f"model '{name}' needs pytorchvideo ({exc}); pip install 'dstbench[video]'") from None
    return resnet


def pytorchvideo_resnet(name: str, min_frames: int = 1) -> Build:
    """pytorchvideo's hub builder `name` (its published architecture settings) with pretrained=False, which
    downloads nothing; the head pools adaptively and drops out at 0.5 before its linear projection."""

    def build(request: ModelRequest) -> nn.Module:
        check_clip_size(name, request, min_frames, 1)
        hub = import_pytorchvideo_hub(name)
        return getattr(hub, name)(
            pretrained=False,
            input_channel=request.in_chans,
            model_num_class=request.num_classes,
            dropout_rate=DROPOUT,
            head_pool=nn.AdaptiveAvgPool3d,
            head_output_size=(1, 1, 1),
        )

    return build


def _conv3d_bn_relu(in_chans: int, out_chans: int, stride: tuple[int, int, int] = (1, 1, 1)) -> list[nn.Module]:
    return [
        nn.Conv3d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(out_chans),
        nn.ReLU(inplace=True),
    ]


def build_clip_cnn(request: ModelRequest) -> nn.Module:
    """Three 3×3×3 convs (temporal kernels, so motion direction is learnable), about 16 M multiply-adds per
    16×32×32 clip: the first conv strides 2 in space and pooling halves T, H and W twice, so a CPU trains it in
    seconds."""
    check_clip_size("clip-cnn", request, 4, 7)
    return nn.Sequential(
        *_conv3d_bn_relu(request.in_chans, 16, stride=(1, 2, 2)),
        nn.MaxPool3d(2),
        *_conv3d_bn_relu(16, 32),
        nn.MaxPool3d(2),
        *_conv3d_bn_relu(32, 64),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Dropout(DROPOUT),
        nn.Linear(64, request.num_classes),
    )


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    tv, pv = "torchvision, RGB", "pytorchvideo, the video extra"  # no [brackets]: `dstbench list` renders markup
    specs = [
        ("r3d_18", torchvision_resnet3d("r3d_18"), f"3D ResNet-18, 33 M weights ({tv}); any clip size"),
        ("mc3_18", torchvision_resnet3d("mc3_18"), f"MC3 ResNet-18, 11 M weights ({tv}); any clip size"),
        ("r2plus1d_18", torchvision_resnet3d("r2plus1d_18"), f"R(2+1)D-18, 31 M weights ({tv}); any clip size"),
        ("s3d", build_s3d, f"S3D, 7.9 M weights ({tv}); clips of ≥ 5 frames of ≥ 17 px"),
        ("swin3d_t", build_swin3d_t, f"Video Swin-T, 28 M weights ({tv}); even frame counts, sizes ÷ 4 px"),
        ("slow_r50", pytorchvideo_resnet("slow_r50"), f"the paper's 3D ResNet-50 (slow), 32 M weights ({pv})"),
        ("i3d_r50", pytorchvideo_resnet("i3d_r50", min_frames=2), f"I3D ResNet-50, 27 M weights, ≥ 2 frames ({pv})"),
        ("clip-cnn", build_clip_cnn, "3-conv 3D CNN, 71k weights, for 16×32×32 clips on a CPU (≥ 4 frames, ≥ 7 px)"),
    ]
    for name, build, description in specs:
        register(ModelSpec(name, build, description, modality="video"))
