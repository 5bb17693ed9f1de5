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


def _compact_model(net: ReluNetwork, out: list[Bound], fx: dict, lo_in: np.ndarray, up_in: np.ndarray, k: int,
                   exact: bool, bound_rows: bool):
    """The HiGHS model of layers ``0..k-1`` over the input box, with a column only for what can vary freely:
    ``x | z_u a_u`` of every unstable neuron (then one binary per unstable neuron when ``exact``).

    A stable neuron needs no column: an active one is the identity (``a = z``), an inactive one is zero, so
    the pre-activation of every neuron is an affine function ``E @ v + e`` of the columns ``v``, composed
    layer by layer in float64. Rows: ``z_u - E_u @ v = e_u`` for each unstable neuron, the triangle
    relaxation (``a >= z``, ``a <= s (z - l)``; ``a >= 0`` and ``l <= z <= u`` as column bounds) and, when
    ``exact``, the big-M encoding (``a <= u d``, ``a <= z - l (1 - d)``); a neuron whose state ``fx`` fixes
    keeps its sign as a row (``E v + e >= 0`` active, ``<= 0`` inactive), and with ``bound_rows`` every
    stable neuron keeps its bounds as a row (they cut the LP relaxation, at the cost of a dense row each).

    Returns ``(model, E_k, e_k)``: the pre-activation of layer ``k`` is ``E_k @ v + e_k``.
    """
    import highspy
    import scipy.sparse as sp

    inf = highspy.kHighsInf
    n0 = lo_in.size
    unstable, states = [], []
    for m in range(k):
        lo_m, up_m = out[m]
        act, ina = fx.get(m, (np.zeros(lo_m.size, bool), np.zeros(lo_m.size, bool)))
        on = (lo_m >= 0) | act
        dead = ((up_m <= 0) | ina) & ~on
        unstable.append(np.flatnonzero(~on & ~dead))
        states.append((on, dead, act, ina))
    counts = [u.size for u in unstable]
    z_off = n0 + 2 * np.cumsum([0, *counts])[:-1]  # z_u of layer m, then its a_u
    n_cont = n0 + 2 * sum(counts)
    n_cols = n_cont + (sum(counts) if exact else 0)
    d_off = n_cont + np.cumsum([0, *counts])[:-1]
    post = np.zeros((n0, n_cols))  # the post-activation of the layer before, as E @ v + e
    post[:, :n0] = np.eye(n0)
    post_c = np.zeros(n0)
    blocks, row_lo, row_up = [], [], []  # row blocks over v, with their bounds

    def add(cols: list[np.ndarray], vals: list[np.ndarray], lo: np.ndarray | float, up: np.ndarray | float) -> None:
        """One row per unstable neuron of the layer: ``sum_t vals[t] * v[cols[t]]`` within ``[lo, up]``."""
        n = cols[0].size
        r = np.arange(n)
        blocks.append(_csr(np.tile(r, len(cols)), np.concatenate(cols),
                           np.concatenate([np.broadcast_to(v, (n,)) for v in vals]), n, n_cols))
        row_lo.append(np.broadcast_to(lo, (n,)))
        row_up.append(np.broadcast_to(up, (n,)))

    col_lo, col_up = [lo_in], [up_in]
    for m in range(k + 1):
        e_mat = net.weights[m] @ post
        e_c = net.weights[m] @ post_c + net.biases[m]
        if m == k:
            break
        lo_m, up_m = out[m]
        on, dead, act, ina = states[m]
        u = unstable[m]
        z_cols = z_off[m] + np.arange(u.size)
        a_cols = z_cols + u.size
        rows = e_mat[u].copy()
        rows[np.arange(u.size), z_cols] -= 1.0  # E v - z = -e
        blocks.append(sp.csr_matrix(rows))
        row_lo.append(-e_c[u])
        row_up.append(-e_c[u])
        keep = (act & (lo_m <= 0)) | (ina & (up_m >= 0))
        if bound_rows:
            keep |= (on | dead) & ~act & ~ina
        keep_lo = np.where(act, 0.0, np.where(ina, -inf, lo_m))
        keep_up = np.where(ina, 0.0, np.where(act, inf, up_m))
        if keep.any():
            blocks.append(sp.csr_matrix(e_mat[keep]))
            row_lo.append(keep_lo[keep] - e_c[keep])
            row_up.append(keep_up[keep] - e_c[keep])
        lo_u, up_u = lo_m[u], up_m[u]
        col_lo += [lo_u, np.zeros(u.size)]
        col_up += [up_u, up_u]
        if u.size:
            slope = up_u / (up_u - lo_u)
            add([a_cols, z_cols], [1.0, -1.0], 0.0, inf)  # a >= z
            add([a_cols, z_cols], [1.0, -slope], -inf, -slope * lo_u)  # the triangle's upper side
            if exact:
                d_cols = d_off[m] + np.arange(u.size)
                add([a_cols, d_cols], [1.0, -up_u], -inf, 0.0)  # a <= u d
                add([a_cols, z_cols, d_cols], [1.0, -1.0, -lo_u], -inf, -lo_u)  # a <= z - l (1 - d)
        post = np.where(on[:, None], e_mat, 0.0)
        post_c = np.where(on, e_c, 0.0)
        post[u] = 0.0
        post[u, a_cols] = 1.0
        post_c[u] = 0.0
    if exact:
        col_lo.append(np.zeros(n_cols - n_cont))
        col_up.append(np.ones(n_cols - n_cont))
    a_mat = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, n_cols))
    lp = highspy.HighsLp()
    lp.num_col_ = n_cols
    lp.num_row_ = a_mat.shape[0]
    lp.col_cost_ = np.zeros(n_cols)
    lp.col_lower_ = np.concatenate(col_lo)
    lp.col_upper_ = np.concatenate(col_up)
    lp.row_lower_ = np.concatenate(row_lo) if row_lo else np.zeros(0)
    lp.row_upper_ = np.concatenate(row_up) if row_up else np.zeros(0)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = a_mat.indptr
    lp.a_matrix_.index_ = a_mat.indices
    lp.a_matrix_.value_ = a_mat.data
    if exact and n_cols > n_cont:
        lp.integrality_ = [highspy.HighsVarType.kContinuous] * n_cont + \
            [highspy.HighsVarType.kInteger] * (n_cols - n_cont)
    return lp, e_mat, e_c


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
    bound_rows: bool | None = None,
    workers: int = 1,
    settled: dict[int, np.ndarray] | None = None,
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
        bound_rows: keep every stable neuron's bounds as a row (they cut the LP relaxation, a dense row each);
            ``None``: for LPs, not for MILPs (see :func:`_compact_model`).
        workers: threads solving a layer's neurons side by side, each on its own HiGHS copy of the model (the
            neurons are independent; HiGHS runs without the GIL): about ``workers`` times the neurons per
            second on as many free cores, and the same bounds when nothing stops early.
        settled: optional ``{layer: boolean mask}``, updated in place: neurons marked there are skipped, and
            a neuron whose two programs were solved to optimality (its bounds exact for the model) is marked.
            A second call with a longer ``per_neuron`` then re-solves only the neurons the first left open.

    Raises:
        InvalidParameterError: ``workers`` is not a positive integer.

    Returns:
        The tightened bounds (same layout) and counts ``{"lps": solved, "tightened": neurons improved,
        "settled": neurons solved to optimality both ways, "complete": 1 if every unstable neuron was
        tightened before the deadline else 0}``.

    Example:
        >>> tight, stats = lp_tighten(net, lo, up, crown_bounds(net, lo, up), to_layer=2, exact=True,
        ...                           deadline=time.perf_counter() + 30)            # doctest: +SKIP
    """
    import time

    from probe.core.errors import InvalidParameterError
    from probe.core.validate import check_int

    check_int("workers", workers, 1, hint=" (threads)")
    lo_in, up_in = check_box(net, lower, upper)
    fx = check_fixed(net, fixed)
    out = [(lo.copy(), up.copy()) for lo, up in bounds]
    stats = {"lps": 0, "tightened": 0, "settled": 0, "complete": 0}
    n_hidden = len(net.weights) - 1
    last = n_hidden - 1 if to_layer is None else min(int(to_layer), n_hidden - 1)
    solvers = [_highs(exact) for _ in range(workers)]
    for k in range(from_layer, last + 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        lo_k, up_k = out[k]
        act_k, ina_k = fx.get(k, (np.zeros(lo_k.size, bool), np.zeros(lo_k.size, bool)))
        done_k = None
        if settled is not None:
            done_k = settled.setdefault(k, np.zeros(lo_k.size, bool))
            if done_k.shape != lo_k.shape:
                raise InvalidParameterError(f"settled[{k}] must be a boolean mask of layer {k}'s {lo_k.size} "
                                            f"neurons, got shape {done_k.shape}")
        todo = np.flatnonzero((lo_k < 0) & (up_k > 0) & ~act_k & ~ina_k
                              & (True if done_k is None else ~done_k))
        if todo.size == 0:
            continue
        lp, e_mat, e_c = _compact_model(net, out, fx, lo_in, up_in, k, exact,
                                        (not exact) if bound_rows is None else bound_rows)
        new_lo, new_up = lo_k.copy(), up_k.copy()
        # the neurons of one layer are independent: each thread solves every workers-th of them on its own
        # HiGHS copy of the model (highspy releases the GIL while HiGHS runs); each writes only its own entries
        parts = [todo[w::workers] for w in range(min(workers, todo.size))]
        exact_k = np.zeros(lo_k.size, bool)
        jobs = [(solvers[w], lp, e_mat, e_c, part, new_lo, new_up, exact_k, deadline, per_neuron, exact)
                for w, part in enumerate(parts)]
        if len(jobs) == 1:
            counts = [_solve_neurons(*jobs[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(jobs)) as pool:
                counts = list(pool.map(lambda job: _solve_neurons(*job), jobs))
        stats["lps"] += sum(c for c, _ in counts)
        stats["tightened"] += sum(t for _, t in counts)
        stats["settled"] += int(exact_k.sum())
        if done_k is not None:
            done_k |= exact_k
        out[k] = (new_lo, new_up)
    # time only moves forward: if the deadline has not passed now, no loop above stopped early
    stats["complete"] = int(deadline is None or time.perf_counter() <= deadline)
    return out, stats


def _highs(exact: bool):
    """A quiet HiGHS instance set up for :func:`lp_tighten` (LPs, or MILPs whose dual bound alone is used)."""
    import highspy

    from verify.solvers import silence_native_stdout

    with silence_native_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    # HiGHS' defaults (presolve on, its own choice of simplex): primal simplex without presolve, warm-started
    # from the previous objective's basis, was 10x slower per LP on mnist-net_256x4 layer 1 (0.21 s against
    # 0.02 s) and stalled on some objectives of deeper layers (docs/decisions.md).
    if exact:
        # Only the dual bound is used: primal heuristics (sub-MIPs most of all) took two thirds of the time
        for name in ("rens", "rins", "feasibility_jump", "root_reduced_cost"):
            h.setOptionValue(f"mip_heuristic_run_{name}", False)
        h.setOptionValue("mip_heuristic_effort", 0.0)
    return h


def _solve_neurons(h, lp, e_mat: np.ndarray, e_c: np.ndarray, neurons: np.ndarray, new_lo: np.ndarray,
                   new_up: np.ndarray, exact_k: np.ndarray, deadline: float | None, per_neuron: float | None,
                   exact: bool) -> tuple[int, int]:
    """Minimise and maximise each of ``neurons`` (pre-activation ``e_mat[j] @ v + e_c[j]``) over ``lp`` on the
    HiGHS instance ``h``, intersecting ``new_lo`` / ``new_up`` in place with each padded bound and marking in
    ``exact_k`` the neurons whose two programs were solved to optimality; stops at ``deadline``. Returns
    ``(programs solved, neurons tightened)``."""
    import time

    import highspy

    h.passModel(lp)
    # with no unstable neuron before layer k the model is an LP, whose HiGHS answer has no MIP dual bound
    mip = exact and bool(len(lp.integrality_))
    cols = np.arange(lp.num_col_, dtype=np.int32)
    solved = tightened = 0
    for j in neurons:
        if deadline is not None and time.perf_counter() > deadline:
            break
        before = (new_lo[j], new_up[j])
        optimal = 0
        for sign in (1.0, -1.0):
            h.changeColsCost(cols.size, cols, sign * e_mat[j])
            limit = None if deadline is None else max(deadline - time.perf_counter(), 0.01)
            if per_neuron is not None:
                limit = per_neuron if limit is None else min(limit, per_neuron)
            if limit is not None:
                # HiGHS compares an LP's limit with its run time summed over all runs, but a MIP's with
                # the time of the current run (measured with highspy 1.16)
                h.setOptionValue("time_limit", limit if mip else h.getRunTime() + limit)
            h.run()
            solved += 1
            optimal += h.getModelStatus() == highspy.HighsModelStatus.kOptimal
            val = _objective_bound(h, mip)
            if val is None:
                continue
            val = sign * val + e_c[j]
            pad = 1e-7 * (1.0 + abs(val))
            if sign > 0:
                new_lo[j] = max(new_lo[j], val - pad)
            else:
                new_up[j] = min(new_up[j], val + pad)
        if new_lo[j] > before[0] or new_up[j] < before[1]:
            tightened += 1
        exact_k[j] = optimal == 2
    return solved, tightened


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
