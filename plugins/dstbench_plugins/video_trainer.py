"""`video`: supervised action recognition on clips (N, C, T, H, W), the paper's video recipe.

`dstbench.train.Trainer` trains clips exactly as it trains images: `model_input` puts them in channels-last-3d
memory order, bf16 autocast and label smoothing apply unchanged, and the loader crops and flips every clip's
frames together. What this trainer adds is the recipe of the paper's UCF101 runs (3D ResNet-50, I3D-ResNet-50):
SGD with momentum 0.9, lr 0.01 on a cosine schedule, weight decay 5e-4, 50 epochs; a dataset's recipe overrides it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from dstbench.hookspecs import hookimpl
from dstbench.train import Trainer


class VideoTrainer(Trainer):
    name = "video"
    description = "Supervised video classification: SGD lr 0.01 cosine, momentum 0.9, wd 5e-4, 50 epochs"
    modality = "video"
    default = True
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.01,
        "schedule": "cosine",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "epochs": 50,
    }


@hookimpl
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    register(VideoTrainer)
