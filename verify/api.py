"""``verify.verify(network, spec)``: one call, one result; plus NAP robustness and NAP non-ambiguity.

Phases, all inside one wall-clock budget (``timeout`` seconds, every phase included):

1. **attack** — random starts + PGD on the real float32 model; a candidate that re-checks is ``falsified``;
2. **bounds** — interval + CROWN back-substitution; an unsafe clause whose lower bound is positive is
   empty; when every clause is, the property is ``verified`` without a MILP; for clauses still open,
   alpha-CROWN (relaxation slopes optimised by gradient ascent, ``alpha_share`` of the time) tightens the
   unstable neurons' bounds and then bounds the clauses again;
3. **milp** — big-M MILP per remaining clause (CBC or HiGHS through PuLP), first a quick try per clause on
   the tightest bounds so far (``quick_share`` of the time left, at most ``quick_cap`` s and about a tenth
   of the time in all); NAP queries, whose fixed states remove most binaries, usually end here;
3b. **bab** — clauses still open go to branch and bound on ReLU splits (:mod:`verify.bab`): domains bounded
   with CROWN back-substitution and optimised alpha (relaxation slopes) and beta (split multipliers), split
   on the neuron with the largest relaxation share, lowest bound first; ``bab_share`` of the time left;
3c. clauses BaB leaves open are retried by the MILP, with all the time left, after LP tightening of the
   unstable neurons' bounds (skipped when alpha-CROWN ran to completion: its optimal slopes give the same
   bounds as those LPs). Only a solver's or BaB's proof counts for ``verified``; a solver stopped by its
   limit gives ``timeout``.

Every counterexample is re-run through the extracted network, the source torch model (float32) and, for
networks loaded from ONNX, the ONNX reference runtime; it must violate the property on each (and follow the
fixed ReLU states strictly, for NAP properties), else the answer is ``unknown``, never ``falsified``.

Example:
    >>> from verify.network import ReluNetwork
    >>> from verify.vnnlib import read_vnnlib
    >>> net = ReluNetwork.from_onnx("mnist-net_256x2.onnx")               # doctest: +SKIP
    >>> spec = read_vnnlib("prop_0_0.03.vnnlib", net.n_inputs, net.n_outputs)  # doctest: +SKIP
    >>> verify(net, spec, timeout=120).vnncomp                            # doctest: +SKIP
    'unsat'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from probe.core.errors import InvalidParameterError
from verify.errors import NetworkError, SpecError
from verify.properties import Spec, nap_ambiguity_spec, nap_robustness_spec
from verify.result import Counterexample, VerificationResult
from verify.solvers import check_solver

__all__ = ["nap_ambiguity", "nap_robustness", "nap_states", "verify"]

logger = logging.getLogger(__name__)


def _check_inputs(network, spec: Spec, timeout: float, solver: str) -> None:
    from verify.network import ReluNetwork

    if not isinstance(timeout, (int, float)) or not timeout > 0 or timeout != timeout:
        raise InvalidParameterError(f"timeout must be a positive number of seconds, got {timeout!r}")
    check_solver(solver)
    if not isinstance(network, ReluNetwork):
        raise NetworkError(
            f"verify() takes a ReluNetwork, got {type(network).__name__}; build one with "
            "ReluNetwork.from_torch(model, input_shape) or ReluNetwork.from_onnx(path)"
        )
    if spec.n_inputs != network.n_inputs:
        raise SpecError(f"the property has {spec.n_inputs} inputs but the network has {network.n_inputs}")
    if spec.n_outputs is not None and spec.n_outputs != network.n_outputs:
        raise SpecError(f"the property has {spec.n_outputs} outputs but the network has {network.n_outputs}")
    for k, (act, ina) in (spec.relu_states or {}).items():
        if not 0 <= k < len(network.relu_sizes):
            raise SpecError(f"relu_states names ReLU layer {k}, but the network has {len(network.relu_sizes)}")
        if len(act) != network.relu_sizes[k] or len(ina) != network.relu_sizes[k]:
            raise SpecError(f"relu_states of layer {k} have {len(act)} entries, the layer has "
                            f"{network.relu_sizes[k]} neurons")


def _follows_states(network, spec: Spec, x: np.ndarray) -> bool:
    if not spec.relu_states:
        return True
    pre = network.pre_activations(x.reshape(1, -1))
    for k, (act, ina) in spec.relu_states.items():
        z = pre[k].reshape(-1)
        if np.any(z[act] <= 0) or np.any(z[ina] > 0):
            return False
    return True


def _confirm(network, spec: Spec, x: np.ndarray) -> Counterexample | None:
    """Re-run a candidate everywhere; return it only if it violates the property on every run."""
    x = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), spec.lower, spec.upper)
    y = network.forward(x.reshape(1, -1))[0]
    y_src = np.asarray(network.run_source(x.reshape(1, -1)), dtype=np.float64).reshape(-1)
    y_onnx = network.run_onnx(x.reshape(1, -1))
    y_onnx = None if y_onnx is None else np.asarray(y_onnx, dtype=np.float64).reshape(-1)
    if not (spec.violated_by(y) and spec.violated_by(y_src)):
        return None
    if y_onnx is not None and not spec.violated_by(y_onnx):
        return None
    if not _follows_states(network, spec, x):
        return None
    return Counterexample(x=x, y=y, y_source=y_src, y_onnx=y_onnx)


def verify(network, spec: Spec, solver: str = "cbc", timeout: float = 60.0, attack: bool = True,
           seed: int = 0, lp_share: float = 0.3, quick_share: float = 0.02,
           quick_cap: float = 3.0, bounds=None, alpha_share: float = 0.1,
           bab_share: float | None = None) -> VerificationResult:
    """Prove or refute ``spec`` on ``network``.

    Args:
        network: a :class:`verify.network.ReluNetwork`.
        spec: a :class:`verify.properties.Spec` (robustness, NAP property or a VNN-LIB file's content).
        solver: ``"cbc"`` (default) or ``"highs"``.
        timeout: wall-clock seconds for everything (> 0).
        attack: run the PGD falsification phase first (skipped for specs with fixed ReLU states).
        seed: seed of the attack.
        quick_share, quick_cap: each clause first gets ``quick_share`` of the time left (at least 1 s, at
            most ``quick_cap`` s; about a tenth of the time left in all) on the bounds so far; ``quick_cap=0``
            skips that pass.
        alpha_share: share of the time left after CROWN that alpha-CROWN (optimised relaxation slopes, for
            the unstable neurons' bounds and then for the open clauses) may take; 0 skips it.
        bab_share: share of the time left after the quick MILP pass that branch and bound on ReLU splits
            (:mod:`verify.bab`) may take on the clauses still open; clauses it leaves open go back to the
            MILP. 0 skips it. ``None`` (default): 0.8, but 0 for properties with fixed ReLU states (NAP
            queries), where the states remove most binaries and the MILP after LP tightening is faster than
            branching on the whole input domain.
        lp_share: share of the time then left that LP tightening of unstable neurons may take before the
            clauses still open are retried.
        bounds: optional :class:`verify.bounds.BoxBounds` of this network, box and fixed ReLU states,
            shared between queries on the same box (e.g. one per competitor class): its CROWN bounds are
            used as they are and its LP-tightened bounds are computed at most once. ``None``: computed here.

    Returns:
        A :class:`VerificationResult`; ``falsified`` always carries a re-checked counterexample.

    Raises:
        InvalidParameterError: non-positive timeout.
        SolverError: unknown or missing solver.
        NetworkError / SpecError: the network or the property is unusable, or their sizes disagree, or
            ``bounds`` belong to another network, box or set of fixed states.
    """
    from verify import bounds as bnd
    from verify.attack import pgd_attack
    from verify.milp import MilpEncoding

    _check_inputs(network, spec, timeout, solver)
    if bab_share is None:
        bab_share = 0.0 if spec.relu_states else 0.8
    t0 = time.perf_counter()
    deadline = t0 + float(timeout)
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"clauses": len(spec.unsafe)}

    def result(status: str, method: str = "", cex: Counterexample | None = None, message: str = "") -> VerificationResult:
        timings["total"] = time.perf_counter() - t0
        if status in ("verified", "falsified") and timings["total"] > timeout:
            status, cex, message = "timeout", None, f"answer came after the {timeout} s limit; {message}"
        return VerificationResult(status, method, cex, message, timings, stats, solver)

    # 1. attack
    if attack and not spec.relu_states:
        ta = time.perf_counter()
        candidate = pgd_attack(network, spec, seed=seed, deadline=deadline)
        if candidate is not None:
            cex = _confirm(network, spec, candidate)
            timings["attack"] = time.perf_counter() - ta
            if cex is not None:
                return result("falsified", "attack", cex)
        timings["attack"] = time.perf_counter() - ta
    if time.perf_counter() > deadline:
        return result("timeout", message="time ran out during the attack")

    # 2. bounds
    tb = time.perf_counter()
    fixed = spec.relu_states or None
    if bounds is None:
        bounds = bnd.BoxBounds(network, spec.lower, spec.upper, fixed=fixed)
    elif not (isinstance(bounds, bnd.BoxBounds) and bounds.matches(network, spec.lower, spec.upper, fixed)):
        raise SpecError("bounds= must be a verify.bounds.BoxBounds computed for this network, the property's "
                        "input box and its relu_states; build it with BoxBounds(network, spec.lower, "
                        "spec.upper, spec.relu_states)")
    else:
        stats["shared_bounds"] = True
    layer_bounds = bounds.best  # shared bounds may already be tightened by an earlier query
    hidden, out_b = layer_bounds[:-1], layer_bounds[-1]
    stats["unstable"] = [int(np.sum((lo < 0) & (hi > 0))) for lo, hi in hidden]
    # A fixed state that the bounds contradict means no input follows the states: nothing is unsafe.
    for k, (act, ina) in (spec.relu_states or {}).items():
        lo, hi = hidden[k]
        if np.any(act & (hi <= 0)) or np.any(ina & (lo > 0)):
            timings["bounds"] = time.perf_counter() - tb
            return result("verified", "bounds", message=f"no input in the box keeps ReLU layer {k} as fixed")
    open_clauses = []
    for i, (a, b) in enumerate(spec.unsafe):
        if a.size == 0:
            open_clauses.append(i)
            continue
        lower, _ = bounds.spec_bounds(a)
        if not np.any(lower - b > 0):
            open_clauses.append(i)
    timings["bounds"] = time.perf_counter() - tb
    stats["clauses_open_after_bounds"] = len(open_clauses)
    if not open_clauses:
        return result("verified", "bounds")
    if time.perf_counter() > deadline:
        return result("timeout", message="time ran out computing bounds")

    # 2b. alpha-CROWN: optimised slopes for the unstable neurons' bounds, then for the open clauses
    if alpha_share > 0 and any(spec.unsafe[i][0].size for i in open_clauses):
        ta = time.perf_counter()
        stop = ta + alpha_share * (deadline - ta)
        _, alpha_stats = bounds.optimised(deadline=stop)
        stats["alpha"] = dict(alpha_stats)
        still = []
        for i in open_clauses:
            a, b = spec.unsafe[i]
            if a.size == 0 or not np.any(bounds.spec_lower(a, deadline=stop) - b > 0):
                still.append(i)
        open_clauses = still
        hidden, out_b = bounds.best[:-1], bounds.best[-1]
        stats["unstable_after_alpha"] = [int(np.sum((lo < 0) & (hi > 0))) for lo, hi in hidden]
        stats["clauses_open_after_alpha"] = len(open_clauses)
        timings["alpha"] = time.perf_counter() - ta
        if not open_clauses:
            return result("verified", "bounds")
        if time.perf_counter() > deadline:
            return result("timeout", message="time ran out computing alpha-CROWN bounds")

    # 3. MILP, clause by clause: first a short try on the bounds so far; clauses the solver cannot settle
    # quickly are retried after LP tightening of the unstable neurons (tighter big-M, fewer binaries).
    tm = time.perf_counter()
    enc = MilpEncoding(network, spec, hidden, output_bounds=out_b)
    timings["build"] = time.perf_counter() - tm
    stats.update(binaries=enc.n_binaries, constraints=enc.n_constraints, solves=[])
    left = deadline - time.perf_counter()
    # the quick pass takes at most about a tenth of the time left, whatever the number of clauses
    quick = min(max(1.0, quick_share * left), quick_cap, max(0.5, 0.1 * left / max(1, len(open_clauses))))
    if quick_cap > 0:
        verdict, pending, unknown = _solve_clauses(network, spec, enc, open_clauses, solver, deadline, stats, quick)
    else:
        verdict, pending, unknown = None, list(open_clauses), []
    if verdict is None and pending and bab_share > 0:
        # 3b. branch and bound on ReLU splits (alpha/beta-CROWN bounds per domain) for the clauses the quick
        # MILP left open
        timings["milp_quick"] = time.perf_counter() - tm
        verdict, pending = _bab_phase(network, spec, bounds, hidden, pending, solver, deadline, bab_share,
                                      stats, timings)
        if verdict is None and not pending and not unknown:
            return result("verified", "bab")
        if verdict is not None and verdict[0] == "falsified":
            return result("falsified", "bab", verdict[1])
        tm = time.perf_counter()
    # alpha-CROWN run to completion is about as tight as LP tightening (its optimal slopes give the LP bound)
    # and much faster: the LPs would then mostly take MILP time for nothing.
    if verdict is None and pending and not bounds.alpha_stats.get("complete"):
        tl = time.perf_counter()
        tightened, lp_stats = bounds.tightened(deadline=tl + lp_share * (deadline - tl))
        stats["lp_tightening"] = dict(lp_stats)
        stats["unstable_after_lp"] = [int(np.sum((lo < 0) & (hi > 0))) for lo, hi in tightened[:-1]]
        timings["lp_bounds"] = time.perf_counter() - tl
        enc = MilpEncoding(network, spec, tightened[:-1], output_bounds=out_b)
        stats["binaries_after_lp"] = enc.n_binaries
    if verdict is None and pending:
        verdict, pending, more_unknown = _solve_clauses(network, spec, enc, pending, solver, deadline, stats, None)
        unknown += more_unknown
    timings["milp"] = time.perf_counter() - tm - timings.get("lp_bounds", 0.0) + timings.get("milp_quick", 0.0)
    if verdict is not None:
        kind, payload = verdict
        if kind == "falsified":
            return result("falsified", "milp", payload)
        return result("error", message=payload)
    if pending:
        return result("timeout", message=f"the solver hit the time limit on clause(s) {pending}")
    if unknown:
        return result("unknown", message=f"clauses {unknown}: solver candidates did not re-check on the network")
    return result("verified", "milp")


def _bab_phase(network, spec: Spec, bounds, hidden, clauses: list[int], solver: str, deadline: float,
               bab_share: float, stats: dict[str, Any], timings: dict[str, float]):
    """Branch and bound (:mod:`verify.bab`) on ``clauses``, lowest bound first, within ``bab_share`` of the
    time left. Returns ``(verdict, still_open)``; ``verdict`` is ``("falsified", counterexample)`` or None."""
    from verify.bab import bab_clause

    tbab = time.perf_counter()
    stop = tbab + bab_share * (deadline - tbab)
    stats["bab"] = []
    still: list[int] = []

    def key(i: int) -> float:  # the clause with the lowest bound first: the likeliest counterexample
        a, b = spec.unsafe[i]
        return float(np.max(bounds.spec_bounds(a)[0] - b)) if a.size else np.inf

    confirmed: list[Counterexample] = []

    def check(x: np.ndarray) -> bool:  # BaB's candidates are re-checked here, once
        cex = _confirm(network, spec, x)
        if cex is not None:
            confirmed.append(cex)
        return cex is not None

    order = sorted(clauses, key=key)
    for n, i in enumerate(order):
        if spec.unsafe[i][0].size == 0:
            still.append(i)
            continue
        if time.perf_counter() >= stop:
            still.extend(order[n:])
            break
        out = bab_clause(network, spec, i, hidden, stop, solver=solver, fixed=spec.relu_states, check=check)
        stats["bab"].append({"clause": i, "status": out.status, **out.stats})
        if out.status == "falsified":  # only after check() accepted the candidate
            timings["bab"] = time.perf_counter() - tbab
            return ("falsified", confirmed[-1]), still
        if out.status != "verified":
            still.extend(order[n:])
            break
    timings["bab"] = time.perf_counter() - tbab
    stats["clauses_open_after_bab"] = len(still)
    return None, still


def _solve_clauses(network, spec: Spec, enc, clauses: list[int], solver: str, deadline: float,
                   stats: dict[str, Any], per_clause: float | None):
    """Solve clauses in turn, each with ``per_clause`` seconds (None: all the time left). With a
    ``per_clause`` limit (the quick pass) a solver failure leaves the clause pending instead of ending
    everything with ``error``.

    Returns ``(verdict, pending, unknown)``: ``verdict`` is ``("falsified", counterexample)``,
    ``("error", message)`` or None; ``pending`` the clauses stopped by a time limit; ``unknown`` those whose
    solver candidates did not re-check.
    """
    pending, unknown = [], []
    for i in clauses:
        # PuLP hands the model to the solver outside the solver's own time limit (seconds on large models):
        # keep the largest overrun seen so far on this query in reserve, so the query keeps its deadline
        overrun = max([0.0, *(s["seconds"] - s["limit"] for s in stats["solves"])])
        left = deadline - time.perf_counter() - overrun
        if left <= 0.05:
            pending.append(i)
            continue
        limit = left if per_clause is None else min(per_clause, left)
        out = enc.solve_clause(i, solver, limit)
        stats["solves"].append({"clause": i, "status": out.status, "seconds": round(out.solve.seconds, 4),
                                "limit": round(limit, 2), "raw": out.solve.raw_status,
                                "sol_status": out.solve.raw_sol_status})
        if out.status == "infeasible":
            continue
        if out.status == "feasible":
            cex = _confirm(network, spec, out.x)
            if cex is None and deadline - time.perf_counter() > 0.05:
                # numerically borderline: ask once for a deeper violation
                deeper = enc.solve_clause(i, solver, deadline - time.perf_counter(), margin=1e-4)
                if deeper.status == "feasible":
                    cex = _confirm(network, spec, deeper.x)
            if cex is not None:
                return ("falsified", cex), pending, unknown
            unknown.append(i)
            continue
        if out.status == "timeout":
            pending.append(i)
            continue
        if per_clause is not None:
            # a quick try that failed (e.g. CBC's "Not Solved" before its limit on a loaded machine) is not
            # final: the clause is retried by branch and bound and the full MILP, which report for it
            pending.append(i)
            continue
        return ("error", f"solver {solver} failed on clause {i}: {out.solve.raw_status}"), pending, unknown
    return None, pending, unknown


def nap_states(network, naps, classes: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The union of the NAPs of ``classes`` as fixed ReLU states over ``network``'s ReLU layers.

    Raises:
        SpecError: the NAPs were mined on other ReLU layers or layer sizes.
    """
    names = list(network.relu_names)
    states: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for layer in naps.layers:
        if layer not in names:
            raise SpecError(f"NAP layer {layer!r} is not a ReLU layer of the network (it has {names})")
        k = names.index(layer)
        size = network.relu_sizes[k]
        act = np.zeros(size, dtype=bool)
        ina = np.zeros(size, dtype=bool)
        for c in classes:
            a = naps.active[layer][c].numpy()
            i = naps.inactive[layer][c].numpy()
            if a.size != size:
                raise SpecError(f"NAP layer {layer!r} has {a.size} neurons, the network layer has {size}")
            act |= a
            ina |= i
        states[k] = (act, ina)
    return states


def _domain(network, lower: np.ndarray | None, upper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The input box of a NAP property: the given bounds, else the unit box [0, 1]^n."""
    n = network.n_inputs
    lo = np.zeros(n) if lower is None else np.asarray(lower, dtype=np.float64)
    hi = np.ones(n) if upper is None else np.asarray(upper, dtype=np.float64)
    return lo, hi


def nap_robustness(network, naps, classes: Sequence[int] | None = None, lower: np.ndarray | None = None,
                   upper: np.ndarray | None = None, solver: str = "cbc", timeout: float = 60.0,
                   per_competitor: bool = True) -> dict[int, list[VerificationResult] | VerificationResult]:
    """NAP robustness: every input of the box (default: the unit box [0, 1]^n) that follows NAP_c is
    classified c.

    Args:
        network: the ReluNetwork the NAPs were mined on (ReLU names must match ``naps.layers``).
        naps: a :class:`probe.nap.NAPSet`.
        classes: which classes (default: all with a non-empty NAP).
        lower, upper: the input box (default 0 and 1).
        solver, timeout: as in :func:`verify` (``timeout`` per query).
        per_competitor: one query per (class, competitor) pair (the paper's unit, each with its own
            ``timeout``); otherwise one query per class. The queries of one class share one
            :class:`verify.bounds.BoxBounds`: CROWN bounds computed once per class (outside the queries'
            timeouts) and LP-tightened bounds computed by the first query that needs them, then reused.

    Returns:
        Per class, the list of per-competitor results (or one result).
    """
    from verify.bounds import BoxBounds

    lo, hi = _domain(network, lower, upper)
    classes = [c for c in range(naps.num_classes) if c not in naps.empty_classes] if classes is None else classes
    out: dict[int, Any] = {}
    for c in classes:
        states = nap_states(network, naps, [c])
        if per_competitor:
            # one set of bounds (CROWN, then LP tightening once) for the class's box and NAP, shared by its
            # competitor queries
            shared = BoxBounds(network, lo, hi, states)
            out[c] = [verify(network, nap_robustness_spec(lo, hi, states, c, network.n_outputs, targets=[j]),
                             solver=solver, timeout=timeout, attack=False, bounds=shared)
                      for j in range(network.n_outputs) if j != c]
        else:
            out[c] = verify(network, nap_robustness_spec(lo, hi, states, c, network.n_outputs), solver=solver,
                            timeout=timeout, attack=False)
    return out


def nap_ambiguity(network, naps, pairs: Sequence[tuple[int, int]] | None = None, lower: np.ndarray | None = None,
                  upper: np.ndarray | None = None, solver: str = "cbc",
                  timeout: float = 60.0) -> dict[tuple[int, int], VerificationResult]:
    """NAP non-ambiguity: no input of the box follows both NAP_i and NAP_j. ``verified`` = non-ambiguous;
    ``falsified`` comes with an input that follows both. Pairs with a neuron active in one NAP and inactive
    in the other are decided without a solver (method ``"nap-conflict"``).
    """
    lo, hi = _domain(network, lower, upper)
    valid = [c for c in range(naps.num_classes) if c not in naps.empty_classes]
    pairs = [(i, j) for i in valid for j in valid if i < j] if pairs is None else list(pairs)
    disjoint = naps.disjoint_pairs()
    out = {}
    for i, j in pairs:
        if bool(disjoint[i, j]):
            out[(i, j)] = VerificationResult("verified", "nap-conflict", solver=solver,
                                             message="a neuron is active in one NAP and inactive in the other")
            continue
        states = nap_states(network, naps, [i, j])
        out[(i, j)] = verify(network, nap_ambiguity_spec(lo, hi, states, (i, j)), solver=solver, timeout=timeout,
                             attack=False)
    return out
