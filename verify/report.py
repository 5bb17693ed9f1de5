"""HTML reports of verification: a ``verify-batch`` results CSV and a single :class:`VerificationResult`.

Built with :mod:`probe.report`: one self-contained file that opens from disk.

* :func:`batch_html` — status, time and method per instance (the main table), VNN-COMP style totals (per
  network and overall; solved = sat + unsat), a time plot (solved instances versus time, and seconds per
  instance), and for falsified instances with image inputs the counterexample next to the original input
  (the centre of the VNN-LIB input box). A results CSV does not store counterexamples: pass them as
  ``counterexamples`` (results, arrays, saved result folders or VNN-COMP result files) to see them.
* :func:`result_html` — one result: status, timings (the main table), solver statistics, and its
  counterexample as an image beside ``original`` with the outputs it produced.

Example:
    >>> from verify.report import batch_html, result_html
    >>> batch_html("results.csv", "results.html", root="../shared/data/vnncomp2021/mnistfc")  # doctest: +SKIP
    >>> result_html(verify.verify(net, spec), "result.html", original=x)                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe.core.errors import DataNotFoundError, InvalidParameterError, NeurospecError
from probe.report import (
    Markup,
    Section,
    badge,
    check_output,
    facts,
    figure,
    image,
    image_grid,
    image_shape,
    paragraph,
    render_page,
    table,
    write_html,
)
from verify.result import Counterexample, VerificationResult

__all__ = ["RESULT_ORDER", "batch_html", "batch_page", "result_html", "result_page"]

#: VNN-COMP result strings in the order reports list them.
RESULT_ORDER = ("unsat", "sat", "timeout", "unknown", "error")
_TONES = {"unsat": "good", "verified": "good", "sat": "warn", "falsified": "warn", "timeout": "",
          "unknown": "", "error": "bad"}
_COLORS = {"unsat": "#2e8b57", "sat": "#e08a00", "timeout": "#8c8c8c", "unknown": "#b0b0b0", "error": "#c0392b"}
_X_ITEM = re.compile(r"\(\s*X_(\d+)\s+([^\s()]+)\s*\)")

Cex = VerificationResult | Counterexample | np.ndarray | Sequence[float] | str | os.PathLike


def _status_badge(text: str) -> Markup:
    return badge(text, _TONES.get(text, ""))


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _number(text: Any) -> float | int:
    """A CSV number: an int when it is whole (a time limit of ``60``), else a float (NaN when not a number)."""
    value = _float(text)
    return int(value) if math.isfinite(value) and value.is_integer() else value


# ------------------------------------------------------------------------------------------ counterexamples


def _cex_from_text(path: Path) -> np.ndarray | None:
    text = path.read_text(errors="replace")
    items = {int(i): float(v) for i, v in _X_ITEM.findall(text)}
    if not items:
        return None
    x = np.zeros(max(items) + 1)
    for i, v in items.items():
        x[i] = v
    return x


def _cex_array(value: Cex | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(x, y)`` of a counterexample given in any of the accepted forms (``y`` may be unknown)."""
    if value is None:
        return None, None
    if isinstance(value, (str, os.PathLike)):
        p = Path(value)
        if p.is_dir():
            value = VerificationResult.load(p)
        elif p.is_file():
            return _cex_from_text(p), None
        else:
            raise DataNotFoundError(f"counterexample {str(p)!r} does not exist (pass a result folder written by "
                                    "VerificationResult.save or a VNN-COMP result file)")
    if isinstance(value, VerificationResult):
        value = value.counterexample
        if value is None:
            return None, None
    if isinstance(value, Counterexample):
        y = value.y_onnx if value.y_onnx is not None else value.y_source
        return np.asarray(value.x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    return np.asarray(value, dtype=np.float64).reshape(-1), None


def _lookup(counterexamples: Mapping[Any, Cex] | None, onnx: str, vnnlib: str) -> Cex | None:
    if not counterexamples:
        return None
    for key in ((onnx, vnnlib), vnnlib, Path(vnnlib).name):
        if key in counterexamples:
            return counterexamples[key]
    return None


def _box_centre(root: Path | None, vnnlib: str) -> tuple[np.ndarray | None, str]:
    from verify.vnnlib import read_vnnlib

    if root is None:
        return None, "no root folder given for the VNN-LIB files"
    path = root / vnnlib
    if not path.is_file():
        return None, f"{str(path)!r} not found (pass root=)"
    try:
        spec = read_vnnlib(path)
    except NeurospecError as err:
        return None, f"cannot read {str(path)!r}: {err}"
    return (np.asarray(spec.lower, dtype=np.float64) + np.asarray(spec.upper, dtype=np.float64)) / 2, ""


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)


def _images(x: np.ndarray, original: np.ndarray | None, shape: tuple[int, ...] | None,
            y: np.ndarray | None = None, original_caption: str = "original (input box centre)") -> list[Markup]:
    """The original (if any), the counterexample and their difference as image fragments."""
    if shape is None:
        return [paragraph(f"the input has {x.size} values and does not look like an image", note=True)]
    pred = f" (predicted class {int(np.argmax(y))})" if y is not None and y.size else ""
    if original is None or original.size != x.size:
        lo, hi = _range(x)
        return [image(x, "counterexample", caption=f"counterexample{pred}", shape=shape, vmin=lo, vmax=hi)]
    lo, hi = _range(x, original)
    diff = x - original
    m = float(np.abs(diff).max()) or 1.0
    diff_img = diff.reshape(shape)
    if len(shape) == 3:  # colour: show the per-pixel difference summed over channels
        diff_img = diff_img.sum(axis=0)
        m = float(np.abs(diff_img).max()) or 1.0
    return [image(original, "original input", caption=original_caption, shape=shape, vmin=lo, vmax=hi),
            image(x, "counterexample", caption=f"counterexample{pred}", shape=shape, vmin=lo, vmax=hi),
            image(diff_img, "difference", caption=f"difference (max |Δ| {m:.3g}; red +, blue −)", vmin=-m, vmax=m,
                  cmap="RdBu_r")]


# ------------------------------------------------------------------------------------------ batch


def _time_plot(rows: list[dict[str, str]]) -> Any:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    solved = sorted(_float(r["seconds"]) for r in rows if r["result"] in ("sat", "unsat"))
    solved = [s for s in solved if not math.isnan(s)]
    if solved:
        ax1.step([0.0, *solved], range(len(solved) + 1), where="post", color="#2456a6")
    ax1.set_xlabel("time limit (s)")
    ax1.set_ylabel("instances solved (sat + unsat)")
    ax1.set_title(f"solved within a time limit ({len(solved)} of {len(rows)})", fontsize=10)
    ax1.grid(alpha=0.3)
    secs = [_float(r["seconds"]) for r in rows]
    colors = [_COLORS.get(r["result"], "#555555") for r in rows]
    ax2.bar(range(1, len(rows) + 1), [0 if math.isnan(s) else s for s in secs], color=colors)
    limits = [_float(r.get("timeout")) for r in rows]
    if any(not math.isnan(t) for t in limits):
        ax2.plot(range(1, len(rows) + 1), limits, "k_", markersize=8, label="time limit")
    for res in RESULT_ORDER:
        if any(r["result"] == res for r in rows):
            ax2.bar([0], [0], color=_COLORS[res], label=res)
    ax2.set_xlabel("instance (row of the CSV)")
    ax2.set_ylabel("seconds")
    ax2.set_title("seconds per instance", fontsize=10)
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _counts(rows: list[dict[str, str]]) -> dict[str, Any]:
    c = Counter(r["result"] for r in rows)
    secs = [_float(r["seconds"]) for r in rows]
    solved_secs = [s for r, s in zip(rows, secs, strict=True) if r["result"] in ("sat", "unsat") and not math.isnan(s)]
    out: dict[str, Any] = {"instances": len(rows)}
    out.update({k: c.get(k, 0) for k in RESULT_ORDER})
    out.update({k: v for k, v in c.items() if k not in RESULT_ORDER})
    out["solved"] = c.get("sat", 0) + c.get("unsat", 0)
    out["seconds"] = float(sum(s for s in secs if not math.isnan(s)))
    out["mean seconds (solved)"] = float(np.mean(solved_secs)) if solved_secs else float("nan")
    return out


def batch_page(csv_path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
               counterexamples: Mapping[Any, Cex] | None = None, title: str | None = None,
               max_rows: int = 500, max_images: int = 24, timestamp: bool = True) -> str:
    """The page of a ``verify-batch`` results CSV (see the module docstring).

    Args:
        csv_path: the results CSV (columns onnx, vnnlib, timeout, result, seconds, method, solver, message).
        root: the folder the CSV's paths are relative to (the instances CSV's folder), used to read each
            falsified instance's VNN-LIB input box for the original image; default: the results CSV's folder.
        counterexamples: per instance, keyed by ``(onnx, vnnlib)`` as written in the CSV or by the vnnlib path
            or file name: a :class:`VerificationResult`, a :class:`Counterexample`, the input as an array, a
            folder written by ``VerificationResult.save`` or a VNN-COMP result file (``sat`` + ``(X_i v)``).
        title: the page title.
        max_rows: instances listed at most (the page says how many there are).
        max_images: falsified instances shown as images at most.
        timestamp: put the time of rendering in the footer.

    Raises:
        DataNotFoundError: the CSV does not exist.
        CorruptDataError: it is not a verify-batch results CSV.
    """
    from verify.batch import results_file

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataNotFoundError(f"results CSV {str(csv_path)!r} does not exist" +
                                (" (it is a folder)" if csv_path.is_dir() else ""))
    rows = results_file(csv_path).rows()
    root_path = Path(root) if root is not None else csv_path.parent
    main_rows = []
    for i, r in enumerate(rows, 1):
        main_rows.append({"#": i, "network": r["onnx"], "property": r["vnnlib"], "result": _status_badge(r["result"]),
                          "seconds": _float(r["seconds"]), "time limit": _number(r.get("timeout")),
                          "method": r.get("method", ""), "solver": r.get("solver", ""),
                          "message": r.get("message", "")})
    totals = _counts(rows)
    per_net: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        per_net.setdefault(r["onnx"], []).append(r)
    net_rows = [{"network": net, **_counts(rs)} for net, rs in per_net.items()]
    if len(per_net) > 1:
        net_rows.append({"network": "all", **totals})
    summary = {"results CSV": str(csv_path), **{k: v for k, v in totals.items()}}
    sections = [
        Section("Totals", [facts(summary, digits=2),
                           table(net_rows, caption="VNN-COMP style totals per network (solved = sat + unsat)",
                                 searchable=False, digits=2)]),
        Section("Instances", [table(main_rows, caption="one row per instance, in the CSV's order", main=True,
                                    max_rows=max_rows, cap_hint="every row is in the CSV", digits=3)]),
    ]
    if rows:
        sections.append(Section("Time", [figure(_time_plot(rows), "solved instances versus time limit, and "
                                                "seconds per instance coloured by result")]))
    falsified = [(i, r) for i, r in enumerate(rows, 1) if r["result"] == "sat"]
    if falsified:
        groups = []
        missing = 0
        for i, r in falsified[:max_images]:
            x, y = _cex_array(_lookup(counterexamples, r["onnx"], r["vnnlib"]))
            original, why = _box_centre(root_path, r["vnnlib"])
            if x is None:
                missing += 1
                if original is not None and image_shape(original.size):
                    shape = image_shape(original.size)
                    lo, hi = _range(original)
                    imgs = [image(original, "original input", caption="original (input box centre)", shape=shape,
                                  vmin=lo, vmax=hi),
                            paragraph("counterexample not available (not stored in the results CSV)", note=True)]
                else:
                    imgs = [paragraph("counterexample not available (not stored in the results CSV)"
                                      + (f"; original: {why}" if why else ""), note=True)]
            else:
                imgs = _images(x, original, image_shape(x.size), y)
                if original is None and why:
                    imgs.append(paragraph(f"original: {why}", note=True))
            groups.append((f"#{i} {Path(r['onnx']).name} · {Path(r['vnnlib']).name}", imgs))
        note = None
        if len(falsified) > max_images:
            note = f"Showing the first {max_images} of {len(falsified)} falsified instances."
        parts = [image_grid(groups, note=note)]
        if missing:
            parts.insert(0, paragraph(f"{missing} counterexample(s) are not available: a results CSV does not "
                                      "store them. Pass counterexamples= to verify.report.batch_html (results, "
                                      "arrays, result folders or VNN-COMP result files) to show them.", note=True))
        sections.append(Section("Counterexamples", parts))
    sub = (f"{totals['instances']} instances: " + ", ".join(f"{totals[k]} {k}" for k in RESULT_ORDER if totals[k])
           + f"; {totals['seconds']:.1f} s in all")
    return render_page(title or f"Verification: {csv_path.name}", sections, subtitle=sub, timestamp=timestamp)


def batch_html(csv_path: str | os.PathLike[str], path: str | os.PathLike[str], *,
               root: str | os.PathLike[str] | None = None, counterexamples: Mapping[Any, Cex] | None = None,
               title: str | None = None) -> Path:
    """Write the report of a ``verify-batch`` results CSV (see :func:`batch_page`); returns the path.

    Example:
        >>> batch_html("results.csv", "results.html", root="../shared/data/vnncomp2021/mnistfc")  # doctest: +SKIP
    """
    check_output(path)  # before the CSV is read: a bad path costs nothing
    return write_html(path, batch_page(csv_path, root=root, counterexamples=counterexamples, title=title))


# ------------------------------------------------------------------------------------------ one result


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return f"{len(value)} values"
    return value


def result_page(result: VerificationResult, *, original: np.ndarray | Sequence[float] | None = None,
                input_shape: Sequence[int] | None = None, title: str | None = None, timestamp: bool = True) -> str:
    """The page of one :class:`VerificationResult`: status, timings per phase (the main table), solver
    statistics, and a counterexample as an image next to ``original`` (with the outputs it produced).

    Args:
        result: the result.
        original: the input the property was built around (e.g. the test image), shown beside the
            counterexample.
        input_shape: the image shape of the input (default: guessed from its size, e.g. (28, 28) for 784).
        title: the page title.
        timestamp: put the time of rendering in the footer.

    Raises:
        InvalidParameterError: ``result`` is not a :class:`VerificationResult`.
    """
    if not isinstance(result, VerificationResult):
        raise InvalidParameterError(f"expected a verify.result.VerificationResult; got {type(result).__name__}")
    total = result.timings.get("total", 0.0) + result.timings.get("load", 0.0)
    summary: dict[str, Any] = {"status": _status_badge(result.status), "VNN-COMP": result.vnncomp,
                               "decided by": result.method or "-", "solver": result.solver or "-",
                               "seconds": total}
    if result.message:
        summary["message"] = result.message
    timing_rows = [{"phase": k, "seconds": float(v)} for k, v in result.timings.items()]
    stats_rows = [{"statistic": k, "value": _plain(v)} for k, v in result.stats.items()]
    sections = [Section("Result", [facts(summary)]),
                Section("Timings", [table(timing_rows, caption="seconds per phase", main=True, searchable=False)
                                    if timing_rows else paragraph("No timings recorded.")])]
    if stats_rows:
        sections.append(Section("Statistics", [table(stats_rows, caption="solver and encoding statistics")]))
    cex = result.counterexample
    if cex is not None:
        x = np.asarray(cex.x, dtype=np.float64).reshape(-1)
        orig = None if original is None else np.asarray(original, dtype=np.float64).reshape(-1)
        if orig is not None and orig.size != x.size:
            raise InvalidParameterError(f"original has {orig.size} values but the counterexample has {x.size}")
        shape = tuple(input_shape) if input_shape is not None else image_shape(x.size)
        y = np.asarray(cex.y_onnx if cex.y_onnx is not None else cex.y_source, dtype=np.float64).reshape(-1)
        outs = []
        ys = {"y (float64 network)": cex.y, "y (source model)": cex.y_source, "y (ONNX runtime)": cex.y_onnx}
        top = int(np.argmax(y)) if y.size else -1
        for j in range(y.size):
            row: dict[str, Any] = {"output": Markup("{} {}").format(j, badge("max", "info")) if j == top else j}
            row.update({k: float(np.asarray(v).reshape(-1)[j]) for k, v in ys.items() if v is not None})
            outs.append(row)
        parts = [image_grid([("counterexample", _images(x, orig, shape, y, "original"))]),
                 table(outs, caption="outputs at the counterexample, re-checked on every runtime", searchable=False)]
        if shape is None:
            vals = [{"input": i, "counterexample": float(v), **({"original": float(orig[i])} if orig is not None
                                                                else {})} for i, v in enumerate(x)]
            parts.append(table(vals, caption="input values", max_rows=200))
        sections.append(Section("Counterexample", parts))
    return render_page(title or f"Verification result: {result.vnncomp}", sections,
                       subtitle=f"{result.status} by {result.method or '-'} in {total:.2f} s", timestamp=timestamp)


def result_html(result: VerificationResult, path: str | os.PathLike[str], *,
                original: np.ndarray | Sequence[float] | None = None, input_shape: Sequence[int] | None = None,
                title: str | None = None) -> Path:
    """Write the report of one :class:`VerificationResult` (see :func:`result_page`); returns the path.

    Example:
        >>> result_html(VerificationResult("verified", method="bounds"), "result.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, result_page(result, original=original, input_shape=input_shape, title=title))
