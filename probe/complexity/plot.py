"""Matplotlib views of feature-complexity results (private helper; matplotlib imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from probe.complexity import ComplexityReport, SweepResult


def plot_layers(report: ComplexityReport, ax: Any = None) -> Any:
    """Width (light) and feature complexity (dark) per layer, in execution order."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(1.2 + 0.8 * len(report.groups), 3.5)) if ax is None else (ax.figure, ax))
    names = [g.name for g in report.groups]
    x = range(len(names))
    ax.bar(x, [g.width for g in report.groups], color="#c6dbef", label="width")
    ax.bar(x, [g.complexity for g in report.groups], color="#2171b5", label="feature complexity")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("features")
    ax.set_title(f"IFM ({report.rule}, beta={report.beta:g}): {100 * report.params_removed:.1f}% params removed",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sweep(result: SweepResult, ax: Any = None) -> Any:
    """Accuracy versus share of parameters kept, one point per beta, with the original's accuracy."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(5.5, 4)) if ax is None else (ax.figure, ax))
    kept = [p.params / result.params_before for p in result.points]
    acc = [p.accuracy for p in result.points]
    ax.plot(kept, acc, "o-", label=f"merged ({result.rule})")
    for p, k in zip(result.points, kept, strict=True):
        ax.annotate(f"{p.beta:g}", (k, p.accuracy), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.axhline(result.baseline_accuracy, color="gray", ls="--", label="original")
    ax.set_xlabel("share of parameters kept")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
