"""Data-parallel training on the CPU with gloo: two processes hold identical masks and match one process."""

import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import run_config

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import RunLock, execute

SETTINGS = {
    "algo": "rigl",
    "sparsity": 0.5,
    "algo_options": ("update_interval=4",),
    "epochs": 2,
    "batch_size": 64,
    "max_train_samples": 512,
    "max_test_samples": 100,
    "severities": "3",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MaskLog:
    """Fingerprints of the masks and weights after every update step, written per rank at the end."""

    def __init__(self, path):
        self.path, self.log = path, []

    @hookimpl(trylast=True)
    def on_step_end(self, run):
        if run.algorithm.updates_at(run):
            masks = run.algorithm.masks.masks
            digest = hashlib.sha256(b"".join(masks[n].cpu().numpy().tobytes() for n in sorted(masks))).hexdigest()
            self.log.append({"step": run.step, "masks": digest, "counts": run.algorithm.masks.counts()})

    @hookimpl
    def on_run_end(self, run, result):
        with open(self.path, "w") as f:
            json.dump({"log": self.log, "losses": [s.loss for s in result.history]}, f)


def _worker(rank, world_size, port, tmp_path):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"log": MaskLog(tmp_path / f"rank{rank}.json")})
    entry = execute(run_config(plugins, tmp_path / "ddp", **SETTINGS), plugins, PlainReporter(quiet=True))
    assert (entry is None) == (rank != 0)
    assert not torch.distributed.is_initialized()  # every process left the group together


def test_two_processes_hold_identical_masks_and_match_one_process(tmp_path, plugins):
    mp.spawn(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["log"]) == 3  # updates at steps 4, 8, 12 (T_end = 0.75 · 16)
    assert ranks[0]["log"] == ranks[1]["log"]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # epoch statistics are reduced over both processes

    single = execute(run_config(plugins, tmp_path / "single", **SETTINGS), plugins, PlainReporter(quiet=True))
    ddp = json.loads((tmp_path / "ddp" / "run" / "entry.json").read_text())
    assert ddp["training"]["steps"] == single.training.steps == 16
    assert ddp["sparsity"]["achieved"] == pytest.approx(single.sparsity.achieved, abs=1e-3)
    # the same data order, augmentation and global batch; only batch norm sees half batches per process
    assert abs(ddp["clean_acc"] - single.clean_acc) <= 10
    assert ddp["training"]["history"][0]["loss"] == pytest.approx(single.training.history[0]["loss"], rel=0.05)


def test_torchrun_launches_the_cli(tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "dstbench",
        "run",
        "--algo",
        "set",
        "--sparsity",
        "0.3",
        "--epochs",
        "1",
        "--max-train-samples",
        "256",
        "--max-test-samples",
        "50",
        "--severities",
        "3",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DSTBENCH_PLUGINS": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("entry: ") == 1  # rank 0 reports, rank 1 stays quiet
    entry = json.loads((tmp_path / "run" / "entry.json").read_text())
    assert entry["algorithm"]["name"] == "set" and entry["sparsity"]["achieved"] == pytest.approx(0.3, abs=2e-3)


def test_torchrun_runs_a_sweep_in_one_process_group(tmp_path):
    """Every run of the sweep uses both processes; rank 0 alone reports and writes the summary."""
    args = "--algo=dense --seeds=2 --epochs=1 --max-train-samples=128 --max-test-samples=50 --severities=3".split()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    command += [str(_free_port()), "-m", "dstbench", "sweep", *args, "--device=cpu", f"--out={tmp_path / 'sweep'}"]
    env = {**os.environ, "DSTBENCH_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[2/2] dense s=0 seed=1  clean") == 1 and result.stdout.count("summary: ") == 1
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [row["seeds"] for row in summary["rows"]] == [[0, 1]] and summary["missing"] == []


def _refused_worker(rank, world_size, port, tmp_path):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""})
    try:
        execute(run_config(plugins, tmp_path / "ddp", **SETTINGS), plugins, PlainReporter(quiet=True))
    except UserError as exc:
        (tmp_path / f"rank{rank}.txt").write_text(str(exc))


def test_every_process_stops_when_the_run_folder_is_in_use(tmp_path):
    """Rank 0 alone takes the folder's lock; when it cannot, the other ranks must not train on alone."""
    held = RunLock(tmp_path / "ddp" / "run")
    held.acquire()
    try:
        mp.spawn(_refused_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    finally:
        held.release()
    assert "is in use by another dstbench process (pid" in (tmp_path / "rank0.txt").read_text()
    assert "is in use by another dstbench process" in (tmp_path / "rank1.txt").read_text()
