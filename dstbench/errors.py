"""Errors the user can fix. The CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: a wrong name, value, path or file. The message says what is wrong and what is allowed."""

    exit_code = 2


class PluginError(UserError):
    """Plugins disagree, e.g. two of them register the same name."""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """'unknown model 'resnt18' (did you mean 'resnet18'?); choose from: a, b, c'."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint}; choose from: {', '.join(choices) or '(none installed)'}")
