"""The entry validator under hypothesis: hostile or random input gives violations, never an exception."""

import json
import math

from entries import make_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dstbench.checkpoint import write_json
from dstbench.entry import MAX_DEPTH, MESSAGE_LIMIT, validate_file, violations

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOSTILE_TEXT = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "a\nb",
    "\u0000",
    "\u202e",
    "../../etc/passwd",
    "x" * 1_000_001,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53, max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
)


def nested(depth: int, as_dict: bool):
    value = 1
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


hostile = (
    json_values
    | st.sampled_from(HOSTILE_TEXT)
    | st.builds(nested, st.sampled_from([MAX_DEPTH - 5, MAX_DEPTH + 1, 5000]), st.booleans())
)


def paths(data, prefix=()):
    """Every path into `data` (dict keys and list indices), the empty path included."""
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from paths(value, (*prefix, key))


def replaced(data, path, value):
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = replaced(data[path[0]], path[1:], value)
    return copy


def assert_reported(problems):
    assert isinstance(problems, list) and all(isinstance(p, str) and p.startswith("$") for p in problems)
    assert all(len(p) <= MESSAGE_LIMIT for p in problems)


@FUZZ
@given(json_values)
def test_random_json_gives_violations(data):
    problems = violations(data)
    assert_reported(problems)
    assert problems  # random JSON is never a complete, consistent entry


ENTRY_PATHS = list(paths(make_entry(algo="rigl", sparsity=0.5)))


@FUZZ
@given(st.sampled_from(ENTRY_PATHS), hostile)
def test_a_mutated_entry_gives_violations_not_exceptions(path, value):
    assert_reported(violations(replaced(make_entry(algo="rigl", sparsity=0.5), path, value)))


@FUZZ
@given(
    st.sampled_from(ENTRY_PATHS), st.sampled_from([math.nan, math.inf, -math.inf, 2**60, nested(MAX_DEPTH + 1, False)])
)
def test_nan_infinity_huge_integers_and_deep_nesting_are_violations(path, value):
    problems = violations(replaced(make_entry(), path, value))
    assert problems and all(p.startswith("$") for p in problems)


@FUZZ
@given(
    st.sampled_from(["name", "link", "authors", "venue", "footnote", "run_id"]),
    st.sampled_from([t for t in HOSTILE_TEXT if t != "<script>alert(1)</script>"]),
)
def test_hostile_submission_text_is_refused(field, text):
    """Control characters, over-long text and non-http links never pass; plain HTML in prose is allowed (every
    output escapes it) but never in a name or link."""
    entry = make_entry()
    entry[field] = text
    if field in ("name", "link") or "\u0000" in text or "\n" in text or len(text) > 2000:
        assert violations(entry)


@st.composite
def valid_entries(draw):
    from dstbench.leaderboard.schema_versions import SUBMISSION_FIELDS

    sparsity = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    entry = make_entry(
        algo="dense" if sparsity == 0 else draw(st.sampled_from(["set", "rigl", "mest"])),
        sparsity=sparsity,
        seed=draw(st.integers(0, 2**32 - 1)),
        clean=draw(st.floats(1.0, 100.0)),
        drop=draw(st.floats(0.0, 20.0)),
        corruptions=tuple(draw(st.lists(st.sampled_from(["fog", "snow", "zoom_blur"]), min_size=1, unique=True))),
        severities=tuple(draw(st.lists(st.integers(1, 5), min_size=1, unique=True))),
    )
    text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=80)
    name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", fullmatch=True)
    link = st.from_regex(r"https://[a-z]{1,20}\.org/[a-zA-Z0-9/_.-]{0,30}", fullmatch=True)
    strategies = {"name": name, "link": link, "authors": text, "venue": text, "footnote": text}
    for key in SUBMISSION_FIELDS:
        entry[key] = draw(st.none() | strategies[key])
    return entry


@FUZZ
@given(valid_entries())
def test_a_valid_entry_stays_valid_through_a_json_round_trip(entry):
    assert violations(entry) == []
    again = json.loads(json.dumps(entry, allow_nan=False))
    assert again == entry and violations(again) == []


def test_a_valid_entry_file_round_trips(tmp_path):
    entry = {**make_entry(algo="set", sparsity=0.3), "name": "Test2026Entry", "footnote": "<b>bold</b> & é"}
    write_json(tmp_path / "e.json", entry)
    assert validate_file(tmp_path / "e.json") == [] and json.loads((tmp_path / "e.json").read_text()) == entry


def test_contradictory_entries_are_violations():
    entry = make_entry()
    assert violations(entry) == []
    other_suite = {**entry, "evaluation": {**entry["evaluation"], "suite": "imagenet-c"}}
    assert violations(other_suite) == ["$.evaluation.suite: 'imagenet-c' is not the entry's suite 'cifar-c'"]
    unchecked_mce = {**entry, "corruptions_mce": 50.0}
    assert violations(unchecked_mce) == [
        "$.corruptions_mce: an mCE needs the baseline it is relative to in $.evaluation.baseline"
    ]
    assert violations({**unchecked_mce, "evaluation": {**entry["evaluation"], "baseline": "Dense2026"}}) == []
    unchecked_relative = {**entry, "corruptions_relative_mce": -5.0}
    assert violations(unchecked_relative) == [
        "$.corruptions_relative_mce: a relative mCE needs the baseline it is relative to in $.evaluation.baseline"
    ]
    assert violations({**unchecked_relative, "evaluation": {**entry["evaluation"], "baseline": "Dense2026"}}) == []
    assert violations({**entry, "created": "yesterday"}) == ["$.created: 'yesterday' is not an ISO 8601 date and time"]
