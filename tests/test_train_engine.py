"""The training engine on its own: LR schedules, resume bit for bit, checkpoints, precision, host syncs.

Runs are built directly (a tiny model on 8×8 images), not through `dstbench run`, so each takes milliseconds.
"""

import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dstbench import checkpoint
from dstbench import train as train_module
from dstbench.config import resolve
from dstbench.data import Augment, TensorImages
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.report import PlainReporter
from dstbench.train import Run, Trainer, _Schedule, model_input, resolve_precision

CPU = torch.device("cpu")
STEPS_PER_EPOCH = 5  # 70 samples in batches of 16: four full ones and one of 6


def _config(plugins, tmp_path, **flags):
    base = {"epochs": 3, "batch_size": 16, "lr": 0.1, "device": "cpu", "quiet": True, "out": str(tmp_path / "run")}
    return resolve({**base, **flags}, None, plugins.registry)


def _data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (70, 3, 8, 8), dtype=torch.uint8, generator=g)
    return TensorImages(images, torch.randint(0, 4, (70,), generator=g), augment=Augment(crop_padding=2, hflip=True))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(512, 4)
    )


class Recorder:
    """The learning rate each step used and its loss, and optionally an interruption after an epoch."""

    def __init__(self, stop_after=None):
        self.lrs, self.losses, self.stop_after = [], [], stop_after

    @hookimpl
    def on_step_end(self, run):
        self.lrs.append(run.scheduler.get_last_lr()[0])  # already the next step's rate
        self.losses.append(run.loss)  # a tensor: reading it here would wait for the device

    @hookimpl
    def on_epoch_end(self, run, stats):
        if stats.epoch == self.stop_after:
            raise KeyboardInterrupt


def _train(plugins, cfg, path=None, stop_after=None, resume=False):
    """Train as the runner does (restore, then the algorithm's setup, then fit); the Run and what was recorded."""
    model = _model()
    trainer = Trainer()
    optimizer = trainer.build_optimizer(cfg, model)
    algorithm = plugins.registry.algorithm(cfg.algo).from_config(cfg)
    run = Run(
        config=cfg,
        model=model,
        optimizer=optimizer,
        scheduler=trainer.build_scheduler(cfg, optimizer, STEPS_PER_EPOCH),
        algorithm=algorithm,
        train_data=_data(),
        device=CPU,
        hooks=plugins,
        reporter=PlainReporter(quiet=True),
        generator=torch.Generator().manual_seed(cfg.seed),
        checkpoint_path=path,
    )
    assert run.steps_per_epoch == STEPS_PER_EPOCH
    state = checkpoint.load_training(path, cfg) if resume else None
    if state:
        checkpoint.restore_training(run, state)
    algorithm.setup(run, state["algorithm"] if state else None)
    recorder = Recorder(stop_after)
    plugins.register(algorithm, name="algorithm")
    plugins.register(recorder, name="recorder")
    try:
        run.result = trainer.fit(run)
    except KeyboardInterrupt:
        run.result = None
    finally:
        plugins.unregister(algorithm)
        plugins.unregister(recorder)
    return run, recorder


# --- the learning-rate schedule ---------------------------------------------------------------------------------


def test_schedule_factors_step_by_step():
    warm = _Schedule("cosine", 20, 4, (), 0.1)
    assert [warm(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]  # linear warm-up, never a step at 0
    assert warm(12) == pytest.approx(0.5) and warm(19) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert warm(20) == pytest.approx(0.0, abs=1e-12) and all(warm(s) > 0 for s in range(20))  # zero after the end
    steps = _Schedule("multistep", 20, 0, (0.5, 0.75), 0.1)
    assert [steps(s) for s in (0, 9, 10, 14, 15, 19)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [_Schedule("constant", 20, 2, (), 0.1)(s) for s in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 1.0]


def test_multistep_drops_at_epoch_boundaries_and_epoch_stats_give_the_rate_after_the_epoch(plugins, tmp_path):
    """Multistep at 1/2 and 3/4 of 4 epochs drops before epochs 3 and 4 (as MultiStepLR with milestones [2, 3]);
    an epoch's recorded rate is the one it ends on, which the next epoch starts with (0 after a cosine schedule)."""
    cfg = _config(plugins, tmp_path, algo="dense", schedule="multistep", epochs=4)
    run, recorder = _train(plugins, cfg)
    used = [0.1, *recorder.lrs[:-1]]  # each step's rate: the first is the peak, then what the previous step set
    assert [set(used[e * 5 : e * 5 + 5]) for e in range(4)] == [{0.1}, {0.1}, {0.1 * 0.1}, {0.1 * 0.1**2}]
    assert [s.lr for s in run.history] == pytest.approx([0.1, 0.01, 0.001, 0.001])
    cosine, _ = _train(plugins, _config(plugins, tmp_path, algo="dense", epochs=2))
    assert [s.lr for s in cosine.history] == pytest.approx([0.05, 0.0], abs=1e-12)


# --- resume ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        {"algo": "dense", "warmup_epochs": 1, "label_smoothing": 0.1},
        {"algo": "dense", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        {"algo": "dense", "schedule": "multistep", "nesterov": "true"},
        {"algo": "rigl", "sparsity": 0.5, "algo_options": {"update_interval": 2}},
        {"algo": "set", "sparsity": 0.5, "algo_options": {"update_interval": 3}, "optimizer": "adamw", "lr": 1e-3},
    ],
    ids=["warmup-smoothing", "adamw", "multistep-nesterov", "rigl", "set-adamw"],
)
def test_resume_mid_training_replays_rates_losses_and_weights(plugins, tmp_path, flags):
    cfg = _config(plugins, tmp_path, **flags)
    full, full_record = _train(plugins, cfg)
    path = tmp_path / "checkpoint.pt"
    _train(plugins, cfg, path, stop_after=2)  # the checkpoint holds epoch 1
    assert checkpoint.load_state(path)["epoch"] == 1
    resumed, record = _train(plugins, cfg, path, resume=True)
    assert record.lrs == full_record.lrs[STEPS_PER_EPOCH:]
    assert torch.equal(torch.stack(record.losses), torch.stack(full_record.losses[STEPS_PER_EPOCH:]))
    assert [s.loss for s in resumed.history] == [s.loss for s in full.history]
    expected = full.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    moments = [v for s in resumed.optimizer.state.values() for v in s.values()]
    expected_moments = [v for s in full.optimizer.state.values() for v in s.values()]
    assert len(moments) == len(expected_moments) and all(map(torch.equal, moments, expected_moments))
    if cfg.algo != "dense":
        masks = resumed.algorithm.masks
        for name in masks:
            assert torch.equal(masks[name], full.algorithm.masks[name])
            assert not masks.weights[name][~masks[name]].any()  # masked weights stay zero after resume


def test_checkpoint_holds_every_generator_and_resumes_after_the_last_epoch(plugins, tmp_path):
    cfg = _config(plugins, tmp_path, algo="dense", epochs=2)
    path = tmp_path / "checkpoint.pt"
    full, _ = _train(plugins, cfg, path)
    state = checkpoint.load_state(path)
    assert state["epoch"] == 2 and state["step"] == 10
    assert torch.equal(state["rng"]["data"], full.generator.get_state())
    assert torch.equal(state["rng"]["torch"], torch.get_rng_state())
    assert (state["device_type"], state["precision"]) == ("cpu", "fp32")
    torch.manual_seed(123)
    again, record = _train(plugins, cfg, path, resume=True)  # as if it stopped before writing model.pt
    assert record.losses == [] and again.step == 10 and again.result.history == full.result.history
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])


def test_checkpoint_of_another_kind_of_device_is_refused(plugins, tmp_path):
    cfg = _config(plugins, tmp_path, algo="dense", epochs=2)
    path = tmp_path / "checkpoint.pt"
    _train(plugins, cfg, path, stop_after=2)
    state = checkpoint.load_state(path)
    state.update(device_type="cuda", precision="bf16")  # --precision auto on a GPU: bf16
    torch.save(state, path)
    with pytest.raises(UserError, match=r"trained on cuda in bf16 up to epoch 1; .* continue on cpu in fp32"):
        _train(plugins, cfg, path, resume=True)


def test_atomic_write_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    checkpoint.write_json(tmp_path / "a.json", {"x": 1})
    assert events == ["fsync", "replace", "fsync"]  # the file, the rename, the directory
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    events.clear()
    checkpoint.write_json(tmp_path / "cache.json", {"x": 2}, sync=False)  # a cache: rebuilt when wrong
    assert events == ["replace"]


# --- precision and memory format -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("major", "auto"), [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_is_bf16_only_where_the_gpu_computes_it(monkeypatch, major, auto):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == auto
    assert resolve_precision("bf16", cuda) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def test_model_input_scales_and_sets_the_memory_format():
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    x = model_input(images, channels_last=True)
    assert x.dtype == torch.float32 and torch.equal(x, images.float() / 255)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # what the loader's crop gives (channels last) becomes plain contiguous when the model is not channels last
    assert model_input(images.contiguous(memory_format=torch.channels_last), channels_last=False).is_contiguous()
    clips = model_input(torch.zeros(2, 3, 2, 4, 5, dtype=torch.uint8), channels_last=True)
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)


def test_bf16_autocast_runs_on_the_cpu(plugins, tmp_path):
    run, _ = _train(plugins, _config(plugins, tmp_path, algo="dense", epochs=1, precision="bf16"))
    assert run.bf16 and math.isfinite(run.history[-1].loss)


# --- host synchronisation ------------------------------------------------------------------------------------------


class ReadBacks(TorchDispatchMode):
    """Counts the operations that make the host wait for the device: reading a value, data-dependent shapes."""

    WAITS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.WAITS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("algo", ["dense", "rigl"])
def test_training_steps_never_read_back_from_the_device(plugins, tmp_path, monkeypatch, algo):
    monkeypatch.setattr(train_module, "REPORT_INTERVAL_S", math.inf)  # the progress bar's reads are timed, not per step
    flags = {"sparsity": 0.5, "algo_options": {"update_interval": 1}} if algo == "rigl" else {}
    with ReadBacks() as reads:
        run, _ = _train(plugins, _config(plugins, tmp_path, algo=algo, epochs=2, **flags))
    assert run.step == 10 and reads.count == 0
