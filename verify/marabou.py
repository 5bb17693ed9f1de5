"""The same properties through Marabou (``maraboupy``), for side-by-side comparisons with :func:`verify.verify`.

The NAP paper (Geng et al., ICML 2023) proves NAP robustness with Marabou; this module asks Marabou the very
queries neurospec answers, on the very network, so both tools can be compared one query at a time:

- the network: every affine layer of a :class:`verify.network.ReluNetwork` as equations
  ``z_k = W_k a_{k-1} + b_k`` and one Marabou ReLU constraint ``a_k = relu(z_k)`` per neuron (zero weights
  are left out, so convolutions stay sparse);
- the input box of the :class:`verify.properties.Spec` as variable bounds;
- fixed ReLU states (NAPs) as bounds on pre-activations: active → ``z >= 0``, inactive → ``z <= 0`` (the
  ReLU constraints stay; Marabou's preprocessing fixes their phase from the bounds);
- each unsafe clause ``A @ y <= b`` as ``A`` rows over the output variables, one Marabou query per clause
  (a clause with no rows — NAP non-ambiguity — is "any output").

Answers map as ``unsat`` → ``verified`` (every clause), ``sat`` → ``falsified`` once the candidate re-checks
on the float64 network, the source torch model and onnxruntime (exactly as :func:`verify.verify` re-checks
its own; a candidate that does not re-check, e.g. with a pre-activation of 1e-16 on a neuron fixed inactive,
is retried once with a margin of 1e-4 on the output rows and 1e-6 inside every fixed state, then reported
``unknown``), ``TIMEOUT`` → ``timeout``, anything else → ``unknown``
or ``error``. Marabou's time limit is whole seconds; the answer is ``timeout`` whenever the wall time
exceeds ``timeout``, as in :func:`verify.verify`. Marabou does not always stop at its own limit (its
preprocessing is not interrupted: one NAP query on mnist-net_256x2 ran 16 minutes past a 30 s limit), so
each query runs in a forked child process that is killed :data:`KILL_GRACE` seconds after the limit (answer
``timeout``); a child that dies (e.g. killed for memory) gives ``error``.

``maraboupy`` is optional (``pip install neurospec[benchmark]`` or ``pip install maraboupy``): this module
imports it only when a query runs, and :func:`check_marabou` raises :class:`verify.errors.SolverError`
when it is missing.

Example:
    >>> import numpy as np
    >>> from verify.network import ReluNetwork
    >>> from verify.properties import robustness
    >>> net = ReluNetwork([np.eye(2), np.array([[1.0, -1.0], [-1.0, 1.0]])], [np.zeros(2), np.zeros(2)])
    >>> spec = robustness(np.array([0.9, 0.1]), 0.05, label=0, num_classes=2)
    >>> verify_marabou(net, spec, timeout=10).status                  # doctest: +SKIP
    'verified'
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from probe.core.errors import InvalidParameterError
from verify.errors import NetworkError, SolverError, SpecError
from verify.properties import Spec
from verify.result import VerificationResult

__all__ = ["MARABOU", "check_marabou", "marabou_available", "marabou_version", "verify_marabou"]

logger = logging.getLogger(__name__)

#: The ``solver`` name of results from :func:`verify_marabou`.
MARABOU = "marabou"

_MARGIN_OUT = 1e-4  # the retry's margin on the unsafe rows, for candidates that do not re-check
_MARGIN_STATE = 1e-6  # ... and inside the fixed states (the re-check wants active z > 0, inactive z <= 0)

#: Seconds past its time limit after which a Marabou query's process is killed (answer ``timeout``).
KILL_GRACE = 5.0


def marabou_available() -> bool:
    """Whether ``maraboupy`` can be imported (without importing it).

    Example:
        >>> isinstance(marabou_available(), bool)
        True
    """
    return importlib.util.find_spec("maraboupy") is not None


def check_marabou() -> None:
    """Raise :class:`SolverError` unless ``maraboupy`` is installed.

    Example:
        >>> check_marabou()                                            # doctest: +SKIP
    """
    if not marabou_available():
        raise SolverError("Marabou is not installed: pip install maraboupy (or pip install 'neurospec[benchmark]')")


def marabou_version() -> str:
    """The installed ``maraboupy`` version, or ``""`` when it is not installed.

    Example:
        >>> marabou_version()                                          # doctest: +SKIP
        '2.0.0'
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maraboupy")
    except PackageNotFoundError:
        return ""


def _core() -> tuple[Any, Any]:
    """``(Marabou, MarabouCore)``, imported quietly (maraboupy warns about its optional TensorFlow parser)."""
    check_marabou()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import Marabou, MarabouCore
    return Marabou, MarabouCore


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Marabou's C++ core prints to file descriptor 1; the library must not print."""
    try:
        fd = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(fd, 1)
    finally:
        os.close(fd)


class _Query:
    """One Marabou input query: the network over the box with the fixed states, plus one clause."""

    def __init__(self, core: Any, network, spec: Spec, clause: int, margin_out: float = 0.0,
                 margin_state: float = 0.0) -> None:
        self.core = core
        q = core.InputQuery()
        n_in = network.n_inputs
        sizes = network.relu_sizes
        n_out = network.n_outputs
        n_vars = n_in + 2 * sum(sizes) + n_out
        q.setNumberOfVariables(n_vars)
        for i in range(n_in):
            q.setLowerBound(i, float(spec.lower[i]))
            q.setUpperBound(i, float(spec.upper[i]))
            q.markInputVariable(i, i)
        self.inputs = list(range(n_in))
        prev = np.arange(n_in)
        nxt = n_in
        states = spec.relu_states or {}
        for k, size in enumerate(sizes):
            pre = np.arange(nxt, nxt + size)
            post = np.arange(nxt + size, nxt + 2 * size)
            nxt += 2 * size
            self._affine(q, network.weights[k], network.biases[k], prev, pre)
            act, ina = states.get(k, (np.zeros(size, bool), np.zeros(size, bool)))
            for j in range(size):
                if act[j]:
                    q.setLowerBound(int(pre[j]), float(margin_state))
                if ina[j]:
                    q.setUpperBound(int(pre[j]), -float(margin_state))
                q.setLowerBound(int(post[j]), 0.0)
                core.addReluConstraint(q, int(pre[j]), int(post[j]))
            prev = post
        out = np.arange(nxt, nxt + n_out)
        self._affine(q, network.weights[-1], network.biases[-1], prev, out)
        for i, v in enumerate(out):
            q.markOutputVariable(int(v), i)
        a_mat, b_vec = spec.unsafe[clause]
        for r in range(a_mat.shape[0] if a_mat.size else 0):
            eq = core.Equation(core.Equation.LE)
            for i in np.flatnonzero(a_mat[r]):
                eq.addAddend(float(a_mat[r, i]), int(out[i]))
            eq.setScalar(float(b_vec[r]) - float(margin_out))
            q.addEquation(eq)
        self.query = q

    def _affine(self, q: Any, w: np.ndarray, b: np.ndarray, inputs: np.ndarray, outputs: np.ndarray) -> None:
        """``outputs = w @ inputs + b`` as equations ``sum w_ij in_j - out_i = -b_i``."""
        core = self.core
        for i in range(w.shape[0]):
            eq = core.Equation(core.Equation.EQ)
            row = w[i]
            for j in np.flatnonzero(row):
                eq.addAddend(float(row[j]), int(inputs[j]))
            eq.addAddend(-1.0, int(outputs[i]))
            eq.setScalar(-float(b[i]))
            q.addEquation(eq)

    def solve(self, marabou: Any, seconds: float) -> tuple[str, np.ndarray | None]:
        """Marabou's exit code and, for ``sat``, the input it found; run in a child process that is killed
        :data:`KILL_GRACE` seconds after ``seconds`` (code ``"TIMEOUT"``; a child that dies: ``"ERROR"``)."""
        limit = max(1, math.ceil(seconds))
        options = marabou.createOptions(timeoutInSeconds=limit, verbosity=0)

        def run() -> tuple[str, np.ndarray | None]:
            with _quiet_stdout():
                code, values, _stats = self.core.solve(self.query, options, os.devnull)
            x = None
            if code == "sat":
                x = np.array([values.get(i, 0.0) for i in self.inputs], dtype=np.float64)
            return str(code), x

        return _killable(run, limit + KILL_GRACE)


def _killable(fn: Any, seconds: float) -> tuple[str, np.ndarray | None]:
    """``fn()`` (which returns ``(code, x)``) in a forked child process, killed after ``seconds``:
    ``("TIMEOUT", None)``; ``("ERROR", None)`` if the child dies or raises."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(seconds):
            logger.info("Marabou ran %.0f s past its limit: its process is killed", KILL_GRACE)
            return "TIMEOUT", None
        try:
            kind, payload = recv.recv()
        except EOFError:  # the child died without an answer
            logger.warning("Marabou's process died (exit code %s)", proc.exitcode)
            return "ERROR", None
        if kind == "error":
            logger.warning("Marabou failed: %s", payload)
            return "ERROR", None
        return payload
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()


def _child(fn: Any, send: Any) -> None:
    """The child's side of :func:`_killable`: send ``("ok", fn())`` or ``("error", message)``, then exit
    without running the parent's exit handlers."""
    try:
        send.send(("ok", fn()))
    except BaseException as err:  # reported to the parent
        send.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        send.close()
        os._exit(0)


def _check(network, spec: Spec, timeout: float) -> None:
    from verify.network import ReluNetwork

    if not isinstance(network, ReluNetwork):
        raise NetworkError(f"verify_marabou() takes a ReluNetwork, got {type(network).__name__}")
    if spec.n_inputs != network.n_inputs:
        raise SpecError(f"the property has {spec.n_inputs} inputs but the network has {network.n_inputs}")
    if spec.n_outputs is not None and spec.n_outputs != network.n_outputs:
        raise SpecError(f"the property has {spec.n_outputs} outputs but the network has {network.n_outputs}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidParameterError(f"timeout must be a positive number of seconds, got {timeout!r}")


def verify_marabou(network, spec: Spec, timeout: float = 60.0) -> VerificationResult:
    """Decide ``spec`` on ``network`` with Marabou, one query per unsafe clause, within ``timeout`` seconds.

    Args:
        network: a :class:`verify.network.ReluNetwork`.
        spec: the property (box, optional fixed ReLU states, unsafe clauses).
        timeout: wall-clock seconds for every clause together (> 0).

    Returns:
        A :class:`VerificationResult` with ``solver="marabou"`` and ``method="marabou"``; ``falsified`` carries
        a counterexample re-checked like those of :func:`verify.verify`. ``timings``: ``build`` (encoding),
        ``solve`` and ``total``; ``stats``: Marabou's exit code per clause.

    Raises:
        SolverError: ``maraboupy`` is not installed.
        InvalidParameterError: a non-positive timeout.
        NetworkError / SpecError: not a ReluNetwork, or the sizes disagree.

    Example:
        >>> verify_marabou(net, nap_robustness_spec(lo, hi, states, 3, 10, targets=[5]), timeout=30).status  # doctest: +SKIP
        'verified'
    """
    from verify.api import confirm_counterexample

    _check(network, spec, timeout)
    marabou, core = _core()
    t0 = time.perf_counter()
    deadline = t0 + float(timeout)
    timings = {"build": 0.0, "solve": 0.0}
    codes: list[str] = []
    pending: list[int] = []
    unknown: list[int] = []

    def finish(status: str, cex=None, message: str = "") -> VerificationResult:
        timings["total"] = time.perf_counter() - t0
        if status in ("verified", "falsified") and timings["total"] > timeout:
            status, cex, message = "timeout", None, f"answer came after the {timeout} s limit; {message}"
        return VerificationResult(status, MARABOU if status in ("verified", "falsified") else "", cex, message,
                                  timings, {"exit_codes": codes}, MARABOU)

    for clause in range(len(spec.unsafe)):
        left = deadline - time.perf_counter()
        if left <= 0:
            pending.append(clause)
            continue
        tb = time.perf_counter()
        query = _Query(core, network, spec, clause)
        timings["build"] += time.perf_counter() - tb
        ts = time.perf_counter()
        code, x = query.solve(marabou, deadline - time.perf_counter())
        timings["solve"] += time.perf_counter() - ts
        codes.append(code)
        if code == "unsat":
            continue
        if code == "sat":
            cex = confirm_counterexample(network, spec, x)
            if cex is None and deadline - time.perf_counter() > 0.5:
                deeper = _Query(core, network, spec, clause, _MARGIN_OUT, _MARGIN_STATE)
                code2, x2 = deeper.solve(marabou, deadline - time.perf_counter())
                codes.append(f"{code2} (margin)")
                if code2 == "sat":
                    cex = confirm_counterexample(network, spec, x2)
            if cex is not None:
                return finish("falsified", cex)
            unknown.append(clause)
            continue
        if code == "TIMEOUT" or time.perf_counter() >= deadline:
            pending.append(clause)
            continue
        return finish("error" if code == "ERROR" else "unknown",
                      message=f"Marabou answered {code!r} on clause {clause}")
    if pending:
        return finish("timeout", message=f"Marabou hit the time limit on clause(s) {pending}")
    if unknown:
        return finish("unknown", message=f"clauses {unknown}: Marabou's candidates did not re-check on the network")
    return finish("verified")
