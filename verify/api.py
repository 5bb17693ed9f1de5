"""``verify.verify(network, spec)``: one call, one result; plus NAP robustness and NAP non-ambiguity.

A call runs the phases of :data:`PHASES` in turn, all inside one wall-clock budget (``timeout`` seconds,
every phase included); each phase reads and extends one :class:`VerifyContext` and either ends the run with a
:class:`Verdict` or hands on to the next one. The settings live in a frozen :class:`VerifyOptions`.

1. **attack** — random starts + PGD on the real float32 model; a candidate that re-checks is ``falsified``
   (properties with fixed ReLU states get their PGD in phase 3a, from the caller's starts);
2. **bounds** — interval + CROWN back-substitution; an unsafe clause whose lower bound is positive is
   empty; when every clause is, the property is ``verified`` without a MILP;
2b. **alpha** — for clauses still open, alpha-CROWN (relaxation slopes optimised by gradient ascent,
   ``alpha_share`` of the time) tightens the unstable neurons' bounds and then bounds the clauses again;
3. **milp_quick** — big-M MILP per remaining clause (CBC or HiGHS through PuLP), first a quick try per clause
   on the tightest bounds so far (``quick_share`` of the time left, at most ``quick_cap`` s and about a tenth
   of the time in all; the pass ends at the first clause that runs to its limit); NAP queries, whose fixed
   states remove most binaries, usually end here;
3a. **patterns** — with ``verify(..., starts=inputs)`` (e.g. the images that follow a NAP): local search from
   those inputs: first, with ``attack`` on, PGD that keeps the fixed ReLU states (:func:`verify.attack.
   state_attack`; method ``attack``), then activation patterns (:func:`verify.attack.pattern_search`: one LP
   per pattern, flipping the free neurons the optimum pushes against), ``PATTERN_SHARE`` of the time left;
3b. **bab** — clauses still open go to branch and bound on ReLU splits (:mod:`verify.bab`): domains bounded
   with CROWN back-substitution and optimised alpha (relaxation slopes) and beta (split multipliers), split
   on the neuron with the largest relaxation share, lowest bound first; ``bab_share`` of the time left; when
   it stalls, MILP bounds of ReLU layer 1 (``milp_share``, on ``milp_threads`` threads) tighten its root;
3c. **lp_bounds**, **milp** — clauses BaB leaves open are retried by the MILP, with all the time left, after
   LP tightening of the unstable neurons' bounds (skipped when alpha-CROWN ran to completion: its optimal
   slopes give the same bounds as those LPs). Only a solver's or BaB's proof counts for ``verified``; a
   solver stopped by its limit gives ``timeout``.

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
    >>> verify(net, spec, options=VerifyOptions(solver="highs", timeout=120)).method  # doctest: +SKIP
    'bab'
    >>> [name for name, _ in PHASES]
    ['attack', 'bounds', 'alpha', 'milp_quick', 'patterns', 'bab', 'lp_bounds', 'milp']
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from probe.core.device import check_device
from probe.core.errors import InvalidParameterError, ModelError
from probe.core.validate import check_int
from verify.errors import NetworkError, ResourceLimitError, SpecError
from verify.properties import Spec, nap_ambiguity_spec, nap_robustness_spec
from verify.result import Counterexample, Status, VerificationResult
from verify.solvers import check_solver

__all__ = ["PHASES", "Verdict", "VerifyContext", "VerifyOptions", "check_timeout", "confirm_counterexample",
           "nap_ambiguity", "nap_ambiguity_pair", "nap_domain", "nap_robustness", "nap_robustness_class", "nap_states",
           "verify"]

logger = logging.getLogger(__name__)

#: The share of the time left after the quick MILP pass that the activation-pattern search may take.
PATTERN_SHARE = 0.3
#: The share of the time left after the quick MILP pass that PGD keeping the fixed states may take first.
STATE_ATTACK_SHARE = 0.5
#: The end points of that PGD (the deepest in the property) that the activation-pattern search starts from
#: first, and the share of its time they may take before it goes on from the caller's starts. From PGD's end
#: points the LPs falsify mnist-net_256x4 NAP_9 vs 4 in about 2 s, where the test images find nothing in 30 s;
#: ahead of the test images without a time share, they took the time in which the images falsify
#: mnist-net_256x2 NAP_2 vs 8 (3.6 s).
PATTERN_PGD_STARTS = 8
PATTERN_PGD_SHARE = 0.35
#: Branch and bound first runs from the alpha-CROWN bounds for this share of its time; a clause still open
#: then gets MILP bounds of the first layers (``VerifyOptions.milp_share``) and the rest of the time.
STALL_SHARE = 0.1
#: The default share of the time left that branch and bound takes on a property with fixed ReLU states (a NAP
#: query), after the quick MILP pass and the local search, before the full MILP.
NAP_BAB_SHARE = 0.1
#: MILP bounds are skipped when their model would have more dense entries than this (about 8 bytes each).
MILP_BOUNDS_MAX_ENTRIES = 20_000_000
#: The default of ``VerifyOptions.milp_threads`` is the cores this process may use, at most this many.
MILP_THREADS_MAX = 8
#: Each MILP of the first layers' bounds stops after this many seconds at most (its share of ``milp_share``
#: decides, down to 0.1 s). On mnist-net_256x4 prop_4_0.05 the root after 2 s per neuron let branch and
#: bound prove every clause in 27 s; after 1 s per neuron, one clause stayed open for 500 s.
MILP_PER_NEURON_MAX = 2.0


@dataclass(frozen=True)
class VerifyOptions:
    """The settings of one :func:`verify` call (what :func:`verify` takes besides the network, the property
    and shared ``bounds``). Building one checks ``timeout`` and ``solver``.

    Attributes:
        solver: ``"cbc"`` (default) or ``"highs"``.
        timeout: wall-clock seconds for everything (> 0).
        attack: run the PGD falsification phase first (a spec with fixed ReLU states gets PGD that keeps them,
            from ``starts``, in phase 3a instead).
        seed: seed of the attack.
        lp_share: share of the time left that LP tightening of unstable neurons may take before the clauses
            still open are retried by the full MILP.
        quick_share, quick_cap: each clause first gets ``quick_share`` of the time left (at least 1 s, at
            most ``quick_cap`` s; about a tenth of the time left in all); ``quick_cap=0`` skips that pass.
        alpha_share: share of the time left after CROWN that alpha-CROWN may take; 0 skips it.
        bab_share: share of the time left after the quick MILP pass that branch and bound may take; 0 skips
            it; ``None``: 0.8, but :data:`NAP_BAB_SHARE` (0.1) for properties with fixed ReLU states (see
            :meth:`bab_share_for`).
        device: where branch and bound's bound engine runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        bab_memory: bytes the open branch and bound domains may take; a network whose first batch of domains
            does not fit is refused before anything runs.
        milp_share: when branch and bound stalls (a clause still open after :data:`STALL_SHARE` of its time),
            the share of its time left that MILP bounds of the first layers may take
            (:meth:`verify.bounds.BoxBounds.milp_tightened`) before it goes on from the tighter root; 0 skips
            them.
        milp_threads: threads solving those MILPs side by side (one HiGHS model each); ``None``: the cores
            this process may use (``os.sched_getaffinity``, and at most ``OMP_NUM_THREADS`` when that is set,
            as Ray does for its workers), at most :data:`MILP_THREADS_MAX`.

    Each share is a fraction of the time left when its phase starts, so a share outside ``[0, 1]`` would
    give a phase more than the time left (or less than none): it is refused.

    Raises:
        InvalidParameterError: non-positive (or non-numeric, or NaN) timeout.
        SolverError: unknown or missing solver.

    Example:
        >>> opts = VerifyOptions(timeout=30, attack=False)
        >>> opts.solver, opts.timeout, opts.attack
        ('cbc', 30, False)
        >>> VerifyOptions(timeout=0)
        Traceback (most recent call last):
        ...
        probe.core.errors.InvalidParameterError: timeout must be a positive number of seconds, got 0
        >>> verify(net, spec, options=opts).status                        # doctest: +SKIP
        'verified'
    """

    solver: str = "cbc"
    timeout: float = 60.0
    attack: bool = True
    seed: int = 0
    lp_share: float = 0.3
    quick_share: float = 0.1
    quick_cap: float = 3.0
    alpha_share: float = 0.1
    bab_share: float | None = None
    device: str = "cpu"
    bab_memory: int = 4 * 2**30
    milp_share: float = 0.4
    milp_threads: int | None = None

    def __post_init__(self) -> None:
        timeout = self.timeout
        if not isinstance(timeout, (int, float)) or not timeout > 0 or timeout != timeout:
            raise InvalidParameterError(f"timeout must be a positive number of seconds, got {timeout!r}")
        check_solver(self.solver)
        for name in ("lp_share", "quick_share", "alpha_share", "bab_share", "milp_share"):
            value = getattr(self, name)
            if value is None and name == "bab_share":
                continue
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InvalidParameterError(
                    f"{name} must be a share of the time left between 0 and 1, got {value!r}: the phases' "
                    f"shares split the timeout of {timeout} s and may not add up to more than it")
        if not isinstance(self.quick_cap, (int, float)) or not self.quick_cap >= 0:
            raise InvalidParameterError(f"quick_cap must be a number of seconds >= 0, got {self.quick_cap!r}")
        check_device(self.device)
        if not isinstance(self.bab_memory, int) or self.bab_memory <= 0:
            raise InvalidParameterError(f"bab_memory must be a positive number of bytes, got {self.bab_memory!r}")
        if self.milp_threads is not None:
            check_int("milp_threads", self.milp_threads, 1, hint=" (threads), or None for the cores this process "
                      "may use")

    def milp_thread_count(self) -> int:
        """``milp_threads``, or when it is ``None`` the cores this process may use (at most
        :data:`MILP_THREADS_MAX`).

        Example:
            >>> VerifyOptions(milp_threads=3).milp_thread_count()
            3
        """
        if self.milp_threads is not None:
            return self.milp_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # a worker given fewer cores says so in OMP_NUM_THREADS (Ray sets it to a task's CPUs, 1 by default)
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if omp.isdigit() and int(omp) > 0:
            cores = min(cores, int(omp))
        return max(1, min(cores, MILP_THREADS_MAX))

    def bab_share_for(self, spec: Spec) -> float:
        """``bab_share``, or when it is ``None`` its default for ``spec``: :data:`NAP_BAB_SHARE` for properties
        with fixed ReLU states (NAP queries: the states remove most binaries and the MILP after the quick
        pass is usually faster than branching on the whole input domain, but the fixed states as split
        constraints with beta multipliers settle some queries the MILP does not), else 0.8.

        Example:
            >>> from verify.properties import robustness
            >>> VerifyOptions().bab_share_for(robustness([0.5, 0.5], 0.1, 0, 2))
            0.8
        """
        if self.bab_share is not None:
            return self.bab_share
        return NAP_BAB_SHARE if spec.relu_states else 0.8


@dataclass(frozen=True)
class Verdict:
    """What a phase that ends the run decided (turned into a :class:`VerificationResult` by :func:`verify`).

    Example:
        >>> Verdict("verified", "bounds").status
        'verified'
    """

    status: Status
    method: str = ""
    counterexample: Counterexample | None = None
    message: str = ""


@dataclass
class VerifyContext:
    """The state that the phases of one :func:`verify` call share: the inputs, the clock, the timings and
    statistics reported in the result, and what earlier phases produced.

    Attributes:
        network, spec, options: the call's inputs.
        bounds: the :class:`verify.bounds.BoxBounds` (given by the caller, else built by the bounds phase).
        t0, deadline: ``time.perf_counter()`` at the start, and when the time runs out.
        timings, stats: as in :class:`VerificationResult` (filled in by the phases).
        hidden, out_bounds: the hidden layers' and the output's bounds the MILP is encoded with.
        open_clauses: the unsafe clauses the bounds leave open.
        encoding: the :class:`verify.milp.MilpEncoding` (after LP tightening, the tightened one).
        pending, unknown: clauses still open after a time limit, and those whose solver candidates did not
            re-check.
        milp_start: when the current stretch of MILP time began (for ``timings["milp"]``).
        starts: the caller's inputs for the activation-pattern search (``verify(..., starts=...)``), or None.

    Example:
        >>> ctx = VerifyContext(net, spec, VerifyOptions(timeout=10))               # doctest: +SKIP
        >>> [phase(ctx) for _, phase in PHASES[:1]]                                 # doctest: +SKIP
        [None]
    """

    network: Any
    spec: Spec
    options: VerifyOptions
    bounds: Any = None
    t0: float = 0.0
    deadline: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    hidden: list = field(default_factory=list)
    out_bounds: Any = None
    open_clauses: list[int] = field(default_factory=list)
    encoding: Any = None
    pending: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    milp_start: float = 0.0
    starts: np.ndarray | None = None

    @property
    def bab_share(self) -> float:
        """The share of the time that branch and bound may take (:meth:`VerifyOptions.bab_share_for`)."""
        return self.options.bab_share_for(self.spec)

    def timed_out(self) -> bool:
        """Whether the deadline has passed."""
        return time.perf_counter() > self.deadline


def _options(options: VerifyOptions | None, **settings: Any) -> VerifyOptions:
    """``options``, or VerifyOptions built from ``settings`` (verify()'s keywords); not both."""
    if options is None:
        return VerifyOptions(**settings)
    if not isinstance(options, VerifyOptions):
        raise InvalidParameterError(f"options must be a verify.VerifyOptions, got {type(options).__name__}")
    given = sorted(f.name for f in fields(VerifyOptions)
                   if f.name in settings and not (settings[f.name] is f.default or settings[f.name] == f.default))
    if given:
        raise InvalidParameterError(f"pass the settings either as options= or as keywords, not both: got "
                                    f"options= and {given}; put them into VerifyOptions(...)")
    return options


def _check_problem(network, spec: Spec) -> None:
    from verify.network import ReluNetwork

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


def confirm_counterexample(network, spec: Spec, x: np.ndarray) -> Counterexample | None:
    """Re-run a candidate everywhere; return it only if it violates the property on every run.

    The candidate (clipped to the box) must violate ``spec`` on the float64 network, the source torch model
    and, for networks loaded from ONNX, onnxruntime, and follow the fixed ReLU states strictly.

    Example:
        >>> cex = confirm_counterexample(net, spec, x)       # doctest: +SKIP
        >>> cex is None or spec.violated_by(cex.y_onnx)      # doctest: +SKIP
        True
    """
    x = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), spec.lower, spec.upper)
    # cheapest checks first (the float64 network: 0.4 ms on mnist-net_256x4, against 7 ms with torch and
    # onnxruntime): branch and bound on a NAP query hands in thousands of candidates that break the NAP
    y = network.forward(x.reshape(1, -1))[0]
    if not spec.violated_by(y) or not _follows_states(network, spec, x):
        return None
    y_src = np.asarray(network.run_source(x.reshape(1, -1)), dtype=np.float64).reshape(-1)
    if not spec.violated_by(y_src):
        return None
    y_onnx = network.run_onnx(x.reshape(1, -1))
    y_onnx = None if y_onnx is None else np.asarray(y_onnx, dtype=np.float64).reshape(-1)
    if y_onnx is not None and not spec.violated_by(y_onnx):
        return None
    return Counterexample(x=x, y=y, y_source=y_src, y_onnx=y_onnx)


def verify(network, spec: Spec, solver: str = "cbc", timeout: float = 60.0, attack: bool = True,
           seed: int = 0, lp_share: float = 0.3, quick_share: float = 0.1,
           quick_cap: float = 3.0, bounds=None, alpha_share: float = 0.1,
           bab_share: float | None = None, device: str = "cpu", bab_memory: int = 4 * 2**30,
           milp_share: float = 0.4, milp_threads: int | None = None, options: VerifyOptions | None = None,
           starts: np.ndarray | None = None) -> VerificationResult:
    """Prove or refute ``spec`` on ``network``: run the phases of :data:`PHASES` until one decides.

    Args:
        network: a :class:`verify.network.ReluNetwork`.
        spec: a :class:`verify.properties.Spec` (robustness, NAP property or a VNN-LIB file's content).
        solver, timeout, attack, seed, lp_share, quick_share, quick_cap, alpha_share, bab_share, device,
            bab_memory, milp_share, milp_threads: the settings, as described in :class:`VerifyOptions`
            (``timeout``: wall-clock seconds for everything, > 0).
        bounds: optional :class:`verify.bounds.BoxBounds` of this network, box and fixed ReLU states,
            shared between queries on the same box (e.g. one per competitor class): its CROWN bounds are
            used as they are and its LP-tightened bounds are computed at most once. ``None``: computed here.
        options: the settings as one :class:`VerifyOptions`, instead of the keywords above (not both).
        starts: optional ``(n, n_inputs)`` inputs for the activation-pattern search
            (:func:`verify.attack.pattern_search`), run on the clauses the quick MILP pass leaves open: e.g.
            the images that follow a NAP, for a NAP robustness query. ``None``: no pattern search.

    Returns:
        A :class:`VerificationResult`; ``falsified`` always carries a re-checked counterexample.

    Raises:
        InvalidParameterError: non-positive timeout, a time share outside [0, 1], a device that is not
            available, or ``options`` together with other settings.
        ResourceLimitError: branch and bound's first batch of domains does not fit ``bab_memory`` (for a NAP
            query with the default ``bab_share``, branch and bound is skipped instead).
        SolverError: unknown or missing solver.
        NetworkError / SpecError: the network or the property is unusable, or their sizes disagree, or
            ``bounds`` belong to another network, box or set of fixed states.

    Example:
        >>> res = verify(net, spec, solver="cbc", timeout=60)                         # doctest: +SKIP
        >>> res.status, res.method, sorted(res.timings)                               # doctest: +SKIP
        ('falsified', 'attack', ['attack', 'total'])
    """
    options = _options(options, solver=solver, timeout=timeout, attack=attack, seed=seed, lp_share=lp_share,
                       quick_share=quick_share, quick_cap=quick_cap, alpha_share=alpha_share,
                       bab_share=bab_share, device=device, bab_memory=bab_memory, milp_share=milp_share,
                       milp_threads=milp_threads)
    _check_problem(network, spec)
    starts = _check_starts(network, starts)
    if options.bab_share_for(spec) > 0:
        from verify.bab import check_memory

        try:
            check_memory(network, spec, options.bab_memory)
        except ResourceLimitError:
            if options.bab_share is not None or not spec.relu_states:
                raise
            # a NAP query's default branch and bound is a helper: without room for it, the MILP decides alone
            logger.info("verify: branch and bound skipped (its first batch does not fit bab_memory)")
            options = replace(options, bab_share=0.0)
    t0 = time.perf_counter()
    ctx = VerifyContext(network, spec, options, bounds=bounds, t0=t0, deadline=t0 + float(options.timeout),
                        stats={"clauses": len(spec.unsafe)}, starts=starts)
    for name, phase in PHASES:
        verdict = phase(ctx)
        if verdict is not None:
            logger.debug("verify: phase %s decided %s %s", name, verdict.status, verdict.message)
            return _result(ctx, verdict)
    return _result(ctx, Verdict("error", message="internal error: no phase reached a verdict"))


def _result(ctx: VerifyContext, verdict: Verdict) -> VerificationResult:
    """The verdict as a result, with the total time; an answer that came after the limit is a timeout."""
    ctx.timings["total"] = time.perf_counter() - ctx.t0
    status, cex, message = verdict.status, verdict.counterexample, verdict.message
    timeout = ctx.options.timeout
    if status in ("verified", "falsified") and ctx.timings["total"] > timeout:
        status, cex, message = "timeout", None, f"answer came after the {timeout} s limit; {message}"
    return VerificationResult(status, verdict.method, cex, message, ctx.timings, ctx.stats, ctx.options.solver)


def _unstable(layers) -> list[int]:
    return [int(np.sum((lo < 0) & (hi > 0))) for lo, hi in layers]


def _attack_phase(ctx: VerifyContext) -> Verdict | None:
    """1. PGD on the real model (not for fixed ReLU states); a re-checked candidate ends the run."""
    from verify.attack import pgd_attack

    if ctx.options.attack and not ctx.spec.relu_states:
        ta = time.perf_counter()
        candidate = pgd_attack(ctx.network, ctx.spec, seed=ctx.options.seed, deadline=ctx.deadline)
        cex = None if candidate is None else confirm_counterexample(ctx.network, ctx.spec, candidate)
        ctx.timings["attack"] = time.perf_counter() - ta
        if cex is not None:
            return Verdict("falsified", "attack", cex)
    if ctx.timed_out():
        return Verdict("timeout", message="time ran out during the attack")
    return None


def _box_bounds(ctx: VerifyContext):
    """The caller's shared BoxBounds (checked), else new ones for the property's box and fixed states."""
    from verify.bounds import BoxBounds

    spec, fixed = ctx.spec, ctx.spec.relu_states or None
    if ctx.bounds is None:
        return BoxBounds(ctx.network, spec.lower, spec.upper, fixed=fixed)
    if not (isinstance(ctx.bounds, BoxBounds) and ctx.bounds.matches(ctx.network, spec.lower, spec.upper, fixed)):
        raise SpecError("bounds= must be a verify.bounds.BoxBounds computed for this network, the property's "
                        "input box and its relu_states; build it with BoxBounds(network, spec.lower, "
                        "spec.upper, spec.relu_states)")
    ctx.stats["shared_bounds"] = True
    return ctx.bounds


def _bounds_phase(ctx: VerifyContext) -> Verdict | None:
    """2. Interval + CROWN bounds: clauses they prove empty are closed; all closed is ``verified``."""
    tb = time.perf_counter()
    spec, stats = ctx.spec, ctx.stats
    ctx.bounds = _box_bounds(ctx)
    layer_bounds = ctx.bounds.best  # shared bounds may already be tightened by an earlier query
    ctx.hidden, ctx.out_bounds = layer_bounds[:-1], layer_bounds[-1]
    stats["unstable"] = _unstable(ctx.hidden)
    # A fixed state that the bounds contradict means no input follows the states: nothing is unsafe.
    for k, (act, ina) in (spec.relu_states or {}).items():
        lo, hi = ctx.hidden[k]
        if np.any(act & (hi <= 0)) or np.any(ina & (lo > 0)):
            ctx.timings["bounds"] = time.perf_counter() - tb
            return Verdict("verified", "bounds", message=f"no input in the box keeps ReLU layer {k} as fixed")
    ctx.open_clauses = [i for i, (a, b) in enumerate(spec.unsafe)
                        if a.size == 0 or not np.any(ctx.bounds.spec_bounds(a)[0] - b > 0)]
    ctx.timings["bounds"] = time.perf_counter() - tb
    stats["clauses_open_after_bounds"] = len(ctx.open_clauses)
    if not ctx.open_clauses:
        return Verdict("verified", "bounds")
    if ctx.timed_out():
        return Verdict("timeout", message="time ran out computing bounds")
    return None


def _alpha_phase(ctx: VerifyContext) -> Verdict | None:
    """2b. alpha-CROWN: optimised slopes for the unstable neurons' bounds, then for the open clauses."""
    spec, stats, bounds = ctx.spec, ctx.stats, ctx.bounds
    if not (ctx.options.alpha_share > 0 and any(spec.unsafe[i][0].size for i in ctx.open_clauses)):
        return None
    ta = time.perf_counter()
    stop = ta + ctx.options.alpha_share * (ctx.deadline - ta)
    _, alpha_stats = bounds.optimised(deadline=stop)
    stats["alpha"] = dict(alpha_stats)
    still = []
    for i in ctx.open_clauses:
        a, b = spec.unsafe[i]
        if a.size == 0 or not np.any(bounds.spec_lower(a, deadline=stop) - b > 0):
            still.append(i)
    ctx.open_clauses = still
    ctx.hidden, ctx.out_bounds = bounds.best[:-1], bounds.best[-1]
    stats["unstable_after_alpha"] = _unstable(ctx.hidden)
    stats["clauses_open_after_alpha"] = len(ctx.open_clauses)
    ctx.timings["alpha"] = time.perf_counter() - ta
    if not ctx.open_clauses:
        return Verdict("verified", "bounds")
    if ctx.timed_out():
        return Verdict("timeout", message="time ran out computing alpha-CROWN bounds")
    return None


def _quick_milp_phase(ctx: VerifyContext) -> Verdict | None:
    """3. The MILP encoding on the bounds so far, and a short try per open clause. Clauses the solver cannot
    settle quickly go on to branch and bound and the full MILP (after LP tightening: tighter big-M, fewer
    binaries)."""
    from verify.milp import MilpEncoding

    opts = ctx.options
    ctx.milp_start = tm = time.perf_counter()
    ctx.encoding = MilpEncoding(ctx.network, ctx.spec, ctx.hidden, output_bounds=ctx.out_bounds)
    ctx.timings["build"] = time.perf_counter() - tm
    ctx.stats.update(binaries=ctx.encoding.n_binaries, constraints=ctx.encoding.n_constraints, solves=[])
    left = ctx.deadline - time.perf_counter()
    # the quick pass takes at most about a tenth of the time left, whatever the number of clauses
    quick = min(max(1.0, opts.quick_share * left), opts.quick_cap,
                max(0.5, 0.1 * left / max(1, len(ctx.open_clauses))))
    if opts.quick_cap > 0:
        verdict, ctx.pending, ctx.unknown = _solve_clauses(ctx, ctx.open_clauses, quick)
    else:
        verdict, ctx.pending, ctx.unknown = None, list(ctx.open_clauses), []
    if verdict is not None or not ctx.pending:
        return _milp_verdict(ctx, verdict)
    return None


def _pattern_phase(ctx: VerifyContext) -> Verdict | None:
    """3a. Local search from the caller's ``starts`` for the clauses the quick MILP left open; skipped without
    starts. First (with ``attack`` on) PGD that keeps the fixed ReLU states (:func:`verify.attack.state_attack`,
    at most ``STATE_ATTACK_SHARE`` of the time left), then activation-pattern LPs
    (:func:`verify.attack.pattern_search`), ``PATTERN_SHARE`` of the time left."""
    from verify.attack import pattern_search, state_attack

    if ctx.starts is None or not ctx.pending:
        return None
    tp = time.perf_counter()
    ctx.timings["milp_quick"] = tp - ctx.milp_start
    spec = ctx.spec
    sub = Spec(spec.lower, spec.upper, [spec.unsafe[i] for i in ctx.pending], spec.relu_states, spec.name)
    ends: list[np.ndarray] = []  # the PGD's end points that follow the states
    if ctx.options.attack:
        confirmed: list[Counterexample] = []

        def check(x: np.ndarray) -> bool:
            cex = confirm_counterexample(ctx.network, spec, x)
            if cex is not None:
                confirmed.append(cex)
            return cex is not None

        state_attack(ctx.network, sub, ctx.starts, seed=ctx.options.seed, check=check,
                     deadline=tp + STATE_ATTACK_SHARE * (ctx.deadline - tp), ends=ends)
        ctx.timings["state_attack"] = time.perf_counter() - tp
        ctx.stats["state_attack"] = {"found": bool(confirmed)}
        if confirmed:
            ctx.milp_start = time.perf_counter()
            return Verdict("falsified", "attack", confirmed[0])
        tp = time.perf_counter()
    stop = tp + PATTERN_SHARE * (ctx.deadline - tp)
    x = None
    if ends:  # the LPs first finish what PGD got close to, from its deepest end points, in a part of the time
        x = pattern_search(ctx.network, sub, np.concatenate(ends), max_starts=PATTERN_PGD_STARTS,
                           deadline=tp + PATTERN_PGD_SHARE * (stop - tp))
    if x is None:
        x = pattern_search(ctx.network, sub, ctx.starts, deadline=stop)
    cex = None if x is None else confirm_counterexample(ctx.network, spec, x)
    ctx.timings["patterns"] = time.perf_counter() - tp
    ctx.stats["patterns"] = {"found": cex is not None, "candidate_rejected": x is not None and cex is None}
    ctx.milp_start = time.perf_counter()
    if cex is not None:
        return Verdict("falsified", "patterns", cex)
    if ctx.timed_out():
        return Verdict("timeout", message="time ran out during the activation-pattern search")
    return None


def _bab_phase(ctx: VerifyContext) -> Verdict | None:
    """3b. Branch and bound on ReLU splits (alpha/beta-CROWN bounds per domain) for the clauses the quick
    MILP left open; ``bab_share`` of the time left (0: skipped)."""
    if not ctx.bab_share > 0:
        return None
    ctx.timings.setdefault("milp_quick", time.perf_counter() - ctx.milp_start)
    cex, ctx.pending = _run_bab(ctx, ctx.pending)
    if cex is not None:
        return Verdict("falsified", "bab", cex)
    if not ctx.pending and not ctx.unknown:
        return Verdict("verified", "bab")
    ctx.milp_start = time.perf_counter()
    return None


def _lp_bounds_phase(ctx: VerifyContext) -> Verdict | None:
    """3c. LP tightening of the unstable neurons' bounds for the clauses still open, and the MILP encoding on
    them; skipped when alpha-CROWN ran to completion (its optimal slopes give the LP bound, much faster: the
    LPs would then mostly take MILP time for nothing)."""
    from verify.milp import MilpEncoding

    if not ctx.pending:
        return None
    if ctx.bounds.alpha_stats.get("complete"):
        if "milp_bounds" in ctx.stats:  # branch and bound tightened the root: a tighter big-M for the MILP
            ctx.encoding = MilpEncoding(ctx.network, ctx.spec, ctx.hidden, output_bounds=ctx.out_bounds)
            ctx.stats["binaries_after_milp_bounds"] = ctx.encoding.n_binaries
        return None
    tl = time.perf_counter()
    tightened, lp_stats = ctx.bounds.tightened(deadline=tl + ctx.options.lp_share * (ctx.deadline - tl))
    ctx.stats["lp_tightening"] = dict(lp_stats)
    ctx.stats["unstable_after_lp"] = _unstable(tightened[:-1])
    ctx.timings["lp_bounds"] = time.perf_counter() - tl
    ctx.encoding = MilpEncoding(ctx.network, ctx.spec, tightened[:-1], output_bounds=ctx.out_bounds)
    ctx.stats["binaries_after_lp"] = ctx.encoding.n_binaries
    return None


def _milp_phase(ctx: VerifyContext) -> Verdict:
    """3c. The full MILP, with all the time left, on the clauses still open; always ends the run."""
    verdict = None
    if ctx.pending:
        verdict, ctx.pending, more_unknown = _solve_clauses(ctx, ctx.pending, None)
        ctx.unknown += more_unknown
    return _milp_verdict(ctx, verdict)


def _milp_verdict(ctx: VerifyContext, verdict: tuple[str, Any] | None) -> Verdict:
    """The answer of the MILP phases (``timings["milp"]``: MILP time, without LP tightening, with the quick
    pass)."""
    timings = ctx.timings
    timings["milp"] = (time.perf_counter() - ctx.milp_start - timings.get("lp_bounds", 0.0)
                       + timings.get("milp_quick", 0.0))
    if verdict is not None:
        kind, payload = verdict
        if kind == "falsified":
            return Verdict("falsified", "milp", payload)
        return Verdict("error", message=payload)
    if ctx.pending:
        return Verdict("timeout", message=f"the solver hit the time limit on clause(s) {ctx.pending}")
    if ctx.unknown:
        return Verdict("unknown", message=f"clauses {ctx.unknown}: solver candidates did not re-check on the network")
    return Verdict("verified", "milp")


#: The phases of :func:`verify`, in order: ``(name, phase)``; a phase takes the call's
#: :class:`VerifyContext` and returns a :class:`Verdict` (the run ends) or ``None`` (on to the next phase).
PHASES: tuple[tuple[str, Callable[[VerifyContext], Verdict | None]], ...] = (
    ("attack", _attack_phase),
    ("bounds", _bounds_phase),
    ("alpha", _alpha_phase),
    ("milp_quick", _quick_milp_phase),
    ("patterns", _pattern_phase),
    ("bab", _bab_phase),
    ("lp_bounds", _lp_bounds_phase),
    ("milp", _milp_phase),
)


def _run_bab(ctx: VerifyContext, clauses: list[int]) -> tuple[Counterexample | None, list[int]]:
    """Branch and bound (:mod:`verify.bab`) on ``clauses``, lowest bound first, within ``bab_share`` of the
    time left. Returns ``(counterexample, still_open)``; the counterexample (re-checked) or None."""
    from verify.bab import bab_clause

    network, spec, stats = ctx.network, ctx.spec, ctx.stats
    tbab = time.perf_counter()
    stop = tbab + ctx.bab_share * (ctx.deadline - tbab)
    stats["bab"] = []
    still: list[int] = []

    def key(i: int) -> float:  # the clause with the lowest bound first: the likeliest counterexample
        a, b = spec.unsafe[i]
        return float(np.max(ctx.bounds.spec_bounds(a)[0] - b)) if a.size else np.inf

    confirmed: list[Counterexample] = []

    def check(x: np.ndarray) -> bool:  # BaB's candidates are re-checked here, once
        cex = confirm_counterexample(network, spec, x)
        if cex is not None:
            confirmed.append(cex)
        return cex is not None

    def run(i: int, until: float):
        out = bab_clause(network, spec, i, ctx.hidden, until, solver=ctx.options.solver, fixed=spec.relu_states,
                         check=check, device=ctx.options.device, memory=ctx.options.bab_memory)
        stats["bab"].append({"clause": i, "status": out.status, "root": "milp" if tightened else "alpha",
                             **out.stats})
        return out

    tightened = not _milp_bounds_apply(ctx)
    probe = tbab + STALL_SHARE * (stop - tbab)
    order = sorted(clauses, key=key)
    for n, i in enumerate(order):
        if spec.unsafe[i][0].size == 0:
            still.append(i)
            continue
        if time.perf_counter() >= stop:
            still.extend(order[n:])
            break
        out = run(i, stop if tightened else min(stop, max(probe, time.perf_counter() + 1.0)))
        if out.status == "timeout" and not tightened and time.perf_counter() < stop:
            tightened = True  # branch and bound stalls: tighten the root once, then go on with the time left
            _milp_bounds(ctx, stop)
            out = run(i, stop)
        if out.status == "falsified":  # only after check() accepted the candidate
            ctx.timings["bab"] = time.perf_counter() - tbab
            return confirmed[-1], still
        if out.status != "verified":
            still.extend(order[n:])
            break
    ctx.timings["bab"] = time.perf_counter() - tbab
    stats["clauses_open_after_bab"] = len(still)
    return None, still


def _milp_bounds_apply(ctx: VerifyContext) -> bool:
    """Whether MILP bounds may help this query's branch and bound: asked for, a second ReLU layer with
    unstable neurons, and a model of at most :data:`MILP_BOUNDS_MAX_ENTRIES` dense entries."""
    sizes = ctx.network.relu_sizes
    # not for NAP queries: the full MILP follows their short branch and bound, and their first layers' MILPs
    # over the whole input domain are slow (mnist-net_256x4, NAP_8: 26 s for 8 of them)
    if not (ctx.options.milp_share > 0 and len(sizes) >= 2 and ctx.hidden is not None) or ctx.spec.relu_states:
        return False
    unstable0, unstable1 = _unstable(ctx.hidden[:2])
    entries = (sizes[0] + sizes[1]) * (ctx.network.n_inputs + 3 * unstable0)
    return unstable1 > 0 and entries <= MILP_BOUNDS_MAX_ENTRIES


def _milp_bounds(ctx: VerifyContext, stop: float) -> None:
    """MILP bounds of ReLU layer 1 (a binary per unstable neuron of layer 0), ``milp_share`` of the time left
    before ``stop``, on ``milp_threads`` threads, each MILP stopped after its share of that budget (0.1 s to
    :data:`MILP_PER_NEURON_MAX`); the root of branch and bound becomes the tighter bounds."""
    tm = time.perf_counter()
    budget = ctx.options.milp_share * (stop - tm)
    threads = ctx.options.milp_thread_count()
    per_neuron = float(np.clip(budget * threads / max(1, 2 * _unstable(ctx.hidden[1:2])[0]), 0.1,
                               MILP_PER_NEURON_MAX))
    _, milp_stats = ctx.bounds.milp_tightened(tm + budget, to_layer=1, per_neuron=per_neuron, workers=threads)
    ctx.hidden, ctx.out_bounds = ctx.bounds.best[:-1], ctx.bounds.best[-1]
    ctx.timings["milp_bounds"] = time.perf_counter() - tm
    ctx.stats["milp_bounds"] = {**milp_stats, "per_neuron": round(per_neuron, 3), "threads": threads,
                                "unstable_after": _unstable(ctx.hidden)}


def _solve_clauses(ctx: VerifyContext, clauses: list[int], per_clause: float | None):
    """Solve clauses of ``ctx.encoding`` in turn, each with ``per_clause`` seconds (None: all the time left).
    With a ``per_clause`` limit (the quick pass) a solver failure leaves the clause pending instead of ending
    everything with ``error``, and the first clause stopped by that limit ends the pass: the clauses after it
    are left pending untried (on mnist-net_256x4 every clause ran to its limit, 28 s in all).

    Returns ``(verdict, pending, unknown)``: ``verdict`` is ``("falsified", counterexample)``,
    ``("error", message)`` or None; ``pending`` the clauses stopped by a time limit; ``unknown`` those whose
    solver candidates did not re-check.
    """
    network, spec, enc, stats = ctx.network, ctx.spec, ctx.encoding, ctx.stats
    solver, deadline = ctx.options.solver, ctx.deadline
    pending, unknown = [], []
    limited = False  # a quick try ran to its limit
    for n, i in enumerate(clauses):
        if limited:
            # a quick try is a bet that the MILP is easy; a clause that ran to its limit loses it for the rest
            # of the property (same network, box and binaries): they go on to branch and bound at once
            stats["quick_pass_stopped"] = len(clauses) - n
            pending.extend(clauses[n:])
            break
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
            cex = confirm_counterexample(network, spec, out.x)
            if cex is None and deadline - time.perf_counter() > 0.05:
                # numerically borderline: ask once for a deeper violation
                deeper = enc.solve_clause(i, solver, deadline - time.perf_counter(), margin=1e-4)
                if deeper.status == "feasible":
                    cex = confirm_counterexample(network, spec, deeper.x)
            if cex is not None:
                return ("falsified", cex), pending, unknown
            unknown.append(i)
            continue
        if out.status == "timeout":
            pending.append(i)
            limited = per_clause is not None
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
    if naps.model_relus is not None:  # NAPs mined by probe.nap.mine record the mined model's ReLU layers
        try:
            naps.check_model(names, n_outputs=network.n_outputs)
        except ModelError as err:
            raise SpecError(str(err)) from err
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


def nap_domain(network, lower: np.ndarray | None, upper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The input box of a NAP property: the given bounds, else the unit box [0, 1]^n.

    Example:
        >>> lo, hi = nap_domain(net, None, None)             # doctest: +SKIP
    """
    n = network.n_inputs
    lo = np.zeros(n) if lower is None else np.asarray(lower, dtype=np.float64)
    hi = np.ones(n) if upper is None else np.asarray(upper, dtype=np.float64)
    return lo, hi


def nap_robustness_class(network, naps, c: int, lo: np.ndarray, hi: np.ndarray, solver: str, timeout: float,
                          per_competitor: bool, starts: np.ndarray | None = None
                          ) -> list[VerificationResult] | VerificationResult:
    """The NAP robustness queries of class ``c`` over the box ``lo, hi`` (see :func:`nap_robustness`): one
    result per competitor, or one for all of them (``per_competitor=False``).

    Example:
        >>> results = nap_robustness_class(net, naps, 3, lo, hi, "highs", 30.0, True)   # doctest: +SKIP
    """
    from verify.bounds import BoxBounds

    states = nap_states(network, naps, [c])
    if per_competitor:
        # one set of bounds (CROWN, then LP tightening once) for the class's box and NAP, shared by its
        # competitor queries
        shared = BoxBounds(network, lo, hi, states)
        return [verify(network, nap_robustness_spec(lo, hi, states, c, network.n_outputs, targets=[j]),
                       solver=solver, timeout=timeout, bounds=shared, starts=starts)
                for j in range(network.n_outputs) if j != c]
    return verify(network, nap_robustness_spec(lo, hi, states, c, network.n_outputs), solver=solver,
                  timeout=timeout, starts=starts)


def _check_starts(network, starts: np.ndarray | None) -> np.ndarray | None:
    """``starts`` as a float64 ``(n, n_inputs)`` array (checked), or None."""
    if starts is None:
        return None
    arr = np.asarray(starts, dtype=np.float64)
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    if arr.shape[1] != network.n_inputs or not np.all(np.isfinite(arr)):
        raise SpecError(f"starts must be finite inputs of {network.n_inputs} values each; got an array of shape "
                        f"{np.shape(starts)}")
    return arr


def nap_ambiguity_pair(network, naps, pair: tuple[int, int], lo: np.ndarray, hi: np.ndarray, solver: str,
                        timeout: float, starts: np.ndarray | None = None) -> VerificationResult:
    """The NAP non-ambiguity query of ``pair`` over the box ``lo, hi`` (see :func:`nap_ambiguity`); ``starts``:
    inputs for the state-keeping PGD and the activation-pattern search (e.g. images that follow one of the two
    NAPs), or None.

    Example:
        >>> nap_ambiguity_pair(net, naps, (3, 5), lo, hi, "highs", 30.0).status      # doctest: +SKIP
        'verified'
    """
    i, j = pair
    if bool(naps.disjoint_pairs()[i, j]):
        return VerificationResult("verified", "nap-conflict", solver=solver,
                                  message="a neuron is active in one NAP and inactive in the other")
    states = nap_states(network, naps, [i, j])
    return verify(network, nap_ambiguity_spec(lo, hi, states, (i, j)), solver=solver, timeout=timeout,
                  starts=starts)


def check_timeout(timeout: float, solver: str = "cbc") -> None:
    """Check ``timeout`` (and ``solver``) as :class:`VerifyOptions` does, before any query runs.

    Raises:
        InvalidParameterError, SolverError: as :class:`VerifyOptions` raises them.

    Example:
        >>> check_timeout(30.0, "highs")
    """
    VerifyOptions(solver=solver, timeout=timeout)


def _parallel(workers: int | None, address: str | None) -> bool:
    return address is not None or (workers is not None and workers != 1)


def nap_robustness(network, naps, classes: Sequence[int] | None = None, lower: np.ndarray | None = None,
                   upper: np.ndarray | None = None, solver: str = "cbc", timeout: float = 60.0,
                   per_competitor: bool = True, *, workers: int | None = None,
                   address: str | None = None, starts: np.ndarray | None = None
                   ) -> dict[int, list[VerificationResult] | VerificationResult]:
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
        workers, address: run the classes in parallel on Ray, one task per class
            (:func:`verify.distributed.nap_robustness_parallel`): ``address`` joins a cluster, else a local
            one with ``workers`` CPUs is started. Default (``workers`` 1 or ``None``, no address): here.
        starts: optional inputs (e.g. training or test images, any class) for the activation-pattern search
            of every query (``verify(..., starts=...)``); each query uses those that follow its NAP. Queries
            the MILP cannot settle in time are often falsified this way.

    Returns:
        Per class, the list of per-competitor results (or one result).

    Example:
        >>> nap_robustness(net, naps, timeout=30)[3][0].status                # doctest: +SKIP
        'verified'
        >>> nap_robustness(net, naps, timeout=30, workers=2)[3][0].status     # doctest: +SKIP
        'verified'
    """
    starts = _check_starts(network, starts)
    if _parallel(workers, address):
        from verify.distributed import nap_robustness_parallel

        return nap_robustness_parallel(network, naps, classes, lower, upper, solver, timeout, per_competitor,
                                       workers=workers, address=address, starts=starts)
    lo, hi = nap_domain(network, lower, upper)
    classes = [c for c in range(naps.num_classes) if c not in naps.empty_classes] if classes is None else classes
    return {c: nap_robustness_class(network, naps, c, lo, hi, solver, timeout, per_competitor, starts)
            for c in classes}


def nap_ambiguity(network, naps, pairs: Sequence[tuple[int, int]] | None = None, lower: np.ndarray | None = None,
                  upper: np.ndarray | None = None, solver: str = "cbc", timeout: float = 60.0, *,
                  workers: int | None = None, address: str | None = None,
                  starts: np.ndarray | None = None) -> dict[tuple[int, int], VerificationResult]:
    """NAP non-ambiguity: no input of the box follows both NAP_i and NAP_j. ``verified`` = non-ambiguous;
    ``falsified`` comes with an input that follows both. Pairs with a neuron active in one NAP and inactive
    in the other are decided without a solver (method ``"nap-conflict"``). ``workers``/``address``: one Ray
    task per remaining pair (:func:`verify.distributed.nap_ambiguity_parallel`), as in :func:`nap_robustness`.
    ``starts``: optional inputs for the search of an input that follows both NAPs (PGD that keeps the fixed
    states, then activation-pattern LPs), given to every query as they are: pass those that follow one of the
    two NAPs (e.g. the test images that do, as the NAP study does), since the PGD starts from 32 of them.

    Example:
        >>> nap_ambiguity(net, naps, timeout=30, workers=2)[(0, 1)].method     # doctest: +SKIP
        'nap-conflict'
    """
    starts = _check_starts(network, starts)
    if _parallel(workers, address):
        from verify.distributed import nap_ambiguity_parallel

        return nap_ambiguity_parallel(network, naps, pairs, lower, upper, solver, timeout, workers=workers,
                                      address=address, starts=starts)
    lo, hi = nap_domain(network, lower, upper)
    valid = [c for c in range(naps.num_classes) if c not in naps.empty_classes]
    pairs = [(i, j) for i in valid for j in valid if i < j] if pairs is None else list(pairs)
    return {(i, j): nap_ambiguity_pair(network, naps, (i, j), lo, hi, solver, timeout, starts) for i, j in pairs}
