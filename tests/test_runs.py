"""Whole runs in process: determinism, resume after an interruption, checkpoints, divergence."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import StopAfter, run_config

from dstbench import checkpoint
from dstbench.entry import validate_file
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import RunDir, RunLock, execute, saved_config
from dstbench.train import TrainingDiverged

QUIET = PlainReporter(quiet=True)
METRICS = ("clean_acc", "corruptions_acc", "rpc", "corruptions")


def _metrics(entry):
    data = entry.to_dict()
    return {k: data[k] for k in METRICS}, data["training"]["history"], data["sparsity"]


def test_finished_run_writes_a_valid_entry_and_model(finished_run):
    run_dir = RunDir(__import__("pathlib").Path(finished_run.out))
    assert validate_file(run_dir.entry) == []
    assert not run_dir.checkpoint.exists()  # training state is dropped once the model is saved
    entry = json.loads(run_dir.entry.read_text())
    assert entry["checkpoint"]["sha256"] == checkpoint.sha256(run_dir.model)
    assert entry["clean_acc"] > 50 and entry["training"]["epochs"] == 2
    assert set(entry["corruptions"]) == {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"}
    assert all(set(row) == {"1", "5"} for row in entry["corruptions"].values())
    assert entry["sparsity"]["achieved"] == pytest.approx(0.0, abs=1e-3)
    assert entry["evaluation"]["test_samples"] == 100 and entry["training"]["train_samples"] == 1347


def test_same_seed_same_metrics_and_other_seed_differs(plugins, tmp_path, finished_run):
    first = json.loads((__import__("pathlib").Path(finished_run.out) / "entry.json").read_text())
    again = execute(run_config(plugins, tmp_path / "a"), plugins, QUIET).to_dict()
    assert {k: again[k] for k in METRICS} == {k: first[k] for k in METRICS}
    assert [h["loss"] for h in again["training"]["history"]] == [h["loss"] for h in first["training"]["history"]]
    other = execute(run_config(plugins, tmp_path / "b", seed=1), plugins, QUIET).to_dict()
    assert [h["loss"] for h in other["training"]["history"]] != [h["loss"] for h in first["training"]["history"]]


def test_resume_after_interruption_gives_identical_results(tmp_path):
    plain = Plugins.load(env={"DSTBENCH_PLUGINS": ""})
    uninterrupted = execute(run_config(plain, tmp_path / "full", epochs=3), plain, QUIET)

    stopping = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"stop": StopAfter(2)})
    cfg = run_config(stopping, tmp_path / "cut", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, stopping, QUIET)
    run_dir = RunDir(tmp_path / "cut" / "run")
    state = torch.load(run_dir.checkpoint, weights_only=True)
    assert state["epoch"] == 1 and not run_dir.entry.exists()  # epoch 2 was interrupted before its checkpoint

    resumed = execute(run_config(plain, tmp_path / "cut", epochs=3, resume="true"), plain, QUIET)
    assert _metrics(resumed)[0] == _metrics(uninterrupted)[0]
    losses = [h["loss"] for h in resumed.to_dict()["training"]["history"]]
    assert losses == [h["loss"] for h in uninterrupted.to_dict()["training"]["history"]]
    assert resumed.training.steps == uninterrupted.training.steps


def _weight_bits(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model's tensors as raw bits: -0.0 and 0.0 differ."""
    state = torch.load(RunDir(run_dir).model, weights_only=True)["model"]
    return {name: t.view(torch.int32) if t.dtype == torch.float32 else t for name, t in state.items()}


def test_resume_keeps_every_bit_and_takes_algorithm_options_by_value(tmp_path):
    """Started with a TOML table's typed option, resumed with a flag's string: the same setting."""
    toml = tmp_path / "rigl.toml"
    toml.write_text("[algo_options]\nupdate_interval = 3\n")
    rigl = {"algo": "rigl", "sparsity": "0.5", "epochs": 3}
    plain = Plugins.load(env={"DSTBENCH_PLUGINS": ""})
    execute(run_config(plain, tmp_path / "full", toml, **rigl), plain, QUIET)
    stopping = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"stop": StopAfter(2)})  # after epoch 1's checkpoint
    with pytest.raises(KeyboardInterrupt):
        execute(run_config(stopping, tmp_path / "cut", toml, **rigl), stopping, QUIET)
    flag = {**rigl, "algo_options": ["update_interval=03"], "resume": "true"}
    execute(run_config(plain, tmp_path / "cut", **flag), plain, QUIET)
    full, cut = _weight_bits(tmp_path / "full" / "run"), _weight_bits(tmp_path / "cut" / "run")
    assert full.keys() == cut.keys() and all(torch.equal(full[name], cut[name]) for name in full)
    with pytest.raises(KeyboardInterrupt):
        execute(run_config(stopping, tmp_path / "b", toml, **rigl), stopping, QUIET)
    with pytest.raises(UserError, match=r"algo_options=\{'update_interval': 3\} \(now \{'update_interval': 4\}\)"):
        execute(run_config(plain, tmp_path / "b", **{**flag, "algo_options": ["update_interval=4"]}), plain, QUIET)


def test_resume_after_training_only_evaluates(plugins, tmp_path):
    cfg = run_config(plugins, tmp_path)
    first = execute(cfg, plugins, QUIET)
    RunDir(tmp_path / "run").entry.unlink()  # as if the process died during evaluation
    again = execute(run_config(plugins, tmp_path, resume="true"), plugins, QUIET)
    assert _metrics(again)[0] == _metrics(first)[0]


def test_a_run_folder_in_use_is_refused(plugins, tmp_path):
    """Another process training or evaluating in the folder holds its lock (here: this process, through a second
    open file, which flock treats alike)."""
    cfg = run_config(plugins, tmp_path)
    first = execute(cfg, plugins, QUIET)
    RunDir(tmp_path / "run").entry.unlink()  # left to evaluate again
    other = RunLock(tmp_path / "run")
    other.acquire()
    resume = run_config(plugins, tmp_path, resume="true")
    with pytest.raises(UserError, match=rf"run is in use by another dstbench process \(pid {os.getpid()}\); wait"):
        execute(resume, plugins, QUIET)
    other.release()
    assert _metrics(execute(resume, plugins, QUIET))[0] == _metrics(first)[0]


def test_run_directory_rules(plugins, tmp_path, finished_run):
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        execute(finished_run, plugins, QUIET)
    with pytest.raises(UserError, match="is complete"):
        execute(run_config(plugins, tmp_path, out=finished_run.out, resume="true"), plugins, QUIET)
    with pytest.raises(UserError, match="nothing to resume"):
        execute(run_config(plugins, tmp_path, resume="true"), plugins, QUIET)
    assert not (tmp_path / "run").exists()


def test_corrupt_and_mismatched_checkpoints_are_refused(plugins, tmp_path):
    stopping = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"stop": StopAfter(2)})
    with pytest.raises(KeyboardInterrupt):
        execute(run_config(stopping, tmp_path, epochs=3), stopping, QUIET)
    ckpt = RunDir(tmp_path / "run").checkpoint
    with pytest.raises(UserError, match=r"other settings: epochs=3 \(now 4\)"):
        execute(run_config(plugins, tmp_path, epochs=4, resume="true"), plugins, QUIET)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a dstbench checkpoint: the file is truncated or damaged"):
        execute(run_config(plugins, tmp_path, epochs=3, resume="true"), plugins, QUIET)
    torch.save({"model": np.zeros(3)}, ckpt)
    with pytest.raises(UserError, match=r"holds a numpy\S+ object, which dstbench does not load \(unpickling"):
        execute(run_config(plugins, tmp_path, epochs=3, resume="true"), plugins, QUIET)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not a dstbench checkpoint: torch.save did not write it$"):
        execute(run_config(plugins, tmp_path, epochs=3, resume="true"), plugins, QUIET)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(plugins, tmp_path):
    class PoisonInSecondEpoch:
        @hookimpl
        def on_step_end(self, run):
            if run.epoch == 1:
                with torch.no_grad():
                    next(run.model.parameters()).fill_(float("nan"))

    poisoned = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"poison": PoisonInSecondEpoch()})
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 2.*last good checkpoint \(epoch 1\)"):
        execute(run_config(poisoned, tmp_path, epochs=3), poisoned, QUIET)
    state = torch.load(RunDir(tmp_path / "run").checkpoint, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bf16_and_channels_last_paths_run_on_cpu(plugins, tmp_path):
    entry = execute(run_config(plugins, tmp_path, precision="bf16", channels_last="true"), plugins, QUIET)
    assert entry.training.precision == "bf16"
    assert entry.clean_acc > 50


def test_a_saved_run_is_evaluated_again_with_its_settings_but_not_its_quiet(plugins, finished_run):
    """`dstbench eval` and `frequency` show progress for a run trained with --quiet, unless told --quiet again."""
    saved = checkpoint.load_model(RunDir(Path(finished_run.out)).model)
    assert saved["config"]["quiet"] is True
    cfg = saved_config(saved, {"severities": (1,)}, plugins)
    assert (cfg.quiet, cfg.resume, cfg.out, cfg.severities, cfg.epochs) == (
        False,
        False,
        None,
        (1,),
        finished_run.epochs,
    )
    assert saved_config(saved, {"quiet": True}, plugins).quiet


def test_resume_refuses_another_memory_format_and_a_finished_run_drops_its_checkpoint(plugins, tmp_path):
    stopping = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"stop": StopAfter(2)})
    with pytest.raises(KeyboardInterrupt):
        execute(run_config(stopping, tmp_path, epochs=3), stopping, QUIET)
    run_dir = RunDir(tmp_path / "run")
    interrupted = run_dir.checkpoint.read_bytes()
    with pytest.raises(UserError, match=r"trained on cpu in fp32 up to epoch 1; .* on cpu in fp32, channels-last: "):
        execute(run_config(plugins, tmp_path, epochs=3, resume="true", channels_last="true"), plugins, QUIET)
    execute(run_config(plugins, tmp_path, epochs=3, resume="true"), plugins, QUIET)
    # A process stopped after writing model.pt and before removing the checkpoint, and its entry not written yet
    run_dir.checkpoint.write_bytes(interrupted)
    run_dir.entry.unlink()
    execute(run_config(plugins, tmp_path, epochs=3, resume="true"), plugins, QUIET)
    assert run_dir.entry.exists() and not run_dir.checkpoint.exists()


def test_a_fresh_run_refuses_a_folder_another_process_filled_while_it_loaded_its_data(plugins, tmp_path, monkeypatch):
    from dstbench import runner

    load_data = runner.load_data

    def meanwhile(cfg, *args):
        data = load_data(cfg, *args)
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "entry.json").write_text("{}")  # another process's run, finished in the meantime
        return data

    monkeypatch.setattr(runner, "load_data", meanwhile)
    with pytest.raises(UserError, match="run already holds a run: another process started one there meanwhile"):
        execute(run_config(plugins, tmp_path), plugins, QUIET)
    assert (tmp_path / "run" / "entry.json").read_text() == "{}" and not (tmp_path / "run" / "model.pt").exists()
