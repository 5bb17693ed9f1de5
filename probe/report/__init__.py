"""Reports people look at: one self-contained static HTML file per result, opened from disk.

A report needs no server and no network: CSS and script are inline, figures are base64 PNGs, and the page's
Content-Security-Policy forbids any request. Long tables are capped (the page says "Showing the first 500 of
12,345 rows"); a filter box and paging appear when JavaScript runs, and with JavaScript off every rendered
row is still on the page.

Writing a report:

* ``naps.to_html("naps.html", stats=...)``, ``report.to_html(...)`` of :class:`~probe.complexity.ComplexityReport`
  and :class:`~probe.complexity.SweepResult`, :func:`moe_report_html` for a :class:`~probe.moe.MoEReport`;
* ``verify.report.batch_html(results_csv, path)`` and ``verify.report.result_html(result, path)``;
* ``codebook.report.search_html`` (a code browser) and ``steering_html`` (or the results' ``to_html``);
* from the command line: ``neurospec report RESULT_PATH --out report.html`` (the kind is read from the file).

``check_output(path)`` (from :mod:`probe.core.paths`) checks an output path before a report is rendered.

Building a page of one's own (the helpers return HTML fragments; plain strings are escaped)::

    >>> from probe.report import render_page, write_html, facts, table, paragraph
    >>> html = render_page("My result", [("Summary", facts({"accuracy": 0.98})),
    ...                                  ("Rows", [paragraph("one row per class"), table([{"class": 0}], main=True)])])
    >>> import tempfile, pathlib
    >>> write_html(pathlib.Path(tempfile.mkdtemp()) / "mine.html", html).suffix
    '.html'
"""

from __future__ import annotations

from probe.core.paths import check_output
from probe.report.detect import KINDS, detect_kind
from probe.report.kinds import (
    complexity_html,
    complexity_page,
    moe_report_html,
    moe_report_page,
    nap_html,
    nap_page,
    sweep_html,
    sweep_page,
)
from probe.report.page import (
    DEFAULT_MAX_ROWS,
    PAGE_SIZE,
    Markup,
    Section,
    badge,
    details,
    facts,
    figure,
    image,
    image_grid,
    image_shape,
    marked_tokens,
    paragraph,
    render_page,
    table,
    write_html,
)

__all__ = [
    "DEFAULT_MAX_ROWS",
    "KINDS",
    "PAGE_SIZE",
    "Markup",
    "Section",
    "badge",
    "check_output",
    "complexity_html",
    "complexity_page",
    "details",
    "detect_kind",
    "facts",
    "figure",
    "image",
    "image_grid",
    "image_shape",
    "marked_tokens",
    "moe_report_html",
    "moe_report_page",
    "nap_html",
    "nap_page",
    "paragraph",
    "render_page",
    "sweep_html",
    "sweep_page",
    "table",
    "write_html",
]
