"""The typed registries that the `register_*` hooks fill, and the lookups the rest of dstbench uses."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dstbench.errors import PluginError, unknown_choice

T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    obj: T
    plugin: str  # the entry-point name of the plugin that registered it
    distribution: str  # the installed package it comes from, and its version
    version: str


# kind -> (hook, expected type as "module:Class", whether plugins register the class itself or an instance).
# The order is the order `dstbench list` shows them in.
KINDS: dict[str, tuple[str, str, bool]] = {
    "algorithm": ("register_algorithms", "dstbench.algorithm:Algorithm", True),
    "model": ("register_models", "dstbench.models:ModelSpec", False),
    "dataset": ("register_datasets", "dstbench.data:DatasetSpec", False),
    "suite": ("register_suites", "dstbench.corruption:CorruptionSuite", False),
    "trainer": ("register_trainers", "dstbench.train:Trainer", True),
    "command": ("register_commands", "click:Command", False),
}


def check(kind: str, obj: Any) -> None:
    """Raise TypeError when a plugin registers something of the wrong type or without a name."""
    hook, path, is_class = KINDS[kind]
    module, _, cls_name = path.partition(":")
    expected = getattr(importlib.import_module(module), cls_name)
    if is_class:
        ok = isinstance(obj, type) and issubclass(obj, expected)
    else:
        ok = isinstance(obj, expected)
    if not ok:
        what = "a subclass" if is_class else "an instance"
        raise TypeError(f"{hook} expects {what} of {module}.{cls_name}, got {obj!r}")
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise TypeError(f"{hook}: {obj!r} has no name")


@dataclass
class Registry:
    entries: dict[str, dict[str, Registered]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    def add(self, kind: str, item: Registered) -> None:
        table = self.entries[kind]
        name = item.obj.name
        if name in table:
            first = table[name]
            raise PluginError(
                f"{kind} '{name}' is registered twice: by plugin '{first.plugin}' ({first.distribution} "
                f"{first.version}) and by plugin '{item.plugin}' ({item.distribution} {item.version}); uninstall "
                f"one, or leave it out with the DSTBENCH_PLUGINS environment variable"
            )
        table[name] = item

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.entries[kind][name].obj
        except KeyError:
            raise unknown_choice(kind, name, self.entries[kind]) from None

    def algorithm(self, name: str):
        return self.get("algorithm", name)

    def dataset(self, name: str):
        return self.get("dataset", name)

    def suite(self, name: str):
        return self.get("suite", name)

    def trainer(self, name: str):
        return self.get("trainer", name)

    def model(self, name: str):
        """The spec for `name` and the variant a family spec gets ('timm/resnet50' -> ('timm/' spec, 'resnet50'))."""
        models = self.entries["model"]
        if name in models:
            return models[name].obj, None
        prefix, sep, variant = name.partition("/")
        if sep and variant and f"{prefix}/" in models:
            return models[f"{prefix}/"].obj, variant
        choices = [n + "<name>" if n.endswith("/") else n for n in models]
        raise unknown_choice("model", name, choices)

    def trainer_for(self, modality: str):
        """The default trainer for a dataset modality."""
        for item in self.entries["trainer"].values():
            if item.obj.modality == modality and item.obj.default:
                return item.obj
        raise PluginError(f"no trainer is installed for {modality} data; installed: {', '.join(self.names('trainer'))}")
