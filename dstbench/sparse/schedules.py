"""When masks change and by how much: RigL's update schedule with its decaying drop fraction, and GraNet's cubic
density schedule. Steps count optimizer steps taken, starting at 1 after the first step."""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAYS = ("cosine", "constant")


@dataclass(frozen=True)
class DropSchedule:
    """Update every `interval` steps from step `start` up to step `end`; the fraction of active weights to drop
    decays from `fraction` with f(t) = fraction / 2 · (1 + cos(π (t - start) / (end - start))) (RigL's, where
    start = 0), or stays constant."""

    interval: int
    end: int
    fraction: float
    decay: str = "cosine"
    start: int = 0

    def is_update(self, step: int) -> bool:
        return step > 0 and step % self.interval == 0 and self.start <= step <= self.end

    def fraction_at(self, step: int) -> float:
        if self.decay == "constant":
            return self.fraction
        progress = (min(max(step, self.start), self.end) - self.start) / max(self.end - self.start, 1)
        return self.fraction / 2 * (1 + math.cos(math.pi * progress))


def cubic_density(step: int, start: int, end: int, initial: float, final: float) -> float:
    """GraNet's (and Zhu & Gupta's) gradual pruning: d(t) = d_f + (d_i - d_f) · (1 - progress)³ between start and
    end, d_i before, d_f after."""
    if end <= start:
        return final if step >= end else initial
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1 - progress) ** 3
