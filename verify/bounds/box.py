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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from verify.errors import SpecError

if TYPE_CHECKING:
    from verify.network import ReluNetwork

__all__ = ["Bound", "BoxBounds", "FixedStates", "alpha_spec_lower", "alpha_tighten", "crown_bounds", "interval_bounds", "output_bounds"]

logger = logging.getLogger(__name__)

#: ``(lower, upper)``: float64 arrays of the same shape.
Bound = tuple[np.ndarray, np.ndarray]
#: ``{relu layer index: (active_mask, inactive_mask)}``; a mask may be ``None`` (no neuron forced).
FixedStates = Mapping[int, tuple[np.ndarray | None, np.ndarray | None]]

_EPS = float(np.finfo(np.float64).eps)
#: Rows of a back-substitution processed at once (bounds memory on wide layers).
ROW_CHUNK = 2048


# --------------------------------------------------------------------------------------------------------
# Checking the arguments
# --------------------------------------------------------------------------------------------------------


def _box(net: ReluNetwork, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _fixed(net: ReluNetwork, fixed: FixedStates | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
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
    lo, up = _box(net, lower, upper)
    states = _fixed(net, fixed)
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


@dataclass
class _Relaxation:
    """The linear bounds ``s_low * z <= relu(z) <= s_up * z + t_up`` of one ReLU layer for ``lo <= z <= up``,
    with ``z_mag = max(|lo|, |up|)`` and ``a_mag = max(up, 0)`` (largest pre- and post-activation sizes)."""

    s_low: np.ndarray
    s_up: np.ndarray
    t_up: np.ndarray
    z_mag: np.ndarray
    a_mag: np.ndarray
    unstable: np.ndarray | None = None  # neurons with the triangle relaxation (any s_low in [0, 1] is sound)


def _relaxation(
    lo: np.ndarray, up: np.ndarray, act: np.ndarray | None, inact: np.ndarray | None
) -> _Relaxation:
    unstable = (lo < 0.0) & (up > 0.0)
    active = lo >= 0.0
    if act is not None:
        active = active | act
        unstable = unstable & ~act
    if inact is not None:
        active = active & ~inact
        unstable = unstable & ~inact
    width = np.where(unstable, up - lo, 1.0)
    s_up = np.where(unstable, up / width, np.where(active, 1.0, 0.0))
    z_mag = np.maximum(np.abs(lo), np.abs(up))
    # The rounded slope and intercept can put the line below relu by a few ulps of max(|l|, |u|): lift it.
    t_up = np.where(unstable, -up * lo / width + 8 * _EPS * z_mag, 0.0)
    s_low = np.where(unstable, np.where(up > -lo, 1.0, 0.0), np.where(active, 1.0, 0.0))
    return _Relaxation(s_low, s_up, t_up, z_mag, np.maximum(up, 0.0), unstable)


def _backsub_lower(
    net: ReluNetwork,
    relax: list[_Relaxation],
    k: int,
    a: np.ndarray,
    const: np.ndarray,
    x_lo: np.ndarray,
    x_up: np.ndarray,
    err0: np.ndarray | None = None,
    err0_width: int = 0,
    alphas: list[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Sound lower bounds of ``a @ relu(z_{k-1}) + const`` (``a @ x + const`` for ``k = 0``), one per row of
    ``a``, substituting the ReLU relaxations of layers ``k-1, ..., 0`` and then the input box.

    Alongside, it sums the magnitudes of every rounded operation's terms (``|coef| |W_j| max|a_{j-1}|``,
    ...); the bound is lowered by ``(n + 2k + 8) * eps`` times that sum (``n``: the widest inner dimension),
    which exceeds the rounding error. ``err0`` adds the magnitudes of the terms of sums of ``err0_width``
    terms already rounded into ``a`` and ``const`` (e.g. ``|C| |W_L| max|a|`` for ``a = C @ W_L``).

    ``alphas``: optional per ReLU layer ``j`` an array ``(rows of a, n_j)`` of lower-relaxation slopes, one
    set per row (alpha-CROWN); they are clipped to ``[0, 1]`` and used for the layer's unstable neurons only,
    where ``s z <= relu(z)`` holds on ``[l, u]`` for every ``s`` in ``[0, 1]``: any values are sound."""
    x_mag = np.maximum(np.abs(x_lo), np.abs(x_up))
    widest = max([net.n_inputs, *net.relu_sizes[:k], a.shape[1], err0_width])
    gamma = (widest + 2 * k + 8) * _EPS
    # |W_j| max|a_{j-1}| + |b_j|: the size of the terms of z_j.
    sizes = [
        np.abs(net.weights[j]) @ (x_mag if j == 0 else relax[j - 1].a_mag) + np.abs(net.biases[j])
        for j in range(k)
    ]
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        coef, c = a[rows], const[rows].copy()
        err = np.zeros(coef.shape[0]) if err0 is None else err0[rows].copy()
        for j in range(k - 1, -1, -1):
            r = relax[j]
            s_low = r.s_low
            if alphas is not None and alphas[j] is not None and r.unstable is not None:
                s_low = np.where(r.unstable, np.clip(alphas[j][rows], 0.0, 1.0), r.s_low)
            pos, neg = np.maximum(coef, 0.0), np.minimum(coef, 0.0)
            c += neg @ r.t_up
            err += -neg @ r.t_up
            coef = pos * s_low + neg * r.s_up
            abs_coef = np.abs(coef)
            err += abs_coef @ r.z_mag + abs_coef @ sizes[j]
            c += coef @ net.biases[j]
            coef = coef @ net.weights[j]
        low = np.maximum(coef, 0.0) @ x_lo + np.minimum(coef, 0.0) @ x_up + c
        err += np.abs(coef) @ x_mag + np.abs(c)
        out[rows] = low - gamma * err
    return out


def _crown(
    net: ReluNetwork,
    x_lo: np.ndarray,
    x_up: np.ndarray,
    states: dict[int, tuple[np.ndarray, np.ndarray]],
    n_layers: int,
    outer: list[Bound] | None = None,
) -> tuple[list[Bound], list[_Relaxation]]:
    """CROWN bounds of the first ``n_layers`` layers, and the relaxations of the ReLU layers among them.

    ``outer``: sound bounds to intersect with layer by layer, e.g. those without the forced ``states``
    (valid for the whole box, so for its inputs that follow the states too): the identity relaxation of a
    forced-active neuron forgets ``z >= 0`` in the back-substitution and can be looser on some neurons."""
    ibp = interval_bounds(net, x_lo, x_up, states)
    n_relus = len(net.relu_sizes)
    bounds: list[Bound] = []
    relax: list[_Relaxation] = []
    post_lo, post_up = x_lo, x_up
    for k in range(n_layers):
        w, b = net.weights[k], net.biases[k]
        # Interval bounds from the (tighter) bounds of the previous layer, and plain IBP: both intersected.
        lo, up = _affine_interval(w, b, post_lo, post_up)
        lo, up = np.maximum(lo, ibp[k][0]), np.minimum(up, ibp[k][1])
        if k > 0:
            n = w.shape[0]
            low = _backsub_lower(net, relax, k, np.vstack([w, -w]), np.concatenate([b, -b]), x_lo, x_up)
            lo, up = np.maximum(lo, low[:n]), np.minimum(up, -low[n:])
        if outer is not None:
            lo, up = np.maximum(lo, outer[k][0]), np.minimum(up, outer[k][1])
        if k < n_relus:
            lo, up = _clip(k, lo, up, states)
            act, inact = states.get(k, (None, None))
            relax.append(_relaxation(lo, up, act, inact))
            post_lo, post_up = np.maximum(lo, 0.0), np.maximum(up, 0.0)
        bounds.append((lo, up))
    return bounds, relax


# --------------------------------------------------------------------------------------------------------
# alpha-CROWN: optimised lower-relaxation slopes
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after). The matrices of verification are
    small: extra threads mostly wait for each other, and on a busy machine they slow a step down tenfold."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimise_alphas(
    net: ReluNetwork,
    relax: list[_Relaxation],
    k: int,
    a: np.ndarray,
    const: np.ndarray,
    x_lo: np.ndarray,
    x_up: np.ndarray,
    iters: int,
    deadline: float | None,
    lr: float = 0.25,
) -> list[np.ndarray | None]:
    """Lower-relaxation slopes per row of ``a`` that raise the back-substituted lower bounds of
    ``a @ relu(z_{k-1}) + const`` (projected gradient ascent with Adam, torch autograd, from CROWN's slopes).

    The optimisation needs no care for rounding: the slopes are then only *used* by the sound
    :func:`_backsub_lower`, for which every slope in ``[0, 1]`` is valid."""
    with one_torch_thread():
        return _optimise_alphas_impl(net, relax, k, a, const, x_lo, x_up, iters, deadline, lr)


def _optimise_alphas_impl(net, relax, k, a, const, x_lo, x_up, iters, deadline, lr):
    import time

    import torch

    m = a.shape[0]

    def f32(v: np.ndarray) -> torch.Tensor:  # float32 is ample for a heuristic search, and twice as fast
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    ws = [f32(net.weights[j]) for j in range(k)]
    bs = [f32(net.biases[j]) for j in range(k)]
    lo_t, up_t = f32(x_lo), f32(x_up)
    fixed = [(f32(r.s_low), f32(r.s_up), f32(r.t_up)) for r in relax[:k]]
    out: list[np.ndarray | None] = [None] * k
    for start in range(0, m, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        a_t, c_t = f32(a[rows]), f32(const[rows])
        n_rows = a_t.shape[0]
        params, cols = [], []
        for j in range(k):
            unst = np.flatnonzero(relax[j].unstable) if relax[j].unstable is not None else np.zeros(0, int)
            cols.append(torch.from_numpy(unst))
            params.append(f32(np.broadcast_to(relax[j].s_low[unst], (n_rows, unst.size))).requires_grad_(True))
        trainable = [p for p, c in zip(params, cols, strict=True) if c.numel()]
        if not trainable:
            continue
        opt = torch.optim.Adam(trainable, lr=lr)
        for _ in range(iters):
            if deadline is not None and time.perf_counter() > deadline:
                break
            coef, c = a_t, c_t
            for j in range(k - 1, -1, -1):
                s_low0, s_up, t_up = fixed[j]
                s_low = s_low0.expand(n_rows, -1).clone()
                if cols[j].numel():
                    s_low[:, cols[j]] = params[j].clamp(0.0, 1.0)
                pos, neg = coef.clamp(min=0.0), coef.clamp(max=0.0)
                c = c + neg @ t_up
                coef = pos * s_low + neg * s_up
                c = c + coef @ bs[j]
                coef = coef @ ws[j]
            low = coef.clamp(min=0.0) @ lo_t + coef.clamp(max=0.0) @ up_t + c
            opt.zero_grad()
            (-low.sum()).backward()
            opt.step()
            with torch.no_grad():
                for p in trainable:
                    p.clamp_(0.0, 1.0)
        for j in range(k):
            if out[j] is None:
                out[j] = np.broadcast_to(relax[j].s_low, (m, relax[j].s_low.size)).copy()
            if cols[j].numel():
                out[j][rows][:, cols[j].numpy()] = params[j].detach().double().numpy()
    return out


def _relaxations(bounds: list[Bound], states: dict[int, tuple[np.ndarray, np.ndarray]], n: int) -> list[_Relaxation]:
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

    x_lo, x_up = _box(net, lower, upper)
    states = _fixed(net, fixed)
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
        relax = _relaxations(out, states, k)
        w, b = net.weights[k][todo], net.biases[k][todo]
        a, const = np.vstack([w, -w]), np.concatenate([b, -b])
        alphas = _optimise_alphas(net, relax, k, a, const, x_lo, x_up, iters, deadline)
        low = _backsub_lower(net, relax, k, a, const, x_lo, x_up, alphas=alphas)
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
    x_lo, x_up = _box(net, lower, upper)
    states = _fixed(net, fixed)
    spec = np.atleast_2d(np.asarray(C, dtype=np.float64))
    n_relus = len(net.relu_sizes)
    relax = _relaxations(bounds, states, n_relus)
    a, const = spec @ net.weights[-1], spec @ net.biases[-1]
    a_mag = relax[-1].a_mag if n_relus else np.maximum(np.abs(x_lo), np.abs(x_up))
    err0 = np.abs(spec) @ (np.abs(net.weights[-1]) @ a_mag + np.abs(net.biases[-1]))
    alphas = _optimise_alphas(net, relax, n_relus, a, const, x_lo, x_up, iters, deadline) if n_relus else None
    return _backsub_lower(net, relax, n_relus, a, const, x_lo, x_up, err0, net.n_outputs, alphas=alphas)


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
        self.lower, self.upper = _box(net, lower, upper)
        self.states = _fixed(net, fixed)
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
        self._n_relus = n_relus

    @property
    def best(self) -> list[Bound]:
        """The tightest bounds computed so far: LP-tightened, else alpha-CROWN, else CROWN."""
        for layers in (self.tightened_layers, self.alpha_layers):
            if layers is not None:
                return layers
        return self.layers

    def optimised(self, deadline: float | None = None, iters: int = 20) -> tuple[list[Bound], dict[str, int]]:
        """alpha-CROWN bounds (:func:`alpha_tighten`), computed on the first call and kept; a run stopped by
        ``deadline`` is resumed from its bounds by a later call."""
        if self.alpha_layers is not None and self.alpha_stats.get("complete"):
            return self.alpha_layers, self.alpha_stats
        start = self.alpha_layers if self.alpha_layers is not None else self.layers
        out, stats = alpha_tighten(self.net, self.lower, self.upper, start, fixed=self.states, iters=iters,
                                   deadline=deadline)
        self.alpha_stats = {"tightened": self.alpha_stats.get("tightened", 0) + stats["tightened"],
                            "complete": stats["complete"]}
        self.alpha_layers = out
        return out, self.alpha_stats

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
        other = _fixed(net, fixed)
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
        for bounds, relax in self._parts:
            plo, pup = _spec_bounds(self.net, bounds[: self._n_relus], relax, spec, self.lower, self.upper)
            lo, up = (plo, pup) if lo is None else (np.maximum(lo, plo), np.minimum(up, pup))
        return lo, up

    def tightened(self, deadline: float | None = None) -> tuple[list[Bound], dict[str, int]]:
        """LP-tightened bounds (:func:`lp_tighten`), computed on the first call and kept. A run stopped by
        ``deadline`` is kept too, and a later call resumes from its (already tighter) bounds. Starts from the
        alpha-CROWN bounds when :meth:`optimised` has run."""
        if self.tightened_layers is not None and self.lp_stats.get("complete"):
            return self.tightened_layers, self.lp_stats
        start = self.best
        out, stats = lp_tighten(self.net, self.lower, self.upper, start, fixed=self.states, deadline=deadline)
        for key, value in stats.items():
            self.lp_stats[key] = self.lp_stats.get(key, 0) + value if key != "complete" else value
        self.tightened_layers = out
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
    relax: list[_Relaxation],
    spec: np.ndarray,
    x_lo: np.ndarray,
    x_up: np.ndarray,
) -> Bound:
    """Bounds of ``spec @ y`` from the ReLU layers' bounds and relaxations."""
    n_relus = len(relax)
    w = spec @ net.weights[-1]
    b = spec @ net.biases[-1]
    a_mag = relax[-1].a_mag if n_relus else np.maximum(np.abs(x_lo), np.abs(x_up))
    # Size of the terms summed when forming C @ W_L and C @ b_L: their rounding error bounds C @ y's.
    mag0 = np.abs(spec) @ (np.abs(net.weights[-1]) @ a_mag + np.abs(net.biases[-1]))
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
        low = _backsub_lower(net, relax, n_relus, stacked, const, x_lo, x_up, err0, net.n_outputs)
        lo, up = np.maximum(lo, low[:m]), np.minimum(up, -low[m:])
    return lo, up



def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n_cols: int):
    import scipy.sparse as sp

    return sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_cols))


def lp_tighten(
    net: ReluNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    bounds: list[Bound],
    fixed: FixedStates | None = None,
    deadline: float | None = None,
    from_layer: int = 1,
) -> tuple[list[Bound], dict[str, int]]:
    """Tighten the bounds of unstable neurons with linear programs (MIPVerify's "LP" tightening).

    Layer by layer, from ``from_layer`` on: an LP holds the input box, every earlier layer's affine map, the
    exact ReLU of its stable neurons (and of neurons fixed by ``fixed``) and the triangle relaxation of its
    unstable ones; each unstable neuron of the current layer is minimised and maximised (HiGHS dual simplex,
    warm-started between objectives). Tightened bounds feed the next layer's LP. Stops at ``deadline``
    (a ``time.perf_counter()`` value): bounds not tightened by then stay as they were, so the result is always
    sound. LP optima are widened by ``1e-7 * (1 + |value|)`` against solver tolerances.

    Args:
        net, lower, upper, fixed: as in :func:`crown_bounds`.
        bounds: sound bounds to start from (e.g. :func:`crown_bounds`): hidden layers, then the output.
        deadline: time limit.
        from_layer: first ReLU layer to tighten (layer 0's interval bounds over the box are already exact).

    Returns:
        The tightened bounds (same layout) and counts ``{"lps": solved, "tightened": neurons improved,
        "complete": 1 if every unstable neuron was tightened before the deadline else 0}``.
    """
    import time

    import highspy
    import scipy.sparse as sp

    from verify.solvers import _silence_native_stdout

    lo_in, up_in = _box(net, lower, upper)
    fx = _fixed(net, fixed)
    out = [(lo.copy(), up.copy()) for lo, up in bounds]
    stats = {"lps": 0, "tightened": 0, "complete": 0}
    n_hidden = len(net.weights) - 1
    with _silence_native_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    # After a change of objective the previous basis stays primal feasible: primal simplex without presolve
    # restarts from it instead of from scratch.
    h.setOptionValue("presolve", "off")
    h.setOptionValue("simplex_strategy", 4)
    inf = highspy.kHighsInf
    n0 = lo_in.size
    for k in range(from_layer, n_hidden):
        if deadline is not None and time.perf_counter() > deadline:
            break
        lo_k, up_k = out[k]
        act_k, ina_k = fx.get(k, (np.zeros(lo_k.size, bool), np.zeros(lo_k.size, bool)))
        todo = np.flatnonzero((lo_k < 0) & (up_k > 0) & ~act_k & ~ina_k)
        if todo.size == 0:
            continue
        # Column layout: x | z_0 a_0 | z_1 a_1 | ... | z_k
        sizes = [net.biases[m].size for m in range(k + 1)]
        z_off, a_off, off = [], [], n0
        for m in range(k + 1):
            z_off.append(off)
            off += sizes[m]
            if m < k:
                a_off.append(off)
                off += sizes[m]
        n_cols = off
        blocks, row_lo, row_up = [], [], []
        col_lo, col_up = [lo_in], [up_in]
        prev_cols = np.arange(n0)
        for m in range(k + 1):
            w, b = net.weights[m], net.biases[m]
            n_m = sizes[m]
            z_cols = z_off[m] + np.arange(n_m)
            lo_m, up_m = out[m]
            col_lo.append(lo_m)
            col_up.append(up_m)
            coo = sp.coo_matrix(-w)
            blocks.append(_csr(np.r_[coo.row, np.arange(n_m)], np.r_[prev_cols[coo.col], z_cols],
                               np.r_[coo.data, np.ones(n_m)], n_m, n_cols))  # z_m - W_m a_{m-1} = b_m
            row_lo.append(b)
            row_up.append(b)
            if m == k:
                break
            a_cols = a_off[m] + np.arange(n_m)
            act, ina = fx.get(m, (np.zeros(n_m, bool), np.zeros(n_m, bool)))
            on = (lo_m >= 0) | act
            dead = ((up_m <= 0) | ina) & ~on
            unst = ~on & ~dead
            col_lo.append(np.zeros(n_m))
            col_up.append(np.where(dead, 0.0, np.maximum(up_m, 0.0)))
            for sel, r_l, r_u in ((np.flatnonzero(on), 0.0, 0.0), (np.flatnonzero(unst), 0.0, inf)):
                if sel.size:  # a - z = 0 (on) / a - z >= 0 (unstable)
                    r = np.arange(sel.size)
                    blocks.append(_csr(np.r_[r, r], np.r_[a_cols[sel], z_cols[sel]],
                                       np.r_[np.ones(sel.size), -np.ones(sel.size)], sel.size, n_cols))
                    row_lo.append(np.full(sel.size, r_l))
                    row_up.append(np.full(sel.size, r_u))
            sel = np.flatnonzero(unst)
            if sel.size:  # a - s z <= -s l, s = u / (u - l): the triangle's upper side
                slope = up_m[sel] / (up_m[sel] - lo_m[sel])
                r = np.arange(sel.size)
                blocks.append(_csr(np.r_[r, r], np.r_[a_cols[sel], z_cols[sel]], np.r_[np.ones(sel.size), -slope],
                                   sel.size, n_cols))
                row_lo.append(np.full(sel.size, -inf))
                row_up.append(-slope * lo_m[sel])
            prev_cols = a_cols
        a_mat = sp.vstack(blocks).tocsr()
        lp = highspy.HighsLp()
        lp.num_col_ = n_cols
        lp.num_row_ = a_mat.shape[0]
        lp.col_cost_ = np.zeros(n_cols)
        lp.col_lower_ = np.concatenate(col_lo)
        lp.col_upper_ = np.concatenate(col_up)
        lp.row_lower_ = np.concatenate(row_lo)
        lp.row_upper_ = np.concatenate(row_up)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = a_mat.indptr
        lp.a_matrix_.index_ = a_mat.indices
        lp.a_matrix_.value_ = a_mat.data
        h.passModel(lp)
        new_lo, new_up = lo_k.copy(), up_k.copy()
        for j in todo:
            if deadline is not None and time.perf_counter() > deadline:
                break
            col = int(z_off[k] + j)
            for sign in (1.0, -1.0):
                h.changeColCost(col, sign)
                if deadline is not None:  # HiGHS compares its limit with its run time summed over all runs
                    h.setOptionValue("time_limit", h.getRunTime() + max(deadline - time.perf_counter(), 0.01))
                h.run()
                stats["lps"] += 1
                if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                    continue
                val = sign * h.getInfo().objective_function_value
                pad = 1e-7 * (1.0 + abs(val))
                if sign > 0:
                    new_lo[j] = max(new_lo[j], val - pad)
                else:
                    new_up[j] = min(new_up[j], val + pad)
            h.changeColCost(col, 0.0)
            if new_lo[j] > lo_k[j] or new_up[j] < up_k[j]:
                stats["tightened"] += 1
        out[k] = (new_lo, new_up)
    # time only moves forward: if the deadline has not passed now, no loop above stopped early
    stats["complete"] = int(deadline is None or time.perf_counter() <= deadline)
    return out, stats
