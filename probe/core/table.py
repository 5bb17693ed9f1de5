"""Tables that print as tables: a :class:`Table` is a list of row dicts (so code can index it as before)
whose ``str()`` is an aligned text table and whose notebook view is an HTML table.

Example:
    >>> t = Table([{"class": 0, "coverage": 0.91234}, {"class": 1, "coverage": 0.8}], title="NAP stats")
    >>> print(t)
    NAP stats
    class  coverage
    -----  --------
        0    0.9123
        1    0.8000
    >>> t[0]["coverage"]
    0.91234
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Table", "format_cell"]


def format_cell(value: Any, digits: int = 4) -> str:
    """One cell as text: floats with ``digits`` decimals (``nan`` as ``-``), everything else as ``str``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class Table(list):
    """Rows (dicts with the same keys) that print as an aligned table.

    Args:
        rows: the rows.
        columns: column order (default: the first row's keys).
        title: a line printed above the table.
        digits: decimals shown for floats.
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), columns: Sequence[str] | None = None,
                 title: str | None = None, digits: int = 4) -> None:
        super().__init__(rows)
        self.columns = list(columns) if columns is not None else (list(self[0]) if self else [])
        self.title = title
        self.digits = digits

    def _cells(self) -> list[list[str]]:
        return [[format_cell(row.get(c, ""), self.digits) for c in self.columns] for row in self]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        numeric = [all(_is_number(row.get(c)) for row in self) and bool(self) for c in self.columns]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

        out = [self.title] if self.title else []
        out += [line(self.columns), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in self._cells())
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
