"""Atomic files: training checkpoints (to resume), the final model file, and JSON.

Every file is written to a temporary name in the same directory and renamed over the target, so a crash leaves
either the old file or the new one, never half of one. Checkpoints hold only tensors and plain values and load
with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dstbench.config import TRAIN, settings_diff
from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.config import RunConfig
    from dstbench.train import Run, TrainResult

TRAINING_FORMAT = "dstbench-training-checkpoint"
MODEL_FORMAT = "dstbench-model"
VERSION = 1
CONTENTS = {  # what each format's file holds, and of which type
    MODEL_FORMAT: {"config": dict, "model": dict, "algorithm": dict, "training": dict},
    TRAINING_FORMAT: {
        **{"config": dict, "epoch": int, "step": int, "model": dict, "optimizer": dict, "scheduler": dict},
        **{"algorithm": dict, "rng": dict, "history": list},
    },
}


def atomic_write(path: Path, write: Callable[[Path], None], mode: int | None = None, sync: bool = True) -> None:
    """Call `write(tmp)` and rename tmp over `path`. The file keeps mkstemp's private 0600 unless `mode` is given
    (0o644 for a file to publish or commit). With `sync` the data reach the disk before the rename, and the rename
    before this returns: otherwise a power cut could leave the new name on an empty file, the old one gone. Caches,
    which are checked when read and rebuilt when wrong, skip that (an fsync per file would cost more than them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        if mode is not None:
            os.chmod(tmp, mode)
        if sync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync:
        _fsync(path.parent, directory=True)


def _fsync(path: str | Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some systems cannot open a directory; its entry then reaches the disk in its own time
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def write_json(path: Path, data: Any, mode: int | None = None, sync: bool = True) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n"), mode, sync)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path, expected_format: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserError(f"{path} is not a dstbench checkpoint: {_load_failure(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        raise UserError(f"{path} is not a {expected_format} file")
    if state.get("version") != VERSION:
        raise UserError(f"{path} has format version {state.get('version')}; this dstbench reads version {VERSION}")
    for key, kind in CONTENTS[expected_format].items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise UserError(f"{path} is damaged: its {key!r} is missing or not a {kind.__name__}")
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path | str) -> None:
    """`model.load_state_dict`, with a one-line error naming the file when the weights are another model's."""
    expected = model.state_dict()
    missing, unknown = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    shapes = [k for k in expected.keys() & weights.keys() if tuple(expected[k].shape) != tuple(weights[k].shape)]
    if missing or unknown or shapes:
        first = (missing or unknown or shapes)[0]
        raise UserError(
            f"{path} holds weights that do not fit its model: {len(missing)} of its tensors missing, {len(unknown)} "
            f"unknown, {len(shapes)} of another shape (first: {first})"
        )
    model.load_state_dict(weights)


def training_record(state: dict[str, Any], path: Path) -> TrainResult:
    """A model file's record of its training; a UserError naming the file when it is damaged."""
    from dstbench.train import TrainResult

    try:
        return TrainResult.from_dict(state["training"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is damaged: its training record does not read ({type(exc).__name__}: {exc})") from None


def _load_failure(exc: Exception) -> str:
    """Why torch.load failed, in a few words: its own messages run to paragraphs of advice that do not apply here
    (loading with weights_only=False would run the file's code)."""
    text = str(exc)
    if "zip archive" in text or "central directory" in text or isinstance(exc, (EOFError, OSError)):
        return "the file is truncated or damaged (an interrupted copy?)"
    if isinstance(exc, pickle.UnpicklingError):
        foreign = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if foreign:
            return f"it holds a {foreign.group(1)} object, which dstbench does not load (unpickling it could run code)"
        return "torch.save did not write it"
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def _rng_state(run: Run) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": run.generator.get_state()}
    if run.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(run.device)
    return state


def save_training(run: Run, path: Path) -> None:
    state = {
        "format": TRAINING_FORMAT,
        "version": VERSION,
        "config": run.config.to_dict(),  # all of it, so that `--resume` alone can continue; TRAIN fields must match
        "epoch": run.epoch,
        "step": run.step,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "algorithm": run.algorithm.state_dict(),
        "rng": _rng_state(run),
        "history": [vars(s) for s in run.history],
        "device_type": run.device.type,
        "precision": run.precision,
        "channels_last": run.channels_last,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _check_settings(path: Path, state: dict[str, Any], cfg: RunConfig) -> None:
    saved = state["config"]
    diff = settings_diff(saved, cfg.role_dict(TRAIN))
    if diff:
        raise UserError(
            f"{path} was written by a run with other settings: {', '.join(diff)}; resume with the same settings"
        )


def load_training(path: Path, cfg: RunConfig) -> dict[str, Any]:
    """A checkpoint's state, after checking that it was written by a run with the same training settings."""
    state = load_state(path)
    _check_settings(path, state, cfg)
    if not 0 <= state["epoch"] <= cfg.epochs:
        raise UserError(f"{path} is damaged: it was saved after epoch {state['epoch']} of {cfg.epochs}")
    return state


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state, unchecked."""
    return _load(path, TRAINING_FORMAT)


def _how(device_type: str, precision: str, channels_last: bool) -> str:
    return f"{device_type} in {precision}{', channels-last' if channels_last else ''}"


def restore_training(run: Run, state: dict[str, Any]) -> None:
    """Continue where `save_training` left off: model, optimizer (momentum), scheduler, counters, history and the
    random number generators. A run moves to another kind of device only by starting over: its generators (the
    algorithm's lives on the device), its precision (`--precision auto`) and its memory format (`--channels-last`
    defaults to on for CUDA; convolutions sum in another order in it) would change under it."""
    from dstbench.train import EpochStats

    now = run.device.type, run.precision, run.channels_last
    saved = state.get("device_type", now[0]), state.get("precision", now[1]), state.get("channels_last", now[2])
    if saved != now:
        raise UserError(
            f"the checkpoint was trained on {_how(*saved)} up to epoch {state['epoch']}; this process would "
            f"continue on {_how(*now)}: resume it on a {saved[0]} device (--device) in {saved[1]} "
            f"({'--channels-last' if saved[2] else '--no-channels-last'}), or start the run again"
        )
    load_weights(run.model, state["model"], run.checkpoint_path or Path("checkpoint.pt"))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.epoch, run.step = state["epoch"], state["step"]
    run.history = [EpochStats(**s) for s in state["history"]]
    torch.set_rng_state(state["rng"]["torch"])
    run.generator.set_state(state["rng"]["data"])
    if run.device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], run.device)


def save_model(
    path: Path, cfg: RunConfig, model: torch.nn.Module, algorithm_state: dict, extra: dict[str, Any]
) -> None:
    """The trained model with its full config, masks and training record: what `dstbench eval` needs."""
    state = {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "algorithm": algorithm_state,
        **extra,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_model(path: Path, cfg: RunConfig | None = None) -> dict[str, Any]:
    """A model file's state; with `cfg`, check that it was trained with the same settings."""
    state = _load(path, MODEL_FORMAT)
    if cfg is not None:
        _check_settings(path, state, cfg)
    return state
