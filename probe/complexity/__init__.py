"""Feature complexity by iterative feature merging (Chen, Zhou, Yan, ICLR 2024). :func:`measure` merges the
features of every layer at one ``beta``; :func:`sweep` measures accuracy, parameters and FLOPs over several.

- :mod:`probe.complexity.measure`: the public API and the result types;
- :mod:`probe.complexity.graph`: the layer-group analysis of a model (torch.fx);
- :mod:`probe.complexity.merge`: the merging rules;
- :mod:`probe.complexity.build`: building the narrower merged model;
- :mod:`probe.complexity.plot`: figures.

Example:
    >>> from probe import complexity
    >>> report = complexity.measure(model, beta=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

from probe.complexity.measure import *  # noqa: F403  (the public names below)
from probe.complexity.measure import __all__ as _names

__all__ = [*_names]
