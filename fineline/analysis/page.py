"""The report as one self-contained HTML page: plots embedded as data URIs, a table of
contents, and tables sortable by clicking a column head (a few lines of inline script),
so `index.html` opens from disk, mailed or copied alone, without a server."""

from __future__ import annotations

import base64
import html
import pathlib
import re

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1250px;margin:auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}
nav{background:#f7f7f7;padding:.3em 1em;border:1px solid #ddd}
#verdict{background:#eef6ee;border:1px solid #9c9;padding:.2em 1em}
"""

# Sorts numerically when both cells hold numbers (data-v), else as text.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.dataset.dir === "asc" ? "desc" : "asc";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, r;
      if (x !== undefined && y !== undefined) { r = Number(x) - Number(y); }
      else { r = a.cells[col].textContent.localeCompare(b.cells[col].textContent); }
      return dir === "asc" ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def anchor(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _cell(value, fmt) -> str:
  number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
  attr = f' data-v="{value!r}"' if number and abs(value) != float("inf") else ""
  return f"<td{attr}>{html.escape(fmt(value))}</td>"


def _image(path: pathlib.Path) -> str:
  return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render(blocks, out_dir: pathlib.Path, fmt) -> str:
  """HTML of the report blocks; `fmt` formats a table cell; images are read from out_dir."""
  e = html.escape
  body, toc, ids = [], [], set()
  for block in blocks:
    kind = block[0]
    if kind == "h":
      ident = anchor(block[2]) if block[1] == 2 else None
      if ident:
        while ident in ids:
          ident += "-x"
        ids.add(ident)
        toc.append(f'<li><a href="#{ident}">{e(block[2])}</a></li>')
      attr = f' id="{ident}"' if ident else ""
      body.append(f"<h{block[1]}{attr}>{e(block[2])}</h{block[1]}>")
    elif kind == "p":
      body.append(f"<p>{e(block[1])}</p>")
    elif kind == "ul":
      body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in block[1]) + "</ul>")
    elif kind == "table":
      head = "".join(f"<th>{e(h)}</th>" for h in block[1])
      rows = "".join("<tr>" + "".join(_cell(v, fmt) for v in row) + "</tr>" for row in block[2])
      body.append(f'<table class="sortable"><thead><tr>{head}</tr></thead>'
                  f"<tbody>{rows}</tbody></table>")
    elif kind == "img":
      body.append(f'<figure><img src="{_image(out_dir / block[1])}" alt="{e(block[2])}" '
                  f'data-file="{e(block[1])}"><figcaption>{e(block[2])}</figcaption></figure>')
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<title>Capability dynamics</title>"
          f"<style>{STYLE}</style></head><body>\n" + body[0] + "\n<nav><b>Contents</b><ol>"
          + "".join(toc) + "</ol></nav>\n" + "\n".join(body[1:])
          + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
