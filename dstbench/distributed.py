"""Data-parallel training with torch.distributed, one process per GPU (or per CPU process, with gloo).

Launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK:

    torchrun --nproc-per-node 4 --no-python dstbench run --algo rigl --sparsity 0.3 --dataset cifar10 ...
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --nproc-per-node 8 --no-python dstbench run ...

`--batch-size` stays the global batch: each process trains on its share of every batch, so a run on N GPUs
follows the same data order and augmentation as on one. Every process evaluates its share of the test set; rank 0
writes checkpoints and the entry. `dstbench sweep` under torchrun runs one run after another in one process group
(`one_group`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, device: torch.device) -> torch.device:
        """This process's GPU when the run is on CUDA."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def shutdown(self) -> None:
        """Wait for every process, then leave the process group (so none exits while another still talks); inside
        `one_group`, stay in it for the next run."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            if not _State.one_group:
                dist.destroy_process_group()

    def abandon(self) -> None:
        """Leave the process group after an error, without waiting for the others (they may have stopped too); a
        process that exits still in it can abort in gloo's teardown. Inside `one_group` the group stays."""
        if self.enabled and dist.is_initialized() and not _State.one_group:
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over processes (the tensor itself outside torch.distributed)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor


class _State:
    one_group = False  # inside `one_group`: runs keep the process group


@contextlib.contextmanager
def one_group() -> Iterator[None]:
    """Runs inside share one process group, created by the first and left at the end: a process cannot create a
    second one after leaving the first (gloo fails to connect), so a sweep under torchrun keeps it."""
    _State.one_group = True
    try:
        yield
    except BaseException:
        if dist.is_initialized():  # no barrier: another process may be gone
            dist.destroy_process_group()
        raise
    else:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    finally:
        _State.one_group = False
