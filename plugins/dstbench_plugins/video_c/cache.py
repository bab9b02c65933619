"""A disk cache of codec-corrupted clips, keyed by (clip content, corruption, severity, the clip's random key).

Each entry is one file: the corrupted clip's raw uint8 bytes and a BLAKE2b digest of them, written atomically. An
entry whose size or digest is wrong (a truncated or damaged file) is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dstbench.checkpoint import atomic_write

__all__ = ["ClipCache", "default_cache_dir"]

FORMAT = "2"  # bump when a corruption's output changes, so that old entries are not reused
_DIGEST_BYTES = 32


def default_cache_dir() -> Path:
    """`<dstbench cache>/video-c`, the dstbench cache being under the data root ($DSTBENCH_DATA)."""
    from dstbench.runner import cache_dir

    return cache_dir() / "video-c"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest()


class ClipCache:
    """Corrupted clips on disk under `folder` (None: `default_cache_dir()`, looked up at first use)."""

    def __init__(self, folder: Path | None = None):
        self._folder = folder

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = default_cache_dir()
        return self._folder

    def path(self, clip: np.ndarray, corruption: str, severity: int, key: int | None, variant: str = "") -> Path:
        """Where the entry of this clip lies; `key` is the clip's random key, None for deterministic corruptions;
        `variant` anything else the result depends on (frame_rate: the clip's frame rate)."""
        content = hashlib.blake2b(repr((FORMAT, clip.shape, str(clip.dtype), variant)).encode(), digest_size=16)
        content.update(np.ascontiguousarray(clip).data)
        name = f"{corruption}-{severity}-{'x' if key is None else f'{key:08x}'}-{content.hexdigest()}.bin"
        return self.folder / corruption / name

    def get(
        self,
        clip: np.ndarray,
        corruption: str,
        severity: int,
        key: int | None,
        compute: Callable[[], np.ndarray],
        variant: str = "",
    ) -> np.ndarray:
        """The cached result for this clip, else `compute()`'s (same shape and dtype as the clip), stored."""
        path = self.path(clip, corruption, severity, key, variant)
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            stored = b""
        data, digest = stored[:-_DIGEST_BYTES], stored[-_DIGEST_BYTES:]
        if len(data) == clip.nbytes and _digest(data) == digest:
            return np.frombuffer(data, dtype=np.uint8).reshape(clip.shape).copy()
        result = np.ascontiguousarray(compute(), dtype=np.uint8)
        if result.shape != clip.shape:
            raise ValueError(f"{corruption} returned shape {result.shape} for a clip of shape {clip.shape}")
        payload = result.tobytes()
        atomic_write(path, lambda tmp: tmp.write_bytes(payload + _digest(payload)), sync=False)
        return result
