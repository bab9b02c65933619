"""`dstbench leaderboard render`: markdown and page content, determinism, escaping, invalid and empty boards.

The page's behaviour in a browser is tested in test_leaderboard_site.py, on the entries written here."""

import base64
import hashlib
import json
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from entries import make_entry
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.entry import violations
from dstbench.leaderboard import leaderboard
from dstbench.leaderboard.board import COLUMNS, LoadedEntry, build_board, http_url, load_entries
from dstbench.leaderboard.render import render_html, render_markdown

PWNED = "window.pwned=1"  # what the hostile entry's text would run, were it ever executed
HOSTILE = {
    "run_id": f"<script>{PWNED}</script>",
    "model": f"<svg onload={PWNED}>",
    "authors": f'<img src=x onerror="{PWNED}"> | Mallory',
    "venue": f"</script><script>{PWNED}</script>",
    "footnote": f"**bold** [x](javascript:{PWNED}) &amp; <b>",
    "link": "https://example.org/paper(1)|x",
}


def board_entries() -> dict[str, dict]:
    """Entries by file path below entries/: dense seeds 0 and 1, RigL, SET (seed 2: Δ to the dense mean) and MEST
    on cifar10 (the training times differ); a static entry without a dense baseline on digits; a hostile entry in a
    table of its own."""
    rigl = make_entry(algo="rigl", sparsity=0.3, clean=93.5, drop=9.0)
    rigl.update(name="Rigl2026Robust", link="https://arxiv.org/abs/2410.03030", authors="A. Author", venue="ICLR")
    rigl["checkpoint"]["file"] = "https://example.org/rigl.pt"
    rigl["training"]["wall_time_s"] = 5400.0
    mest = make_entry(algo="mest", sparsity=0.9, clean=90.25, drop=12.0)
    mest["training"]["wall_time_s"] = 1800.0
    hostile = make_entry(dataset="hostile", algo="rigl", sparsity=0.3, clean=50.0, drop=1.0)
    hostile.update(HOSTILE)
    hostile["algorithm"]["params"] = {"note": f'"><script>{PWNED}</script>'}
    hostile["checkpoint"]["file"] = f"javascript:{PWNED}"
    entries = [
        make_entry(algo="dense", seed=0, clean=94.0, drop=10.0),
        make_entry(algo="dense", seed=1, clean=93.0, drop=10.0),
        rigl,
        make_entry(algo="set", sparsity=0.5, seed=2, clean=92.0, drop=8.0),
        mest,
        make_entry(dataset="digits", suite="cifar-c-noise", algo="static", sparsity=0.5, clean=97.0, drop=2.0),
        hostile,
    ]
    return {f"{e['dataset']}/{e['suite']}/entry{i}.json": e for i, e in enumerate(entries)}


def write_entries(leaderboard_dir: Path, entries: dict[str, dict]) -> Path:
    for relative, entry in entries.items():
        path = leaderboard_dir / "entries" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry))
    return leaderboard_dir


def render(leaderboard_dir: Path, *extra: str):
    return CliRunner().invoke(leaderboard, ["render", "--leaderboard", str(leaderboard_dir), *extra])


def rendered(leaderboard_dir: Path) -> tuple[str, str]:
    return (leaderboard_dir / "README.md").read_text(), (leaderboard_dir / "site" / "index.html").read_text()


def page_data(html: str) -> dict:
    script = re.search(r'<script type="application/json" id="board-data">(.*?)</script>', html, re.S)
    return json.loads(script.group(1))


def cells(line: str) -> list[str]:
    """A markdown table line's cells, bold stripped; an escaped \\| does not split."""
    return [cell.strip().strip("*") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def markdown_rows(readme: str, heading: str) -> list[dict[str, str]]:
    """The rows of the tables under `## heading` (one per grid), in order, each as {column label: cell}."""
    found = []
    for section in readme.split(f"## {heading}\n")[1:]:
        header, _rule, *rows = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("|")]
        found += [dict(zip(cells(header), cells(row), strict=True)) for row in rows]
    return found


def markdown_row(readme: str, name: str) -> dict[str, str]:
    """The table row whose entry cell contains `name`."""
    tables = re.findall(r"^## (.+ · .+)$", readme, re.M)
    return next(row for table in tables for row in markdown_rows(readme, table) if name in row["Entry"])


@pytest.fixture
def board_dir(tmp_path):
    return write_entries(tmp_path / "board", board_entries())


def test_render_is_byte_identical_and_independent_of_file_order(board_dir, tmp_path):
    assert render(board_dir).exit_code == 0
    first = rendered(board_dir)
    assert render(board_dir).exit_code == 0
    assert rendered(board_dir) == first

    items = list(board_entries().items())
    random.Random(1).shuffle(items)  # files created in another order
    shuffled = write_entries(tmp_path / "shuffled", dict(reversed(items)))
    assert render(shuffled).exit_code == 0
    assert rendered(shuffled) == first

    loaded, refused = load_entries(board_dir / "entries")
    assert not refused and len(loaded) == 7
    reordered = [LoadedEntry(e.path, e.data) for e in random.Random(2).sample(loaded, len(loaded))]
    assert build_board(reordered).to_dict() == build_board(loaded).to_dict()


def test_markdown_shows_every_entry_with_its_numbers(board_dir):
    assert render(board_dir).exit_code == 0
    readme, _ = rendered(board_dir)
    for entry in board_entries().values():
        if entry["dataset"] == "hostile":
            continue
        row = markdown_row(readme, entry["name"] or entry["run_id"])
        assert row["Clean"] == f"{entry['clean_acc']:.2f}"
        assert row["mPC"] == f"{entry['corruptions_acc']:.2f}"
        assert row["rPC"] == f"{entry['rpc']:.3f}"
        assert row["Seed"] == str(entry["seed"])
        assert row["Target sparsity"] == f"{100 * entry['sparsity']['target']:.1f}%"
    tables = re.findall(r"^## (.+)$", readme, re.M)
    assert tables == ["cifar10 · cifar-c", "digits · cifar-c-noise", "hostile · cifar-c", "How to submit"]
    mpcs = [float(row["mPC"]) for row in markdown_rows(readme, "cifar10 · cifar-c")]
    assert mpcs == [67.5, 66.0, 63.5, 62.5, 53.75]  # best first


def test_dense_baseline_is_bold_and_deltas_are_against_it(board_dir):
    assert render(board_dir).exit_code == 0
    readme, html = rendered(board_dir)
    dense = next(line for line in readme.splitlines() if "dense-seed0" in line)
    assert all(cell.strip().startswith("**") for cell in dense.strip("|").split("|"))
    assert markdown_row(readme, "dense-seed0")["Δ clean"] == "baseline"
    rigl = markdown_row(readme, "Rigl2026Robust")  # seed 0: against dense seed 0 (clean 94, mPC 63.5)
    assert (rigl["Δ clean"], rigl["Δ mPC"]) == ("-0.50", "+2.50")
    mest = markdown_row(readme, "mest-s0.9-seed0")  # clean 90.25, mPC 53.75
    assert (mest["Δ clean"], mest["Δ mPC"]) == ("-3.75", "-9.75")
    set_ = markdown_row(readme, "set-s0.5-seed2")  # no dense seed 2: the dense mean (clean 93.5, mPC 63.0)
    assert (set_["Δ clean"], set_["Δ mPC"]) == ("-1.50†", "+4.50†")
    static = markdown_row(readme, "digits-")  # no dense entry on digits
    assert (static["Δ clean"], static["Δ mPC"]) == ("—", "—")

    rows = {row["cells"]["name"]["text"]: row for table in page_data(html)["tables"] for row in table["rows"]}
    assert [name for name, row in rows.items() if row["baseline"]] == [
        "cifar10-cifar-resnet18-dense-seed0",
        "cifar10-cifar-resnet18-dense-seed1",
    ]
    assert rows["Rigl2026Robust"]["cells"]["d_mpc"]["value"] == pytest.approx(2.5)
    assert rows["Rigl2026Robust"]["detail"]["links"] == [
        {"label": "paper", "href": "https://arxiv.org/abs/2410.03030"},
        {"label": "checkpoint", "href": "https://example.org/rigl.pt"},
    ]


def test_hostile_text_is_escaped_and_never_linked(board_dir):
    assert render(board_dir).exit_code == 0
    readme, html = rendered(board_dir)
    for tag in ("<script", "</script", "<img", "<svg", "<b>"):
        assert tag not in readme
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in readme
    assert '&lt;img src=x onerror="window.pwned=1"&gt; \\| Mallory' in readme  # | cannot split the cell
    assert "\\*\\*bold\\*\\* \\[x\\](javascript:window.pwned=1) &amp;amp; &lt;b&gt;" in readme
    assert not re.search(r"(?<!\\)\]\(javascript", readme)  # no link: its brackets are escaped
    assert "(https://example.org/paper%281%29%7Cx)" in readme
    (hostile_row,) = markdown_rows(readme, "hostile · cifar-c")  # the | in its text did not add a cell
    assert hostile_row["Model"] == "&lt;svg onload=window.pwned=1&gt;"

    # the page: exactly its own two scripts and no element made of entry text; the text intact in the data
    assert html.count("<script") == 2 and html.count("</script") == 2
    assert "<img" not in html and "<svg" not in html and "pwned" in html
    (table,) = [table for table in page_data(html)["tables"] if table["dataset"] == "hostile"]
    (row,) = table["rows"]
    assert row["cells"]["name"]["text"] == HOSTILE["run_id"]
    assert row["cells"]["name"]["href"] == "https://example.org/paper%281%29%7Cx"
    assert row["detail"]["links"] == [{"label": "paper", "href": "https://example.org/paper%281%29%7Cx"}]
    facts = dict(row["detail"]["facts"])
    assert facts["Venue"] == HOSTILE["venue"] and facts["Note"] == HOSTILE["footnote"]


markup = st.sampled_from(list("<>&|*_[]()`'\"\\/:!#"))  # what markdown and HTML treat specially
free_text = st.text(markup | st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(run_id=free_text, model=free_text, authors=free_text, footnote=free_text)
def test_any_valid_text_stays_text(run_id, model, authors, footnote):
    entry = {**make_entry(algo="set", sparsity=0.5), "run_id": run_id, "model": model}
    entry.update(authors=authors, footnote=footnote)
    assert violations(entry) == []
    board = build_board([LoadedEntry("a.json", entry)])
    readme, html = render_markdown(board), render_html(board)

    (row,) = markdown_rows(readme, "cifar10 · cifar-c")
    assert len(row) == len(COLUMNS) and "<" not in readme.split("## How to submit")[0]
    assert page_data(html)["tables"][0]["rows"][0]["cells"]["model"]["text"] == model
    assert html.count("<script") == 2 and html.count("</script") == 2


def test_only_http_urls_become_links():
    assert http_url("https://arxiv.org/abs/2410.03030") == "https://arxiv.org/abs/2410.03030"
    assert http_url("HTTP://example.org/a b") == "HTTP://example.org/a%20b"
    for value in ("javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,<b>", "//example.org", "https:x", 3):
        assert http_url(value) is None, value


def test_page_csp_allows_only_its_own_script_and_style(board_dir):
    assert render(board_dir).exit_code == 0
    _, html = rendered(board_dir)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    digest = lambda text: base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()  # noqa: E731
    assert f"script-src 'sha256-{digest(script)}';" in csp and f"style-src 'sha256-{digest(style)}';" in csp
    assert csp.startswith("default-src 'none';") and "http" not in csp


def test_invalid_files_are_reported_and_left_out(tmp_path):
    board = write_entries(tmp_path / "board", {"cifar10/cifar-c/dense0.json": make_entry()})
    bad_dir = board / "entries" / "cifar10" / "cifar-c"
    bad = {
        "nan.json": json.dumps(make_entry(algo="set", sparsity=0.5)).replace('"clean_acc": 94.0', '"clean_acc": NaN'),
        "type.json": json.dumps({**make_entry(algo="set", sparsity=0.5), "seed": "0"}),
        "huge.json": json.dumps({**make_entry(algo="set", sparsity=0.5), "run_id": "x" * 100_000}),
        "script-name.json": json.dumps({**make_entry(algo="set", sparsity=0.5), "name": "<script>x</script>"}),
        "js-link.json": json.dumps({**make_entry(algo="set", sparsity=0.5), "link": f"javascript:{PWNED}"}),
        "future.json": json.dumps({**make_entry(algo="set", sparsity=0.5), "schema_version": 99}),
        "inf.json": json.dumps(make_entry(algo="set", sparsity=0.5)).replace(
            '"wall_time_s": 3600.0', '"wall_time_s": 1e999'
        ),
        "broken.json": "{",
    }
    for name, text in bad.items():
        (bad_dir / name).write_text(text)

    result = render(board)
    assert result.exit_code == 2
    assert result.stdout.startswith("1 entries:")
    lines = result.stderr.splitlines()
    for name in bad:
        (line,) = [line for line in lines if f"{bad_dir / name} is not a valid entry" in line]
        assert len(line) <= 300
    assert lines[-1] == f"Error: {len(bad)} entry file(s) left out of the board (listed above)"
    readme, html = rendered(board)
    assert "dense-seed0" in readme and "set-s0.5" not in readme and "set-s0.5" not in html


def test_only_entries_of_the_same_grid_share_a_table_and_a_delta(tmp_path):
    """An mPC over severity 1 alone is higher than one over 1-5: neither ranked nor compared with it."""
    rigl = {**make_entry(algo="rigl", sparsity=0.3, clean=93.5, drop=9.0), "name": "RiglFull"}
    mild = {**make_entry(algo="rigl", sparsity=0.3, clean=93.5, drop=9.0, severities=(1,)), "name": "RiglMild"}
    few = {**make_entry(algo="rigl", sparsity=0.3, clean=93.5, drop=9.0), "name": "RiglFew"}
    few["evaluation"] = {**few["evaluation"], "test_samples": 500}
    entries = {"dense.json": make_entry(), "rigl.json": rigl, "mild.json": mild, "few.json": few}
    board = write_entries(tmp_path / "board", {f"cifar10/cifar-c/{name}": e for name, e in entries.items()})
    result = render(board)
    assert result.exit_code == 0, result.output
    readme, html = rendered(board)
    assert [table["grid"] for table in page_data(html)["tables"]] == [
        "fog, gaussian_noise × severities 1–5 · 10,000 test samples",
        "fog, gaussian_noise × severities 1–5 · 500 test samples",
        "fog, gaussian_noise × severity 1 · 10,000 test samples",
    ]
    assert "mPC over fog, gaussian\\_noise × severity 1 · 10,000 test samples." in readme
    assert markdown_row(readme, "RiglFull")["Δ mPC"] == "+2.50"
    assert markdown_row(readme, "RiglMild")["Δ mPC"] == markdown_row(readme, "RiglFew")["Δ mPC"] == "—"


def test_a_delta_needs_a_dense_entry_of_the_same_training_recipe(tmp_path):
    short = {**make_entry(algo="rigl", sparsity=0.3, clean=93.5, drop=9.0), "name": "RiglShort"}
    short["config"] = {**short["config"], "epochs": 5}  # the dense entry trained for the default epochs
    executed = {**make_entry(algo="set", sparsity=0.3, clean=93.5, drop=9.0), "name": "SetElsewhere"}
    executed["config"] = {**executed["config"], "device": "cuda", "workers": 8}  # how it ran: not the recipe
    entries = {"dense.json": make_entry(), "short.json": short, "set.json": executed}
    board = write_entries(tmp_path / "board", {f"cifar10/cifar-c/{name}": e for name, e in entries.items()})
    assert render(board).exit_code == 0
    readme, _ = rendered(board)
    assert markdown_row(readme, "RiglShort")["Δ mPC"] == "—"
    assert markdown_row(readme, "SetElsewhere")["Δ mPC"] == "+2.50"


def test_mce_and_relative_mce_columns_name_the_baseline(tmp_path):
    rigl = {**make_entry(algo="rigl", sparsity=0.3), "name": "Rigl", "corruptions_mce": 92.04}
    rigl["corruptions_relative_mce"] = -3.26  # it loses less accuracy under corruption than the dense run: negative
    rigl["evaluation"]["baseline"] = "Dense"
    old = {**make_entry(algo="set", sparsity=0.3), "name": "Set", "corruptions_mce": 101.5, "schema_version": 2}
    del old["corruptions_relative_mce"]  # version 2 had none: read as null
    old["evaluation"]["baseline"] = "Dense"
    entries = {"Dense.json": {**make_entry(), "name": "Dense"}, "Rigl.json": rigl, "Set.json": old}
    board = write_entries(tmp_path / "board", {f"cifar10/cifar-c/{name}": e for name, e in entries.items()})
    assert render(board).exit_code == 0
    readme, html = rendered(board)
    shown = {name: markdown_row(readme, name) for name in ("Dense", "Rigl", "Set")}
    assert [(row["mCE"], row["Relative mCE"]) for row in shown.values()] == [
        ("—", "—"),
        ("92.0", "-3.3"),
        ("101.5", "—"),
    ]
    data = page_data(html)
    assert [column["key"] for column in data["columns"]][9:11] == ["mce", "relative_mce"]
    cells = {row["cells"]["name"]["text"]: row["cells"] for row in data["tables"][0]["rows"]}
    assert cells["Rigl"]["relative_mce"] == {"text": "-3.3", "value": -3.26, "title": "Dense", "href": None}
    assert cells["Set"]["relative_mce"]["value"] is None and cells["Set"]["mce"]["title"] == "Dense"


def test_a_second_entry_of_the_same_experiment_is_left_out(tmp_path):
    rigl = {**make_entry(algo="rigl", sparsity=0.3), "name": "Rigl"}
    moved = {**rigl, "name": "Copy", "config": {**rigl["config"], "out": "/elsewhere", "workers": 8}}
    longer = {**rigl, "name": "Longer", "config": {**rigl["config"], "epochs": 400}}
    # Written before a setting existed: the entry lacks it, and it had its default (`clip_cache_gib`: None).
    older = {**rigl, "name": "Older", "config": {k: v for k, v in rigl["config"].items() if k != "clip_cache_gib"}}
    files = {"rigl.json": rigl, "copy.json": moved, "longer.json": longer, "older.json": older}
    board = write_entries(tmp_path / "board", {f"cifar10/cifar-c/{name}": entry for name, entry in files.items()})
    result = render(board)
    assert result.exit_code == 2
    folder = board / "entries" / "cifar10" / "cifar-c"
    assert f"{folder / 'rigl.json'}: the same experiment as entries/cifar10/cifar-c/copy.json (" in result.stderr
    assert f"{folder / 'older.json'}: the same experiment as entries/cifar10/cifar-c/copy.json (" in result.stderr
    assert result.stderr.splitlines()[-1] == "Error: 2 entry file(s) left out of the board (listed above)"
    readme, _ = rendered(board)
    assert "Copy" in readme and "Longer" in readme and "| Rigl |" not in readme  # path order: copy.json came first
    assert "Older" not in readme


def test_empty_board_renders_a_friendly_page_and_a_missing_folder_is_an_error(tmp_path):
    (tmp_path / "board" / "entries").mkdir(parents=True)
    result = render(tmp_path / "board", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    readme, html = rendered(tmp_path / "out")
    assert "No entries yet" in readme and page_data(html)["tables"] == []
    assert not list((tmp_path / "out").rglob("*.tmp"))  # the atomic writes left no temporary files
    assert {path.stat().st_mode & 0o777 for path in (tmp_path / "out").rglob("*.*")} == {0o644}  # to publish

    missing = render(tmp_path / "nowhere")
    assert missing.exit_code == 2 and "no entries folder at" in missing.output


def test_committed_board_is_rendered_from_the_committed_entries(tmp_path):
    """leaderboard/README.md and site/index.html are the render of leaderboard/entries, never edited by hand."""
    committed = Path(__file__).parents[1] / "leaderboard"
    result = render(committed, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert rendered(tmp_path) == rendered(committed), "run `dstbench leaderboard render` and commit its output"
