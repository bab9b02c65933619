"use strict";
// Builds the leaderboard from the JSON in #board-data. Entry text reaches the page only as text nodes and
// attribute values, never as HTML.

const board = JSON.parse(document.getElementById("board-data").textContent);
const INITIAL_SORT = { key: "mpc", direction: -1 }; // the order the rows arrive in

/** An element with attributes (null ones skipped) and children (strings become text nodes). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function cellContent(cell) {
  return cell.href ? el("a", { href: cell.href, rel: "noopener noreferrer" }, cell.text) : cell.text;
}

/** Numbers align right; a difference to the dense baseline is coloured by its sign. */
function cellClass(column, cell) {
  if (!column.numeric) return null;
  if (!column.key.startsWith("d_") || typeof cell.value !== "number") return "num";
  return cell.value >= 0 ? "num gain" : "num loss";
}

/** 0 % red, 100 % green. */
function heatColour(accuracy) {
  return `hsl(${(1.2 * accuracy).toFixed(1)}, 70%, 80%)`;
}

function renderHeatmap(heatmap) {
  const header = el("tr", {}, el("th", { scope: "col" }, "corruption \\ severity"),
    ...heatmap.severities.map((severity) => el("th", { scope: "col" }, severity)), el("th", { scope: "col" }, "mean"));
  const rows = heatmap.corruptions.map((corruption, i) => {
    const cells = heatmap.cells[i].map((cell, j) => {
      const td = el("td", { class: j === heatmap.severities.length ? "mean" : null }, cell.text);
      td.style.backgroundColor = heatColour(cell.value);
      return td;
    });
    return el("tr", {}, el("th", { scope: "row" }, corruption), ...cells);
  });
  return el("table", { class: "heatmap" }, el("thead", {}, header), el("tbody", {}, ...rows));
}

function renderDetail(detail) {
  const facts = el("dl", { class: "facts" }, ...detail.facts.flatMap(([label, text]) => [el("dt", {}, label), el("dd", {}, text)]));
  const links = detail.links.map((link) => el("a", { href: link.href, rel: "noopener noreferrer" }, link.label));
  return el("div", { class: "detail-body" }, renderHeatmap(detail.heatmap), el("div", {}, facts, el("p", { class: "links" }, ...links)));
}

/** One entry as a <tbody> of two rows, so its details stay with it when the table is sorted. */
function renderEntry(row, order) {
  const main = el("tr", { class: row.baseline ? "entry baseline" : "entry", id: row.id, "aria-expanded": "false" },
    el("td", {}, el("button", { type: "button", class: "toggle", "aria-label": "details" }, "▸")),
    ...board.columns.map((column) => {
      const cell = row.cells[column.key];
      return el("td", { class: cellClass(column, cell), "data-key": column.key, title: cell.title }, cellContent(cell));
    }));
  const detail = el("tr", { class: "detail", hidden: "" }, el("td", { colspan: board.columns.length + 1 }, renderDetail(row.detail)));
  main.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    detail.hidden = !detail.hidden;
    main.setAttribute("aria-expanded", String(!detail.hidden));
  });
  const group = el("tbody", {}, main, detail);
  group.entry = row;
  group.order = order;
  return group;
}

/** Missing values (null) last in either direction; ties keep the original order. */
function compare(a, b, direction) {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return a < b ? -direction : direction;
}

function sortTable(table, key, direction) {
  const groups = [...table.tBodies];
  groups.sort((a, b) => compare(a.entry.cells[key].value, b.entry.cells[key].value, direction) || a.order - b.order);
  table.append(...groups);
  for (const th of table.tHead.rows[0].cells) {
    const sorted = th.dataset.key === key;
    th.setAttribute("aria-sort", sorted ? (direction > 0 ? "ascending" : "descending") : "none");
  }
  table.sortState = { key, direction };
}

function headerRow(table) {
  const headers = board.columns.map((column) => {
    const th = el("th", { scope: "col", class: column.numeric ? "num" : null, "data-key": column.key, "aria-sort": "none" },
      el("button", { type: "button", title: column.help }, column.label));
    // A new column sorts ascending first; the same column flips.
    th.firstChild.addEventListener("click", () => {
      const same = table.sortState.key === column.key;
      sortTable(table, column.key, same ? -table.sortState.direction : 1);
    });
    return th;
  });
  return el("tr", {}, el("th", { scope: "col", "aria-label": "details" }), ...headers);
}

function renderTable(data) {
  const table = el("table", { class: "entries", id: data.id });
  table.append(el("thead", {}, headerRow(table)), ...data.rows.map(renderEntry));
  sortTable(table, INITIAL_SORT.key, INITIAL_SORT.direction);
  const status = el("p", { class: "status", role: "status" });
  return el("section", { class: "board-table", "aria-labelledby": `${data.id}-title` },
    el("h2", { id: `${data.id}-title` }, `${data.dataset} · ${data.suite}`),
    el("p", { class: "note" }, `mPC over ${data.grid}.`), status, table,
    ...data.notes.map((note) => el("p", { class: "note" }, note)));
}

function renderFilters(onChange) {
  const fieldset = document.getElementById("algorithms");
  for (const algorithm of board.algorithms) {
    fieldset.append(el("label", {}, el("input", { type: "checkbox", value: algorithm, checked: "" }), ` ${algorithm}`));
  }
  const filters = document.getElementById("filters");
  filters.addEventListener("input", onChange);
  filters.hidden = false;
}

/** Shows the entries whose algorithm is ticked and whose target sparsity lies in the range. */
function applyFilters() {
  const ticked = new Set([...document.querySelectorAll("#algorithms input:checked")].map((input) => input.value));
  const low = Number(document.getElementById("sparsity-min").value || 0);
  const high = Number(document.getElementById("sparsity-max").value || 100);
  for (const section of document.querySelectorAll("section.board-table")) {
    const groups = [...section.querySelector("table").tBodies];
    for (const group of groups) {
      const percent = Math.round(group.entry.target_sparsity * 1e6) / 1e4; // 0.3 → 30, not 30.000000000000004
      group.hidden = !(ticked.has(group.entry.algorithm) && percent >= low && percent <= high);
    }
    const shown = groups.filter((group) => !group.hidden).length;
    section.querySelector("p.status").textContent = `${shown} of ${groups.length} entries shown`;
  }
}

const main = document.getElementById("board");
if (board.tables.length === 0) {
  main.append(el("p", { class: "empty" }, "No entries yet: be the first (see How to submit below)."));
} else {
  main.append(...board.tables.map(renderTable));
  renderFilters(applyFilters);
  applyFilters();
}
