"""Sound bounds on the pre-activations and outputs of a :class:`~verify.network.ReluNetwork` on an input box.

Two methods, both returning plain lists of ``(lower, upper)`` float64 array pairs, one pair per ReLU layer
(its pre-activation ``z_k``) and a last pair for the output layer:

* :func:`interval_bounds`: interval bound propagation (IBP), layer by layer.
* :func:`crown_bounds`: symbolic back-substitution (DeepPoly/CROWN style). The bound of layer ``k`` is found
  by substituting the linear relaxations of all earlier ReLUs, back to the input box. Each ReLU with
  pre-activation bounds ``l < 0 < u`` is relaxed by the upper line ``u / (u - l) * (z - l)`` and the lower
  line ``alpha * z`` with ``alpha = 1`` if ``u > -l`` else ``0`` (CROWN's adaptive choice); stable neurons
  are the identity (``l >= 0``) or zero (``u <= 0``). The result is intersected with IBP, so it is never
  looser than :func:`interval_bounds`.

:func:`output_bounds` bounds ``C @ y`` for a specification matrix ``C``, back-substituting ``C`` itself
(tighter than bounding ``y`` and then ``C y``).

``fixed`` (a dict ``{relu layer index: (active_mask, inactive_mask)}``) forces neuron states, as a NAP
does: forced-active neurons are the identity with their pre-activation lower bound clipped at 0, forced-
inactive ones are zero with their upper bound clipped at 0. The bounds then hold for the inputs in the box
that follow those states; where a lower bound exceeds an upper bound, no input in the box does. The bounds
with forced states are intersected with those without, so forcing states never loosens a bound.

Soundness: every bound holds for every input of the box (and, with ``fixed``, following the states). The
arithmetic is float64; each bound is widened outward by an a-priori bound on its floating-point rounding
error (``(n + 2k + 8) * 2**-52`` times the summed magnitudes of the terms of every rounded operation, where
``n`` is the widest layer; about 1e-9 absolute on mnist-net_256x6), so rounding cannot make a bound unsound.

Example:
    >>> import numpy as np
    >>> from verify.network import ReluNetwork
    >>> net = ReluNetwork([np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1.0, 1.0]])],
    ...                   [np.zeros(2), np.zeros(1)])
    >>> lo, up = crown_bounds(net, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))[-1]
    >>> bool(lo[0] <= 0.0 and up[0] >= 2.0)
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from verify.bounds.engine import EPS, ROW_CHUNK, Engine, Relaxation, TorchNetwork, relax
from verify.errors import SpecError

if TYPE_CHECKING:
    from verify.network import ReluNetwork

__all__ = ["Bound", "BoxBounds", "FixedStates", "alpha_spec_lower", "alpha_tighten", "crown_bounds", "interval_bounds", "output_bounds"]

logger = logging.getLogger(__name__)

#: ``(lower, upper)``: float64 arrays of the same shape.
Bound = tuple[np.ndarray, np.ndarray]
#: ``{relu layer index: (active_mask, inactive_mask)}``; a mask may be ``None`` (no neuron forced).
FixedStates = Mapping[int, tuple[np.ndarray | None, np.ndarray | None]]

_EPS = EPS


# --------------------------------------------------------------------------------------------------------
# Checking the arguments
# --------------------------------------------------------------------------------------------------------


def check_box(net: ReluNetwork, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    up = np.asarray(upper, dtype=np.float64).reshape(-1)
    if lo.shape != (net.n_inputs,) or up.shape != (net.n_inputs,):
        raise SpecError(
            f"the input box must have {net.n_inputs} lower and upper bounds (flattened {net.input_shape}), "
            f"got {np.shape(lower)} and {np.shape(upper)}"
        )
    if not (np.isfinite(lo).all() and np.isfinite(up).all()):
        raise SpecError("the input box has NaN or infinite bounds")
    if (lo > up).any():
        bad = int(np.argmax(lo > up))
        raise SpecError(f"the input box is empty: lower[{bad}] = {lo[bad]} > upper[{bad}] = {up[bad]}")
    return lo, up


def check_fixed(net: ReluNetwork, fixed: FixedStates | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if not fixed:
        return out
    sizes = net.relu_sizes
    for layer, (act, inact) in fixed.items():
        if not isinstance(layer, int | np.integer) or not 0 <= int(layer) < len(sizes):
            raise SpecError(f"fixed: {layer!r} is not a ReLU layer index (0 to {len(sizes) - 1})")
        n = sizes[int(layer)]
        masks = []
        for what, mask in (("active", act), ("inactive", inact)):
            m = np.zeros(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
            if m.shape != (n,):
                raise SpecError(
                    f"fixed[{layer}]: the {what} mask has {m.size} entries, layer has {n} neurons"
                )
            masks.append(m)
        if (masks[0] & masks[1]).any():
            raise SpecError(
                f"fixed[{layer}]: neurons {np.flatnonzero(masks[0] & masks[1])[:10].tolist()} are forced "
                "both active and inactive"
            )
        out[int(layer)] = (masks[0], masks[1])
    return out


def _clip(
    layer: int, lo: np.ndarray, up: np.ndarray, fixed: dict[int, tuple[np.ndarray, np.ndarray]]
) -> Bound:
    if layer in fixed:
        act, inact = fixed[layer]
        lo = np.where(act, np.maximum(lo, 0.0), lo)
        up = np.where(inact, np.minimum(up, 0.0), up)
    return lo, up


# --------------------------------------------------------------------------------------------------------
# Interval arithmetic
# --------------------------------------------------------------------------------------------------------


def _affine_interval(w: np.ndarray, b: np.ndarray, lo: np.ndarray, up: np.ndarray) -> Bound:
    """Bounds of ``w @ a + b`` for ``lo <= a <= up``, widened by the rounding error of the dot products."""
    wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
    low = wp @ lo + wn @ up + b
    high = wp @ up + wn @ lo + b
    mag = np.abs(w) @ np.maximum(np.abs(lo), np.abs(up)) + np.abs(b)
    pad = (2 * w.shape[1] + 4) * _EPS * mag
    return low - pad, high + pad


def interval_bounds(
    net: ReluNetwork, lower: np.ndarray, upper: np.ndarray, fixed: FixedStates | None = None
) -> list[Bound]:
    """Interval bound propagation over the input box ``lower <= x <= upper``.

    Args:
        net: the network.
        lower: lower bounds of the flattened input, ``(n_inputs,)``.
        upper: upper bounds, ``(n_inputs,)``.
        fixed: optional forced neuron states ``{relu layer index: (active_mask, inactive_mask)}`` (see the
            module docstring).

    Returns:
        A list of ``len(net.relu_sizes) + 1`` pairs ``(l, u)``: the pre-activation bounds of each ReLU layer,
        then the output bounds.

    Raises:
        SpecError: the box has the wrong size, NaN bounds or ``lower > upper``; or ``fixed`` is malformed.

    Example:
        >>> import numpy as np
        >>> from verify.network import ReluNetwork
        >>> net = ReluNetwork([np.eye(1), np.eye(1)], [np.zeros(1), np.zeros(1)])
        >>> bounds = interval_bounds(net, np.array([-1.0]), np.array([2.0]))
        >>> [(round(float(l[0]), 9), round(float(u[0]), 9)) for l, u in bounds]  # widened by ~1e-15
        [(-1.0, 2.0), (-0.0, 2.0)]
    """
    lo, up = check_box(net, lower, upper)
    states = check_fixed(net, fixed)
    bounds: list[Bound] = []
    n_relus = len(net.relu_sizes)
    for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        zl, zu = _affine_interval(w, b, lo, up)
        if k < n_relus:
            zl, zu = _clip(k, zl, zu, states)
            lo, up = np.maximum(zl, 0.0), np.maximum(zu, 0.0)
        bounds.append((zl, zu))
    return bounds


# --------------------------------------------------------------------------------------------------------
# Back-substitution
# --------------------------------------------------------------------------------------------------------


def _engine(net: ReluNetwork, x_lo: np.ndarray, x_up: np.ndarray) -> Engine:
    """The bound engine on the box (batch of one domain), with the network's tensors made once per network."""
    return Engine(TorchNetwork.of(net), x_lo, x_up)


def _t(v: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(v, dtype=np.float64))


def _relaxation(lo: np.ndarray, up: np.ndarray, act: np.ndarray | None, inact: np.ndarray | None) -> Relaxation:
    """The relaxation of one ReLU layer of a single domain (batch of one)."""
    def mask(m: np.ndarray | None) -> torch.Tensor | None:
        return None if m is None else torch.as_tensor(np.asarray(m, dtype=bool)).reshape(1, -1)

    return relax(_t(lo).reshape(1, -1), _t(up).reshape(1, -1), mask(act), mask(inact))


def _backsub_lower(
    eng: Engine,
    rel: list[Relaxation],
    k: int,
    a: np.ndarray,
    const: np.ndarray,
    err0: np.ndarray | None = None,
    err0_width: int = 0,
    alphas: list[torch.Tensor | None] | None = None,
) -> np.ndarray:
    """Sound lower bounds of ``a @ relu(z_{k-1}) + const``, one per row of ``a``: the engine's
    back-substitution (:meth:`verify.bounds.engine.Engine.lower`) on a batch of one domain."""
    return eng.bound_linear(rel, _t(a), _t(const), k, None if err0 is None else _t(err0), err0_width,
                            alphas).numpy()


def _crown(
    net: ReluNetwork,
    x_lo: np.ndarray,
    x_up: np.ndarray,
    states: dict[int, tuple[np.ndarray, np.ndarray]],
    n_layers: int,
    outer: list[Bound] | None = None,
) -> tuple[list[Bound], list[Relaxation]]:
    """CROWN bounds of the first ``n_layers`` layers, and the relaxations of the ReLU layers among them.

    ``outer``: sound bounds to intersect with layer by layer, e.g. those without the forced ``states``
    (valid for the whole box, so for its inputs that follow the states too): the identity relaxation of a
    forced-active neuron forgets ``z >= 0`` in the back-substitution and can be looser on some neurons."""
    ibp = interval_bounds(net, x_lo, x_up, states)
    eng = _engine(net, x_lo, x_up)
    n_relus = len(net.relu_sizes)
    bounds: list[Bound] = []
    rel: list[Relaxation] = []
    post_lo, post_up = x_lo, x_up
    for k in range(n_layers):
        w, b = net.weights[k], net.biases[k]
        # Interval bounds from the (tighter) bounds of the previous layer, and plain IBP: both intersected.
        lo, up = _affine_interval(w, b, post_lo, post_up)
        lo, up = np.maximum(lo, ibp[k][0]), np.minimum(up, ibp[k][1])
        if k > 0:
            n = w.shape[0]
            low = _backsub_lower(eng, rel, k, np.vstack([w, -w]), np.concatenate([b, -b]))
            lo, up = np.maximum(lo, low[:n]), np.minimum(up, -low[n:])
        if outer is not None:
            lo, up = np.maximum(lo, outer[k][0]), np.minimum(up, outer[k][1])
        if k < n_relus:
            lo, up = _clip(k, lo, up, states)
            act, inact = states.get(k, (None, None))
            rel.append(_relaxation(lo, up, act, inact))
            post_lo, post_up = np.maximum(lo, 0.0), np.maximum(up, 0.0)
        bounds.append((lo, up))
    return bounds, rel


# --------------------------------------------------------------------------------------------------------
# alpha-CROWN: optimised lower-relaxation slopes
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after). The matrices of verification are
    small: extra threads mostly wait for each other, and on a busy machine they slow a step down tenfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _alpha_lower(
    eng: Engine,
    rel: list[Relaxation],
    k: int,
    a: np.ndarray,
    const: np.ndarray,
    iters: int,
    deadline: float | None,
    err0: np.ndarray | None = None,
    err0_width: int = 0,
) -> np.ndarray:
    """Sound alpha-CROWN lower bounds of ``a @ relu(z_{k-1}) + const``, one per row: slopes per row
    searched by the engine (:meth:`~verify.bounds.engine.Engine.optimise`, float32, ``iters`` Adam steps
    from CROWN's slopes, stopping at ``deadline``), then the sound float64 bound with the slopes found
    (every slope in ``[0, 1]`` is valid, so the result is sound however the search ends)."""
    a_t, c_t = _t(a), _t(const)
    e_t = None if err0 is None else _t(err0)
    out = []
    with one_torch_thread():
        for start in range(0, a_t.shape[0], ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            coef, c = a_t[rows].unsqueeze(0), c_t[rows].unsqueeze(0)
            alphas = None
            if k and iters > 0 and any(bool(r.unstable.any()) for r in rel[:k]):
                alphas, _, _ = eng.optimise(rel, k, coef, c, iters=iters, lr_alpha=0.25, deadline=deadline)
            low, _, _ = eng.lower(rel, k, coef, c, None if e_t is None else e_t[rows].unsqueeze(0), err0_width,
                                  alphas=alphas)
            out.append(low[0])
    return torch.cat(out).numpy() if out else np.zeros(0)


def _relaxations(bounds: list[Bound], states: dict[int, tuple[np.ndarray, np.ndarray]], n: int) -> list[Relaxation]:
    out = []
    for j in range(n):
        lo, up = _clip(j, *bounds[j], states)
        act, inact = states.get(j, (None, None))
        out.append(_relaxation(lo, up, act, inact))
    return out


def alpha_tighten(
    net: ReluNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    bounds: list[Bound],
    fixed: FixedStates | None = None,
    iters: int = 20,
    deadline: float | None = None,
) -> tuple[list[Bound], dict[str, int]]:
    """Tighten the bounds of unstable neurons with alpha-CROWN (Xu et al. 2021): per neuron, optimised
    lower-relaxation slopes of every earlier unstable ReLU.

    Layer by layer from the second ReLU layer (the first one's interval bounds are exact) through the
    output: the relaxations of earlier layers are rebuilt from their (already tightened) bounds, the slopes
    for each unstable neuron's lower and upper bound are optimised by gradient ascent (``iters`` Adam steps
    from CROWN's choice, stopping at ``deadline``), and the bound they give is computed by the sound
    back-substitution (rounding error included) and intersected with the old one. Any slope in ``[0, 1]``
    gives a valid bound, so the result is sound however the optimisation ends.

    Args:
        net, lower, upper, fixed: as in :func:`crown_bounds`.
        bounds: sound bounds to start from (e.g. :func:`crown_bounds`): hidden layers, then the output.
        iters: gradient steps per layer.
        deadline: a ``time.perf_counter()`` value; layers not reached by then keep their bounds.

    Returns:
        The tightened bounds (same layout) and counts ``{"tightened": neurons improved, "complete": 0/1}``.

    Example:
        >>> import numpy as np
        >>> from verify.network import ReluNetwork
        >>> rng = np.random.default_rng(0)
        >>> net = ReluNetwork([rng.normal(size=(8, 2)), rng.normal(size=(8, 8)), rng.normal(size=(1, 8))],
        ...                   [np.zeros(8), np.zeros(8), np.zeros(1)])
        >>> crown = crown_bounds(net, -np.ones(2), np.ones(2))
        >>> tight, _ = alpha_tighten(net, -np.ones(2), np.ones(2), crown)
        >>> bool((tight[-1][1] - tight[-1][0] <= crown[-1][1] - crown[-1][0]).all())
        True
    """
    import time

    x_lo, x_up = check_box(net, lower, upper)
    states = check_fixed(net, fixed)
    out = [(lo.copy(), up.copy()) for lo, up in bounds]
    n_relus = len(net.relu_sizes)
    stats = {"tightened": 0, "complete": 0}
    for k in range(1, n_relus + 1):
        if deadline is not None and time.perf_counter() > deadline:
            return out, stats
        lo_k, up_k = out[k]
        todo = np.arange(lo_k.size) if k == n_relus else np.flatnonzero((lo_k < 0) & (up_k > 0))
        if k < n_relus and k in states:
            act, inact = states[k]
            todo = todo[~act[todo] & ~inact[todo]]
        if todo.size == 0:
            continue
        rel = _relaxations(out, states, k)
        w, b = net.weights[k][todo], net.biases[k][todo]
        a, const = np.vstack([w, -w]), np.concatenate([b, -b])
        low = _alpha_lower(_engine(net, x_lo, x_up), rel, k, a, const, iters, deadline)
        n = todo.size
        new_lo, new_up = lo_k.copy(), up_k.copy()
        new_lo[todo] = np.maximum(lo_k[todo], low[:n])
        new_up[todo] = np.minimum(up_k[todo], -low[n:])
        stats["tightened"] += int(np.sum((new_lo > lo_k) | (new_up < up_k)))
        out[k] = _clip(k, new_lo, new_up, states) if k < n_relus else (new_lo, new_up)
    stats["complete"] = int(deadline is None or time.perf_counter() <= deadline)
    return out, stats


def alpha_spec_lower(
    net: ReluNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    bounds: list[Bound],
    C: np.ndarray,
    fixed: FixedStates | None = None,
    iters: int = 30,
    deadline: float | None = None,
) -> np.ndarray:
    """Sound alpha-CROWN lower bounds of ``C @ y`` over the box, from pre-activation ``bounds`` (hidden
    layers first; e.g. after :func:`alpha_tighten` or :func:`lp_tighten`); see :func:`alpha_tighten`.

    Returns:
        ``(rows of C,)`` lower bounds.
    """
    x_lo, x_up = check_box(net, lower, upper)
    states = check_fixed(net, fixed)
    spec = np.atleast_2d(np.asarray(C, dtype=np.float64))
    n_relus = len(net.relu_sizes)
    rel = _relaxations(bounds, states, n_relus)
    a, const = spec @ net.weights[-1], spec @ net.biases[-1]
    err0 = np.abs(spec) @ (np.abs(net.weights[-1]) @ _post_magnitude(rel, x_lo, x_up) + np.abs(net.biases[-1]))
    return _alpha_lower(_engine(net, x_lo, x_up), rel, n_relus, a, const, iters, deadline, err0, net.n_outputs)


def _post_magnitude(rel: list[Relaxation], x_lo: np.ndarray, x_up: np.ndarray) -> np.ndarray:
    """``max(up, 0)`` of the last ReLU layer (the largest input of the output layer), or ``max|x|``."""
    return rel[-1].a_mag[0].numpy() if rel else np.maximum(np.abs(x_lo), np.abs(x_up))


class BoxBounds:
    """CROWN bounds of one input box (and fixed states), computed once and shared by every query on it.

    Several properties over the same box and states (e.g. NAP robustness: one query per competitor class)
    need the same pre-activation bounds; building them, and above all tightening them with LPs, costs far
    more than one query's MILP. A ``BoxBounds`` computes the CROWN bounds at construction, bounds any
    specification ``C @ y`` from them (:meth:`spec_bounds`), and keeps the LP-tightened bounds once
    :meth:`tightened` has computed them, so later queries reuse them. Pass it to
    :func:`verify.verify` as ``bounds=``.

    Args:
        net: the network.
        lower: lower bounds of the flattened input, ``(n_inputs,)``.
        upper: upper bounds, ``(n_inputs,)``.
        fixed: optional forced neuron states, as in :func:`crown_bounds`.

    Attributes:
        layers: the CROWN bounds, as returned by :func:`crown_bounds` (ReLU layers, then the output).
        tightened_layers: the LP-tightened bounds once :meth:`tightened` has run (else ``None``).
        alpha_layers: the alpha-CROWN bounds once :meth:`optimised` has run (else ``None``).
        milp_layers: the MILP-tightened bounds once :meth:`milp_tightened` has run (else ``None``).
        milp_settled: per ReLU layer, the neurons whose MILP bounds are exact (both MILPs solved to
            optimality); a later :meth:`milp_tightened` call skips them.
        lp_stats: counts of the LP tightening (``lps``, ``tightened``, ``complete``).

    Raises:
        SpecError: the box has the wrong size, NaN bounds or ``lower > upper``; or ``fixed`` is malformed.

    Example:
        >>> import numpy as np
        >>> from verify.network import ReluNetwork
        >>> net = ReluNetwork([np.eye(2), np.eye(2)], [np.zeros(2), np.zeros(2)])
        >>> shared = BoxBounds(net, np.zeros(2), np.ones(2))
        >>> lo, up = shared.spec_bounds(np.array([[1.0, -1.0]]))
        >>> float(lo[0]) <= -1.0 and float(up[0]) >= 1.0
        True
    """

    def __init__(self, net: ReluNetwork, lower: np.ndarray, upper: np.ndarray,
                 fixed: FixedStates | None = None) -> None:
        self.net = net
        self.lower, self.upper = check_box(net, lower, upper)
        self.states = check_fixed(net, fixed)
        n_relus = len(net.relu_sizes)
        free, relax = _crown(net, self.lower, self.upper, {}, len(net.weights))
        self._parts = [(free, relax)]
        if self.states:
            forced, frelax = _crown(net, self.lower, self.upper, self.states, len(net.weights), outer=free)
            self._parts.append((forced, frelax))
        self.layers: list[Bound] = self._parts[-1][0]
        self.tightened_layers: list[Bound] | None = None
        self.lp_stats: dict[str, int] = {}
        self.alpha_layers: list[Bound] | None = None
        self.alpha_stats: dict[str, int] = {}
        self.milp_layers: list[Bound] | None = None
        self.milp_stats: dict[str, int] = {}
        self.milp_settled: dict[int, np.ndarray] = {}
        self._latest: list[Bound] | None = None
        self._n_relus = n_relus

    @property
    def best(self) -> list[Bound]:
        """The tightest bounds computed so far: those of the latest of :meth:`optimised`, :meth:`tightened`
        and :meth:`milp_tightened` (each starts from :attr:`best` and only intersects, so the latest is never
        looser), else CROWN's."""
        return self._latest if self._latest is not None else self.layers

    def optimised(self, deadline: float | None = None, iters: int = 20) -> tuple[list[Bound], dict[str, int]]:
        """alpha-CROWN bounds (:func:`alpha_tighten`), computed on the first call and kept; a run stopped by
        ``deadline`` is resumed from its bounds by a later call."""
        if self.alpha_layers is not None and self.alpha_stats.get("complete"):
            return self.alpha_layers, self.alpha_stats
        out, stats = alpha_tighten(self.net, self.lower, self.upper, self.best, fixed=self.states, iters=iters,
                                   deadline=deadline)
        self.alpha_stats = {"tightened": self.alpha_stats.get("tightened", 0) + stats["tightened"],
                            "complete": stats["complete"]}
        self.alpha_layers = self._latest = out
        return out, self.alpha_stats

    def milp_tightened(self, deadline: float, to_layer: int = 1, per_neuron: float | None = None,
                       workers: int = 1) -> tuple[list[Bound], dict[str, int]]:
        """Exact bounds for the first layers (the 2022 VNN-COMP winner's remedy on mnist_fc): each unstable
        neuron of ReLU layers ``1..to_layer`` minimised and maximised by a MILP with a binary per unstable
        neuron of the layers before it (:func:`verify.bounds.lp.lp_tighten` with ``exact=True``, HiGHS, the
        dual bound of a MILP stopped by ``per_neuron`` seconds; ``workers`` threads side by side), then
        alpha-CROWN again for the layers after (their relaxations start from the tighter bounds). Starts from
        :attr:`best`; kept, and a later call resumes from its bounds and re-solves only the neurons whose
        MILPs the earlier calls stopped before optimality (:attr:`milp_settled`): e.g. a short pass for all
        neurons, then a longer one for the hard ones. Sound however it ends: bounds are only ever intersected.

        On mnist-net_256x4 ``prop_5_0.03``, 0.3 s per neuron on layer 1 (34 s) turned 56 unstable neurons
        of layer 1 into 35 (and 56 into 49 in layer 3), and branch and bound then proved all nine clauses in
        2 s, where it left clause 2 open after 30,000 domains from the alpha-CROWN bounds.

        Example:
            >>> tight, stats = box.milp_tightened(time.perf_counter() + 60, per_neuron=0.5, workers=2)  # doctest: +SKIP
        """
        from verify.bounds.lp import lp_tighten

        out, stats = lp_tighten(self.net, self.lower, self.upper, self.best, fixed=self.states, deadline=deadline,
                                to_layer=to_layer, exact=True, per_neuron=per_neuron, workers=workers,
                                settled=self.milp_settled)
        out, _ = alpha_tighten(self.net, self.lower, self.upper, out, fixed=self.states)
        for key, value in stats.items():
            self.milp_stats[key] = self.milp_stats.get(key, 0) + value if key != "complete" else value
        self.milp_layers = self._latest = out
        return out, self.milp_stats

    def spec_lower(self, C: np.ndarray, deadline: float | None = None, iters: int = 30) -> np.ndarray:
        """Lower bounds of ``C @ y`` from the tightest bounds so far, with alpha-CROWN slopes optimised for
        ``C`` (:func:`alpha_spec_lower`), never looser than :meth:`spec_bounds`."""
        low = alpha_spec_lower(self.net, self.lower, self.upper, self.best[:-1], C, fixed=self.states,
                               iters=iters, deadline=deadline)
        return np.maximum(low, self.spec_bounds(C)[0])

    def matches(self, net: ReluNetwork, lower: np.ndarray, upper: np.ndarray,
                fixed: FixedStates | None = None) -> bool:
        """Whether these bounds were computed for ``net``, this box and these fixed states."""
        if net is not self.net or not (np.array_equal(self.lower, np.asarray(lower, dtype=np.float64).reshape(-1))
                                       and np.array_equal(self.upper, np.asarray(upper, dtype=np.float64).reshape(-1))):
            return False
        other = check_fixed(net, fixed)
        return other.keys() == self.states.keys() and all(
            np.array_equal(other[k][0], self.states[k][0]) and np.array_equal(other[k][1], self.states[k][1])
            for k in other)

    def spec_bounds(self, C: np.ndarray) -> Bound:
        """Bounds of ``C @ y`` over the box (following the fixed states); see :func:`output_bounds`."""
        spec = np.asarray(C, dtype=np.float64)
        if spec.ndim == 1:
            spec = spec[None, :]
        if spec.ndim != 2 or spec.shape[1] != self.net.n_outputs:
            raise SpecError(f"C must have shape (rows, {self.net.n_outputs}), got {np.shape(C)}")
        if not np.isfinite(spec).all():
            raise SpecError("C has NaN or infinite entries")
        lo = up = None
        for bounds, rel in self._parts:
            plo, pup = _spec_bounds(self.net, bounds[: self._n_relus], rel, spec, self.lower, self.upper)
            lo, up = (plo, pup) if lo is None else (np.maximum(lo, plo), np.minimum(up, pup))
        return lo, up

    def tightened(self, deadline: float | None = None) -> tuple[list[Bound], dict[str, int]]:
        """LP-tightened bounds (:func:`lp_tighten`), computed on the first call and kept. A run stopped by
        ``deadline`` is kept too, and a later call resumes from its (already tighter) bounds. Starts from
        :attr:`best`."""
        if self.tightened_layers is not None and self.lp_stats.get("complete"):
            return self.tightened_layers, self.lp_stats
        start = self.best
        from verify.bounds.lp import lp_tighten

        out, stats = lp_tighten(self.net, self.lower, self.upper, start, fixed=self.states, deadline=deadline)
        for key, value in stats.items():
            self.lp_stats[key] = self.lp_stats.get(key, 0) + value if key != "complete" else value
        self.tightened_layers = self._latest = out
        return out, self.lp_stats


def crown_bounds(
    net: ReluNetwork, lower: np.ndarray, upper: np.ndarray, fixed: FixedStates | None = None
) -> list[Bound]:
    """CROWN/DeepPoly bounds of every ReLU layer's pre-activation and of the output, over an input box.

    Layer ``k``'s bound back-substitutes ``W_k`` through the relaxations of all earlier ReLUs (built from
    their already computed bounds) down to the box, and is intersected with interval bounds, so each bound
    is at least as tight as :func:`interval_bounds`'.

    Args:
        net: the network.
        lower: lower bounds of the flattened input, ``(n_inputs,)``.
        upper: upper bounds, ``(n_inputs,)``.
        fixed: optional forced neuron states ``{relu layer index: (active_mask, inactive_mask)}``: forced-
            active neurons are the identity (lower bound clipped at 0), forced-inactive ones are zero (upper
            bound clipped at 0). The bounds then hold for the inputs of the box that follow those states.
            They are intersected with the bounds without forced states (computed first), so forcing
            states never loosens a bound (it costs a second pass).

    Returns:
        A list of ``len(net.relu_sizes) + 1`` pairs ``(l, u)`` of float64 arrays: each ReLU layer's
        pre-activation bounds, then the output bounds.

    Raises:
        SpecError: the box has the wrong size, NaN bounds or ``lower > upper``; or ``fixed`` is malformed.

    Example:
        >>> import numpy as np
        >>> from verify.network import ReluNetwork
        >>> rng = np.random.default_rng(0)
        >>> net = ReluNetwork([rng.normal(size=(8, 4)), rng.normal(size=(3, 8))], [np.zeros(8), np.zeros(3)])
        >>> crown = crown_bounds(net, -np.ones(4), np.ones(4))
        >>> ibp = interval_bounds(net, -np.ones(4), np.ones(4))
        >>> bool((crown[-1][1] - crown[-1][0] <= ibp[-1][1] - ibp[-1][0]).all())
        True
    """
    return BoxBounds(net, lower, upper, fixed).layers


def output_bounds(
    net: ReluNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    C: np.ndarray,
    fixed: FixedStates | None = None,
) -> Bound:
    """CROWN lower and upper bounds of ``C @ y`` over the input box, back-substituting ``C`` itself.

    Args:
        net: the network.
        lower: lower bounds of the flattened input, ``(n_inputs,)``.
        upper: upper bounds, ``(n_inputs,)``.
        C: the specification, ``(rows, n_outputs)`` (a 1-D array is one row), e.g. ``e_label - e_other``.
        fixed: optional forced neuron states, as in :func:`crown_bounds`.

    Returns:
        ``(lower, upper)``, each ``(rows,)``: for every input of the box (following ``fixed``),
        ``lower <= C @ net.forward(x) <= upper``.

    Raises:
        SpecError: ``C`` has the wrong number of columns or non-finite entries; the box or ``fixed`` is
            malformed.

    Example:
        >>> import numpy as np
        >>> from verify.network import ReluNetwork
        >>> net = ReluNetwork([np.eye(2), np.eye(2)], [np.zeros(2), np.zeros(2)])
        >>> lo, up = output_bounds(net, np.zeros(2), np.ones(2), np.array([[1.0, -1.0]]))
        >>> float(lo[0]) <= -1.0 and float(up[0]) >= 1.0
        True
    """
    return BoxBounds(net, lower, upper, fixed).spec_bounds(C)


def _spec_bounds(
    net: ReluNetwork,
    bounds: list[Bound],
    rel: list[Relaxation],
    spec: np.ndarray,
    x_lo: np.ndarray,
    x_up: np.ndarray,
) -> Bound:
    """Bounds of ``spec @ y`` from the ReLU layers' bounds and relaxations."""
    n_relus = len(rel)
    w = spec @ net.weights[-1]
    b = spec @ net.biases[-1]
    # Size of the terms summed when forming C @ W_L and C @ b_L: their rounding error bounds C @ y's.
    mag0 = np.abs(spec) @ (np.abs(net.weights[-1]) @ _post_magnitude(rel, x_lo, x_up) + np.abs(net.biases[-1]))
    post_lo, post_up = (
        (np.maximum(bounds[-1][0], 0.0), np.maximum(bounds[-1][1], 0.0)) if n_relus else (x_lo, x_up)
    )
    lo, up = _affine_interval(w, b, post_lo, post_up)
    pad = (net.n_outputs + 4) * _EPS * mag0
    lo, up = lo - pad, up + pad
    if n_relus:
        m = spec.shape[0]
        stacked = np.vstack([w, -w])
        const = np.concatenate([b, -b])
        err0 = np.concatenate([mag0, mag0])
        low = _backsub_lower(_engine(net, x_lo, x_up), rel, n_relus, stacked, const, err0, net.n_outputs)
        lo, up = np.maximum(lo, low[:m]), np.minimum(up, -low[m:])
    return lo, up
