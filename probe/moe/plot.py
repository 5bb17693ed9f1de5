"""Matplotlib views of :class:`probe.moe.MoEReport` (matplotlib is imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from probe.moe import MoEReport


def moe_coverage(report: MoEReport, layers: list[str] | None = None) -> Any:
    """One panel per layer: oracle coverage versus the fraction of experts kept, each method, and the random
    partitions' mean with a +-1 std band; the headline top_k is marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    layers = layers or report.layers
    n = len(layers)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    e = report.n_experts
    x = np.arange(1, e + 1) / e
    for ax, layer in zip(axes.flat, layers, strict=False):
        m = report.metrics[layer]
        mean, std = np.array(m["random_coverage_mean"]), np.array(m["random_coverage_std"])
        ax.fill_between(x, mean - std, mean + std, color="grey", alpha=0.3)
        ax.plot(x, mean, color="grey", ls="--", label="random (mean ± std)")
        for meth in report.methods:
            if meth != "random":
                ax.plot(x, m["coverage"][meth], label=meth)
        ax.axvline(report.top_k / e, color="k", lw=0.6, ls=":")
        ax.set_title(f"{layer} ({report.act_fn[layer]})", fontsize=9)
        ax.set_xlabel("fraction of experts (top-k / E)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("oracle coverage of positive mass")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Emergent experts: coverage, E={e}")
    fig.tight_layout()
    return fig


def moe_coactivation(report: MoEReport, layer: str) -> Any:
    """Heatmap (E x E): share of tokens on which experts i and j are both in the oracle top-k."""
    import matplotlib.pyplot as plt

    mat = report.coactivation[layer].numpy()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(mat, cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"{layer}: expert co-activation (top-{report.top_k}, {report.methods[0]})", fontsize=9)
    ax.set_xlabel("expert")
    ax.set_ylabel("expert")
    fig.tight_layout()
    return fig


def moe_task(report: MoEReport, metric: str | None = None) -> Any:
    """Task metric versus fraction of experts active, one line per (method, router); dense as a line."""
    import matplotlib.pyplot as plt

    from probe.core.errors import InvalidParameterError

    if not report.task:
        raise InvalidParameterError("this report has no task curves (detect(..., task=False)); rerun with task=True")
    dense = report.task["dense"]
    metric = metric or ("accuracy" if "accuracy" in dense else next(iter(dense)))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    fr = report.task["fractions"]
    for meth, per_router in report.task["curves"].items():
        for router, vals in per_router.items():
            ax.plot(fr, [v[metric] for v in vals], "o-", label=f"{meth} / {router}")
    ax.axhline(dense[metric], color="k", ls="--", label="dense")
    ax.set_xlabel("fraction of experts active")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
