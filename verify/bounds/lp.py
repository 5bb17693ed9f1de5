"""Intermediate bounds by linear programs: each unstable neuron minimised and maximised over the LP relaxation
of the layers before it (HiGHS).

Example:
    >>> tight, stats = lp_tighten(net, lower, upper, crown_bounds(net, lower, upper))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from verify.bounds.box import Bound, FixedStates, check_box, check_fixed

if TYPE_CHECKING:
    from verify.network import ReluNetwork

__all__ = ["lp_tighten"]


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n_cols: int):
    import scipy.sparse as sp

    return sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_cols))


def _layer_model(net: ReluNetwork, out: list[Bound], fx: dict, lo_in: np.ndarray, up_in: np.ndarray, k: int,
                 exact: bool):
    """The HiGHS model whose columns are ``x | z_0 a_0 | ... | z_k`` (then one binary per unstable neuron of
    layers ``0..k-1`` when ``exact``): the box, the affine maps, the exact ReLU of stable and fixed neurons,
    the triangle relaxation of unstable ones and, when ``exact``, their big-M encoding
    (``a <= u d``, ``a <= z - l (1 - d)``). Returns the model and the first column of ``z_k``."""
    import highspy
    import scipy.sparse as sp

    inf = highspy.kHighsInf
    n0 = lo_in.size
    sizes = [net.biases[m].size for m in range(k + 1)]
    z_off, a_off, off = [], [], n0
    for m in range(k + 1):
        z_off.append(off)
        off += sizes[m]
        if m < k:
            a_off.append(off)
            off += sizes[m]
    n_cont = off
    unstable = []
    for m in range(k):
        lo_m, up_m = out[m]
        act, ina = fx.get(m, (np.zeros(sizes[m], bool), np.zeros(sizes[m], bool)))
        on = (lo_m >= 0) | act
        unstable.append(np.flatnonzero(~on & ~(((up_m <= 0) | ina) & ~on)))
    d_off = np.cumsum([n_cont, *[u.size for u in unstable]]) if exact else np.full(k + 1, n_cont)
    n_cols = int(d_off[-1])
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
        sel = unstable[m]
        if sel.size:  # a - s z <= -s l, s = u / (u - l): the triangle's upper side
            slope = up_m[sel] / (up_m[sel] - lo_m[sel])
            r = np.arange(sel.size)
            blocks.append(_csr(np.r_[r, r], np.r_[a_cols[sel], z_cols[sel]], np.r_[np.ones(sel.size), -slope],
                               sel.size, n_cols))
            row_lo.append(np.full(sel.size, -inf))
            row_up.append(-slope * lo_m[sel])
        if exact and sel.size:  # a - u d <= 0 and a - z - l d <= -l, d binary
            r = np.arange(sel.size)
            d_cols = d_off[m] + r
            blocks.append(_csr(np.r_[r, r], np.r_[a_cols[sel], d_cols], np.r_[np.ones(sel.size), -up_m[sel]],
                               sel.size, n_cols))
            row_lo.append(np.full(sel.size, -inf))
            row_up.append(np.zeros(sel.size))
            blocks.append(_csr(np.r_[r, r, r], np.r_[a_cols[sel], z_cols[sel], d_cols],
                               np.r_[np.ones(sel.size), -np.ones(sel.size), -lo_m[sel]], sel.size, n_cols))
            row_lo.append(np.full(sel.size, -inf))
            row_up.append(-lo_m[sel])
        prev_cols = a_cols
    if exact:
        n_bin = n_cols - n_cont
        col_lo.append(np.zeros(n_bin))
        col_up.append(np.ones(n_bin))
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
    if exact and n_cols > n_cont:
        lp.integrality_ = [highspy.HighsVarType.kContinuous] * n_cont + \
            [highspy.HighsVarType.kInteger] * (n_cols - n_cont)
    return lp, z_off[k]


def lp_tighten(
    net: ReluNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    bounds: list[Bound],
    fixed: FixedStates | None = None,
    deadline: float | None = None,
    from_layer: int = 1,
    to_layer: int | None = None,
    exact: bool = False,
    per_neuron: float | None = None,
) -> tuple[list[Bound], dict[str, int]]:
    """Tighten the bounds of unstable neurons with linear programs (MIPVerify's "LP" tightening), or with
    mixed-integer programs (``exact=True``: the ReLUs of earlier layers encoded exactly).

    Layer by layer, from ``from_layer`` up to ``to_layer`` (default: the last ReLU layer): a model holds the
    input box, every earlier layer's affine map, the exact ReLU of its stable neurons (and of neurons fixed
    by ``fixed``) and the triangle relaxation of its unstable ones (with ``exact``, also a binary per
    unstable neuron and the big-M constraints, which makes the bound the true extremum when solved to
    optimality); each unstable neuron of the current layer is minimised and maximised (HiGHS; LPs warm-start
    between objectives). Tightened bounds feed the next layer's model. Stops at ``deadline`` (a
    ``time.perf_counter()`` value): bounds not tightened by then stay as they were, so the result is always
    sound. LP optima, and the dual bounds of MILPs stopped by ``per_neuron`` seconds, are widened by
    ``1e-7 * (1 + |value|)`` against solver tolerances.

    Args:
        net, lower, upper, fixed: as in :func:`crown_bounds`.
        bounds: sound bounds to start from (e.g. :func:`crown_bounds`): hidden layers, then the output.
        deadline: time limit.
        from_layer: first ReLU layer to tighten (layer 0's interval bounds over the box are already exact).
        to_layer: last ReLU layer to tighten.
        exact: MILPs instead of LPs (for the first layers: the binaries grow with the depth).
        per_neuron: time limit of one MILP (its dual bound is used when it stops).

    Returns:
        The tightened bounds (same layout) and counts ``{"lps": solved, "tightened": neurons improved,
        "complete": 1 if every unstable neuron was tightened before the deadline else 0}``.

    Example:
        >>> tight, stats = lp_tighten(net, lo, up, crown_bounds(net, lo, up), to_layer=2, exact=True,
        ...                           deadline=time.perf_counter() + 30)            # doctest: +SKIP
    """
    import time

    import highspy

    from verify.solvers import silence_native_stdout

    lo_in, up_in = check_box(net, lower, upper)
    fx = check_fixed(net, fixed)
    out = [(lo.copy(), up.copy()) for lo, up in bounds]
    stats = {"lps": 0, "tightened": 0, "complete": 0}
    n_hidden = len(net.weights) - 1
    last = n_hidden - 1 if to_layer is None else min(int(to_layer), n_hidden - 1)
    with silence_native_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if not exact:
        # After a change of objective the previous basis stays primal feasible: primal simplex without
        # presolve restarts from it instead of from scratch.
        h.setOptionValue("presolve", "off")
        h.setOptionValue("simplex_strategy", 4)
    for k in range(from_layer, last + 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        lo_k, up_k = out[k]
        act_k, ina_k = fx.get(k, (np.zeros(lo_k.size, bool), np.zeros(lo_k.size, bool)))
        todo = np.flatnonzero((lo_k < 0) & (up_k > 0) & ~act_k & ~ina_k)
        if todo.size == 0:
            continue
        lp, z_first = _layer_model(net, out, fx, lo_in, up_in, k, exact)
        h.passModel(lp)
        new_lo, new_up = lo_k.copy(), up_k.copy()
        for j in todo:
            if deadline is not None and time.perf_counter() > deadline:
                break
            col = int(z_first + j)
            for sign in (1.0, -1.0):
                h.changeColCost(col, sign)
                limit = None if deadline is None else max(deadline - time.perf_counter(), 0.01)
                if per_neuron is not None:
                    limit = per_neuron if limit is None else min(limit, per_neuron)
                if limit is not None:  # HiGHS compares its limit with its run time summed over all runs
                    h.setOptionValue("time_limit", h.getRunTime() + limit)
                h.run()
                stats["lps"] += 1
                val = _objective_bound(h, exact)
                if val is None:
                    continue
                val = sign * val
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


def _objective_bound(h, exact: bool) -> float | None:
    """A valid lower bound of the minimised objective: the LP optimum, or a MILP's dual bound (optimal or
    stopped by its time limit); ``None`` when there is none."""
    import highspy

    status = h.getModelStatus()
    if not exact:
        return h.getInfo().objective_function_value if status == highspy.HighsModelStatus.kOptimal else None
    if status == highspy.HighsModelStatus.kInfeasible:
        return None
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        return None
    bound = h.getInfo().mip_dual_bound
    return float(bound) if np.isfinite(bound) else None
