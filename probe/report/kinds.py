"""Reports of ``probe``'s results: NAPs, feature complexity (one beta and a sweep), emergent experts.

Each kind has a ``*_page(result, ...) -> str`` that builds the page and a ``*_html(result, path, ...) -> Path``
that writes it (:func:`probe.report.write_html`). The result types' ``to_html(path)`` methods call these.

Example:
    >>> from probe.report import nap_html
    >>> nap_html(naps, "naps.html", stats=naps.sweep(model, test_loader, [1.0, 0.99, 0.95]))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.core.errors import InvalidParameterError
from probe.core.paths import check_output
from probe.report.page import Section, facts, figure, paragraph, render_page, table, write_html

if TYPE_CHECKING:  # pragma: no cover
    from probe.complexity import ComplexityReport, SweepResult
    from probe.moe import MoEReport
    from probe.nap import NAPSet, NAPStats

__all__ = ["complexity_html", "complexity_page", "moe_report_html", "moe_report_page", "nap_html", "nap_page",
           "sweep_html", "sweep_page"]


def _check(obj: Any, cls: type, public_name: str) -> None:
    if not isinstance(obj, cls):
        raise InvalidParameterError(f"expected a {public_name}; got {type(obj).__name__}")


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------------------------ NAPs


def _as_stats_list(stats: NAPStats | Sequence[NAPStats] | None) -> list[NAPStats]:
    if stats is None:
        return []
    items = [stats] if not isinstance(stats, Sequence) else list(stats)
    from probe.nap import NAPStats

    for s in items:
        _check(s, NAPStats, "probe.nap.NAPStats")
    return items


def nap_page(naps: NAPSet, stats: NAPStats | Sequence[NAPStats] | None = None, *, title: str | None = None,
             timestamp: bool = True) -> str:
    """The page of a :class:`~probe.nap.NAPSet`: NAP sizes per class (the main table), the heatmap, and with
    ``stats`` (from ``naps.evaluate`` or ``naps.sweep``) coverage and precision per class and per delta.

    Example:
        >>> html = nap_page(naps, naps.sweep(model, loader, [1.0, 0.99]))  # doctest: +SKIP
    """
    from probe.nap import NAPSet

    _check(naps, NAPSet, "probe.nap.NAPSet")
    stats_list = _as_stats_list(stats)
    at_delta = next((s for s in stats_list if math.isclose(s.delta, naps.delta)), None)
    sizes = naps.sizes()
    names = naps.class_names or [str(c) for c in range(naps.num_classes)]
    n_neurons = naps.num_neurons()
    rows = []
    for c in range(naps.num_classes):
        row: dict[str, Any] = {"class": names[c] if c < len(names) else str(c), "samples": int(naps.n_samples[c]),
                               "active": sizes["active"][c], "inactive": sizes["inactive"][c],
                               "total": sizes["total"][c], "share of neurons": sizes["total"][c] / max(n_neurons, 1)}
        if at_delta is not None:
            row.update({"test inputs": at_delta.n_class[c], "following": at_delta.n_follow[c],
                        "coverage": at_delta.coverage[c], "precision": at_delta.precision[c]})
        rows.append(row)
    disjoint = naps.disjoint_pairs()
    c = naps.num_classes
    n_pairs = c * (c - 1) // 2
    n_disjoint = int(disjoint.triu(1).sum())
    summary = {
        "delta": naps.delta, "classes": c, "layers": ", ".join(f"{layer} {tuple(naps.shapes[layer])}"
                                                               for layer in naps.layers),
        "neurons": n_neurons, "samples counted": int(naps.n_samples.sum()),
        "counted": "correctly predicted inputs only" if naps.only_correct else "every input",
        "mean NAP size": sum(sizes["total"]) / max(c, 1),
        "provably disjoint class pairs": f"{n_disjoint} of {n_pairs}",
    }
    if naps.source:
        summary["mined on"] = ", ".join(f"{k} {v}" for k, v in naps.source.items())
    if naps.empty_classes:
        summary["classes without samples (empty NAP)"] = naps.empty_classes
    if at_delta is not None:
        summary["mean coverage"] = at_delta.mean_coverage()
        summary["mean precision"] = at_delta.mean_precision()
    sections = [Section("Summary", [facts(summary)]),
                Section("NAPs per class", [table(rows, caption=f"NAP of each class at delta={naps.delta}: "
                                                 "active / inactive neurons and their total", main=True)]),
                Section("Heatmap", [figure(naps.plot("heatmap"), "NAP heatmap: one row per class, one column per "
                                           "neuron; red active, blue inactive, white free")])]
    if stats_list:
        per_delta = [{"delta": s.delta, "mean coverage": s.mean_coverage(), "mean precision": s.mean_precision(),
                      "mean NAP size": sum(naps.with_delta(s.delta).sizes()["total"]) / max(c, 1),
                      "inputs": sum(s.n_class)} for s in stats_list]
        parts = [table(per_delta, caption="coverage and precision (means over classes) per delta")]
        if len(stats_list) > 1:
            parts.append(figure(naps.plot("delta", stats=stats_list), "coverage, precision and NAP size "
                                "versus delta"))
        sections.append(Section("Coverage and precision per delta", parts))
    subtitle = f"{c} classes, {len(naps.layers)} ReLU layer(s), {n_neurons:,} neurons, delta={naps.delta}"
    return render_page(title or "Neural activation patterns", sections, subtitle=subtitle, timestamp=timestamp)


def nap_html(naps: NAPSet, path: str | os.PathLike[str], stats: NAPStats | Sequence[NAPStats] | None = None,
             *, title: str | None = None) -> Path:
    """Write the report of a :class:`~probe.nap.NAPSet` (see :func:`nap_page`); returns the path.

    Example:
        >>> nap_html(naps, "naps.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, nap_page(naps, stats, title=title))


# ------------------------------------------------------------------------------------------ complexity


def complexity_page(report: ComplexityReport, *, title: str | None = None, max_rows: int = 500,
                    timestamp: bool = True) -> str:
    """The page of a :class:`~probe.complexity.ComplexityReport`: width and feature complexity per layer (the
    main table), the bar chart, parameters and FLOPs before and after, and the merged clusters.

    Example:
        >>> html = complexity_page(complexity.measure(model, beta=0.1))  # doctest: +SKIP
    """
    from probe.complexity import ComplexityReport

    _check(report, ComplexityReport, "probe.complexity.ComplexityReport")
    rows = [{"layer": g.name, "width": g.width, "complexity": g.complexity,
             "kept": g.complexity / max(g.width, 1), "merged clusters": len(g.merged_groups),
             "largest cluster": max((len(cl) for cl in g.clusters), default=0),
             "producers": g.producers, "consumers": g.consumers} for g in report.groups]
    clusters = [{"layer": g.name, "feature": i, "size": len(cl), "original features": cl}
                for g in report.groups for i, cl in enumerate(g.clusters) if len(cl) > 1]
    summary = {
        "beta": report.beta, "rule": report.rule, "max_ratio": report.max_ratio,
        "parameters": f"{report.params_before:,} → {report.params_after:,} ({_pct(report.params_removed)} removed)",
        "FLOPs": f"{report.flops_before:,} → {report.flops_after:,} ({_pct(report.flops_removed)} removed)",
        "merge rounds": report.rounds, "seconds": report.seconds, "input shape": tuple(report.input_shape),
    }
    if report.frozen:
        summary["never merged (model outputs)"] = ", ".join(f"{k} ({v})" for k, v in report.frozen.items())
    sections = [
        Section("Summary", [facts(summary)]),
        Section("Feature complexity per layer", [table(rows, caption="features before (width) and after merging "
                                                        "(feature complexity)", main=True)]),
        Section("Chart", [figure(report.plot(), "width and feature complexity per layer")]),
        Section("Merged clusters", [table(clusters, caption="features merged into one (clusters of two or more)",
                                          max_rows=max_rows) if clusters
                                    else paragraph("No features were merged at this beta.")]),
    ]
    subtitle = (f"beta={report.beta:g}, rule {report.rule}: {_pct(report.params_removed)} of the parameters "
                "removed")
    return render_page(title or "Feature complexity", sections, subtitle=subtitle, timestamp=timestamp)


def complexity_html(report: ComplexityReport, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the report of a :class:`~probe.complexity.ComplexityReport` (see :func:`complexity_page`).

    Example:
        >>> complexity_html(report, "complexity.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, complexity_page(report, title=title))


def sweep_page(result: SweepResult, *, title: str | None = None, timestamp: bool = True) -> str:
    """The page of a :class:`~probe.complexity.SweepResult`: accuracy, parameters and FLOPs kept and the
    feature complexity of every layer per beta (the main table), and the accuracy-versus-size plot.

    Example:
        >>> html = sweep_page(complexity.sweep(model, [0.05, 0.1], loader))  # doctest: +SKIP
    """
    from probe.complexity import SweepResult

    _check(result, SweepResult, "probe.complexity.SweepResult")
    layers = list(result.widths)
    rows = []
    for p in result.points:
        row: dict[str, Any] = {"beta": p.beta, "accuracy": p.accuracy,
                               "drop (points)": 100 * (result.baseline_accuracy - p.accuracy),
                               "params kept": p.params / max(result.params_before, 1),
                               "FLOPs kept": p.flops / max(result.flops_before, 1)}
        row.update({f"{layer} ({result.widths[layer]})": p.complexity.get(layer) for layer in layers})
        row["seconds"] = p.seconds
        rows.append(row)
    best = result.best_within(0.01)
    summary = {"rule": result.rule, "max_ratio": result.max_ratio, "original accuracy": result.baseline_accuracy,
               "evaluation samples": result.n_samples, "original parameters": result.params_before,
               "original FLOPs": result.flops_before,
               "widths": ", ".join(f"{k} {v}" for k, v in result.widths.items()),
               "smallest within 1 point": (f"beta={best.beta:g}: accuracy {best.accuracy:.4f}, "
                                           f"{_pct(best.params / max(result.params_before, 1))} of the parameters")
               if best else "none"}
    sections = [Section("Summary", [facts(summary)]),
                Section("Per beta", [table(rows, caption="accuracy, share kept, and feature complexity per layer "
                                           "(layer (width)) at each beta", main=True)]),
                Section("Accuracy versus size", [figure(result.plot(), "accuracy versus share of parameters kept")])]
    return render_page(title or "Feature complexity sweep", sections,
                       subtitle=f"{len(result.points)} betas, rule {result.rule}", timestamp=timestamp)


def sweep_html(result: SweepResult, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the report of a :class:`~probe.complexity.SweepResult` (see :func:`sweep_page`).

    Example:
        >>> sweep_html(result, "sweep.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, sweep_page(result, title=title))


# ------------------------------------------------------------------------------------------------ MoE


def moe_report_page(report: MoEReport, *, title: str | None = None, max_layers: int = 12,
                    timestamp: bool = True) -> str:
    """The page of a :class:`~probe.moe.MoEReport`: one row per (layer, method) with coverage against random
    partitions, modularity and stability (the main table), the coverage curves, each layer's expert
    co-activation (the first ``max_layers``) and the task metric versus the fraction of experts active.

    Example:
        >>> html = moe_report_page(moe.detect(model, loader, n_experts=16))  # doctest: +SKIP
    """
    from probe.moe import MoEReport

    _check(report, MoEReport, "probe.moe.MoEReport")
    rows = []
    for r in report.table():
        rows.append({"layer": r["layer"], "method": r["method"], "sparsity": r["sparsity"],
                     f"coverage@{report.top_k}": r["coverage"],
                     "random (mean ± std)": f"{r['random_mean']:.4f} ± {r['random_std']:.4f}",
                     "gain (points)": r["gain_points"], "modularity": r["modularity"],
                     "random modularity": r["random_modularity"], "load entropy": r["load_entropy"],
                     "routing stability": r["routing_stability"],
                     "partition stability (ARI)": r["partition_stability"]})
    summary = {"methods": report.methods, "experts per layer": report.n_experts,
               "top-k (headline)": report.top_k,
               "layers": ", ".join(f"{la} (d_ff {report.d_ff[la]}, {report.act_fn[la]})" for la in report.layers)}
    summary.update({k: v for k, v in report.settings.items() if not isinstance(v, (dict, list))})
    sections = [Section("Summary", [facts(summary)]),
                Section("Per layer and method", [table(rows, caption=f"oracle coverage of the positive activation "
                                                       f"mass by the top-{report.top_k} of {report.n_experts} "
                                                       "experts, against random partitions", main=True)]),
                Section("Coverage", [figure(report.plot("coverage"), "oracle coverage versus fraction of experts")])]
    coact = [figure(report.plot("coactivation", layer=la), f"expert co-activation of {la}", dpi=80)
             for la in report.layers[:max_layers]]
    if len(report.layers) > max_layers:
        coact.append(paragraph(f"Showing the first {max_layers} of {len(report.layers)} layers.", note=True))
    sections.append(Section("Expert co-activation", coact))
    if report.task:
        dense = report.task["dense"]
        metric_names = list(dense)
        task_rows = [{"method": "dense", "router": "-", "fraction": 1.0, "top-k": report.n_experts, **dense}]
        for meth, per_router in report.task["curves"].items():
            for router, vals in per_router.items():
                for f, k, v in zip(report.task["fractions"], report.task["top_k"], vals, strict=False):
                    task_rows.append({"method": meth, "router": router, "fraction": f, "top-k": k,
                                      **{m: v.get(m) for m in metric_names}})
        sections.append(Section("Task metric in MoE form", [
            table(task_rows, caption="the task metric with only the top-k experts active (dense: all)"),
            figure(report.plot("task"), "task metric versus fraction of experts active")]))
    subtitle = f"{len(report.layers)} FFN layer(s), {report.n_experts} experts each, methods {', '.join(report.methods)}"
    return render_page(title or "Emergent mixture-of-experts", sections, subtitle=subtitle, timestamp=timestamp)


def moe_report_html(report: MoEReport, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the report of a :class:`~probe.moe.MoEReport` (see :func:`moe_report_page`); returns the path.

    Example:
        >>> moe_report_html(moe.detect(model, loader, n_experts=16), "moe.html")  # doctest: +SKIP
    """
    check_output(path)  # before rendering: a bad path costs nothing
    return write_html(path, moe_report_page(report, title=title))
