"""Loads plugins, built-in and third-party alike, from the `dstbench` entry-point group.

A plugin that fails to import or to register, or whose hook raises during a run, is recorded with its error and
skipped; everything else keeps working. The environment variable DSTBENCH_PLUGINS restricts which third-party
plugins load: a comma-separated list of entry-point or distribution names (empty: none). Built-ins, the entry points
of the `dstbench` distribution itself, always load. Core code calls hooks through `Plugins`, never through `pm.hook`
directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from dstbench import hookspecs
from dstbench.errors import PluginError
from dstbench.registry import KINDS, Registered, Registry, check

if TYPE_CHECKING:
    from dstbench.entry import Entry
    from dstbench.train import EpochStats, Run, TrainResult

GROUP = "dstbench"
CORE_DISTRIBUTION = "dstbench"
ENV_VAR = "DSTBENCH_PLUGINS"


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # why it was skipped
    isolated: bool = True  # a failing run hook is reported and skipped (third-party plugins)
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names


def _allowed(env: Mapping[str, str]) -> set[str] | None:
    if ENV_VAR not in env:
        return None
    return {name.strip() for name in env[ENV_VAR].split(",") if name.strip()}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Plugins:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None
        self._clash: PluginError | None = None

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, extra: Mapping[str, object] | None = None, isolate: bool = False
    ) -> Plugins:
        """Import every plugin of the entry-point group, then build the registries.

        `extra` maps names to plugin objects registered as if they were third-party entry points (for tests); their
        run hooks' errors propagate (a test's checks) unless `isolate`.
        """
        plugins = cls()
        allowed = _allowed(os.environ if env is None else env)
        seen: set[tuple[str, str]] = set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.dist.name != CORE_DISTRIBUTION, e.name)):
            if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            plugins._load_entry_point(ep, allowed)
        for name, obj in (extra or {}).items():
            info = PluginInfo(name, getattr(obj, "__name__", repr(obj)), "(test)", "", False, isolated=isolate)
            plugins._add(info, lambda o=obj: o)
        plugins._build_registry()
        return plugins

    def _load_entry_point(self, ep: EntryPoint, allowed: set[str] | None) -> None:
        dist = ep.dist.name if ep.dist else "?"
        info = PluginInfo(ep.name, ep.value, dist, ep.dist.version if ep.dist else "?", dist == CORE_DISTRIBUTION)
        if not info.builtin and allowed is not None and not {ep.name, dist} & allowed:
            return
        self._add(info, ep.load)

    def _add(self, info: PluginInfo, load) -> None:
        if info.name in self.infos:
            other = self.infos[info.name]
            info.error = f"plugin name '{info.name}' is also used by {other.distribution} ({other.module})"
            self.infos[f"{info.name} ({info.distribution})"] = info
            return
        self.infos[info.name] = info
        try:
            self.pm.register(load(), name=info.name)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down, nor exit
            info.error = _describe(exc)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(info.name)))

    def _build_registry(self) -> None:
        """Call each plugin's register_* hooks on their own, so one plugin's failure drops only that plugin."""
        registry = Registry()
        for info in self.infos.values():
            if info.error:
                continue
            plugin = self.pm.get_plugin(info.name)
            try:
                items = self._registrations(plugin)
            except (Exception, SystemExit) as exc:
                info.error = f"registration failed: {_describe(exc)}"
                self.pm.unregister(plugin)
                continue
            for kind, obj in items:
                info.registered.setdefault(kind, []).append(obj.name)
                try:
                    registry.add(kind, Registered(obj, info.name, info.distribution, info.version))
                except PluginError as exc:
                    self._clash = self._clash or exc
        self._registry = registry

    def _registrations(self, plugin: object) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        for kind, (hook, _, _) in KINDS.items():

            def register(obj: Any, kind: str = kind) -> None:
                check(kind, obj)
                items.append((kind, obj))

            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=register)
        return items

    @property
    def registry(self) -> Registry:
        if self._clash:
            raise self._clash
        assert self._registry is not None
        return self._registry

    def broken(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.error]

    # --- objects registered for a while (a run's algorithm) ---------------------------------------------------------

    def register(self, plugin: object, name: str) -> None:
        self.pm.register(plugin, name=name)

    def unregister(self, plugin: object) -> None:
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)

    # --- typed hook calls --------------------------------------------------------------------------------------

    def run_start(self, run: Run) -> None:
        self._call("on_run_start", run=run)

    def step_end(self, run: Run) -> None:
        self._call("on_step_end", run=run)

    def epoch_end(self, run: Run, stats: EpochStats) -> None:
        self._call("on_epoch_end", run=run, stats=stats)

    def run_end(self, run: Run, result: TrainResult) -> None:
        self._call("on_run_end", run=run, result=result)

    def entry_fields(self, entry: Entry, run: Run | None) -> dict[str, dict[str, Any]]:
        """Each plugin's extra entry fields, keyed by plugin name."""
        return self._call("entry_fields", entry=entry, run=run)

    def _call(self, hook: str, **kwargs: Any) -> dict[str, Any]:
        """Every implementation, in pluggy's order (tryfirst, ..., trylast), and their results by plugin name. A
        third-party plugin that raises is reported, then skipped for the rest of the process; a built-in's or a
        run's algorithm's error is dstbench's own and propagates."""
        results = {}
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            info = self.infos.get(impl.plugin_name)
            if info is not None and info.error:
                continue
            try:
                result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                if info is None or info.builtin or not info.isolated:
                    raise
                info.error = f"{hook} failed: {_describe(exc)}"
                message = f"plugin '{info.name}' failed in {hook} ({_describe(exc)}); it is skipped from now on"
                if kwargs["run"] is not None:
                    kwargs["run"].reporter.warn(message)
                else:
                    print(f"warning: {message}", file=sys.stderr)
                continue
            if result:
                results[impl.plugin_name] = result
        return results


_loaded: Plugins | None = None


def get_plugins() -> Plugins:
    """The process's plugins, loaded on first use."""
    global _loaded
    if _loaded is None:
        _loaded = Plugins.load()
    return _loaded
