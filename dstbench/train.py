"""The training loop. Trainers are registered plugins (`register_trainers`): a subclass of `Trainer` sets its
modality and recipe defaults and may override `build_optimizer`, `build_scheduler` or `forward` (mixup, say).

The loop knows no algorithm by name: it calls the lifecycle hooks, which reach every plugin and the run's
algorithm. It keeps the device busy: no host synchronisation per step; loss and accuracy are read a few times
a second for the progress bar and at the end of each epoch, where a non-finite loss stops the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dstbench.distributed import Distributed
from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.algorithm import Algorithm
    from dstbench.config import RunConfig
    from dstbench.data import ImageData
    from dstbench.data.loader import Batch
    from dstbench.plugins import Plugins
    from dstbench.report import Reporter, Task

REPORT_INTERVAL_S = 0.5


class TrainingDiverged(UserError):
    exit_code = 3


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float
    train_acc: float  # percent
    lr: float  # the learning rate after the epoch, which the next one starts with (0 after a cosine schedule)
    seconds: float
    images: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    steps: int
    train_samples: int
    wall_time_s: float  # training time only, summed over resumed sessions
    images_per_s: float
    final_loss: float
    final_train_acc: float
    history: tuple[EpochStats, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [asdict(s) for s in self.history]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "history": tuple(EpochStats(**s) for s in data["history"])})


@dataclass
class Run:
    """The state of a run in training; lifecycle hooks receive it."""

    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    algorithm: Algorithm
    train_data: ImageData
    device: torch.device
    hooks: Plugins
    reporter: Reporter
    generator: torch.Generator  # data order and augmentation, on the CPU
    channels_last: bool = False
    checkpoint_path: Path | None = None
    dist: Distributed = field(default_factory=Distributed)
    train_model: nn.Module | None = None  # what the trainer calls: the model, or its DistributedDataParallel wrapper
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    loss: torch.Tensor | None = None  # the last step's loss, on the device
    history: list[EpochStats] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.train_model is None:  # not `or`: a module with __len__ (an empty Sequential, say) is falsy
            self.train_model = self.model

    @property
    def steps_per_epoch(self) -> int:
        return self.train_data.num_batches(self.config.batch_size, train=True, processes=self.dist.world_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @cached_property
    def precision(self) -> str:
        """'bf16' (autocast) or 'fp32', as `resolve_precision` decides for this run's device."""
        return resolve_precision(self.config.precision, self.device)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """'bf16' or 'fp32'; auto is bf16 autocast on a GPU that computes in bf16 natively (CUDA compute capability 8
    and later, ROCm) and fp32 elsewhere: older GPUs only emulate bf16, slower than fp32."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and _native_bf16(device) else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def _native_bf16(device: torch.device) -> bool:
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def model_input(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 images or clips → float in [0, 1], in the memory format the model runs in."""
    x = images.float().div_(255)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
    return x.contiguous()


class _Schedule:
    """LR factor per step: linear warm-up, then cosine to zero, steps at milestones, or constant."""

    def __init__(self, kind: str, total: int, warmup: int, milestones: tuple[float, ...], gamma: float):
        self.kind, self.total, self.warmup, self.gamma = kind, total, warmup, gamma
        self.milestones = [round(m * total) for m in milestones]

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(1, self.total - self.warmup)))
        if self.kind == "multistep":
            return self.gamma ** sum(step >= m for m in self.milestones)
        return 1.0


class Trainer:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    modality: ClassVar[str] = "image"
    default: ClassVar[bool] = False  # the trainer a dataset of this modality gets without --trainer
    defaults: ClassVar[dict[str, Any]] = {}  # recipe settings below the dataset's, e.g. {"lr": 0.01}

    def build_optimizer(self, cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (or AdamW) over all parameters, with weight decay on every one of them, batch-norm weights and biases
        included. That is the recipe of the code this paper's group builds on (sparselearning, ITOP, GraNet:
        `optim.SGD(model.parameters(), ..., weight_decay=5e-4)`); RigL's ImageNet code (the TPU ResNet's loss)
        leaves batch-norm variables out of its L2 loss. A recipe that wants that overrides this method with two
        parameter groups. Masked weights are zero and stay zero under decay, so it costs them nothing."""
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )

    def build_scheduler(
        self, cfg: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler:
        schedule = _Schedule(
            cfg.schedule, steps_per_epoch * cfg.epochs, steps_per_epoch * cfg.warmup_epochs, cfg.milestones, cfg.gamma
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def forward(self, run: Run, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the logits of one training batch."""
        x = model_input(batch.images, run.channels_last)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
            logits = run.train_model(x)
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=run.config.label_smoothing)
        return loss, logits

    def fit(self, run: Run) -> TrainResult:
        cfg = run.config
        images_per_epoch = min(len(run.train_data), run.steps_per_epoch * cfg.batch_size) // run.dist.world_size
        run.hooks.run_start(run)
        remaining = images_per_epoch * (cfg.epochs - run.epoch)
        unit = "clip" if self.modality == "video" else "img"
        with run.reporter.task(f"epoch {run.epoch + 1}/{cfg.epochs}", total=remaining, unit=unit) as task:
            for epoch in range(run.epoch, cfg.epochs):
                task.describe(f"epoch {epoch + 1}/{cfg.epochs}")
                stats = self._epoch(run, epoch, task)
                run.epoch = epoch + 1
                run.history.append(stats)
                run.hooks.epoch_end(run, stats)
                run.reporter.info(
                    f"epoch {stats.epoch}/{cfg.epochs}  loss {stats.loss:.4f}  train acc {stats.train_acc:.2f}%  "
                    f"lr {stats.lr:.4g}  {stats.images_per_s:,.0f} {unit}/s"
                )
                if run.checkpoint_path is not None and run.dist.is_main:
                    from dstbench.checkpoint import save_training

                    save_training(run, run.checkpoint_path)
                run.dist.barrier()
        result = _result(run)
        run.hooks.run_end(run, result)
        return result

    def _epoch(self, run: Run, epoch: int, task: Task) -> EpochStats:
        run.model.train()
        loss_sum = torch.zeros((), device=run.device)
        correct = torch.zeros((), dtype=torch.int64, device=run.device)
        seen = pending = 0
        start = last_report = time.perf_counter()
        batches = run.train_data.batches(
            run.config.batch_size,
            run.device,
            train=True,
            generator=run.generator,
            shard=(run.dist.rank, run.dist.world_size),
        )
        for batch in batches:
            run.optimizer.zero_grad(set_to_none=True)
            loss, logits = self.forward(run, batch)
            loss.backward()
            run.optimizer.step()
            run.scheduler.step()
            run.step += 1
            run.loss = loss.detach()
            run.hooks.step_end(run)
            n = len(batch.labels)
            loss_sum += run.loss * n
            correct += (logits.argmax(1) == batch.labels).sum()
            seen += n
            pending += n
            if time.perf_counter() - last_report > REPORT_INTERVAL_S:
                mean_loss = loss_sum.item() / seen
                if not run.dist.enabled:  # with several processes, all stop together at the epoch's end
                    self._check_finite(run, mean_loss)
                task.advance(pending, loss=f"{mean_loss:.4f}", acc=f"{100 * correct.item() / seen:.2f}%")
                pending, last_report = 0, time.perf_counter()
        totals = run.dist.sum(
            torch.stack(
                [loss_sum.double(), correct.double(), torch.tensor(seen, device=run.device, dtype=torch.float64)]
            )
        )
        loss_total, correct_total, seen = totals.tolist()
        mean_loss = self._check_finite(run, loss_total / max(seen, 1))
        accuracy = 100 * correct_total / max(seen, 1)
        task.advance(pending, loss=f"{mean_loss:.4f}", acc=f"{accuracy:.2f}%")
        lr = run.optimizer.param_groups[0]["lr"]
        return EpochStats(epoch + 1, mean_loss, accuracy, lr, time.perf_counter() - start, int(seen))

    @staticmethod
    def _check_finite(run: Run, mean_loss: float) -> float:
        if not math.isfinite(mean_loss):
            where = (
                f"the last good checkpoint (epoch {run.epoch}) is kept in {run.checkpoint_path}"
                if (run.checkpoint_path and run.checkpoint_path.exists())
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"the training loss became {mean_loss} in epoch {run.epoch + 1} (by step {run.step}); {where}; "
                f"try a lower --lr (now {run.config.lr:g})"
            )
        return mean_loss


def _result(run: Run) -> TrainResult:
    seconds = sum(s.seconds for s in run.history)
    images = sum(s.images for s in run.history)
    last = run.history[-1]
    return TrainResult(
        epochs=run.epoch,
        steps=run.step,
        train_samples=len(run.train_data),
        wall_time_s=seconds,
        images_per_s=images / seconds if seconds else 0.0,
        final_loss=last.loss,
        final_train_acc=last.train_acc,
        history=tuple(run.history),
    )
