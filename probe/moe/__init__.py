"""Emergent mixture-of-experts in FFN layers (EMoE; MoEfication): partition FFN neurons into experts, route
tokens to them, and measure how modular the layer already is. :func:`detect` runs the whole study.

- :mod:`probe.moe.detect`: partitions, routers, the MoE form of a layer, metrics, :class:`MoEReport`;
- :mod:`probe.moe.partition`: the balanced partition algorithms;
- :mod:`probe.moe.plot`: the report's figures.
The FFN layers of a model are found by :mod:`probe.graph.ffn`.

Example:
    >>> from probe import moe
    >>> report = moe.detect(model, loader, n_experts=16)  # doctest: +SKIP
"""

from __future__ import annotations

from probe.moe.detect import (
    METHODS,
    ROUTERS,
    SUPPORTED_ACTS,
    DetectOptions,
    ExpertFFN,
    MoEReport,
    MoEState,
    UnsupportedActivationError,
    balanced_assignment,
    balanced_kmeans,
    capture,
    coverage_curve,
    detect,
    find_ffns,
    load_entropy,
    modularity,
    moe_form,
    partition,
    task_metric,
    to_experts,
)

__all__ = [
    "METHODS",
    "ROUTERS",
    "SUPPORTED_ACTS",
    "DetectOptions",
    "ExpertFFN",
    "MoEReport",
    "MoEState",
    "UnsupportedActivationError",
    "balanced_assignment",
    "balanced_kmeans",
    "capture",
    "coverage_curve",
    "detect",
    "find_ffns",
    "load_entropy",
    "modularity",
    "moe_form",
    "partition",
    "task_metric",
    "to_experts",
]
