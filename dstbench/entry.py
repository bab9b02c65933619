"""Leaderboard entries: plain dataclasses that serialise to the JSON Schema in `entry.schema.json`.

Field names follow RobustBench where the two overlap (`dataset`, `clean_acc`, `corruptions_acc`,
`corruptions_mce`, `additional_data`, `number_forward_passes`); accuracies are numbers in percent. Unlike
RobustBench, an entry carries the whole corruption × severity matrix, the relative mCE, the seed, the sparsity it
reached and what the training cost.

The schema is versioned (`dstbench.leaderboard.schema_versions` lists the versions): a file is validated against
the schema of its own `schema_version`, and `load_entry` migrates it to the current one.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

import dstbench
from dstbench.config import MAX_INTEGER

SCHEMA_VERSION = 3  # dstbench.leaderboard.schema_versions.CURRENT
MAX_ENTRY_BYTES = 64 << 20  # a larger file is refused unread
MAX_DEPTH = 64  # containers within containers; an entry dstbench writes is 5 deep
MESSAGE_LIMIT = 300  # characters of one violation; the validator quotes the offending value


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
    baseline: str | None = None  # the entry mCE and relative mCE are relative to


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
    corruptions_relative_mce: float | None  # None also where undefined (`EvalResult.relative_mce`)
    corruptions: dict[str, dict[str, float]]  # corruption -> severity -> accuracy
    evaluation: EvaluationInfo
    training: TrainingInfo
    environment: EnvironmentInfo
    checkpoint: CheckpointInfo
    config: dict[str, Any]
    additional_data: bool = False
    number_forward_passes: int = 1
    # What a leaderboard submission supplies (`dstbench leaderboard submit`); null in a run's own entry.
    name: str | None = None  # the entry's leaderboard name and file name
    link: str | None = None
    authors: str | None = None
    venue: str | None = None
    footnote: str | None = None
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


def schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of an entry version (the current one by default)."""
    from dstbench.leaderboard import schema_versions

    return schema_versions.schema(version)


def _ecma_regex(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262 regexes, whose `$` matches only at the very end; Python's also matches
    before a final newline, which would let 'name\\n' through."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _pattern(validator, pattern, instance, _schema):
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not re.search(_ecma_regex(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _validator(version: int):
    from jsonschema import Draft202012Validator, validators

    cls = validators.extend(Draft202012Validator, {"pattern": _pattern})
    return cls(schema(version))


def _json_path(parts) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def violations(data: Any) -> list[str]:
    """Every way `data` breaks the schema of its own version or is inconsistent with itself, each as
    '<JSON path>: <problem>'. Any known version is valid; an unknown or future one is one line saying so."""
    from dstbench.leaderboard import schema_versions

    unsafe = _unsafe_values(data)
    if unsafe:
        return unsafe
    problem = schema_versions.version_problem(data)
    if problem:
        return [_short(problem)]
    validator = _validator(schema_versions.version_of(data) or SCHEMA_VERSION)
    found = [
        _short(f"{_json_path(e.absolute_path)}: {e.message}")
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    return found or _inconsistencies(data)


def _short(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _unsafe_values(data: Any) -> list[str]:
    """NaN and infinities (JSON has no such numbers), integers beyond ±2**53 and nesting deeper than MAX_DEPTH,
    found without recursion: the schema validator recurses, and quotes values in its messages."""
    found = []
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            found.append(f"{_json_path(path)}: NaN and Infinity are not JSON numbers")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
            found.append(f"{_json_path(path)}: an integer beyond ±2**53, which JSON readers cannot hold exactly")
        elif isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                found.append(f"{_json_path(path[:3])}…: nested deeper than {MAX_DEPTH} levels")
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, (*path, key)) for key, item in reversed(list(items)))
    return [_short(problem) for problem in found]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _inconsistencies(data: dict[str, Any]) -> list[str]:
    found = []
    grid = data["corruptions"]
    ev = data["evaluation"]
    if ev["suite"] != data["suite"]:
        found.append(f"$.evaluation.suite: {ev['suite']!r} is not the entry's suite {data['suite']!r}")
    for key, metric in (("corruptions_mce", "an mCE"), ("corruptions_relative_mce", "a relative mCE")):
        if data.get(key) is not None and not ev["baseline"]:  # no relative mCE before schema version 3
            found.append(f"$.{key}: {metric} needs the baseline it is relative to in $.evaluation.baseline")
    try:
        datetime.fromisoformat(data["created"])
    except ValueError:
        found.append(f"$.created: {data['created']!r} is not an ISO 8601 date and time")
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
    for i, layer in enumerate(layers):
        if layer["numel"] != math.prod(layer["shape"]):
            found.append(f"$.sparsity.layers[{i}].numel: {layer['numel']} is not the product of its shape")
        if layer["nonzeros"] > layer["numel"]:
            found.append(f"$.sparsity.layers[{i}].nonzeros: {layer['nonzeros']} is more than its numel")
    if layers and not found:
        achieved = 1 - sum(layer["nonzeros"] for layer in layers) / sum(layer["numel"] for layer in layers)
        if not _close(achieved, data["sparsity"]["achieved"]):
            found.append(f"$.sparsity.achieved: {data['sparsity']['achieved']} disagrees with its layers ({achieved})")
    return found


def _no_nan(constant: str) -> None:
    raise ValueError(f"{constant} is not allowed")


def _read(path: Path) -> tuple[Any, list[str]]:
    try:
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            return None, [f"$: the file has {size:,} bytes, more than an entry may ({MAX_ENTRY_BYTES:,})"]
        return json.loads(path.read_text(), parse_constant=_no_nan), []
    except FileNotFoundError:
        return None, ["$: file does not exist"]
    except RecursionError:
        return None, ["$: not readable JSON (nested too deeply)"]
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, [f"$: not readable JSON ({exc})"]


def checked_file(path: Path) -> tuple[Any, list[str]]:
    """The file's contents (None where unreadable) and its violations (none when it is a valid entry of any known
    schema version)."""
    data, problems = _read(path)
    return data, problems or violations(data)


def validate_file(path: Path) -> list[str]:
    """The file's violations (empty when it is a valid entry of any known schema version)."""
    return checked_file(path)[1]


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A valid entry of any known version as the current version (a new dict)."""
    from dstbench.leaderboard import schema_versions

    return schema_versions.migrate(data)


def entry_grid(entry: dict) -> dict[str, dict[int, float]]:
    """An entry's corruption × severity accuracies with integer severities (JSON keys are strings)."""
    return {c: {int(s): acc for s, acc in row.items()} for c, row in entry["corruptions"].items()}


def read_baseline(path: str, corruptions: Sequence[str] = (), severities: Sequence[int] = ()) -> dict[str, Any]:
    """A baseline entry; a UserError when it is no valid entry or lacks one of these cells."""
    from dstbench.errors import UserError

    file = Path(path)
    data, problems = checked_file(file)
    if problems:
        raise UserError(f"--baseline {file} is not a valid entry: {problems[0]}")
    grid = entry_grid(data)
    missing = next(((c, s) for c in corruptions for s in severities if s not in grid.get(c, {})), None)
    if missing:
        raise UserError(
            f"--baseline {file} has no result for {missing[0]} at severity {missing[1]}; mCE needs the baseline's "
            "errors on every corruption and severity evaluated"
        )
    return data


def load_entry(path: Path) -> dict[str, Any]:
    """A valid entry file's contents, migrated to SCHEMA_VERSION; a UserError naming the first problem otherwise."""
    from dstbench.errors import UserError

    if not path.is_file():
        raise UserError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; give an entry's .json file")
    data, problems = _read(path)
    problems = problems or violations(data)
    if not problems:
        data = migrate(data)
        problems = violations(data)  # a migration's result must be valid too
    if problems:
        more = f" (and {len(problems) - 1} more; see dstbench leaderboard validate)" if len(problems) > 1 else ""
        raise UserError(f"{path} is not a valid entry: {problems[0]}{more}")
    return data
