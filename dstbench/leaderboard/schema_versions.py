"""The versions of the entry schema and the migrations between them: the one place that lists them.

A file is validated against the schema of its own `schema_version`, then migrated step by step to the current
version when it is read (`dstbench.entry.load_entry`). The current schema is `dstbench/entry.schema.json` (what
`leaderboard/schema.json` links to); every older one is a frozen copy, `dstbench/entry.v<N>.schema.json`, never
edited again. To add version N+1: copy entry.schema.json to entry.v<N>.schema.json, point version N at the copy,
give it an `upgrade` to N+1, change entry.schema.json and `dstbench.entry` (SCHEMA_VERSION, Entry), and add N+1
here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SUBMISSION_FIELDS = ("name", "link", "authors", "venue", "footnote")  # added in version 2


@dataclass(frozen=True)
class Version:
    number: int
    schema_file: str  # in the dstbench package
    changes: str
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # to number + 1; None for the current one


def _insert_after(data: dict[str, Any], key: str, new: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = v
        if k == key:
            out.update(new)
    return {**out, **{k: v for k, v in new.items() if k not in out}}


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 adds the submission metadata; a version-1 entry has none of it."""
    upgraded = _insert_after(data, "number_forward_passes", dict.fromkeys(SUBMISSION_FIELDS))
    upgraded["schema_version"] = 2
    return upgraded


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds the relative mCE; a version-2 entry has none."""
    upgraded = _insert_after(data, "corruptions_mce", {"corruptions_relative_mce": None})
    upgraded["schema_version"] = 3
    return upgraded


VERSIONS = {
    1: Version(1, "entry.v1.schema.json", "the first schema", _v1_to_v2),
    2: Version(
        2,
        "entry.v2.schema.json",
        (
            "adds name, link, authors, venue and footnote (null when not given); refuses control characters in "
            "run_id, dataset, model, suite and algorithm name"
        ),
        _v2_to_v3,
    ),
    3: Version(3, "entry.schema.json", "adds corruptions_relative_mce (null without a baseline or where undefined)"),
}
CURRENT = max(VERSIONS)
OLDEST = min(VERSIONS)


@cache
def schema(version: int = CURRENT) -> dict[str, Any]:
    return json.loads(resources.files("dstbench").joinpath(VERSIONS[version].schema_file).read_text())


def version_of(data: Any) -> int | None:
    """The entry's schema version when it is one this dstbench knows, else None."""
    if not isinstance(data, dict):
        return None
    version = data.get("schema_version")
    if type(version) is not int or version not in VERSIONS:  # true and 1.0 are not versions
        return None
    return version


def version_problem(data: Any) -> str | None:
    """One line when `data` carries a schema_version this dstbench cannot read, else None. A missing
    schema_version is left to the current schema, which names it with everything else that is missing."""
    if not isinstance(data, dict) or "schema_version" not in data:
        return None
    version = data["schema_version"]
    known = f"knows {OLDEST}–{CURRENT}"
    if type(version) is not int:  # true and 1.0 are not versions
        return f"$.schema_version: {version!r} is not a schema version (an integer; this dstbench {known})"
    if version > CURRENT:
        return f"$: schema_version {version} is newer than this dstbench ({known}); upgrade dstbench"
    if version not in VERSIONS:
        return f"$: schema_version {version} is not a version of the dstbench entry schema ({known})"
    return None


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A valid entry of any known version, as the current version (a new dict; `data` is not changed)."""
    version = version_of(data)
    if version is None:
        raise ValueError(f"not an entry of a known schema version: {data.get('schema_version')!r}")
    while version < CURRENT:
        data = VERSIONS[version].upgrade(data)
        version += 1
    return data


def migration_note(data: Any) -> str:
    """' (schema_version 1, read as version 3 after migration)' for an entry of an older version, else ''."""
    version = version_of(data)
    if version is None or version == CURRENT:
        return ""
    return f" (schema_version {version}, read as version {CURRENT} after migration)"
