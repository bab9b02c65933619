"""The rendered leaderboard page in a real browser: Debian's chromium driven by Playwright (no browser download).

Skipped, with the reason, where the `playwright` package or /usr/bin/chromium is missing (CI installs both)."""

from pathlib import Path

import pytest
from test_leaderboard_render import HOSTILE, board_entries, render, write_entries

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package
ENTRIES = {entry["name"] or entry["run_id"]: entry for entry in board_entries().values()}
SORT_KEYS = {  # column → what it sorts by, from the entry
    "clean": lambda e: e["clean_acc"],
    "mpc": lambda e: e["corruptions_acc"],
    "rpc": lambda e: e["rpc"],
    "sparsity": lambda e: e["sparsity"]["achieved"],
    "cost": lambda e: e["training"]["wall_time_s"],
}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        except sync_api.Error as exc:
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def rendered_page(directory: Path, entries: dict[str, dict]) -> str:
    (directory / "entries").mkdir(parents=True)
    write_entries(directory, entries)
    assert render(directory).exit_code == 0
    return (directory / "site" / "index.html").as_uri()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return rendered_page(tmp_path_factory.mktemp("site"), board_entries())


@pytest.fixture
def open_page(browser):
    """Opens a URL in a fresh context that lets nothing but the URL itself load; after the test, asserts that
    the page logged no error and asked for nothing else."""
    contexts, problems = [], []

    def load(url: str):
        context = browser.new_context()
        contexts.append(context)

        def route(request_route):
            if request_route.request.url == url:
                request_route.continue_()
            else:
                problems.append(f"request: {request_route.request.url}")
                request_route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("request", lambda request: request.url == url or problems.append(f"request: {request.url}"))
        page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto(url)
        return page

    yield load
    for context in contexts:
        context.close()
    assert problems == []


def column(page, table: str, key: str, visible_only: bool = True) -> list[str]:
    """The texts of one column of a table, top to bottom."""
    return page.eval_on_selector_all(
        f"#{table} tr.entry td[data-key={key}]",
        "(cells, visibleOnly) => cells.filter((c) => !visibleOnly || !c.closest('tbody').hidden)"
        ".map((c) => c.textContent)",
        visible_only,
    )


def test_page_loads_cleanly_and_shows_every_entry(open_page, site):
    page = open_page(site)
    assert page.title() == "dstbench leaderboard"
    assert page.locator("section.board-table h2").all_text_contents() == [
        "cifar10 · cifar-c",
        "digits · cifar-c-noise",
        "hostile · cifar-c",
    ]
    shown = {}
    for table in ("table-0", "table-1", "table-2"):
        keys = ("name", "clean", "mpc", "rpc", "d_mpc")
        shown |= {row[0]: row[1:] for row in zip(*(column(page, table, key) for key in keys), strict=True)}
    assert set(shown) == set(ENTRIES)
    for name, entry in ENTRIES.items():
        clean, mpc, rpc, _ = shown[name]
        assert (clean, mpc, rpc) == (
            f"{entry['clean_acc']:.2f}",
            f"{entry['corruptions_acc']:.2f}",
            f"{entry['rpc']:.3f}",
        )
    assert shown["Rigl2026Robust"][3] == "+2.50"
    delta_classes = page.eval_on_selector_all("#table-0 td[data-key=d_mpc]", "cells => cells.map(c => c.className)")
    assert delta_classes == ["num gain", "num gain", "num", "num", "num loss"]  # set, rigl, dense × 2, mest
    baselines = page.eval_on_selector_all(
        "tr.entry.baseline td[data-key=name]", "cells => cells.map(c => c.textContent)"
    )
    assert baselines == ["cifar10-cifar-resnet18-dense-seed0", "cifar10-cifar-resnet18-dense-seed1"]


@pytest.mark.parametrize("key", list(SORT_KEYS))
def test_clicking_a_header_sorts_ascending_then_descending(open_page, site, key):
    page = open_page(site)
    header = page.locator(f"#table-0 th[data-key={key}] button")
    for direction in ("ascending", "descending"):
        header.click()
        assert page.get_attribute(f"#table-0 th[data-key={key}]", "aria-sort") == direction
        values = [SORT_KEYS[key](ENTRIES[name]) for name in column(page, "table-0", "name")]
        assert len(values) == 5 and values == sorted(values, reverse=direction == "descending")


def test_algorithm_and_sparsity_filters_hide_the_right_rows(open_page, site):
    page = open_page(site)
    page.uncheck("#algorithms input[value=dense]")
    assert column(page, "table-0", "algorithm") == ["set", "rigl", "mest"]
    assert page.locator("section.board-table p.status").first.text_content() == "3 of 5 entries shown"

    page.fill("#sparsity-min", "30")
    page.fill("#sparsity-max", "50")
    assert column(page, "table-0", "target") == ["50.0%", "30.0%"]
    assert column(page, "table-1", "target") == ["50.0%"]
    assert column(page, "table-2", "target") == ["30.0%"]

    page.uncheck("#algorithms input[value=rigl]")
    page.check("#algorithms input[value=dense]")
    page.fill("#sparsity-min", "0")
    page.fill("#sparsity-max", "0")
    assert column(page, "table-0", "algorithm") == ["dense", "dense"]
    assert column(page, "table-2", "algorithm") == []
    assert len(column(page, "table-0", "name", visible_only=False)) == 5


def test_detail_shows_the_heat_map_and_links(open_page, site):
    page = open_page(site)
    entry = ENTRIES["Rigl2026Robust"]
    row = page.locator("tr.entry", has_text="Rigl2026Robust")
    detail = row.locator("xpath=following-sibling::tr[1]")
    assert detail.is_hidden()
    row.locator("td[data-key=seed]").click()
    assert detail.is_visible()
    grid = detail.locator("table.heatmap tbody tr")
    expected = {
        corruption: [f"{entry['corruptions'][corruption][str(s)]:.1f}" for s in range(1, 6)]
        + [f"{sum(entry['corruptions'][corruption].values()) / 5:.1f}"]
        for corruption in entry["evaluation"]["corruptions"]
    }
    shown = {
        grid.nth(i).locator("th").text_content(): grid.nth(i).locator("td").all_text_contents()
        for i in range(grid.count())
    }
    assert shown == expected
    colours = grid.first.locator("td").evaluate_all("cells => cells.map(c => getComputedStyle(c).backgroundColor)")
    # a heat map: each accuracy its own colour; the row mean equals severity 3 here, and so does its colour
    assert len(set(colours[:5])) == 5 and colours[5] == colours[2]
    links = detail.locator("p.links a")
    assert links.all_text_contents() == ["paper", "checkpoint"]
    assert [links.nth(i).get_attribute("href") for i in range(2)] == [entry["link"], entry["checkpoint"]["file"]]
    row.locator("td[data-key=seed]").click()
    assert detail.is_hidden()


def test_hostile_entry_text_is_shown_literally_and_never_runs(open_page, site):
    page = open_page(site)
    row = page.locator("#table-2 tr.entry")
    row.locator("td[data-key=seed]").click()
    assert page.evaluate("window.pwned") is None
    assert row.locator("td[data-key=name]").text_content() == HOSTILE["run_id"]
    assert row.locator("td[data-key=model]").text_content() == HOSTILE["model"]
    assert row.locator("td[data-key=name]").get_attribute("title") == f"{HOSTILE['authors']} · {HOSTILE['venue']}"
    facts = page.locator("#table-2 dl.facts")
    for label in ("Authors", "Venue", "Note"):
        text = facts.locator(f"dt:text-is('{label}') + dd").text_content()
        assert text == HOSTILE[{"Note": "footnote"}.get(label, label.lower())]
    assert page.locator("#board script, #board img, #board svg, #board b").count() == 0
    assert page.locator("#table-2 p.links a").all_text_contents() == ["paper"]  # not the javascript: checkpoint
    assert page.eval_on_selector_all("a[href]", "links => links.filter(a => a.protocol !== 'https:').length") == 0


def test_empty_board_says_so(open_page, tmp_path):
    page = open_page(rendered_page(tmp_path, {}))
    assert page.locator("#board p.empty").text_content().startswith("No entries yet")
    assert page.locator("#filters").is_hidden()
