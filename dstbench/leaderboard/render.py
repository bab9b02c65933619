"""`dstbench leaderboard render`: the `Board` as markdown tables and as one self-contained, interactive page.

An invalid entry file is left out of the board and reported on one line naming it, and the command then exits
non-zero: the valid entries still render (useful locally), CI still fails. The same entries always give
byte-identical files: nothing depends on the clock, and the page's data is `json.dumps(..., sort_keys=True)`.

Entry text never reaches the output unescaped: markdown escapes it, the page carries it as JSON inside
`<script type="application/json">` with `<`, `>` and `&` written as `\\u003c`..., its script builds the DOM with
text nodes only, and a Content-Security-Policy lets only the page's own script and style (by hash) run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import click

from dstbench.errors import UserError
from dstbench.leaderboard.board import COLUMNS, Board, Cell, Row, Table, build_board, load_entries
from dstbench.options import LEADERBOARD_DIR

# --- markdown ----------------------------------------------------------------------------------------------------

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")

SUBMIT_MARKDOWN = """\
## How to submit

1. Train and evaluate with `dstbench run` (or `dstbench sweep`); each run writes `entry.json` and `model.pt`.
2. `dstbench leaderboard submit RUN_DIR --name <Name><Year><Word> --link ... --authors ... --venue ...` re-checks
   the checkpoint, its sparsity and its accuracy on a seeded test subset, then writes
   `entries/<dataset>/<suite>/<name>.json`.
3. Run `dstbench leaderboard render` and open a pull request with the entry and the rendered board.
"""


def markdown_text(text: str) -> str:
    """`text` safe in a markdown table cell: one line, markup characters escaped, no HTML."""
    text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _markdown_cell(cell: Cell) -> str:
    text = markdown_text(cell.text)
    return f"[{text}]({cell.href})" if cell.href else text  # http_url percent-encoded what could end the link


def _markdown_table(table: Table) -> list[str]:
    header = "| " + " | ".join(column.label for column in COLUMNS) + " |"
    rule = "|" + "|".join("---:" if column.numeric else "---" for column in COLUMNS) + "|"
    title = f"## {markdown_text(table.dataset)} · {markdown_text(table.suite)}"
    lines = [title, "", f"mPC over {markdown_text(table.grid)}.", "", header, rule]
    for row in table.rows:
        cells = [_markdown_cell(row.cells[column.key]) for column in COLUMNS]
        if row.baseline:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [*map(markdown_text, table.notes), ""] if table.notes else []
    about = [line for row in table.rows if (line := _markdown_about(row))]
    return [*lines, "", *notes, *about, *([""] if about else [])]


def _markdown_about(row: Row) -> str | None:
    """'- name: authors · venue — footnote' for an entry that says any of these, else None."""
    name, credit = row.cells["name"].text, row.cells["name"].title
    said = " — ".join(text for text in (credit, row.footnote) if text)
    return f"- {markdown_text(name)}: {markdown_text(said)}" if said else None


def render_markdown(board: Board) -> str:
    """The README of the leaderboard folder: one table per dataset × suite, by mPC, dense rows in bold."""
    lines = [
        "# dstbench leaderboard",
        "",
        "Clean and corrupted accuracy of every entry in [`entries/`](entries/), one table per dataset,",
        "corruption suite and evaluation grid, best mPC first; dense baselines in bold. Written by",
        "`dstbench leaderboard render`: do not edit by hand. The interactive board (sorting, filters, corruption ×",
        "severity heat maps) is [`site/index.html`](site/index.html).",
        "",
    ]
    if not board.tables:
        lines += ["No entries yet: be the first.", ""]
    for table in board.tables:
        lines += _markdown_table(table)
    return "\n".join(lines) + "\n" + SUBMIT_MARKDOWN


# --- the page ----------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _template(name: str) -> str:
    return resources.files("dstbench.leaderboard").joinpath("site_template", name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """`data` as JSON that cannot end or open an HTML element: `<`, `>` and `&` as unicode escapes."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_html(board: Board) -> str:
    """One self-contained page: the template with its style, script and the board's data inlined."""
    style, script = _template("style.css"), _template("board.js")
    values = {
        "style": style,
        "script": script,
        "style_hash": _csp_hash(style),
        "script_hash": _csp_hash(script),
        "data": script_json(board.to_dict()),
    }
    # One pass: text put in never gets its own {{...}} replaced.
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], _template("index.html"))


# --- the command -------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    from dstbench.checkpoint import atomic_write

    atomic_write(path, lambda tmp: tmp.write_bytes(text.encode()), mode=0o644)  # a page to publish


def write_board(leaderboard_dir: Path, out_dir: Path) -> tuple[Path, Path, int, list[str]]:
    """Render the valid entries of `<leaderboard_dir>/entries` into `<out_dir>/README.md` and
    `<out_dir>/site/index.html`; returns both paths, the number of entries and a line per refused file."""
    entries, refused = load_entries(leaderboard_dir / "entries")
    board = build_board(entries)
    readme, page = out_dir / "README.md", out_dir / "site" / "index.html"
    _write(readme, render_markdown(board))
    _write(page, render_html(board))
    return readme, page, len(entries), refused


@click.command(
    epilog="""
\b
Examples:
  dstbench leaderboard render                        in place: leaderboard/README.md and site/index.html
  dstbench leaderboard render --out /tmp/board       a preview, the checkout untouched
"""
)
@LEADERBOARD_DIR
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where README.md and site/index.html go (default: the leaderboard folder).",
)
def render(leaderboard_dir: Path, out: Path | None) -> None:
    """Write the leaderboard as markdown tables (README.md) and a self-contained page (site/index.html).

    Every entry is validated first. An invalid file, or a second entry of the same experiment, is left out and
    reported (the file and why), and the command exits with 2 after writing the board from the rest, so CI fails on
    it.
    """
    readme, page, count, refused = write_board(leaderboard_dir, out or leaderboard_dir)
    click.echo(f"{count} entries: {readme}, {page}")
    for line in refused:
        click.echo(line, err=True)
    if refused:
        raise UserError(f"{len(refused)} entry file(s) left out of the board (listed above)")
