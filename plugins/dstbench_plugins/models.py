"""Built-in models: CIFAR-style networks for 32-px images, ImageNet-size timm models, and any timm model as
`timm/<name>`. Nothing is pretrained. timm is imported inside the build functions: importing it takes about a
second, which every CLI command would otherwise pay."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.models import ModelRequest, ModelSpec

Build = Callable[[ModelRequest], nn.Module]

VGG16_LAYERS: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _timm(name: str, request: ModelRequest, **kwargs: object) -> nn.Module:
    import timm

    return timm.create_model(
        name, pretrained=False, num_classes=request.num_classes, in_chans=request.in_chans, **kwargs
    )


def _check_patch_grid(model: nn.Module, name: str, image_size: int) -> nn.Module:
    """Refuse an image size that the model's patch size does not divide: timm would silently crop the remainder."""
    patch_size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch_size is not None and any(image_size % p for p in patch_size):
        patch = max(patch_size)
        sizes = ", ".join(str(patch * k) for k in range(1, 5))
        raise UserError(
            f"model '{name}' cuts images into {patch}-px patches, so image size {image_size} does not work; "
            f"use a multiple of {patch} ({sizes}, ...)"
        )
    return model


def timm_with_cifar_stem(timm_name: str, stem: str, stem_pool: str | None = None) -> Build:
    """timm's `timm_name` with its `stem` conv replaced by a 3×3 stride-1 conv and its `stem_pool` removed, so a
    32-px image is not downsampled before the first block (the DST code bases' CIFAR networks)."""

    def build(request: ModelRequest) -> nn.Module:
        model = _timm(timm_name, request)
        conv = nn.Conv2d(request.in_chans, getattr(model, stem).out_channels, 3, 1, 1, bias=False)
        # timm initialises the ResNet and EfficientNet convs this way; nn.Conv2d's own default differs
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        setattr(model, stem, conv)
        if stem_pool is not None:
            setattr(model, stem_pool, nn.Identity())
        return model

    return build


def timm_plain(timm_name: str) -> Build:
    return lambda request: _timm(timm_name, request)


def timm_deit(timm_name: str, spec_name: str) -> Build:
    def build(request: ModelRequest) -> nn.Module:
        model = _timm(timm_name, request, img_size=request.image_size)
        return _check_patch_grid(model, spec_name, request.image_size)

    return build


def build_timm_family(request: ModelRequest) -> nn.Module:
    import timm

    name = request.variant or ""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"timm has no model '{name}'; {hint}list them with: python -c \"import timm; print(timm.list_models())\""
        )
    try:  # transformers are built for one image size; convnets take any size and have no such argument
        model = _timm(name, request, img_size=request.image_size)
    except TypeError:
        model = _timm(name, request)
    return _check_patch_grid(model, f"timm/{name}", request.image_size)


def build_cifar_deit_tiny(request: ModelRequest) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=request.image_size,
        patch_size=4,
        in_chans=request.in_chans,
        num_classes=request.num_classes,
        embed_dim=192,
        depth=12,
        num_heads=3,
    )
    return _check_patch_grid(model, "cifar-deit-tiny", request.image_size)


def _conv_bn_relu(in_chans: int, out_chans: int, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=bias), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]


def _vgg16_features(in_chans: int, bias: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = in_chans
    for item in VGG16_LAYERS:
        if item == "M":
            # ceil_mode changes nothing for 32 or 64 px, but keeps Fashion-MNIST's 28 px (28-14-7-4-2-1) from
            # shrinking to nothing at the fifth pool
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += _conv_bn_relu(channels, int(item), bias)
            channels = int(item)
    return [*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def build_cifar_vgg16(request: ModelRequest) -> nn.Module:
    # Not timm's vgg16: its 4096-wide ImageNet head would hold most of the weights; CIFAR VGG has one Linear.
    return nn.Sequential(*_vgg16_features(request.in_chans), nn.Linear(512, request.num_classes))


def build_cifar_vgg16_like(request: ModelRequest) -> nn.Module:
    """sparselearning's VGG16('like') (Dettmers & Zettlemoyer; the code ITOP and GraNet build on): biased convs,
    and a classifier Linear(512, 512), ReLU, BatchNorm1d, Linear. Its flatten of the 1 × 1 map at 32 px is the
    average pool here, which also takes 64 px."""
    head = [nn.Linear(512, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Linear(512, request.num_classes)]
    return nn.Sequential(*_vgg16_features(request.in_chans, bias=True), *head)


def build_digits_cnn(request: ModelRequest) -> nn.Module:
    """About 2.8 M multiply-adds per 32-px image, so a CPU trains it in seconds."""
    return nn.Sequential(
        *_conv_bn_relu(request.in_chans, 16),
        nn.MaxPool2d(2),
        *_conv_bn_relu(16, 32),
        nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, request.num_classes),
    )


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    cifar_stem = "CIFAR stem (3×3 stride-1 conv, no max-pool), for 32–64 px"
    specs = [
        *(
            ModelSpec(
                f"cifar-resnet{depth}",
                timm_with_cifar_stem(f"resnet{depth}", "conv1", "maxpool"),
                f"ResNet-{depth}, {cifar_stem}",
            )
            for depth in (18, 34, 50)
        ),
        ModelSpec(
            "cifar-efficientnet-b0",
            timm_with_cifar_stem("efficientnet_b0", "conv_stem"),
            f"EfficientNet-B0, {cifar_stem}",
        ),
        ModelSpec("cifar-vgg16", build_cifar_vgg16, "VGG-16 with batch norm and one linear layer, for 32–64 px"),
        ModelSpec(
            "cifar-vgg16-like",
            build_cifar_vgg16_like,
            "sparselearning's VGG16('like'): biased convs, two linear layers, for 32–64 px",
        ),
        ModelSpec("cifar-deit-tiny", build_cifar_deit_tiny, "DeiT-Tiny with 4-px patches, for 32 px (sizes ÷ 4)"),
        ModelSpec("digits-cnn", build_digits_cnn, "3-conv CNN, 24k weights, for small images (≥ 16 px) on a CPU"),
        ModelSpec("resnet18", timm_plain("resnet18"), "ResNet-18, ImageNet stem, for 64–224 px"),
        ModelSpec("resnet50", timm_plain("resnet50"), "ResNet-50, ImageNet stem, for 64–224 px"),
        ModelSpec("efficientnet-b0", timm_plain("efficientnet_b0"), "EfficientNet-B0, ImageNet stem, for 64–224 px"),
        ModelSpec(
            "deit-small",
            timm_deit("deit_small_patch16_224", "deit-small"),
            "DeiT-Small with 16-px patches, for 224 px (sizes ÷ 16)",
        ),
        ModelSpec(
            "deit-base",
            timm_deit("deit_base_patch16_224", "deit-base"),
            "DeiT-Base with 16-px patches, for 224 px (sizes ÷ 16)",
        ),
        ModelSpec("timm/", build_timm_family, "any timm model, e.g. timm/convnext_atto; not pretrained"),
    ]
    for spec in specs:
        register(spec)
