"""Sound bounds of ReLU networks: one batched engine and the functions built on it.

* :mod:`verify.bounds.engine`: the bound engine (torch, float64, batched over domains; CROWN, alpha, beta,
  fixed ReLU states, intermediate-layer bounds; the rounding-error padding in one place). Branch and bound
  (:mod:`verify.bab`) calls it on batches of domains.
* :mod:`verify.bounds.box`: the engine on one input box (a batch of one): :func:`interval_bounds`,
  :func:`crown_bounds`, :func:`output_bounds`, :func:`alpha_tighten`, :func:`alpha_spec_lower` and
  :class:`BoxBounds`, which computes them once and shares them between queries on the same box.
* :mod:`verify.bounds.lp`: :func:`lp_tighten`, intermediate bounds by linear programs (HiGHS).

Example:
    >>> shared = BoxBounds(net, spec.lower, spec.upper)                 # doctest: +SKIP
    >>> shared.optimised()                                              # doctest: +SKIP
    >>> shared.spec_lower(C)                                            # doctest: +SKIP
"""

from verify.bounds.box import (
    Bound,
    BoxBounds,
    FixedStates,
    alpha_spec_lower,
    alpha_tighten,
    crown_bounds,
    interval_bounds,
    one_torch_thread,
    output_bounds,
)
from verify.bounds.engine import Engine, TorchNetwork
from verify.bounds.lp import lp_tighten

__all__ = ["Bound", "BoxBounds", "Engine", "FixedStates", "TorchNetwork", "alpha_spec_lower", "alpha_tighten",
           "crown_bounds", "interval_bounds", "lp_tighten", "one_torch_thread", "output_bounds"]
