"""Matplotlib views of probe results (matplotlib is imported lazily, inside each function)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from probe.nap import NAPSet, NAPStats


def nap_heatmap(naps: NAPSet, classes: Sequence[int] | None = None, max_neurons: int = 512) -> Any:
    """One panel per ReLU layer; rows are classes, columns neurons: +1 active (red), -1 inactive (blue),
    0 unconstrained (white). Layers wider than ``max_neurons`` show their first ``max_neurons`` neurons.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt
    import torch

    classes = list(range(naps.num_classes)) if classes is None else list(classes)
    fig, axes = plt.subplots(len(naps.layers), 1, figsize=(10, 1.0 + 0.35 * len(classes) * len(naps.layers)),
                             squeeze=False)
    for ax, layer in zip(axes[:, 0], naps.layers, strict=True):
        code = torch.stack([naps.mask(c, layer).flatten()[:max_neurons] for c in classes]).float()
        ax.imshow(code.numpy(), aspect="auto", cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(classes)))
        names = naps.class_names or [str(c) for c in classes]
        ax.set_yticklabels([names[c] if c < len(names) else str(c) for c in classes], fontsize=7)
        ax.set_ylabel(f"{layer}", fontsize=8)
    axes[-1, 0].set_xlabel("neuron (red: active, blue: inactive, white: free)")
    fig.suptitle(f"NAPs, delta={naps.delta}")
    fig.tight_layout()
    return fig


def nap_delta_curves(naps: NAPSet, stats: Sequence[NAPStats]) -> Any:
    """Mean coverage, mean precision and mean NAP size (share of neurons constrained) versus delta.

    Args:
        naps: the NAPs (for sizes at each delta).
        stats: from ``naps.sweep(model, loader, deltas)``.
    """
    import math

    import matplotlib.pyplot as plt

    deltas = [s.delta for s in stats]

    def mean(values: Sequence[float]) -> float:
        vals = [v for v in values if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else float("nan")

    cov = [mean(s.coverage) for s in stats]
    prec = [mean(s.precision) for s in stats]
    n = naps.num_neurons()
    size = [mean([t / n for t in naps.with_delta(d).sizes()["total"]]) for d in deltas]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(deltas, cov, "o-", label="coverage (mean over classes)")
    ax.plot(deltas, prec, "s-", label="precision (mean over classes)")
    ax.plot(deltas, size, "^-", label="NAP size / neurons")
    ax.set_xlabel("delta")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
