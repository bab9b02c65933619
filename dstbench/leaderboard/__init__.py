"""Leaderboard entries: validate, submit, verify, render. `dstbench leaderboard --help` lists the commands."""

from dstbench.leaderboard.commands import leaderboard

__all__ = ["leaderboard"]
