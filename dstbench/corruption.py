"""Corruption-suite contract, and the seeded per-sample random numbers that suites draw their noise from.

A suite registers a `CorruptionSuite`; the evaluator corrupts each test batch on its device with
`suite.corrupt(images, corruption, severity, SampleRNG.for_samples(seed, suite.name, corruption, severity, ids=ids))`.
Because every sample has its own counter-based random stream, a corrupted test set is the same whatever the batch
size, data order or device, and the same for every model evaluated with the same seed.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from dstbench.errors import UserError, unknown_choice

if TYPE_CHECKING:
    from dstbench.data import ImageData
    from dstbench.report import Reporter

__all__ = [
    "LUMA",
    "OPENCV_LUMA",
    "Corruption",
    "CorruptionSuite",
    "SampleRNG",
    "SuiteRequest",
    "TableSuite",
    "hash32",
    "luma",
    "parse_severities",
]

LUMA = (0.2989, 0.5870, 0.1140)  # RGB -> grey weights of imagecorruptions' rgb2gray
OPENCV_LUMA = (0.299, 0.587, 0.114)  # OpenCV's COLOR_RGB2GRAY (the references' snow)


def luma(x: torch.Tensor, weights: tuple[float, float, float] = LUMA) -> torch.Tensor:
    """(N, 3, H, W) float → (N, 1, H, W) grey."""
    return (x * _luma_weights(weights, x.dtype, x.device)).sum(1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _luma_weights(weights: tuple[float, float, float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Cached: a tensor made from Python numbers on a GPU is a copy from the host that waits for the device.
    return torch.tensor(weights, dtype=dtype, device=device).view(1, 3, 1, 1)


@dataclass(frozen=True)
class SuiteRequest:
    """What a suite may need before an evaluation."""

    dataset: str  # the run's dataset
    test_labels: torch.Tensor  # int64 labels of the evaluated clean test samples, on the CPU
    test_ids: torch.Tensor  # their ids (positions in the full test split)
    c_dir: Path | None  # --c-dir: where released corrupted sets lie
    download: bool  # --download: fetching them is allowed
    reporter: Reporter
    corruptions: tuple[str, ...] = ()  # the selected cells (as `select` returns them); empty: all of the suite's
    severities: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()  # the dataset's class names in label order (e.g. wnids), when it names them
    video_fps: float | None = None  # video: the videos' frame rate (`DataSplits.video_fps`), None if unknown
    frame_stride: int = 1  # video: a clip takes every n-th frame of its video


def cpu_forms(device: torch.device) -> bool:
    """Whether corruptions take the forms meant for a CPU on this device: batches in cache-sized pieces and blocks,
    early exits and compactions that read values back (on an accelerator the host would wait for the device), and
    operations in the shapes a CPU runs fastest. Every CPU form gives the accelerator form's values; the tests hold
    them to that by running the accelerator's forms on the CPU."""
    return device.type == "cpu"


class CorruptionSuite(ABC):
    """Base class. A suite names its corruptions and severities and corrupts a batch on the batch's device."""

    name: str
    description: str
    corruptions: tuple[str, ...]
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    modality: str = "image"
    resolution: str = ""  # the image size its parameters are meant for, e.g. "32 px (CIFAR-10-C parameters)"
    subsets: Mapping[str, tuple[str, ...]] = MappingProxyType({})  # names usable in --corruptions, e.g. "noise"
    square_only: bool = False  # its corruptions take square images only (datasets' are; `dstbench corrupt`'s may not)

    def check_input(self, channels: int, size: int, corruptions: Sequence[str] | None = None) -> None:
        """Raise UserError if images with this many channels and this side length (the shorter one) cannot be
        corrupted by these corruptions (None: all of the suite's)."""
        return  # by default every shape can

    def select(
        self, corruptions: Sequence[str] | None, severities: Sequence[int] | None
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Validate a user's selection; None selects all. Names may be corruptions or subsets. Both results follow
        the suite's order, without duplicates."""
        if corruptions is None:
            chosen = set(self.corruptions)
        else:
            chosen = set()
            for name in corruptions:
                if name in self.subsets:
                    chosen.update(self.subsets[name])
                elif name in self.corruptions:
                    chosen.add(name)
                else:
                    raise unknown_choice(f"{self.name} corruption", name, [*self.corruptions, *self.subsets])
        if severities is not None:
            for severity in severities:
                if severity not in self.severities:
                    valid = ", ".join(map(str, self.severities))
                    raise UserError(f"suite '{self.name}' has no severity {severity}; choose from: {valid}")
        chosen_severities = set(self.severities if severities is None else severities)
        selection = (
            tuple(c for c in self.corruptions if c in chosen),
            tuple(s for s in self.severities if s in chosen_severities),
        )
        if not all(selection):
            raise UserError(f"select at least one corruption and one severity of suite '{self.name}'")
        return selection

    def prepare(self, request: SuiteRequest) -> CorruptionSuite:
        """Called once before an evaluation; returns the suite to evaluate with. Suites that read released files
        find and check them here (raising UserError for missing or malformed ones); others return self."""
        return self

    def released(self, corruption: str, severity: int) -> ImageData | None:
        """The released corrupted test images of one cell (labels and sample ids included), for suites that read
        files; None (the default) to corrupt the clean test images on the fly with `corrupt`."""
        return None

    @abstractmethod
    def corrupt(self, images: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        """Corrupt uint8 images (N, C, H, W), drawing randomness only from `rng` (one stream per image); the result
        is uint8 (N, C, H, W) on the same device."""


@dataclass(frozen=True)
class Corruption:
    """One corruption for `TableSuite`: `function(images, parameter, rng)` maps uint8 RGB images (N, 3, H, W) to
    uint8 images of the same shape, and `parameters` gives, per image resolution of the reference tables (32, 64,
    224 px), one parameter per severity."""

    function: Callable[[torch.Tensor, Any, SampleRNG], torch.Tensor]
    parameters: Mapping[int, Sequence[Any]]
    min_size: int = 1  # the smallest image side it works on
    # On the CPU, batches go through in pieces of about this many elements, small enough to stay in cache yet large
    # enough that each operation's fixed cost is spread over many pixels; None: whole batches (it runs its own
    # threads over them, say).
    cpu_piece_elements: int | None = 2**19


class TableSuite(CorruptionSuite):
    """A suite of `Corruption`s with the parameters of one reference resolution. Grey images are corrupted as RGB
    and turned back into grey; on the CPU, batches go through in cache-sized pieces."""

    def __init__(
        self,
        name: str,
        description: str,
        resolution: int,
        corruptions: Mapping[str, Corruption],
        subsets: Mapping[str, Sequence[str]] | None = None,
        square_only: bool = False,
    ):
        self.name, self.description, self.resolution_px = name, description, resolution
        self.square_only = square_only
        self.resolution = f"{resolution} px"
        self.table = {key: corruption for key, corruption in corruptions.items()}
        lengths = {len(c.parameters[resolution]) for c in self.table.values()}
        if len(lengths) != 1:
            raise ValueError(f"suite {name}: every corruption needs the same number of severities")
        self.corruptions = tuple(self.table)
        self.severities = tuple(range(1, lengths.pop() + 1))
        self.subsets = {key: tuple(c for c in members if c in self.table) for key, members in (subsets or {}).items()}

    def check_input(self, channels: int, size: int, corruptions: Sequence[str] | None = None) -> None:
        if channels not in (1, 3):
            raise UserError(f"suite '{self.name}' corrupts RGB or grey images, not {channels}-channel ones")
        for name in self.corruptions if corruptions is None else corruptions:
            if size < self.table[name].min_size:
                raise UserError(
                    f"suite '{self.name}': {name} needs images of at least {self.table[name].min_size} px, these "
                    f"are {size} px; leave it out of the selected corruptions or use larger images"
                )

    def corrupt(self, images: torch.Tensor, corruption: str, severity: int, rng: SampleRNG) -> torch.Tensor:
        if corruption not in self.table:
            raise unknown_choice(f"{self.name} corruption", corruption, self.corruptions)
        if severity not in self.severities:
            valid = ", ".join(map(str, self.severities))
            raise UserError(f"suite '{self.name}' has no severity {severity}; choose from: {valid}")
        if images.ndim == 5:
            raise UserError(f"suite '{self.name}' corrupts images (N, C, H, W), not video clips; use a video suite")
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(rng):
            raise ValueError(
                f"expected uint8 (N, C, H, W) images and N streams, got {images.dtype} "
                f"{tuple(images.shape)} and {len(rng)} streams"
            )
        self.check_input(images.shape[1], min(images.shape[2:]), (corruption,))
        entry = self.table[corruption]
        parameter = entry.parameters[self.resolution_px][severity - 1]
        if not len(images):
            return images.clone()
        grey = images.shape[1] == 1
        rgb = images.expand(-1, 3, -1, -1).contiguous() if grey else images
        if cpu_forms(rgb.device) and entry.cpu_piece_elements:
            step = max(1, entry.cpu_piece_elements // max(1, math.prod(rgb.shape[1:])))
            out = torch.cat(
                [entry.function(rgb[i : i + step], parameter, rng[i : i + step]) for i in range(0, len(rgb), step)]
            )
        else:
            out = entry.function(rgb, parameter, rng)
        if grey:
            out = luma(out.to(torch.float32)).round_().clamp_(0, 255).to(torch.uint8)
        return out


def parse_severities(text: str) -> tuple[int, ...]:
    """'3' -> (3,), '1,3,5' -> (1, 3, 5), '1-5' -> (1, 2, 3, 4, 5); items combine ('1-2,5'). Sorted, unique."""
    severities: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise UserError(f"invalid severities '{text}'; write e.g. '3', '1,3,5' or '1-5'")
        severities.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return tuple(sorted(severities))


# --- Counter-based random numbers --------------------------------------------------------------------------------
#
# Random bits are 32-bit words held in int32 tensors (two's complement), whose multiplications wrap around mod 2**32
# in PyTorch on every device, as lowbias32's uint32 ones do (tested bit for bit against the reference): 9× faster on
# the CPU than the same words in int64, where each product needs three multiplications to stay exact.
# Sample n's 32 random bits for stream s, draw d and element c are
#
#     hash32(state_n ^ table_sd[c]),    state_n = hash32(key_n),    table_sd[c] = hash32(hash32(c) ^ tag(s, d)),
#
# where a draw is one use of the stream inside a method (Box-Muller's radius or angle, Poisson's one uniform), so each
# method has numbers of its own on every stream. Tables do not depend on the sample: a batch costs one hash per
# (sample, element). Why this shape: hash32 is a bijection, so distinct keys give distinct states, and within a
# sample distinct (s, d, c) give distinct bits unless their table entries collide. The key goes in last, against an
# element value that depends non-linearly on (s, d, c), so no two (sample, stream) pairs share a whole sequence or a
# shifted copy of one, as with hash32(hash32(key ^ hash32(s)) + c), where two such states a few thousand apart
# overlap. What remains are isolated coincidences, state_n ^ state_m == table_sd[c] ^ table_s'd'[c'], at the rate of
# random 32-bit collisions.

_MASK32 = 0xFFFFFFFF
_Word = TypeVar("_Word", int, torch.Tensor)


def _mul32(x: _Word, constant: int) -> _Word:
    """x * constant mod 2**32 for x in [0, 2**32); splitting the constant in 16-bit halves keeps products < 2**48."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: _Word) -> _Word:
    """Chris Wellons' "lowbias32", a bijection on [0, 2**32), of a Python int, or elementwise of an int32 tensor of
    32-bit words (as int32), or of an int64 tensor of values in [0, 2**32) (as such; higher bits are ignored)."""
    if isinstance(x, torch.Tensor):
        words = _hash_words(x.to(torch.int32))
        return words if x.dtype == torch.int32 else words.to(x.dtype) & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash_words(x: torch.Tensor) -> torch.Tensor:
    """hash32 of int32 words: right shifts of int32 copy the sign bit, so each is masked to a logical shift."""
    x = x ^ (x >> 16).bitwise_and_(0xFFFF)
    x.mul_(_word(0x7FEB352D))
    x.bitwise_xor_((x >> 15).bitwise_and_(0x1FFFF))
    x.mul_(_word(0x846CA68B))
    return x.bitwise_xor_((x >> 16).bitwise_and_(0xFFFF))


def _word(value: int) -> int:
    """A value in [0, 2**32) as the int32 with its bits."""
    return value - (1 << 32) if value >> 31 else value


def _tag(stream: int, draw: int) -> int:
    if not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must be in [0, 2**32), got {stream}")
    return _word(hash32(hash32(stream) ^ draw))


def _label_base(seed: int, *labels: str | int) -> int:
    """32 bits of the seed and labels: blake2b, stable across processes, platforms and Python versions."""
    digest = hashlib.blake2b(b"".join(map(_label_bytes, (seed, *labels))), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _sample_keys(base: int | torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The keys of samples with these int64 ids under a label base (an int, or int64 broadcasting with ids)."""
    return hash32(hash32(base ^ (ids & _MASK32)) ^ ((ids >> 32) & _MASK32))


def _label_bytes(label: str | int) -> bytes:
    if isinstance(label, str):
        text = b"s" + label.encode()
    elif isinstance(label, int):
        text = b"i" + str(label).encode()
    else:
        raise TypeError(f"labels must be str or int, got {label!r}")
    return len(text).to_bytes(4, "little") + text  # length-prefixed, so ('ab', 'c') and ('a', 'bc') differ


# Draws: which part of a stream each method uses. uniform: 0; normal: 1 (radius) and 2 (angle); poisson: 3.
_UNIFORM, _NORMAL, _POISSON = 0, (1, 2), 3
_FRAME_SALT = 0x6672616D  # "fram": frame keys are not hash32 of small integers, which other keys may be


class SampleRNG:
    """Counter-based random numbers, one independent stream per sample: sample i's numbers depend only on
    (key_i, stream, flat element index), never on the batch it is in, its position, the batch size or the device.
    Each method's numbers on a stream are independent of the other methods' on that stream; two calls of the same
    method with the same stream return the same numbers."""

    def __init__(self, keys: torch.Tensor, states: torch.Tensor | None = None):
        """keys: int64 (N,), values in [0, 2**32) (higher bits are ignored), one per sample. states: hash32 of the
        keys, when already computed (`for_cells` derives many at once)."""
        if keys.dtype != torch.int64 or keys.ndim != 1:
            raise ValueError(f"keys must be an int64 vector, got {keys.dtype} of shape {tuple(keys.shape)}")
        self.keys = keys
        # int32 words; hashing scrambles merely consecutive keys
        self._states = hash32(keys.to(torch.int32)) if states is None else states

    @classmethod
    def for_samples(cls, seed: int, *labels: str | int, ids: torch.Tensor) -> SampleRNG:
        """Keys for the samples with these dataset ids (int64, any non-negative values), from the seed and labels such
        as (suite name, corruption, severity); stable across processes, platforms and Python versions. Distinct
        ids below 2**32 get distinct keys."""
        return cls(_sample_keys(_label_base(seed, *labels), ids.to(torch.int64)))

    @classmethod
    def for_cells(cls, seed: int, suite: str, cells: Sequence[tuple[str, int]], ids: torch.Tensor) -> list[SampleRNG]:
        """`for_samples(seed, suite, corruption, severity, ids=ids)` of every (corruption, severity) cell, derived
        together: on a GPU a few dozen kernel launches for all the cells of a batch instead of for each."""
        bases = torch.tensor([_label_base(seed, suite, *cell) for cell in cells], dtype=torch.int64)
        if ids.device.type == "cuda":  # from pinned memory, so that the copy does not wait for the device
            bases = bases.pin_memory()
        keys = _sample_keys(bases.to(ids.device, non_blocking=True)[:, None], ids.to(torch.int64)[None, :])
        return [cls(k, s) for k, s in zip(keys, hash32(keys.to(torch.int32)), strict=True)]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: slice | torch.Tensor) -> SampleRNG:
        """The streams of a subset of the samples, e.g. `rng[:64]`: their numbers are unchanged."""
        return SampleRNG(self.keys[index])

    def frames(self, count: int) -> SampleRNG:
        """Streams for the `count` frames of each sample's clip, N · count of them, clip by clip: frame k of clip i
        is keyed by hash32(state_i ^ hash32(k ^ salt)), so it depends on the clip's key and k alone, and the frames
        of a clip get distinct keys."""
        frame_codes = hash32(torch.arange(count, dtype=torch.int32, device=self.keys.device) ^ _FRAME_SALT)
        frame_keys = hash32(self._states[:, None] ^ frame_codes[None, :]).reshape(-1)
        return SampleRNG(frame_keys.to(torch.int64) & _MASK32)

    def uniform(self, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
        """float32 (N, *shape), uniform on the open interval (0, 1) with 24-bit resolution."""
        return self.uniforms([(shape, stream)])[0]

    def uniforms(self, draws: Sequence[tuple[tuple[int, ...], int]]) -> list[torch.Tensor]:
        """`uniform(shape, stream)` for each (shape, stream), the same numbers made together: on a GPU one round of
        hashing kernels for all the draws instead of one per draw."""
        sizes = [math.prod(shape) for shape, _ in draws]
        parts = tuple((stream, _UNIFORM, size) for (_, stream), size in zip(draws, sizes, strict=True))
        u = self._uniform24(self._bits(parts))
        return [part.view(len(self), *shape) for part, (shape, _) in zip(u.split(sizes, 1), draws, strict=True)]

    def normal(self, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
        """float32 (N, *shape), standard normal. Box-Muller: elements 2j and 2j+1 are the cosine and sine parts of
        pair j, whose radius and angle come from two different draws."""
        size = math.prod(shape)
        half = (size + 1) // 2
        bits = self._bits(tuple((stream, draw, half) for draw in _NORMAL))
        pairs = _blockwise(_box_muller, bits[:, :half], bits[:, half:])
        return pairs.view(len(self), -1)[:, :size].reshape(len(self), *shape)

    def poisson(self, levels: torch.Tensor, scale: float, stream: int = 0) -> torch.Tensor:
        """float32 Poisson counts of rate level · scale, one per element of levels (uint8 (N, ...)): the inverse
        of the rate's CDF, tabulated in float64, at a 32-bit uniform. Exact up to that uniform's resolution."""
        if levels.dtype != torch.uint8:
            raise ValueError(f"levels must be uint8, got {levels.dtype}")
        bits = self._bits(((stream, _POISSON, math.prod(levels.shape[1:])),))
        table = _poisson_table(float(scale), levels.device)
        return _blockwise(table.invert, levels.reshape(bits.shape), bits, block=_CPU_BLOCK // 2).view(levels.shape)

    def _bits(self, parts: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
        """32 random bits as int32 (N, total size): for each sample, the (stream, draw, size) parts side by side."""
        tables = _element_tables(parts, self.keys.device)
        return _blockwise(hash32, self._states[:, None] ^ tables[None, :])

    @staticmethod
    def _uniform24(bits: torch.Tensor) -> torch.Tensor:
        # (b + 0.5) / 2**24 rounds to 1 for the largest b in float32 (ties to even), hence the clamp.
        return (bits >> 8).bitwise_and_(0xFFFFFF).to(torch.float32).add_(0.5).mul_(2.0**-24).clamp_(max=1 - 2.0**-24)

    @staticmethod
    def _uniform32(bits: torch.Tensor) -> torch.Tensor:
        return (bits.to(torch.int64) & _MASK32).to(torch.float64).add_(0.5).mul_(2.0**-32)  # exact, inside (0, 1)


@functools.lru_cache(maxsize=256)
def _element_tables(parts: tuple[tuple[int, int, int], ...], device: torch.device) -> torch.Tensor:
    """hash32(hash32(c) ^ tag(stream, draw)) for each (stream, draw, size) part and element c < size, the parts side
    by side: the half of the bits that no sample changes, made once per shape and device, so that a call hashes each
    element only once (a corruption draws over and over from the same few shapes: on a GPU each hash is some twenty
    launches)."""
    return torch.cat(
        [
            hash32(hash32(torch.arange(n, dtype=torch.int32, device=device)) ^ _tag(stream, draw))
            for stream, draw, n in parts
        ]
    )


# Elements per block of 32-bit work (hashing, Box-Muller): its temporaries stay in the CPU's cache. The Poisson
# inversion, whose temporaries are 64-bit, takes half as many (each is ~20% slower in the other's blocks).
_CPU_BLOCK = 1 << 18


def _blockwise(function: Callable[..., torch.Tensor], *inputs: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """function(*inputs), a function of same-shaped tensors, elementwise: each element's result (of any trailing
    shape) depends on the inputs' elements at its place alone. On the CPU in blocks of `block` elements (default
    _CPU_BLOCK): over tens of millions of elements each of its steps would stream through memory (hash32's steps:
    15x slower than blocks that stay in cache). The same values either way."""
    block = block or _CPU_BLOCK
    if not cpu_forms(inputs[0].device) or inputs[0].numel() <= block:
        return function(*inputs)
    flat = [x.reshape(-1) for x in inputs]
    parts = [function(*(x[start : start + block] for x in flat)) for start in range(0, len(flat[0]), block)]
    return torch.cat(parts).view(*inputs[0].shape, *parts[0].shape[1:])


def _box_muller(radius_bits: torch.Tensor, angle_bits: torch.Tensor) -> torch.Tensor:
    """Standard normal pairs (..., 2) of float32 from two draws of 32 bits."""
    radius = SampleRNG._uniform24(radius_bits).log_().mul_(-2).sqrt_()
    angle = SampleRNG._uniform24(angle_bits).mul_(2 * math.pi)
    return torch.stack((radius * angle.cos(), radius * angle.sin()), dim=-1)


_GUIDE_BUCKETS = 1 << 12  # per level; a power of two, so that the bucket of u, floor(u · M), is exact


@dataclass(frozen=True)
class _PoissonTable:
    """The CDFs of Poisson(level · scale) for the 256 levels, row by row, row r offset by 2r so that the rows form
    one sorted vector, and a guide to them: for u in (m/M, (m+1)/M), level r's count lies between guide[r, m] and
    guide[r, m + 1]. u is never m/M exactly: it is an odd multiple of 2**-33."""

    cdf: torch.Tensor  # (256 · terms,) float64
    terms: int
    guide: torch.Tensor | None  # (256 · (M + 1),) int16 or int32: the first count whose CDF reaches m/M; None: search

    def invert(self, levels: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """float32: the smallest count k with u ≤ CDF(k) of each element's level (uint8), u the uniform of its 32
        random bits; both the same shape."""
        u = SampleRNG._uniform32(bits)
        levels = levels.to(torch.int64)
        target = u + 2 * levels  # row r's offset
        start = levels * self.terms
        if self.guide is None:
            return (torch.searchsorted(self.cdf, target) - start).to(torch.float32)
        bucket = torch.floor(u.mul_(_GUIDE_BUCKETS)).to(torch.int64).add_(levels, alpha=_GUIDE_BUCKETS + 1)
        low, high = self.guide.take(bucket), self.guide.take(bucket.add_(1))
        counts = low + (self.cdf.take(start + low) < target)  # exact where low and high are at most 1 apart
        # In the tails several counts, each less likely than 1/M, share a bucket: those few elements are searched.
        where = (high.sub_(low) > 1).view(-1).nonzero().squeeze(1)
        found = torch.searchsorted(self.cdf, target.view(-1).take(where)) - start.view(-1).take(where)
        return counts.view(-1).index_copy_(0, where, found.to(counts.dtype)).view(counts.shape).to(torch.float32)


@functools.lru_cache(maxsize=64)
def _poisson_table(scale: float, device: torch.device) -> _PoissonTable:
    """Poisson(level · scale)'s table. A row stops where the tail left out is below 1e-20, far under the uniform's
    2**-32 resolution, and its last value is 1, so every u < 1 finds a count in its row. Computed on the CPU
    whatever the device: a device's own exp, lgamma and summation order could move a boundary by an ulp, and with
    it, now and then, a count."""
    top = 255 * scale
    terms = math.ceil(top + 10 * math.sqrt(top) + 40)
    levels = torch.arange(256, dtype=torch.float64)[:, None]
    counts = torch.arange(terms, dtype=torch.float64)
    rates = levels * scale
    log_pmf = torch.special.xlogy(counts, rates) - rates - torch.lgamma(counts + 1)
    cdf = log_pmf.exp_().cumsum_(1).clamp_(max=1)
    cdf[:, -1] = 1
    cdf = cdf.add_(2 * levels).flatten()
    # A CPU starts from a guide and searches only the elements it leaves open; an accelerator searches every element,
    # cheap there, where finding the open elements would make the host wait for the device. The same counts.
    if not cpu_forms(device):
        return _PoissonTable(cdf.to(device), terms, None)
    bucket_edges = torch.arange(_GUIDE_BUCKETS + 1, dtype=torch.float64) / _GUIDE_BUCKETS + 2 * levels  # exact
    guide = torch.searchsorted(cdf, bucket_edges) - levels.to(torch.int64) * terms
    # In the narrowest integers that hold a count: the guide is read at random places, so its size decides how much
    # of it the cache holds (int16: 2 MB per photon level, where int64 took 8 MB and the inversion 1.8x as long).
    dtype = torch.int16 if terms <= torch.iinfo(torch.int16).max else torch.int32
    return _PoissonTable(cdf.to(device), terms, guide.flatten().to(device=device, dtype=dtype))
