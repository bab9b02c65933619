"""What an entry's mPC averages over (its corruptions, severities and number of test samples): entries are ranked
and compared only with entries of the same grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Grid = tuple[tuple[str, ...], tuple[int, ...], int]


def evaluation_grid(entry: Mapping[str, Any]) -> Grid:
    """An entry's corruptions and severities, sorted, and its number of test samples."""
    evaluation = entry["evaluation"]
    return tuple(sorted(evaluation["corruptions"])), tuple(sorted(evaluation["severities"])), evaluation["test_samples"]


def describe_grid(key: Grid) -> str:
    """'19 corruptions × severities 1–5 · 10,000 test samples' (the names, when there are at most four)."""
    corruptions, severities, samples = key
    names = ", ".join(corruptions) if len(corruptions) <= 4 else f"{len(corruptions)} corruptions"
    consecutive = len(severities) > 2 and severities == tuple(range(severities[0], severities[-1] + 1))
    levels = f"{severities[0]}–{severities[-1]}" if consecutive else ", ".join(map(str, severities))
    plural = "ies" if len(severities) > 1 else "y"
    return f"{names} × severit{plural} {levels} · {samples:,} test samples"
