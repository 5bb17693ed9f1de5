"""The one module that knows MILP solver names and PuLP versions.

Solvers: ``"cbc"`` (COIN-OR CBC, bundled with PuLP; the default) and ``"highs"`` (HiGHS through ``highspy``).

A solve is summarised as a :class:`SolveOutcome` whose ``status`` is one of:

- ``"optimal"``: a proven optimum (PuLP ``sol_status == LpSolutionOptimal``);
- ``"infeasible"``: proven infeasible;
- ``"feasible"``: an incumbent exists but optimality was not proven (e.g. the time limit hit). PuLP reports
  ``status == "Optimal"`` for CBC in this case; only ``sol_status`` tells the difference, and a
  "verified" answer may never rest on it;
- ``"timeout"``: stopped by the time limit without any solution;
- ``"error"``: anything else (unbounded, undefined, solver crash).

Example:
    >>> import pulp
    >>> prob = pulp.LpProblem("p", pulp.LpMinimize)
    >>> v = pulp.LpVariable("v", 0, 1)
    >>> prob += v
    >>> solve(prob, "cbc", time_limit=10).status
    'optimal'
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pulp

from verify.errors import SolverError

__all__ = ["SOLVERS", "SolveOutcome", "available_solvers", "check_solver", "silence_native_stdout", "solve", "solver_versions"]

logger = logging.getLogger(__name__)

SOLVERS = ("cbc", "highs")


def _make(name: str, time_limit: float, gap_abs: float | None, threads: int | None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "cbc":
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, gapAbs=gap_abs, threads=threads)
        if name == "highs":
            # HiGHS's thread scheduler is process-global: once any Highs object has run (e.g. LP bound
            # tightening), asking for another thread count fails the solve, so keep its default.
            return pulp.HiGHS(msg=False, timeLimit=time_limit, gapAbs=gap_abs)
    raise SolverError(f"unknown solver {name!r}; choose one of {list(SOLVERS)}")


def available_solvers() -> list[str]:
    """The solvers of :data:`SOLVERS` that are installed here."""
    out = []
    for name in SOLVERS:
        try:
            if _make(name, 1.0, None, None).available():
                out.append(name)
        except Exception:  # an absent backend may raise anything on construction
            logger.debug("solver %s unavailable", name, exc_info=True)
    return out


def check_solver(name: str) -> None:
    """Raise :class:`SolverError` unless ``name`` is a known, installed solver (the message says how to fix)."""
    if name not in SOLVERS:
        raise SolverError(f"unknown solver {name!r}; choose one of {list(SOLVERS)}")
    if name not in available_solvers():
        fix = "pip install highspy" if name == "highs" else "reinstall pulp (it bundles CBC)"
        raise SolverError(f"solver {name!r} is not installed here: {fix}; installed: {available_solvers()}")


def solver_versions() -> dict[str, str]:
    """Versions of PuLP and of the solver backends, for reports."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"pulp": pulp.__version__}
    try:
        out["highspy"] = version("highspy")
    except PackageNotFoundError:
        out["highspy"] = "not installed"
    out["cbc"] = "bundled with PuLP " + pulp.__version__
    return out


@contextlib.contextmanager
def silence_native_stdout() -> Iterator[None]:
    """HiGHS prints a banner from C++ whenever a model is created, whatever its options; the library must
    stay quiet, so route file descriptor 1 to /dev/null meanwhile."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (e.g. captured): nothing to silence
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@dataclass
class SolveOutcome:
    """The result of one MILP solve (see the module docstring for ``status``)."""

    status: str
    objective: float | None
    seconds: float
    raw_status: str
    raw_sol_status: int


def solve(prob: pulp.LpProblem, solver: str = "cbc", time_limit: float = 60.0, gap_abs: float | None = None,
          threads: int | None = 1) -> SolveOutcome:
    """Solve ``prob`` and map PuLP's statuses to a :class:`SolveOutcome`.

    Args:
        prob: the PuLP problem.
        solver: ``"cbc"`` or ``"highs"``.
        time_limit: wall-clock seconds for the solver (> 0).
        gap_abs: absolute optimality gap at which to stop (a large gap stops at the first incumbent).
        threads: solver threads.

    Raises:
        SolverError: unknown or missing solver, or a non-positive time limit.
    """
    if not time_limit > 0:
        raise SolverError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    # CBC checks its limit between nodes and PuLP adds file I/O around it: measured overshoot up to ~2.5 s,
    # so CBC gets a safety margin to keep the caller's wall-clock limit.
    limit = float(time_limit)
    if solver == "cbc":
        limit = max(0.1, limit - min(2.5, 0.05 * limit))
    backend = _make(solver, limit, gap_abs, threads)
    t0 = time.perf_counter()
    try:
        quiet = silence_native_stdout() if solver == "highs" else contextlib.nullcontext()
        with warnings.catch_warnings(), quiet:
            warnings.simplefilter("ignore")
            prob.solve(backend)
    except pulp.PulpSolverError as err:
        return SolveOutcome("error", None, time.perf_counter() - t0, f"solver error: {err}", 0)
    seconds = time.perf_counter() - t0
    raw, sol = pulp.LpStatus.get(prob.status, str(prob.status)), int(prob.sol_status)
    objective = pulp.value(prob.objective) if prob.objective is not None else None
    hit_limit = seconds >= 0.98 * limit
    if sol == pulp.LpSolutionOptimal and not hit_limit:
        status = "optimal"
    elif sol == pulp.LpSolutionInfeasible or (prob.status == pulp.LpStatusInfeasible and not hit_limit):
        status = "infeasible" if not hit_limit else "timeout"
    elif sol in (pulp.LpSolutionIntegerFeasible, pulp.LpSolutionOptimal):
        status = "feasible"
    elif seconds >= 0.5 * limit:
        # CBC sometimes stops with "Not Solved" (no solution, no proof) somewhat before its limit, the more
        # so on a loaded machine: after half the limit that is the limit's doing, not a failure
        status = "timeout"
    else:  # "Not Solved" well before the limit: the solver refused or failed
        status = "error"
    logger.debug("%s: status=%s sol_status=%s -> %s in %.2fs", solver, raw, sol, status, seconds)
    return SolveOutcome(status, objective, seconds, raw, sol)
