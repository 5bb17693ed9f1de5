"""Verification work fanned out over a Ray cluster (:mod:`probe.core.cluster`): the instances of
``neurospec verify-batch`` and the queries of :func:`verify.nap_robustness` / :func:`verify.nap_ambiguity`.

Each unit of work is one Ray task with its own time limit; results come back to the driver, which writes
them (``verify.batch.results_file(path).append(row)``: locked re-read-merge, so several drivers can share
one results CSV) as each task finishes. With ``workers=1`` and no ``address`` nothing here starts Ray: the
same functions run one after another in this process.

Example:
    >>> from verify.distributed import nap_robustness_parallel
    >>> results = nap_robustness_parallel(net, naps, timeout=30, workers=2)       # doctest: +SKIP
    >>> results = verify.nap_robustness(net, naps, timeout=30, workers=2)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probe.core.cluster import TaskFailure, run_tasks, session
from probe.core.errors import NeurospecError
from verify.errors import SolverError
from verify.result import VerificationResult

__all__ = ["BatchJob", "failure_row", "nap_ambiguity_parallel", "nap_robustness_parallel", "run_batch_job"]

logger = logging.getLogger(__name__)

#: Networks loaded by this worker process, by resolved ONNX path (Ray reuses a worker for many tasks).
_NETWORKS: dict[str, Any] = {}


@dataclass(frozen=True)
class BatchJob:
    """One instance of ``verify-batch`` as a task: the paths as written in the instances CSV, the folder
    they are relative to (absolute), the time limit in seconds and the solver."""

    onnx: str
    vnnlib: str
    root: str
    limit: float
    solver: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx, self.vnnlib)


def run_batch_job(job: BatchJob) -> dict[str, str]:
    """Run one instance (in a worker, or here) and return its results-CSV row. A missing or unreadable file
    gives an ``error`` row; an unusable solver raises (every instance would fail).

    Example:
        >>> run_batch_job(BatchJob("gone.onnx", "p.vnnlib", "/tmp", 60, "cbc"))["result"]
        'error'
    """
    from verify.batch import Instance, missing_files, result_row
    from verify.cli import run_instance

    root = Path(job.root)
    reason = missing_files(Instance(job.onnx, job.vnnlib, job.limit), root)
    if reason:
        res = VerificationResult("error", message=reason, solver=job.solver)
    else:
        try:
            res = run_instance(root / job.onnx, root / job.vnnlib, job.limit, solver=job.solver, cache=_NETWORKS)
        except SolverError:
            raise
        except NeurospecError as err:  # this instance's files: record it and go on
            res = VerificationResult("error", message=f"{type(err).__name__}: {err}", solver=job.solver)
    return result_row(job.onnx, job.vnnlib, job.limit, res, job.solver)


def failure_row(job: BatchJob, failure: TaskFailure) -> dict[str, str]:
    """The results-CSV row of a task that gave no result: ``timeout`` when it was stopped at its limit,
    ``error`` when its worker process died on every try."""
    from verify.batch import result_row

    status = "timeout" if failure.kind == "timeout" else "error"
    res = VerificationResult(status, message=f"the task {failure.message}", solver=job.solver)
    return result_row(job.onnx, job.vnnlib, job.limit, res, job.solver)


# ---- NAP robustness and non-ambiguity ------------------------------------------------------------------------


def _robustness_task(c: int, network: Any, naps: Any, lo: np.ndarray, hi: np.ndarray, solver: str, timeout: float,
                     per_competitor: bool, starts: np.ndarray | None = None
                     ) -> list[VerificationResult] | VerificationResult:
    from verify.api import nap_robustness_class

    return nap_robustness_class(network, naps, c, lo, hi, solver, timeout, per_competitor, starts)


def _ambiguity_task(pair: tuple[int, int], network: Any, naps: Any, lo: np.ndarray, hi: np.ndarray, solver: str,
                    timeout: float, starts: np.ndarray | None = None) -> VerificationResult:
    from verify.api import nap_ambiguity_pair

    return nap_ambiguity_pair(network, naps, pair, lo, hi, solver, timeout, starts)


def _hard_limit(timeout: float, queries: int) -> float:
    """Seconds after which a task is stopped: its queries' limits twice over, plus a minute for starting a
    worker and loading."""
    return 2.0 * timeout * max(queries, 1) + 60.0


def nap_robustness_parallel(network: Any, naps: Any, classes: Sequence[int] | None = None,
                            lower: np.ndarray | None = None, upper: np.ndarray | None = None, solver: str = "cbc",
                            timeout: float = 60.0, per_competitor: bool = True, *, workers: int | None = None,
                            address: str | None = None, verbose: bool = False, starts: np.ndarray | None = None
                            ) -> dict[int, list[VerificationResult] | VerificationResult]:
    """:func:`verify.nap_robustness` with one Ray task per class (its competitor queries share one
    :class:`verify.bounds.BoxBounds` inside the task, as in the sequential call). Same arguments and result;
    ``workers``/``address`` as in :func:`probe.core.cluster.connect` (``workers=1``, no address: here, in
    order). A task stopped at its limit or whose worker died gives ``timeout``/``error`` results.

    Example:
        >>> nap_robustness_parallel(net, naps, timeout=30, workers=2)[3][0].status  # doctest: +SKIP
        'verified'
    """
    from verify.api import check_timeout, nap_domain, nap_states

    check_timeout(timeout, solver)
    lo, hi = nap_domain(network, lower, upper)
    classes = [c for c in range(naps.num_classes) if c not in naps.empty_classes] if classes is None else list(classes)
    for c in classes:
        nap_states(network, naps, [c])  # a wrong NAP set fails here, before anything is submitted
    queries = network.n_outputs - 1 if per_competitor else 1
    found: dict[int, Any] = {}

    def on_failure(c: int, failure: TaskFailure) -> None:
        status = "timeout" if failure.kind == "timeout" else "error"
        one = VerificationResult(status, message=f"the task {failure.message}", solver=solver)
        found[c] = [one] * queries if per_competitor else one

    with session(address, workers) as cluster:
        run_tasks(_robustness_task, classes, args=(network, naps, lo, hi, solver, timeout, per_competitor, starts),
                  cluster=cluster, on_result=found.__setitem__, on_failure=on_failure,
                  timeout_per_task=_hard_limit(timeout, queries), desc="NAP robustness", verbose=verbose)
    return {c: found[c] for c in classes}


def nap_ambiguity_parallel(network: Any, naps: Any, pairs: Sequence[tuple[int, int]] | None = None,
                           lower: np.ndarray | None = None, upper: np.ndarray | None = None, solver: str = "cbc",
                           timeout: float = 60.0, *, workers: int | None = None, address: str | None = None,
                           verbose: bool = False, starts: np.ndarray | None = None
                           ) -> dict[tuple[int, int], VerificationResult]:
    """:func:`verify.nap_ambiguity` with one Ray task per pair that needs a solver (pairs whose NAPs conflict
    are decided here, without one). Same arguments and result; ``workers``/``address`` as in
    :func:`probe.core.cluster.connect`.

    Example:
        >>> nap_ambiguity_parallel(net, naps, timeout=30, workers=2)[(0, 1)].status  # doctest: +SKIP
        'verified'
    """
    from verify.api import check_timeout, nap_ambiguity_pair, nap_domain, nap_states

    check_timeout(timeout, solver)
    lo, hi = nap_domain(network, lower, upper)
    valid = [c for c in range(naps.num_classes) if c not in naps.empty_classes]
    pairs = [(i, j) for i in valid for j in valid if i < j] if pairs is None else [tuple(p) for p in pairs]
    disjoint = naps.disjoint_pairs()
    found: dict[tuple[int, int], VerificationResult] = {}
    todo = []
    for i, j in pairs:
        if bool(disjoint[i, j]):
            found[(i, j)] = nap_ambiguity_pair(network, naps, (i, j), lo, hi, solver, timeout)
        else:
            nap_states(network, naps, [i, j])
            todo.append((i, j))

    def on_failure(pair: tuple[int, int], failure: TaskFailure) -> None:
        status = "timeout" if failure.kind == "timeout" else "error"
        found[pair] = VerificationResult(status, message=f"the task {failure.message}", solver=solver)

    t0 = time.perf_counter()
    with session(address, workers) as cluster:
        run_tasks(_ambiguity_task, todo, args=(network, naps, lo, hi, solver, timeout, starts), cluster=cluster,
                  on_result=found.__setitem__, on_failure=on_failure, timeout_per_task=_hard_limit(timeout, 1),
                  desc="NAP non-ambiguity", verbose=verbose)
    logger.info("NAP non-ambiguity: %d pairs (%d on the solver) in %.1f s", len(pairs), len(todo),
                time.perf_counter() - t0)
    return {p: found[p] for p in pairs}
