"""HTML reports of codebook results: a code browser for a label search, and FSM state steering.

Built with :mod:`probe.report`: one self-contained file that opens from disk.

* :func:`search_html` — a :class:`~codebook.search.LabelSearchResult` as a code browser: per class its best
  code with precision, recall, usage and the best-neuron baseline (the main table), purity per site, and
  each code's top-activating contexts with the token marked (when the search kept contexts:
  ``search_by_labels(..., contexts=N)``).
* :func:`steering_html` — a :class:`~codebook.steer.SteeringResult`: the headline rates, steered versus
  baseline generations of the example pairs (the main table), and per-pair success.

Example:
    >>> from codebook.report import search_html, steering_html
    >>> search_html(search_by_labels(model, tokens, labels, contexts=5), "codes.html")  # doctest: +SKIP
    >>> steering_html(fsm_state_steering(model, fsm), "steering.html")                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codebook.search import LabelSearchResult
from codebook.steer import SteeringResult
from probe.core.errors import InvalidParameterError
from probe.report import (
    Markup,
    Section,
    badge,
    check_output,
    details,
    facts,
    figure,
    marked_tokens,
    paragraph,
    render_page,
    table,
    write_html,
)

__all__ = ["search_html", "search_page", "steering_html", "steering_page"]


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _code_name(site: str, group: int, code: int, grouped: bool) -> str:
    return f"{site} · head {group} · code {code}" if grouped else f"{site} · code {code}"


def search_page(result: LabelSearchResult, *, class_names: Sequence[str] | None = None, title: str | None = None,
                max_codes: int = 200, timestamp: bool = True) -> str:
    """The code browser of a :class:`~codebook.search.LabelSearchResult` (see the module docstring).

    Args:
        result: the search result.
        class_names: names of the class ids (default: the ids).
        title: the page title.
        max_codes: codes whose contexts are listed at most (the table lists every class).
        timestamp: put the time of rendering in the footer.

    Raises:
        InvalidParameterError: ``result`` is not a :class:`~codebook.search.LabelSearchResult`.
    """
    if not isinstance(result, LabelSearchResult):
        raise InvalidParameterError(f"expected a codebook.search.LabelSearchResult; got {type(result).__name__}")
    has_contexts = any(m.contexts for m in result.matches)
    grouped = {site: len(groups) > 1 for site, groups in result.purity.items()}
    rows = []
    for m in result.matches:
        code = _code_name(m.site, m.group, m.code, grouped.get(m.site, m.group > 0))
        versus = None
        if not math.isnan(m.neuron_precision):
            versus = (badge("better", "good") if m.precision > m.neuron_precision else
                      badge("equal", "info") if m.precision == m.neuron_precision else badge("worse", "bad"))
        rows.append({"class": _name(m.label, class_names),
                     "code": Markup('<a href="#code-{}">{}</a>').format(m.label, code) if m.contexts else code,
                     "precision": m.precision, "recall": m.recall, "F1": m.f1,
                     "usage": m.usage if m.usage >= 0 else None, "class positions": m.n_positions,
                     "best neuron precision": m.neuron_precision,
                     "best neuron": f"{m.neuron_site} #{m.neuron}" if m.neuron >= 0 else "",
                     "code versus neuron": versus})
    summary = {k.replace("_", " "): v for k, v in result.summary().items()}
    summary["positions searched"] = result.n_positions
    purity_rows = []
    for site, groups in result.purity.items():
        vals = [v for g in groups for v in g if v is not None and not (isinstance(v, float) and math.isnan(v))]
        n_codes = sum(len(g) for g in groups)
        purity_rows.append({"site": site, "heads": len(groups), "codes": n_codes, "codes that fired": len(vals),
                            "mean purity": sum(vals) / len(vals) if vals else float("nan"),
                            "purity ≥ 0.9": sum(v >= 0.9 for v in vals)})
    sections = [
        Section("Summary", [facts(summary)]),
        Section("Codes", [table(rows, caption="the best code (by F1) of each class, its precision, recall and "
                                "usage (positions where it fires), against the best single neuron at the same "
                                "recall", main=True)]),
        Section("Code versus neuron", [figure(result.plot(), "best-code precision against best-neuron precision "
                                              "per class")]),
        Section("Purity per site", [table(purity_rows, caption="purity: a code's best precision over classes "
                                          "(codes that fired often enough)", searchable=False)]),
    ]
    if has_contexts:
        blocks = []
        shown = [m for m in result.matches if m.contexts][:max_codes]
        for i, m in enumerate(shown):
            lines = []
            for ctx in m.contexts:
                label = ctx.get("label", -1)
                tag = badge(_name(label, class_names), "good" if label == m.label else "") if label >= 0 else badge("-")
                lines.append(Markup("<p>{} {} <span class=\"muted\">score {:.3f} · sequence {} position {}</span>"
                                    "</p>").format(marked_tokens(ctx["tokens"], int(ctx["index"])), tag,
                                                   float(ctx.get("score", float("nan"))), ctx.get("sequence", "?"),
                                                   ctx.get("position", "?")))
            name = _code_name(m.site, m.group, m.code, grouped.get(m.site, m.group > 0))
            head = (f"class {_name(m.label, class_names)} — {name}: precision {m.precision:.3f}, recall "
                    f"{m.recall:.3f}, usage {m.usage}")
            blocks.append(details(head, lines, open=i < 5, id=f"code-{m.label}"))
        n_with = sum(1 for m in result.matches if m.contexts)
        if n_with > max_codes:
            blocks.append(paragraph(f"Showing the contexts of the first {max_codes} of {n_with} codes.", note=True))
        sections.append(Section("Top contexts", [paragraph("Where each code fires with the highest similarity to "
                                                           "its input; the marked token is the position, the badge "
                                                           "its label (green: the code's class).", note=True),
                                                 *blocks]))
    else:
        sections.append(Section("Top contexts", [paragraph("This search kept no contexts; run "
                                                           "search_by_labels(..., contexts=5) to browse them.",
                                                           note=True)]))
    return render_page(title or "Codebook features: code browser", sections,
                       subtitle=f"{len(result.matches)} classes, {result.n_positions:,} positions", timestamp=timestamp)


def search_html(result: LabelSearchResult, path: str | os.PathLike[str], *,
                class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Write the code browser of a :class:`~codebook.search.LabelSearchResult` (see :func:`search_page`).

    Example:
        >>> search_html(res, "codes.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, search_page(result, class_names=class_names, title=title))


def _tokens(tokens: Sequence[int]) -> str:
    return " ".join("BOS" if t == 10 else str(t) for t in tokens)


def _state(s: int, ok: bool) -> Markup:
    return Markup("{} {}").format(s if s >= 0 else "invalid", badge("successor of B", "good") if ok
                                  else badge("not B's", "bad"))


def steering_page(result: SteeringResult, *, title: str | None = None, max_rows: int = 500,
                  timestamp: bool = True) -> str:
    """The page of a :class:`~codebook.steer.SteeringResult` (see the module docstring).

    Raises:
        InvalidParameterError: ``result`` is not a :class:`~codebook.steer.SteeringResult`.
    """
    if not isinstance(result, SteeringResult):
        raise InvalidParameterError(f"expected a codebook.steer.SteeringResult; got {type(result).__name__}")
    summary: dict[str, Any] = {
        "steering success (sampled)": result.success_rate, "steering success (exact)": result.expected_success,
        "success without the patch": result.baseline_success, "normalised JS": result.normalized_js,
        "JS steered (nats)": result.js_steered, "pairs": result.n_pairs, "samples per pair": result.n_samples,
        "patched positions": result.positions, "codebooks patched": ", ".join(result.sites) or "-"}
    per_pair = [{"pair": i, "success": s} for i, s in enumerate(result.per_pair_success)]
    sections = [Section("Summary", [facts(summary)])]
    if result.examples:
        ex_rows = []
        for e in result.examples:
            prompt = e.get("prompt_states", [])
            ex_rows.append({"pair": e.get("pair"), "A": e.get("state_a"), "B": e.get("state_b"),
                            "prompt (last states)": " → ".join(str(s) for s in prompt[-4:]),
                            "baseline generation": _tokens(e.get("baseline_tokens", [])),
                            "baseline next state": _state(int(e.get("baseline_state", -1)),
                                                          bool(e.get("baseline_success"))),
                            "steered generation": _tokens(e.get("steered_tokens", [])),
                            "steered next state": _state(int(e.get("steered_state", -1)),
                                                         bool(e.get("steered_success")))})
        sections.append(Section("Steered versus baseline", [
            paragraph("At the last token of a prompt ending in state A the codes a state-B prompt produces there "
                      "are patched in; the model then generates the next state (two digits). Success: the "
                      "generated state is a successor of B (and not of A).", note=True),
            table(ex_rows, caption="generations of the example pairs, without the patch (baseline) and with it",
                  main=True)]))
        sections.append(Section("Per pair", [table(per_pair, caption="sampled steering success of each pair",
                                                   max_rows=max_rows)]))
    else:
        sections.append(Section("Per pair", [paragraph("This result holds no example generations (made before "
                                                       "they were recorded).", note=True),
                                             table(per_pair, caption="sampled steering success of each pair",
                                                   main=True, max_rows=max_rows)]))
    sections.append(Section("Distribution", [figure(result.plot(), "histogram of per-pair steering success")]))
    return render_page(title or "Codebook features: FSM state steering", sections,
                       subtitle=f"success {result.success_rate:.1%} over {result.n_pairs} pairs "
                                f"(without the patch {result.baseline_success:.1%})", timestamp=timestamp)


def steering_html(result: SteeringResult, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the report of a :class:`~codebook.steer.SteeringResult` (see :func:`steering_page`).

    Example:
        >>> steering_html(res, "steering.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, steering_page(result, title=title))
