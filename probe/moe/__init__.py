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

from probe.moe.detect import *  # noqa: F403  (the public names below)
from probe.moe.detect import __all__ as _names

__all__ = [*_names]
