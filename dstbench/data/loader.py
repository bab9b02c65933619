"""Splits of uint8 images and the batches a trainer or evaluator reads from them.

`TensorImages` holds a whole split as one (N, C, H, W) uint8 tensor, or clips (N, C, T, H, W), or several clips
("views") of each training video (N, K, C, T, H, W). When it sits on the GPU, an epoch costs one host-to-device copy
of the epoch's random numbers; picking a view, cropping and flipping run batched on the device.
`StreamImages` reads a split that does not fit (ImageNet) through a `DataLoader` with worker processes.
Both yield `Batch`es whose `ids` identify each sample across subsets, so corruptions are seeded per sample.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dstbench.errors import UserError


class Batch(NamedTuple):
    images: torch.Tensor  # uint8 (B, C, H, W) on the device
    labels: torch.Tensor  # int64 (B,)
    ids: torch.Tensor  # int64 (B,): the sample's index in the full split


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop after zero padding, and random horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False


class ImageData(abc.ABC):
    """One split of a dataset."""

    ids: torch.Tensor  # int64 (N,): each sample's index in the full split, kept by `subset`

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def labels(self) -> torch.Tensor:
        """int64 (N,) on the CPU."""

    @abc.abstractmethod
    def subset(self, positions: torch.Tensor) -> ImageData:
        """The samples at these positions, keeping their ids."""

    @abc.abstractmethod
    def batches(
        self,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """One pass. `train` shuffles with `generator` (a CPU generator) and augments; otherwise in order.
        `shard` = (rank, processes): this process's share of every batch, for data-parallel training."""

    def num_batches(self, batch_size: int, *, train: bool, processes: int = 1) -> int:
        full, rest = divmod(len(self), batch_size)
        if train and processes > 1:
            return full  # every process must take the same number of steps, each with a share of every batch
        # A training batch of one sample breaks batch norm, so it is dropped.
        return full + (rest > (1 if train else 0))


class TensorImages(ImageData):
    """A split held in one uint8 tensor. With views (N, K, C, T, H, W), a training epoch still has N samples, each
    one of its K clips drawn at random; evaluation reads view K // 2 (the centre clip when the views are evenly
    spread and K is odd, the one just after the centre when K is even)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        augment: Augment | None = None,
        ids: torch.Tensor | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim not in (4, 5, 6):
            raise ValueError(
                "images must be uint8 (N, C, H, W), clips (N, C, T, H, W) or views of clips (N, K, C, T, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self._labels = labels.to(torch.int64)
        self.augment = augment or Augment()
        self.ids = torch.arange(len(images), device=images.device) if ids is None else ids

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels.cpu()

    @property
    def num_views(self) -> int:
        """K, the clips held per sample: 1 unless the images are views (N, K, C, T, H, W)."""
        return self.images.shape[1] if self.images.ndim == 6 else 1

    def subset(self, positions: torch.Tensor) -> TensorImages:
        positions = positions.to(self.images.device)
        return TensorImages(
            self.images[positions], self._labels[positions], augment=self.augment, ids=self.ids[positions]
        )

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(
            self.images.to(device), self._labels.to(device), augment=self.augment, ids=self.ids.to(device)
        )

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        n = len(self)
        rank, processes = shard
        pin = device.type == "cuda" and self.images.device.type == "cpu"
        aug = self.augment if train else Augment()
        if train:
            # All of the epoch's random numbers, drawn on the CPU so runs and resumes agree bit for bit.
            order = torch.randperm(n, generator=generator)
            offsets = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=generator)
            flips = torch.rand(n, generator=generator) < 0.5 if aug.hflip else torch.zeros(n, dtype=torch.bool)
            offsets, flips = offsets.to(device, non_blocking=True), flips.to(device, non_blocking=True)
            # Drawn only for views, so that the random numbers of single-clip data stay as they were.
            views = torch.randint(0, self.num_views, (n,), generator=generator) if self.num_views > 1 else None
        else:
            order = torch.arange(n)
            views = torch.full((n,), self.num_views // 2) if self.num_views > 1 else None
        order = order.to(self.images.device, non_blocking=True)
        if views is not None:
            views = views.to(self.images.device, non_blocking=True)
        share = batch_size // processes
        for b in range(self.num_batches(batch_size, train=train, processes=processes)):
            start = b * batch_size + rank * share
            end = start + share if processes > 1 else (b + 1) * batch_size
            sel = order[start:end]
            span = slice(start, start + len(sel))
            images = self.images[sel] if views is None else self.images[sel, views[span]]
            labels, ids = self._labels[sel], self.ids[sel]
            if pin:
                images, labels, ids = images.pin_memory(), labels.pin_memory(), ids.pin_memory()
            images = images.to(device, non_blocking=True)
            labels, ids = labels.to(device, non_blocking=True), ids.to(device, non_blocking=True)
            if aug.crop_padding or aug.hflip:
                images = crop_and_flip(images, aug.crop_padding, offsets[span], flips[span])
            yield Batch(images, labels, ids)


def crop_and_flip(images: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch and horizontal flip, as one gather.

    `offsets` (B, 2) are the crop's top-left corner in the padded image, in [0, 2 * padding]. The result is
    (B, C, H, W) in channels-last memory order, which is what the convolutions want on the GPU. Clips
    (B, C, T, H, W) get one crop and flip for all their frames.
    """
    if images.ndim == 5:
        b, c, t, h, w = images.shape
        return crop_and_flip(images.reshape(b, c * t, h, w), padding, offsets, flips).reshape(b, c, t, h, w)
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4) if padding else images
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indices around a slice put their dims first: (B, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class _Indexed(Dataset):
    """Adds the sample's index to what a map-style dataset returns. With `seed` (training), torch's generator is
    seeded from (seed, sample id) for the item's own random augmentation (torchvision's random crops draw from it),
    so a sample's augmentation depends on the epoch's seed and the sample alone, not on how many workers there are
    or which one reads it; in the main process (no workers) the generator's state is put back afterwards."""

    def __init__(self, dataset: Dataset, ids: torch.Tensor, seed: int | None = None):
        self.dataset, self.ids, self.seed = dataset, ids, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        sample = int(self.ids[i])
        if self.seed is None:
            image, label = self.dataset[sample]
        else:
            with torch.random.fork_rng(devices=()):
                # torch's CPU generator keeps 32 bits of a seed: mix both numbers into those
                torch.manual_seed(int(np.random.SeedSequence((self.seed, sample)).generate_state(1)[0]))
                image, label = self.dataset[sample]
        return image, label, sample


class StreamImages(ImageData):
    """A split read sample by sample. `dataset[i]` returns (uint8 (C, H, W) tensor, label), already augmented
    for training splits (random crops of variable-size photos need the full image, so they happen in workers)."""

    def __init__(self, dataset: Dataset, labels: torch.Tensor, *, workers: int = 8, ids: torch.Tensor | None = None):
        self.dataset = dataset
        self._labels = labels.to(torch.int64)
        self.workers = workers
        self.ids = torch.arange(len(labels)) if ids is None else ids

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def subset(self, positions: torch.Tensor) -> StreamImages:
        return StreamImages(self.dataset, self._labels[positions], workers=self.workers, ids=self.ids[positions])

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        rank, processes = shard
        # The epoch's seed of augmentation and of the order, the same permutation for any number of processes:
        # rank r takes every processes-th sample of it, so each global batch holds what a single process's would.
        seed = int(torch.randint(2**31, (1,), generator=generator)) if train else None
        indexed = _Indexed(self.dataset, self.ids, seed)
        sampler = DistributedSampler(indexed, processes, rank, shuffle=train, seed=seed or 0, drop_last=processes > 1)
        loader = DataLoader(
            indexed,
            batch_size=batch_size // processes,
            sampler=sampler,
            generator=generator,  # what the loader draws its workers' base seed from: not the global generator
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            drop_last=False,
            persistent_workers=False,
        )
        try:
            for b, (images, labels, ids) in enumerate(loader):
                if b == self.num_batches(batch_size, train=train, processes=processes):
                    break
                yield Batch(
                    images.to(device, non_blocking=True),
                    labels.to(device, non_blocking=True),
                    ids.to(device, non_blocking=True),
                )
        except UserError as exc:
            # A worker's exception comes back with the worker's traceback in its message; keep the one-line message.
            last_line = str(exc).strip().splitlines()[-1]
            raise UserError(last_line.removeprefix(f"{UserError.__module__}.UserError: ")) from None
