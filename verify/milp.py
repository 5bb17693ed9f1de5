"""Big-M MILP encoding of a ReLU network over an input box (MIPVerify-style, Tjeng et al. 2019), in PuLP.

For ReLU layer k with pre-activation bounds ``l <= z <= u`` (from :mod:`verify.bounds`):

- stable inactive (``u <= 0``) or fixed inactive by a NAP: ``a = 0`` (no variable; a NAP adds ``z <= 0``);
- stable active (``l >= 0``) or fixed active by a NAP: ``a = z`` with ``a >= 0`` (a NAP thus adds ``z >= 0``);
- unstable: ``0 <= a <= u``, ``a >= z``, ``a <= z - l (1 - d)``, ``a <= u d``, with one binary ``d``.

So a NAP *removes* binaries instead of adding constraints. Rows are built from numpy arrays (one affine
expression per neuron from its non-zero weights), never by looping over scalar coefficients.

The network is encoded once per property; each unsafe clause ``A @ y <= b`` is then solved in a shallow
copy of that problem, with ``min t  s.t.  A @ y - b <= t,  t <= 0`` so that the first incumbent is a
counterexample candidate and infeasibility is a proof for that clause.

Example:
    >>> enc = MilpEncoding(net, spec, bounds)          # doctest: +SKIP
    >>> enc.solve_clause(0, "cbc", time_limit=30)      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pulp

from verify.properties import Spec
from verify.solvers import SolveOutcome, solve

__all__ = ["STATE_MARGIN", "ClauseOutcome", "MilpEncoding"]

logger = logging.getLogger(__name__)

_BIG_GAP = 1e12  # an absolute gap this large stops the solver at its first incumbent
#: How far inside its fixed state a neuron's pre-activation is kept by a margin solve (see solve_clause).
STATE_MARGIN = 1e-6


@dataclass
class ClauseOutcome:
    """The solver's answer for one unsafe clause: ``infeasible`` (clause proven empty), ``feasible`` (with a
    candidate input ``x``), ``timeout`` or ``error``."""

    status: str
    x: np.ndarray | None
    solve: SolveOutcome


class MilpEncoding:
    """The MILP of ``net`` on ``spec``'s input box and fixed ReLU states, given pre-activation ``bounds``.

    Args:
        net: a :class:`verify.network.ReluNetwork`.
        spec: the property (its box and ``relu_states``; clauses are added per solve).
        bounds: per ReLU layer ``(lower, upper)`` pre-activation bounds valid on the box (and states).
        output_bounds: optional ``(lower, upper)`` of the network outputs, used to bound the slack variable.
        strict_states: add ``z <= 0`` for every fixed-inactive neuron, even where its upper bound is already
            ``<= 0`` (bounds that were clipped by the fixing itself, as in branch and bound, do not imply it).
            Without it (the default) such rows are added lazily: a fixed-inactive neuron whose clipped bound
            is ``<= 0`` is encoded as ``a = 0`` only, a relaxation (its real ``z`` may be positive) that
            keeps the MILP small, so ``infeasible`` is still a proof; a candidate that breaks such a state
            gets the rows of the states it breaks added and the clause is solved again (see
            :meth:`solve_clause`).
    """

    def __init__(self, net, spec: Spec, bounds: list[tuple[np.ndarray, np.ndarray]],
                 output_bounds: tuple[np.ndarray, np.ndarray] | None = None, strict_states: bool = False) -> None:
        self.net = net
        self.spec = spec
        self.prob = pulp.LpProblem("neurospec", pulp.LpMinimize)
        self.x = [self.prob.add_variable(f"x{i}", float(lo), float(hi))
                  for i, (lo, hi) in enumerate(zip(spec.lower, spec.upper, strict=True))]
        self.n_binaries = 0
        self.n_fixed = 0
        states = spec.relu_states or {}
        # the fixed neurons: (layer, neuron, sign +1 active / -1 inactive, coefficients, variables, bias); a
        # margin solve keeps their pre-activations 1e-6 inside their state. Fixed-inactive neurons whose row
        # z <= 0 is left out (clipped bound <= 0, not strict_states) are added lazily (``_omitted``).
        self._fixed: list[tuple[int, int, int, np.ndarray, list, float]] = []
        self._omitted: dict[tuple[int, int], int] = {}
        self._binaries: list[tuple[int, int, pulp.LpVariable]] = []  # (layer, neuron, d)
        self._candidates: dict[int, np.ndarray] = {}  # the last candidate input found per clause
        self.lazy_rows = 0  # left-out fixed-inactive rows added after a candidate broke them
        prev: list[pulp.LpVariable | None] = list(self.x)
        n_hidden = len(net.weights) - 1
        for k in range(n_hidden):
            w, b = net.weights[k], net.biases[k]
            lo, hi = bounds[k]
            act_fixed, ina_fixed = states.get(k, (np.zeros(len(b), bool), np.zeros(len(b), bool)))
            live = [i for i, v in enumerate(prev) if v is not None]
            live_vars = [prev[i] for i in live]
            w_live = w[:, live]
            layer: list[pulp.LpVariable | None] = []
            for j in range(len(b)):
                if ina_fixed[j] or act_fixed[j]:
                    self._fixed.append((k, j, 1 if act_fixed[j] else -1, w_live[j], live_vars, float(b[j])))
                inactive = bool(ina_fixed[j]) or hi[j] <= 0
                active = bool(act_fixed[j]) or lo[j] >= 0
                if inactive and active:  # a NAP forcing z = 0 exactly: a = 0, z must be 0
                    expr = self._row(w_live[j], live_vars, b[j])
                    self.prob += (expr == 0, f"z{k}_{j}_zero")
                    layer.append(None)
                    continue
                if inactive:
                    if ina_fixed[j] and (hi[j] > 0 or strict_states):
                        self.prob += (self._row(w_live[j], live_vars, b[j]) <= 0, f"z{k}_{j}_off")
                        self.n_fixed += 1
                    elif ina_fixed[j]:
                        self._omitted[(k, j)] = len(self._fixed) - 1
                    layer.append(None)
                    continue
                expr = self._row(w_live[j], live_vars, b[j])
                a = self.prob.add_variable(f"a{k}_{j}", max(0.0, float(lo[j])), float(hi[j]))
                if active:
                    if act_fixed[j] and lo[j] < 0:
                        self.n_fixed += 1
                    self.prob += (a - expr == 0, f"a{k}_{j}_lin")
                else:
                    d = self.prob.add_variable(f"d{k}_{j}", cat=pulp.LpBinary)
                    self.n_binaries += 1
                    self._binaries.append((k, j, d))
                    self.prob += (a - expr >= 0, f"a{k}_{j}_ge")
                    self.prob += (a - expr - float(lo[j]) * d <= -float(lo[j]), f"a{k}_{j}_le")
                    self.prob += (a - float(hi[j]) * d <= 0, f"a{k}_{j}_on")
                layer.append(a)
            prev = layer
        self.last = prev
        self.output_bounds = output_bounds
        self.t = self.prob.add_variable("t", None, 0.0)

    @staticmethod
    def _row(coefs: np.ndarray, variables: list[pulp.LpVariable], constant: float) -> pulp.LpAffineExpression:
        nz = np.flatnonzero(coefs)
        return pulp.LpAffineExpression([(variables[i], float(coefs[i])) for i in nz], constant=float(constant))

    @property
    def n_constraints(self) -> int:
        return self.prob.numConstraints()

    def solve_clause(self, index: int, solver: str, time_limit: float, margin: float = 0.0) -> ClauseOutcome:
        """Look for an input in the box (following the fixed states) whose output lies in unsafe clause
        ``index`` with slack ``<= -margin``; ``infeasible`` proves there is none.

        Args:
            index: which clause of ``spec.unsafe``.
            solver: ``"cbc"`` or ``"highs"``.
            time_limit: seconds.
            margin: require ``A @ y - b <= -margin`` (a deeper violation, for numerically safe candidates);
                with ``margin > 0`` every fixed ReLU state is also kept :data:`STATE_MARGIN` inside its
                state (active ``z >= 1e-6``, inactive ``z <= -1e-6``): a solver's vertex with ``z = 1e-16`` on a
                neuron fixed inactive does not follow the NAP when re-checked. When an earlier solve of this
                clause found a candidate, the margin solve first tries one LP with every binary fixed to that
                candidate's activation pattern (fast: no branching), then the whole MILP with the time left.

        A candidate that breaks a fixed-inactive state whose row was left out (see ``strict_states``) is not
        returned: the rows of the states it breaks join the problem (for every later clause too) and the
        clause is solved again, until a candidate keeps every state, the clause is proven empty, or time runs
        out.
        """
        t0 = time.perf_counter()
        if margin > 0 and index in self._candidates and self._binaries:
            repaired = self._solve(index, solver, time_limit, margin, pattern=self._candidates[index])
            if repaired.status == "feasible":
                return repaired
            time_limit -= time.perf_counter() - t0
            if time_limit <= 0.05:
                return ClauseOutcome("timeout", None, repaired.solve)
            t0 = time.perf_counter()
        while True:
            out = self._solve(index, solver, time_limit - (time.perf_counter() - t0), margin)
            broken = self._broken(out.x) if out.status == "feasible" else []
            if not broken:
                return out
            # the candidate breaks fixed-inactive states whose rows were left out: add them, solve again
            for r in broken:
                k, j, _, coefs, variables, bias = self._fixed[r]
                self.prob += (self._row(coefs, variables, bias) <= 0, f"z{k}_{j}_off")
                del self._omitted[(k, j)]
                self.n_fixed += 1
            self.lazy_rows += len(broken)
            if time_limit - (time.perf_counter() - t0) <= 0.05:
                return ClauseOutcome("timeout", None, out.solve)

    def _broken(self, x: np.ndarray | None) -> list[int]:
        """The left-out fixed-inactive rows that input ``x`` breaks (pre-activation > 1e-9)."""
        if x is None or not self._omitted:
            return []
        pre = self.net.pre_activations(np.asarray(x, dtype=np.float64).reshape(1, -1))
        return [r for (k, j), r in self._omitted.items() if pre[k][0, j] > 1e-9]

    def _state_rows(self) -> list[tuple[pulp.LpAffineExpression, int]]:
        """Every fixed neuron's pre-activation and its sign (+1 active, -1 inactive)."""
        return [(self._row(coefs, variables, bias), sign) for _, _, sign, coefs, variables, bias in self._fixed]

    def _solve(self, index: int, solver: str, time_limit: float, margin: float,
               pattern: np.ndarray | None = None) -> ClauseOutcome:
        """One solve of :meth:`solve_clause`; with ``pattern`` (an input) every binary is fixed to the
        activation pattern of that input, which leaves an LP."""
        a_mat, b_vec = self.spec.unsafe[index]
        w_out, b_out = self.net.weights[-1], self.net.biases[-1]
        live = [i for i, v in enumerate(self.last) if v is not None]
        live_vars = [self.last[i] for i in live]
        # A shallow copy shares the network's constraints; the clause's rows go into the copy only.
        prob = self.prob.copy()
        if margin > 0:
            for r, (expr, sign) in enumerate(self._state_rows()):
                if sign > 0:
                    prob += (expr >= STATE_MARGIN, f"state_margin_{r}")
                else:
                    prob += (expr <= -STATE_MARGIN, f"state_margin_{r}")
        if a_mat.size:
            coef = a_mat @ w_out[:, live]
            const = a_mat @ b_out - b_vec
            for r in range(a_mat.shape[0]):
                prob += (self._row(coef[r], live_vars, const[r]) - self.t <= 0, f"clause_{r}")
            self.t.upBound = -float(margin)
            self.t.lowBound = None
            if self.output_bounds is not None:
                lo, hi = self.output_bounds
                # t >= each row >= its interval lower bound: keeps the LP bounded
                rows_lo = np.minimum(a_mat, 0) @ hi + np.maximum(a_mat, 0) @ lo - b_vec
                self.t.lowBound = float(np.max(rows_lo)) - 1.0
            prob.setObjective(pulp.LpAffineExpression([(self.t, 1.0)]))
        else:
            prob.setObjective(pulp.LpAffineExpression([(self.x[0], 0.0)]))
        fixed: list[tuple[pulp.LpVariable, float | None, float | None]] = []
        if pattern is not None:  # the variables are shared with self.prob: their bounds are put back below
            pre = self.net.pre_activations(np.asarray(pattern, dtype=np.float64).reshape(1, -1))
            for k, j, d in self._binaries:
                fixed.append((d, d.lowBound, d.upBound))
                d.lowBound = d.upBound = 1.0 if pre[k][0, j] > 0 else 0.0
        try:
            outcome = solve(prob, solver, time_limit, gap_abs=_BIG_GAP)
        finally:
            for d, low, up in fixed:
                d.lowBound, d.upBound = low, up
        if outcome.status == "infeasible":
            # a pattern LP being infeasible proves nothing about the clause: only that pattern is empty
            return ClauseOutcome("infeasible" if pattern is None else "error", None, outcome)
        if outcome.status in ("optimal", "feasible"):
            x = np.array([v.value() if v.value() is not None else 0.0 for v in self.x], dtype=np.float64)
            x = np.clip(x, self.spec.lower, self.spec.upper)
            self._candidates[index] = x
            return ClauseOutcome("feasible", x, outcome)
        return ClauseOutcome(outcome.status, None, outcome)
