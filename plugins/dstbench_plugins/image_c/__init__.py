"""The image corruption suites of Hendrycks & Dietterich (ICLR 2019), generated on the fly, batched on the device.

`cifar-c`, `tinyimagenet-c` and `imagenet-c` hold all 19 corruptions (the 15 of the benchmark and 4 extra) with the
parameter tables of `make_cifar_c.py` (32 px), `make_tinyimagenet_c.py` (64 px) and `make_imagenet_c.py`
(224 px); `cifar-c-noise` is the four noises at 32 px, a fast suite for small runs. Each corruption group lives in
its own module (noise, blur, weather, digital) as a table of `dstbench.corruption.Corruption`s.
"""

from __future__ import annotations

from dstbench.corruption import TableSuite
from dstbench.hookspecs import hookimpl
from dstbench_plugins.image_c import blur, digital, noise, weather

# RobustBench and the papers average over these 15; CIFAR-10-C ships the 4 extra ones too.
BENCHMARK = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
SUBSETS = {"benchmark": BENCHMARK, "extra": EXTRA, **GROUPS}
MODULES = (noise, blur, weather, digital)


def all_corruptions() -> dict:
    table = {}
    for module in MODULES:
        table.update(module.CORRUPTIONS)
    return {name: table[name] for name in BENCHMARK + EXTRA if name in table}


def suites() -> list[TableSuite]:
    table = all_corruptions()
    source = "Hendrycks & Dietterich 2019"
    return [
        TableSuite("cifar-c", f"CIFAR-10-C: 19 corruptions, 32-px parameters ({source})", 32, table, SUBSETS),
        TableSuite(
            "tinyimagenet-c", f"Tiny-ImageNet-C: 19 corruptions, 64-px parameters ({source})", 64, table, SUBSETS
        ),
        TableSuite("imagenet-c", f"ImageNet-C: 19 corruptions, 224-px parameters ({source})", 224, table, SUBSETS),
        TableSuite(
            "cifar-c-noise",
            "The four noises of CIFAR-10-C at 32 px: a fast suite for small runs",
            32,
            noise.CORRUPTIONS,
            {"noise": GROUPS["noise"]},
        ),
    ]


@hookimpl
def register_suites(register):
    for suite in suites():
        register(suite)
