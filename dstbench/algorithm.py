"""The small interface every sparsity algorithm implements; the trainer knows algorithms only through it.

One `Algorithm` object lives for one run. The trainer calls `setup` once the model and optimizer exist (with the
saved state on a resumed run), then registers the object as a plugin for the run's duration, so the lifecycle
hooks it implements with `@hookimpl` (`on_step_end`, `on_epoch_end`, ... from `dstbench.hookspecs`) fire during
training.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from dstbench.config import MAX_INTEGER, parse_bool, parse_number
from dstbench.errors import UserError

if TYPE_CHECKING:
    from dstbench.config import RunConfig
    from dstbench.train import Run


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """An algorithm's own hyperparameters are a frozen dataclass like this one; every field has a default."""


class Algorithm:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    sparse: ClassVar[bool] = True  # False: the algorithm trains all weights, and sparsity must be 0
    default_sparsity: ClassVar[float] = 0.5
    default_distribution: ClassVar[str | None] = None

    def __init__(self, sparsity: float, distribution: str | None, options: Any):
        self.sparsity = sparsity
        self.distribution = distribution or self.default_distribution
        self.options = options

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Algorithm:
        return cls(cfg.sparsity, cfg.distribution, cls.parse_options(cfg.algo_options))

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise UserError for settings this algorithm cannot run with."""
        if not cls.sparse and cfg.sparsity:
            raise UserError(f"algorithm '{cls.name}' trains all weights; --sparsity must be 0, got {cfg.sparsity}")
        cls.parse_options(cfg.algo_options)

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> Any:
        """The Options dataclass from strings (flags) or typed values (TOML), with one-line errors."""
        hints = typing.get_type_hints(cls.Options)
        known = {f.name for f in dataclasses.fields(cls.Options)}
        values = {}
        for key, value in raw.items():
            if key not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise UserError(f"algorithm '{cls.name}' has no option '{key}'; its options: {allowed}")
            try:
                values[key] = _coerce(value, hints[key])
            except (TypeError, ValueError):
                kind = getattr(hints[key], "__name__", str(hints[key]))  # 'int', not "<class 'int'>"
                raise UserError(f"algorithm '{cls.name}' option '{key}': {value!r} is not a valid {kind}") from None
            number = values[key]
            if isinstance(number, float) and not math.isfinite(number):
                raise UserError(f"algorithm '{cls.name}' option '{key}' must be a finite number, got {value!r}")
            if isinstance(number, int) and not isinstance(number, bool) and abs(number) >= MAX_INTEGER:
                raise UserError(f"algorithm '{cls.name}' option '{key}' must be below 2**53, got {value!r}")
        try:
            return cls.Options(**values)
        except ValueError as exc:  # an Options.__post_init__ range check
            raise UserError(f"algorithm '{cls.name}': {exc}") from None

    def setup(self, run: Run, state: Mapping[str, Any] | None = None) -> None:
        """Bind to the run's model and optimizer: on a fresh run (`state` None) draw the initial masks and zero
        the masked weights; on a resumed one restore what `state_dict` returned."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run (masks, counters, generator), as tensors and plain values."""
        return {}

    def params(self) -> dict[str, Any]:
        """Hyperparameters recorded in the leaderboard entry."""
        return dataclasses.asdict(self.options)


def _coerce(value: Any, hint: Any) -> Any:
    """Convert a flag string or TOML value to an option's annotated type (bool, int, float, str or Optional)."""
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        return parse_bool(value)
    if hint in (int, float):
        return parse_number(hint)(value)
    if hint is str:
        return str(value)
    raise TypeError(f"unsupported option type {hint}")
