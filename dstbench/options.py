"""click options made from `RunConfig`'s fields, shared by every command that takes run settings."""

from __future__ import annotations

import click

from dstbench.config import FIELDS


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_options(names: list[str]):
    """click options for these RunConfig fields; every default is None, meaning 'not given'."""

    def decorate(command):
        for name in reversed(names):
            meta = FIELDS[name].metadata
            if name == "algo_options":
                option = click.option(
                    "--algo-opt", "algo_options", multiple=True, metavar=meta["metavar"], help=meta["help"]
                )
            elif "bool" in str(FIELDS[name].type):
                option = click.option(f"{_flag(name)}/--no-{_flag(name)[2:]}", name, default=None, help=meta["help"])
            else:
                option = click.option(_flag(name), name, default=None, metavar=meta["metavar"], help=meta["help"])
            command = option(command)
        return command

    return decorate


def given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None and v != ()}
