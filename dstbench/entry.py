"""Leaderboard entries: plain dataclasses that serialise to the JSON Schema in `entry.schema.json`.

Field names follow RobustBench where the two overlap (`dataset`, `clean_acc`, `corruptions_acc`,
`corruptions_mce`, `additional_data`, `number_forward_passes`); accuracies are numbers in percent. Unlike
RobustBench, an entry carries the whole corruption × severity matrix, the seed, the sparsity it reached and what
the training cost.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

import dstbench

SCHEMA_VERSION = 1


@dataclass
class AlgorithmInfo:
    name: str
    params: dict[str, Any]
    plugin: str
    version: str


@dataclass
class LayerInfo:
    name: str
    shape: list[int]
    nonzeros: int
    numel: int
    density: float


@dataclass
class SparsityInfo:
    target: float
    achieved: float  # counted in the final weights
    distribution: str | None
    layers: list[LayerInfo]


@dataclass
class EvaluationInfo:
    suite: str
    corruptions: list[str]
    severities: list[int]
    corruption_seed: int
    test_samples: int
    baseline: str | None = None  # the entry mCE is relative to


@dataclass
class TrainingInfo:
    trainer: str
    epochs: int
    steps: int
    batch_size: int
    train_samples: int
    wall_time_s: float
    images_per_s: float
    device: str
    precision: str
    history: list[dict[str, Any]]


@dataclass
class EnvironmentInfo:
    dstbench: str
    git_commit: str | None
    python: str
    torch: str
    cuda: str | None
    platform: str

    @classmethod
    def current(cls) -> EnvironmentInfo:
        return cls(
            dstbench=dstbench.__version__,
            git_commit=_git_commit(),
            python=platform.python_version(),
            torch=torch.__version__,
            cuda=torch.version.cuda if torch.cuda.is_available() else None,
            platform=platform.platform(),
        )


@dataclass
class CheckpointInfo:
    file: str
    sha256: str


@dataclass
class Entry:
    run_id: str
    dataset: str
    model: str
    suite: str
    seed: int
    algorithm: AlgorithmInfo
    sparsity: SparsityInfo
    clean_acc: float
    corruptions_acc: float  # mPC: mean over the corruption × severity grid
    rpc: float  # corruptions_acc / clean_acc
    corruptions_mce: float | None
    corruptions: dict[str, dict[str, float]]  # corruption -> severity -> accuracy
    evaluation: EvaluationInfo
    training: TrainingInfo
    environment: EnvironmentInfo
    checkpoint: CheckpointInfo
    config: dict[str, Any]
    additional_data: bool = False
    number_forward_passes: int = 1
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}


@cache
def _git_commit() -> str | None:
    """The commit of the dstbench source tree, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(dstbench.__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("dstbench").joinpath("entry.schema.json").read_text())


def _json_path(parts) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def violations(data: Any) -> list[str]:
    """Every way `data` breaks the schema or is inconsistent with itself, each as '<JSON path>: <problem>'."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    found = [
        f"{_json_path(e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    return found or _inconsistencies(data)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _inconsistencies(data: dict[str, Any]) -> list[str]:
    found = []
    grid = data["corruptions"]
    ev = data["evaluation"]
    if sorted(grid) != sorted(ev["corruptions"]):
        found.append("$.corruptions: its corruptions differ from $.evaluation.corruptions")
    for name, row in grid.items():
        if sorted(map(int, row)) != sorted(ev["severities"]):
            found.append(f"$.corruptions.{name}: its severities differ from $.evaluation.severities")
    cells = [acc for row in grid.values() for acc in row.values()]
    if cells and not _close(fmean(cells), data["corruptions_acc"]):
        found.append(f"$.corruptions_acc: {data['corruptions_acc']} is not the mean of $.corruptions ({fmean(cells)})")
    if data["clean_acc"] and not _close(data["corruptions_acc"] / data["clean_acc"], data["rpc"]):
        found.append("$.rpc: is not corruptions_acc / clean_acc")
    layers = data["sparsity"]["layers"]
    if layers:
        achieved = 1 - sum(layer["nonzeros"] for layer in layers) / sum(layer["numel"] for layer in layers)
        if not _close(achieved, data["sparsity"]["achieved"]):
            found.append(f"$.sparsity.achieved: {data['sparsity']['achieved']} disagrees with its layers ({achieved})")
    return found


def _no_nan(constant: str) -> None:
    raise ValueError(f"{constant} is not allowed")


def validate_file(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(), parse_constant=_no_nan)
    except FileNotFoundError:
        return ["$: file does not exist"]
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return [f"$: not readable JSON ({exc})"]
    return violations(data)
