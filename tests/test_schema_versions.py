"""Entry schema versions: older entries are validated against their own schema and migrated; newer are refused."""

import json
import re

import pytest
from click.testing import CliRunner
from entries import make_entry

from dstbench.entry import SCHEMA_VERSION, load_entry, migrate, schema, violations
from dstbench.errors import UserError
from dstbench.leaderboard import schema_versions
from dstbench.leaderboard.schema_versions import SUBMISSION_FIELDS


def v2_entry(**kwargs):
    entry = make_entry(**kwargs)
    del entry["corruptions_relative_mce"]
    return {**entry, "schema_version": 2}


def v1_entry(**kwargs):
    entry = v2_entry(**kwargs)
    for key in SUBMISSION_FIELDS:
        del entry[key]
    return {**entry, "schema_version": 1}


def test_the_versions_agree():
    assert SCHEMA_VERSION == schema_versions.CURRENT == 3
    assert schema()["properties"]["schema_version"] == {"const": 3}
    assert schema(2)["properties"]["schema_version"] == {"const": 2}
    assert schema(1)["properties"]["schema_version"] == {"const": 1}
    assert set(schema()["properties"]) - set(schema(2)["properties"]) == {"corruptions_relative_mce"}
    assert set(schema(2)["properties"]) - set(schema(1)["properties"]) == set(SUBMISSION_FIELDS)


def test_a_version_1_entry_is_valid_and_migrates(tmp_path):
    old = v1_entry(algo="rigl", sparsity=0.3)
    assert violations(old) == []
    assert violations({**old, "name": "X2025Y"}) != []  # version 1 had no submission fields
    new = migrate(old)
    added = {*SUBMISSION_FIELDS, "corruptions_relative_mce"}
    assert new["schema_version"] == 3 and all(new[key] is None for key in added)
    assert violations(new) == [] and old["schema_version"] == 1  # the input is not changed
    assert {k: v for k, v in new.items() if k not in added and k != "schema_version"} == {
        k: v for k, v in old.items() if k != "schema_version"
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert load_entry(path) == new


def test_a_version_2_entry_without_a_relative_mce_is_valid_and_migrates(tmp_path):
    old = {**v2_entry(algo="rigl", sparsity=0.3), "corruptions_mce": 95.0}
    old["evaluation"]["baseline"] = "Dense2026"
    assert violations(old) == []
    assert violations({**old, "corruptions_relative_mce": 80.0}) != []  # version 2 had no relative mCE
    new = migrate(old)
    assert new == {**old, "schema_version": 3, "corruptions_relative_mce": None} and old["schema_version"] == 2
    assert list(new).index("corruptions_relative_mce") == list(new).index("corruptions_mce") + 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert load_entry(path) == new


def test_a_version_3_entry_carries_a_relative_mce_or_null():
    entry = make_entry()
    entry["evaluation"]["baseline"] = "Dense2026"
    for value in (None, 80.0, -12.5, 0.0):  # negative where accuracy rises under corruption
        assert violations({**entry, "corruptions_relative_mce": value}) == []
    assert any(
        "'abc' is not of type 'number', 'null'" in p for p in violations({**entry, "corruptions_relative_mce": "abc"})
    )
    del entry["corruptions_relative_mce"]
    assert any("'corruptions_relative_mce' is a required property" in p for p in violations(entry))


def test_a_current_entry_missing_the_submission_fields_is_invalid():
    entry = make_entry()
    del entry["name"]
    assert any("'name' is a required property" in p for p in violations(entry))


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (4, "$: schema_version 4 is newer than this dstbench (knows 1–3); upgrade dstbench"),
        (99, "$: schema_version 99 is newer than this dstbench"),
        (0, "$: schema_version 0 is not a version of the dstbench entry schema (knows 1–3)"),
        (True, "$.schema_version: True is not a schema version"),
        (2.0, "$.schema_version: 2.0 is not a schema version"),
        ("2", "$.schema_version: '2' is not a schema version"),
    ],
)
def test_other_versions_are_refused_in_one_line(version, message, tmp_path):
    problems = violations({**make_entry(), "schema_version": version})
    assert len(problems) == 1 and problems[0].startswith(message)
    path = tmp_path / "entry.json"
    path.write_text(json.dumps({**make_entry(), "schema_version": version}))
    with pytest.raises(UserError, match=re.escape(f"is not a valid entry: {message}")):
        load_entry(path)


def test_validate_command_names_a_future_version(plugins, tmp_path):
    from dstbench.cli import build_cli

    path = tmp_path / "future.json"
    path.write_text(json.dumps({**make_entry(), "schema_version": 7}))
    result = CliRunner().invoke(build_cli(plugins), ["leaderboard", "validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}: $: schema_version 7 is newer than this dstbench (knows 1–3); upgrade dstbench" in result.stdout


def test_validate_command_says_which_files_it_migrated(plugins, tmp_path):
    from dstbench.cli import build_cli

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(v1_entry()))
    new.write_text(json.dumps(make_entry()))
    result = CliRunner().invoke(build_cli(plugins), ["leaderboard", "validate", str(old), str(new)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{old}: ok (schema_version 1, read as version 3 after migration)",
        f"{new}: ok",
    ]
