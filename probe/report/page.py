"""The page renderer of :mod:`probe.report`: one self-contained HTML file per result.

Everything a page needs is inside the file: the CSS and the small script are inline, figures and images are
base64 PNGs in ``<img src="data:...">``, and a Content-Security-Policy forbids every network request, so a
report opens from disk (``file://``) with no server and no network. The script only *enhances* the page
(a filter box and paging for long tables, shown only when the script runs): with JavaScript off every row
that was rendered is on the page.

Templates are strings in this module, rendered with Jinja2 with autoescaping on: every value that is not
wrapped in :class:`markupsafe.Markup` (which the helpers here return) is escaped.

Example:
    >>> from probe.report import render_page, table, facts
    >>> page = render_page("Demo", [("Summary", facts({"answer": 42})),
    ...                             ("Rows", table([{"a": 1, "b": "<x>"}], main=True))])
    >>> "&lt;x&gt;" in page and "<table" in page
    True
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup, escape

from probe.core.artifacts import atomic_write_bytes
from probe.core.errors import InvalidParameterError
from probe.core.paths import check_output
from probe.core.table import format_cell

__all__ = [
    "DEFAULT_MAX_ROWS",
    "PAGE_SIZE",
    "Markup",
    "Section",
    "badge",
    "details",
    "facts",
    "figure",
    "image",
    "image_grid",
    "image_shape",
    "marked_tokens",
    "paragraph",
    "render_page",
    "table",
    "write_html",
]

#: Rows a :func:`table` renders by default; longer tables say "showing the first N of M rows".
DEFAULT_MAX_ROWS = 500
#: Rows per page when the script pages a long table (the page itself holds every rendered row).
PAGE_SIZE = 100

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #ffffff; --soft: #f4f6fa; --accent: #2456a6; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { background: #1f2d4a; color: #fff; padding: 18px 28px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #c9d4ea; font-size: 13px; }
nav.toc { padding: 8px 28px; background: var(--soft); border-bottom: 1px solid var(--line); font-size: 13px; }
nav.toc a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { margin-top: 22px; }
h2 { font-size: 17px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p { margin: 6px 0; }
.muted, .note { color: var(--muted); }
.note { font-size: 13px; margin: 4px 0 8px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.data { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left;
                               vertical-align: top; }
table.data th { background: var(--soft); position: sticky; top: 0; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.data tbody tr:hover { background: #f7f9fd; }
.table-tools { margin: 6px 0; display: flex; gap: 12px; align-items: center; font-size: 13px; }
.table-tools input { font: inherit; padding: 3px 6px; width: 260px; border: 1px solid var(--line); border-radius: 4px; }
.table-tools button { font: inherit; padding: 1px 8px; }
figure { margin: 8px 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figure img.pixel { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; max-width: 420px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.grid .group { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; background: #fff; }
.grid .group h4 { margin: 0 0 6px; font-size: 13px; font-weight: 600; }
.grid .group figure { margin: 0 8px 0 0; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600;
         background: #e8ebf1; color: #364152; }
.badge.good { background: #dff3e4; color: #17622f; }
.badge.bad { background: #fde2e1; color: #9b1c1c; }
.badge.warn { background: #fff1d6; color: #8a5300; }
.badge.info { background: #e1ecfb; color: #1d4f91; }
.tokens { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; white-space: pre-wrap; }
.tokens .tok { padding: 0 1px; border-right: 1px dotted #d0d5de; }
.tokens mark { background: #ffd85c; font-weight: 700; border-radius: 2px; }
details { margin: 6px 0; }
summary { cursor: pointer; }
footer { color: var(--muted); font-size: 12px; padding: 10px 28px 24px; border-top: 1px solid var(--line); }
"""

# Progressive enhancement only: the page is complete without it. It shows the filter box of each table that
# has one, filters rows by text, and pages tables longer than their data-page-size.
_JS = """
(function () {
  "use strict";
  function setup(tools) {
    var table = document.getElementById(tools.getAttribute("data-for"));
    if (!table || !table.tBodies.length) { return; }
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var size = parseInt(table.getAttribute("data-page-size") || "0", 10);
    var input = tools.querySelector("input");
    var count = tools.querySelector(".count");
    var prev = tools.querySelector("button.prev");
    var next = tools.querySelector("button.next");
    var page = 0;
    function update() {
      var q = input ? input.value.toLowerCase().trim() : "";
      var shown = rows.filter(function (r) { return !q || r.textContent.toLowerCase().indexOf(q) >= 0; });
      var pages = size > 0 ? Math.max(1, Math.ceil(shown.length / size)) : 1;
      page = Math.min(Math.max(page, 0), pages - 1);
      rows.forEach(function (r) { r.hidden = true; });
      shown.forEach(function (r, i) { r.hidden = size > 0 && Math.floor(i / size) !== page; });
      var text = shown.length + " of " + rows.length + " rows";
      if (size > 0 && pages > 1) { text += ", page " + (page + 1) + " of " + pages; }
      count.textContent = text;
      if (prev) { prev.hidden = pages < 2; prev.disabled = page === 0; }
      if (next) { next.hidden = pages < 2; next.disabled = page >= pages - 1; }
    }
    if (input) { input.addEventListener("input", function () { page = 0; update(); }); }
    if (prev) { prev.addEventListener("click", function () { page -= 1; update(); }); }
    if (next) { next.addEventListener("click", function () { page += 1; update(); }); }
    tools.hidden = false;
    update();
  }
  document.querySelectorAll(".table-tools[data-for]").forEach(setup);
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="neurospec {{ version }}">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
{% if subtitle %}<div class="sub">{{ subtitle }}</div>{% endif %}
</header>
{% if sections|length > 1 %}
<nav class="toc">{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>
{% endif %}
<main>
{% for s in sections %}
<section id="{{ s.anchor }}">
<h2>{{ s.title }}</h2>
{% for part in s.parts %}{{ part }}
{% endfor %}
</section>
{% endfor %}
</main>
<footer>Made by neurospec {{ version }}{% if stamp %} on {{ stamp }}{% endif %}. This file is self-contained: it needs
no server and no network.</footer>
<script>{{ js }}</script>
</body>
</html>
"""

_TABLE = """{% if caption %}<p class="note caption" id="{{ id }}-caption">{{ caption }}</p>{% endif %}
{% if tools %}<div class="table-tools" data-for="{{ id }}" hidden>
{% if searchable %}<input type="search" placeholder="filter rows…" aria-label="filter the rows of this table">{% endif %}
<span class="count"></span>
<button type="button" class="prev" hidden>&larr; previous</button><button type="button" class="next" hidden>next &rarr;</button>
</div>{% endif %}
<div class="table-wrap"><table class="data" id="{{ id }}"{% if caption %} aria-describedby="{{ id }}-caption"{% endif %}{% if main %} data-main="true"{% endif %}{% if page_size %} data-page-size="{{ page_size }}"{% endif %}>
<thead><tr>{% for c in columns %}<th scope="col">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr>{% for cell, num in row %}<td{% if num %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
{% if shown < total %}<p class="note cap">Showing the first {{ "{:,}".format(shown) }} of {{ "{:,}".format(total) }} rows{% if cap_hint %} ({{ cap_hint }}){% endif %}.</p>{% endif %}
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False,
                          loader=jinja2.DictLoader({"page": _PAGE, "table": _TABLE}))


@dataclass
class Section:
    """One section of a page: a title and its parts (HTML fragments from the helpers; plain strings are
    escaped and shown as text).

    Example:
        >>> Section("Summary", [paragraph("two NAPs")]).anchor
        'summary'
    """

    title: str
    parts: Sequence[Any]
    anchor: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise InvalidParameterError(f"a section title must be a non-empty string; got {self.title!r}")
        parts = [self.parts] if isinstance(self.parts, str) or not isinstance(self.parts, Sequence) else self.parts
        for part in parts:
            if not isinstance(part, str):
                raise InvalidParameterError(f"section {self.title!r}: a part must be an HTML fragment from a "
                                            f"probe.report helper or a string; got {type(part).__name__}")
        self.parts = [p if isinstance(p, Markup) else paragraph(p) for p in parts]
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def _as_sections(sections: Iterable[Section | tuple[str, Any]]) -> list[Section]:
    if isinstance(sections, (str, bytes, Mapping)) or not isinstance(sections, Iterable):
        raise InvalidParameterError("sections must be a sequence of Section objects or (title, content) pairs; "
                                    f"got {type(sections).__name__}")
    out: list[Section] = []
    for s in sections:
        if isinstance(s, Section):
            out.append(s)
        elif isinstance(s, tuple) and len(s) == 2:
            out.append(Section(s[0], s[1]))
        else:
            raise InvalidParameterError(f"each section must be a Section or a (title, content) pair; got {s!r:.80}")
    seen: dict[str, int] = {}
    for s in out:  # unique anchors
        n = seen.get(s.anchor, 0)
        seen[s.anchor] = n + 1
        if n:
            s.anchor = f"{s.anchor}-{n + 1}"
    return out


def render_page(title: str, sections: Iterable[Section | tuple[str, Any]], *, subtitle: str | None = None,
                timestamp: bool = True) -> str:
    """One complete, self-contained HTML page.

    Args:
        title: the page title (shown as the heading; escaped).
        sections: :class:`Section` objects or ``(title, content)`` pairs; content is one fragment or a list of
            fragments (helpers' output is HTML, plain strings are escaped).
        subtitle: a line under the title (escaped).
        timestamp: print the date and time of rendering in the footer (off for byte-identical pages).

    Returns:
        The HTML text (write it with :func:`write_html`).

    Raises:
        InvalidParameterError: an empty title, or sections that are not sections.

    Example:
        >>> html = render_page("NAPs", [("Summary", paragraph("10 classes"))])
        >>> html.startswith("<!DOCTYPE html>")
        True
    """
    from probe import __version__

    if not isinstance(title, str) or not title.strip():
        raise InvalidParameterError(f"title must be a non-empty string; got {title!r}")
    secs = _as_sections(sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M") if timestamp else ""
    return _ENV.get_template("page").render(
        title=title, subtitle=subtitle, sections=secs, css=Markup(_CSS), js=Markup(_JS), csp=Markup(_CSP),
        version=__version__, stamp=stamp)


def write_html(path: str | os.PathLike[str], html: str) -> Path:
    """Write a page atomically (readers see the old file or the whole new one). The path is checked first.

    Args:
        path: the ``.html`` file to write (its folder is created if needed).
        html: the page, e.g. from :func:`render_page`.

    Returns:
        The path written.

    Raises:
        OutputPathError: ``path`` is a folder, or its folder cannot be written.
        InvalidParameterError: ``html`` is not a string.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "r.html"
        >>> write_html(out, render_page("T", [("S", "text")])).name
        'r.html'
    """
    if not isinstance(html, str):
        raise InvalidParameterError(f"html must be the page as a string; got {type(html).__name__}")
    path = check_output(path)
    return atomic_write_bytes(path, html.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- fragments


def paragraph(text: str, *, note: bool = False) -> Markup:
    """A paragraph of (escaped) text; ``note=True`` renders it small and grey.

    Example:
        >>> str(paragraph("a < b"))
        '<p>a &lt; b</p>'
    """
    return Markup('<p class="note">{}</p>' if note else "<p>{}</p>").format(text)


def _cell(value: Any, digits: int) -> tuple[Any, bool]:
    """A cell's content and whether it is a number (right-aligned)."""
    if isinstance(value, Markup):
        return value, False
    if isinstance(value, (np.generic,)):
        value = value.item()
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None:
        return "", False
    if isinstance(value, float) and not math.isnan(value) and not math.isinf(value) and float(value).is_integer() \
            and abs(value) >= 1e6:
        return f"{value:,.0f}", True
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value), True
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v, digits) for v in value), False
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {format_cell(v, digits)}" for k, v in value.items()), False
    return format_cell(value, digits), numeric


def facts(items: Mapping[str, Any], *, digits: int = 4) -> Markup:
    """A two-column list of names and values (numbers formatted like table cells).

    Example:
        >>> "<dt>delta</dt><dd>0.9900</dd>" in str(facts({"delta": 0.99}))
        True
    """
    if not isinstance(items, Mapping):
        raise InvalidParameterError(f"facts takes a mapping of names to values; got {type(items).__name__}")
    parts = [Markup("<dt>{}</dt><dd>{}</dd>").format(k, _cell(v, digits)[0]) for k, v in items.items()]
    return Markup('<dl class="facts">') + Markup("").join(parts) + Markup("</dl>")


def badge(text: str, tone: str = "") -> Markup:
    """A small coloured label; ``tone`` is ``"good"``, ``"bad"``, ``"warn"``, ``"info"`` or ``""`` (grey).

    Example:
        >>> str(badge("unsat", "good"))
        '<span class="badge good">unsat</span>'
    """
    if tone not in ("", "good", "bad", "warn", "info"):
        raise InvalidParameterError(f"tone must be 'good', 'bad', 'warn', 'info' or ''; got {tone!r}")
    return Markup('<span class="badge{}">{}</span>').format(f" {tone}" if tone else "", text)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, caption: str | None = None,
          max_rows: int | None = DEFAULT_MAX_ROWS, searchable: bool = True, page_size: int | None = PAGE_SIZE,
          main: bool = False, id: str | None = None, digits: int = 4, cap_hint: str | None = None) -> Markup:
    """An HTML table of ``rows`` (dicts), capped at ``max_rows`` rows with the cap said on the page.

    Cells are escaped unless they are :class:`Markup` (e.g. :func:`badge` or :func:`image` output); floats
    get ``digits`` decimals (NaN shows as ``-``), lists and dicts are joined. When the script runs, a filter
    box appears above the table and tables longer than ``page_size`` rows are paged; with JavaScript off
    every rendered row is shown.

    Args:
        rows: the rows; every row is a mapping (missing columns are empty).
        columns: column order (default: the keys of the rows, in first-seen order).
        caption: a line above the table.
        max_rows: rows rendered at most (``None``: all); longer tables say "Showing the first N of M rows".
        searchable: show the filter box (when the script runs).
        page_size: rows per page when the script runs (``None``: no paging).
        main: mark this table as the page's main table (``data-main``; one per page).
        id: the table's element id (default: ``main-table`` for the main table, else one made from the
            content).
        digits: decimals of floats.
        cap_hint: said after the cap message, e.g. where to find every row.

    Raises:
        InvalidParameterError: rows that are not mappings, or ``max_rows``/``page_size`` below 1.

    Example:
        >>> html = table([{"i": i} for i in range(3)], max_rows=2)
        >>> "Showing the first 2 of 3 rows" in html
        True
    """
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise InvalidParameterError(f"rows must be a sequence of mappings (one per row); got {type(rows).__name__}")
    rows = list(rows)
    bad = next((r for r in rows if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise InvalidParameterError(f"every row must be a mapping of column names to values; got {bad!r:.80}")
    for name, value in (("max_rows", max_rows), ("page_size", page_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidParameterError(f"{name} must be a positive int or None; got {value!r}")
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(str(k) for k in r))
        columns = list(seen)
    columns = [str(c) for c in columns]
    total = len(rows)
    shown_rows = rows if max_rows is None else rows[:max_rows]
    cells = [[_cell(r.get(c), digits) for c in columns] for r in shown_rows]
    if id is None:  # from the content, so that the same page renders to the same bytes
        digest = hashlib.sha1(repr((columns, caption, cells)).encode()).hexdigest()[:10]
        id = "main-table" if main else f"table-{digest}"
    paged = page_size if page_size is not None and len(shown_rows) > page_size else None
    tools = (searchable and len(shown_rows) > 1) or paged is not None
    return Markup(_ENV.get_template("table").render(
        id=id, main=main, caption=caption, columns=columns, rows=cells, shown=len(shown_rows), total=total,
        searchable=searchable, tools=tools, page_size=paged, cap_hint=cap_hint))


# ---------------------------------------------------------------------------------------------- images


def _png_img(data: bytes, alt: str, width: int | None = None, pixel: bool = False) -> Markup:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cls = ' class="pixel"' if pixel else ""
    size = f' width="{int(width)}"' if width else ""
    return Markup('<img src="{}" alt="{}"{}{}>').format(src, alt, Markup(size), Markup(cls))


def _wrap(img: Markup, caption: str | None) -> Markup:
    if caption:
        return Markup("<figure>{}<figcaption>{}</figcaption></figure>").format(img, caption)
    return Markup("<figure>{}</figure>").format(img)


def figure(fig: Any, alt: str, *, caption: str | None = None, dpi: int = 100, close: bool = True) -> Markup:
    """A matplotlib figure (or an axes, whose figure is taken) as an inline PNG ``<img>``.

    Args:
        fig: a ``matplotlib.figure.Figure`` (or ``Axes``).
        alt: the image's text alternative.
        caption: a caption under the image.
        dpi: resolution of the PNG.
        close: close the figure afterwards (frees pyplot's memory).

    Raises:
        InvalidParameterError: ``fig`` is not a matplotlib figure or axes.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1])
        >>> str(figure(fig, "a line")).startswith("<figure><img src=\\"data:image/png;base64,")
        True
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if isinstance(fig, Axes):
        fig = fig.figure
    if not isinstance(fig, Figure):
        raise InvalidParameterError(f"figure takes a matplotlib Figure or Axes; got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return _wrap(_png_img(buf.getvalue(), alt), caption)


def image_shape(n: int) -> tuple[int, ...] | None:
    """A guess of the image shape of a flat input of ``n`` values: MNIST (28, 28), CIFAR (3, 32, 32), any
    square (s, s) or three-channel square (3, s, s) from 8x8 up; ``None`` when it does not look like an image.

    Example:
        >>> image_shape(784), image_shape(3072), image_shape(5)
        ((28, 28), (3, 32, 32), None)
    """
    if n == 784:
        return (28, 28)
    if n == 3072:
        return (3, 32, 32)
    side = math.isqrt(n)
    if side * side == n and side >= 8:
        return (side, side)
    if n % 3 == 0:
        side = math.isqrt(n // 3)
        if side * side * 3 == n and side >= 8:
            return (3, side, side)
    return None


def image(pixels: Any, alt: str, *, caption: str | None = None, shape: Sequence[int] | None = None,
          scale: int | None = None, vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray") -> Markup:
    """A small image (an array of pixels) as an inline PNG, enlarged ``scale`` times without smoothing.

    Args:
        pixels: array-like of shape (H, W), (C, H, W) or (H, W, C) with C in {1, 3}, or flat with ``shape``.
        alt: the image's text alternative.
        caption: a caption under it.
        shape: reshape a flat array to this shape first (e.g. ``(28, 28)``, ``(3, 32, 32)``).
        scale: integer enlargement (default: about 140 pixels on the longer side, at most 16x).
        vmin, vmax: the value range mapped to black..white (``None``: the array's own min/max); values outside
            are clipped.
        cmap: matplotlib colour map of one-channel images (e.g. ``"gray"``, ``"RdBu_r"`` for differences).

    Raises:
        InvalidParameterError: not 2-D or 3-D with 1 or 3 channels, non-finite values, or a bad ``scale``.

    Example:
        >>> import numpy as np
        >>> "data:image/png;base64," in image(np.zeros((8, 8)), "black")
        True
    """
    from matplotlib import colormaps
    from matplotlib.image import imsave

    arr = np.asarray(pixels, dtype=np.float64)
    if shape is not None:
        if int(np.prod(shape)) != arr.size:
            raise InvalidParameterError(f"cannot show {arr.size} values as an image of shape {tuple(shape)}")
        arr = arr.reshape(tuple(shape))
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3) or arr.size == 0:
        raise InvalidParameterError(f"an image must be (H, W), (C, H, W) or (H, W, C) with 1 or 3 channels; "
                                    f"got shape {tuple(np.shape(pixels))}")
    if not np.isfinite(arr).all():
        raise InvalidParameterError("an image must have finite pixel values (got NaN or inf)")
    if scale is None:
        scale = max(1, min(16, round(140 / max(arr.shape[0], arr.shape[1]))))
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 64:
        raise InvalidParameterError(f"scale must be an int in 1..64; got {scale!r}")
    lo = float(arr.min()) if vmin is None else float(vmin)
    hi = float(arr.max()) if vmax is None else float(vmax)
    norm = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(arr)
    if norm.ndim == 2:
        rgba = colormaps[cmap](norm)
    else:
        rgba = norm
    rgba = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    imsave(buf, rgba, format="png")
    return _wrap(_png_img(buf.getvalue(), alt, pixel=True), caption)


def image_grid(groups: Sequence[tuple[str, Sequence[Any]]], *, note: str | None = None) -> Markup:
    """Groups of images side by side, e.g. an original input next to its counterexample.

    Args:
        groups: ``(title, images)`` pairs; each image is :func:`image` / :func:`figure` output (or any
            fragment, e.g. a paragraph saying why an image is missing).
        note: a line under the grid.

    Example:
        >>> import numpy as np
        >>> html = image_grid([("instance 1", [image(np.zeros((8, 8)), "original", caption="original"),
        ...                                    image(np.ones((8, 8)), "counterexample", caption="counterexample")])])
        >>> html.count("<img")
        2
    """
    if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Iterable):
        raise InvalidParameterError("groups must be a sequence of (title, images) pairs")
    parts = []
    for g in groups:
        if not (isinstance(g, tuple) and len(g) == 2):
            raise InvalidParameterError(f"each group must be a (title, images) pair; got {g!r:.80}")
        title, images = g
        if isinstance(images, (str, Markup)):
            images = [images]
        inner = Markup("").join(escape(i) for i in images)
        parts.append(Markup('<div class="group"><h4>{}</h4>{}</div>').format(title, inner))
    out = Markup('<div class="grid">') + Markup("").join(parts) + Markup("</div>")
    if note:
        out += paragraph(note, note=True)
    return out


def details(summary: str, parts: Sequence[Any] | Any, *, open: bool = False, id: str | None = None) -> Markup:
    """A block that folds open on click (``<details>``: works without JavaScript), e.g. one code's contexts.

    Args:
        summary: the always-visible line (escaped, or a fragment).
        parts: fragments inside (plain strings are escaped as paragraphs).
        open: start unfolded.
        id: the element id (a link to ``#id`` unfolds it in current browsers).

    Example:
        >>> str(details("more", "hidden text")).startswith("<details><summary>more</summary>")
        True
    """
    items = [parts] if isinstance(parts, str) or not isinstance(parts, Sequence) else list(parts)
    inner = Markup("").join(p if isinstance(p, Markup) else paragraph(str(p)) for p in items)
    attrs = Markup("")
    if id:
        attrs += Markup(' id="{}"').format(id)
    if open:
        attrs += Markup(" open")
    return Markup("<details{}><summary>{}</summary>{}</details>").format(attrs, summary, inner)


def marked_tokens(tokens: Sequence[str], marked: int | Sequence[int] = ()) -> Markup:
    """Tokens in a monospace line, each in its own box, the ``marked`` ones highlighted.

    Example:
        >>> str(marked_tokens(["a", "<b>", "c"], 1))
        '<span class="tokens"><span class="tok">a</span><mark class="tok">&lt;b&gt;</mark><span class="tok">c</span></span>'
    """
    mark = {marked} if isinstance(marked, int) else set(marked)
    parts = [Markup('<mark class="tok">{}</mark>' if i in mark else '<span class="tok">{}</span>').format(t)
             for i, t in enumerate(tokens)]
    return Markup('<span class="tokens">') + Markup("").join(parts) + Markup("</span>")
