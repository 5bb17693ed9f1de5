"""Branch and bound on ReLU states (BaB), on the batched bound engine, for clauses the bounds alone leave open.

A *domain* is the input box with some unstable ReLUs split: forced active (``z >= 0``, so ``relu(z) = z``)
or inactive (``z <= 0``, so ``relu(z) = 0``). Each domain keeps sound pre-activation bounds of every ReLU
layer for the inputs of the box that follow its splits. The root starts from the tightest bounds of the
whole box (:class:`verify.bounds.BoxBounds`: CROWN, alpha-CROWN, LP-tightened); a child inherits its
parent's bounds (the split neuron's clipped at 0), optionally recomputes the layers after the split
(``intermediate``), and is bounded by the engine (:class:`verify.bounds.engine.Engine`), many domains at
once, with alpha-CROWN slopes and beta-CROWN split multipliers searched for the batch. Then:

* if a row of the unsafe clause ``A @ y <= b`` has a positive lower bound of ``A_r @ y - b_r``, or a layer's
  lower bound exceeds its upper bound (no input follows the splits), the domain is **pruned**;
* the input minimising the clause's linear lower bound (and, for the :data:`PGD_DOMAINS` domains of the
  batch with the lowest bounds, a few PGD steps from it) is run through the network: if its output lies in
  the clause, it is a counterexample **candidate** (the caller re-checks it everywhere before any ``sat``);
* otherwise the domain is split. The neuron: the BaBSR-style score (the relaxation's share of the bound)
  ranks the unstable neurons, and with ``branching="fsb"`` (filtered smart branching) the top
  :data:`FSB_CANDIDATES` are scored by the bounds their two children would get (one float32 engine pass
  over all of them, with the parent's slopes and its relaxations with the one neuron fixed) and the best
  is split. The domains with the lowest bounds are processed first,
  in batches that grow (up to ``max_batch``) while a batch takes under :data:`BATCH_SECONDS`.

The alpha/beta search takes at most ``iters`` Adam steps per batch (:data:`ROOT_ITERS` at the root), from
CROWN's slopes and zero multipliers, keeps each domain's best values and stops early when the bounds stop
rising; it runs in float32 (a heuristic: every slope in ``[0, 1]`` and multiplier ``>= 0`` is sound), and
the bound is then recomputed in float64 with the rounding-error padding of the engine, so the search never
affects soundness. Starting children from their parent's slopes and multipliers (warm start, as
beta-CROWN does) was measured and dropped: on mnist-net_256x4 ``prop_0_0.03`` clause 5 it left 3,029
domains unfinished after 20 s where the cold start verified with 257 (docs/decisions.md).

A domain with no unstable neuron left is a linear region: an LP over the box and its sign constraints
(:class:`verify.milp.MilpEncoding` with every state fixed, no binaries) decides it exactly.

The clause is **verified** only when every domain is pruned or its LP is infeasible.

Example:
    >>> out = bab_clause(net, spec, 0, shared_bounds, deadline=time.perf_counter() + 30)  # doctest: +SKIP
    >>> out.status, out.stats["domains"]                                                 # doctest: +SKIP
    ('verified', 412)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from probe.core.device import check_device
from probe.core.errors import InvalidParameterError
from verify.bounds.engine import Engine, Relaxation, TorchNetwork, relax
from verify.errors import ResourceLimitError
from verify.properties import Spec

__all__ = ["BabOutcome", "bab_clause", "check_memory", "domain_bytes"]

logger = logging.getLogger(__name__)

#: Domains kept at most (see also MAX_DOMAIN_BYTES); beyond this the search stops with ``timeout``.
MAX_DOMAINS = 400_000
#: Memory the open domains may take (bounds float64 and split signs int8: 17 bytes per ReLU neuron; mnist
#: 256x6 domains take 26 KiB). The batch being bounded takes more while its slopes and multipliers are
#: searched (two float32 per neuron and clause row, for the batch and the branching candidates).
MAX_DOMAIN_BYTES = 4 * 2**30
#: Neurons split at once in a domain while the queue is too short to fill a batch (2**k children). 1: off.
MAX_SPLITS = 1
#: Unstable neurons per domain that filtered smart branching scores by their children's bounds.
FSB_CANDIDATES = 4
#: A batch that takes less than this many seconds makes the next one twice as large (up to ``max_batch``).
BATCH_SECONDS = 0.5
#: The largest batch by device type when ``bab_clause`` is given no ``max_batch``. On an H200, batches of up
#: to 8,192 domains gave 151x the CPU's domains per second (median of 5 clauses), up to 1,024 gave 34x
#: (benchmarks/cuda_engine.py, results/cuda_engine.json).
MAX_BATCH = {"cpu": 1024, "cuda": 8192}
#: Adam steps of the alpha search at the root (children start from their parent's values).
ROOT_ITERS = 50
#: Adam step size of the slopes at the root, and in children (warm-started from their parent's).
ROOT_LR_ALPHA = 0.25
LR_ALPHA = 0.1
#: A child's search stops once its bound rose by less than this over a few steps.
TOL = 1e-4
#: intermediate="shallow": children of domains with fewer splits than this get intermediate bounds.
SHALLOW = 12
#: Branching rules.
BRANCHING = ("fsb", "babsr")
#: Domains per batch whose bound-minimising inputs get PGD steps (those with the lowest bounds): the PGD of
#: every domain of a 1,024-domain batch took a fifth of the search's time on mnist-net_256x6.
PGD_DOMAINS = 128


@dataclass
class BabOutcome:
    """``status`` in {``verified``, ``falsified``, ``timeout``}; ``x`` a counterexample candidate for
    ``falsified`` (to be re-checked by the caller); ``stats``: domains visited, splits, LPs, depth."""

    status: str
    x: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def domain_bytes(net, rows: int) -> int:
    """Bytes one domain takes while it is bounded: bounds (2 x float64), split signs (int8), slopes and
    multipliers (2 x float32 per clause row) of every ReLU neuron (an open domain keeps only the first two).

    Example:
        >>> domain_bytes(net_256x6, 1)                                   # doctest: +SKIP
        38400
    """
    return (17 + 8 * int(rows)) * int(sum(net.relu_sizes))  # the slopes and multipliers while it is bounded


def check_memory(net, spec: Spec, memory: int = MAX_DOMAIN_BYTES, batch: int = 64) -> None:
    """Refuse, before anything runs, a network whose first batch of domains (with the children that
    filtered smart branching scores: ``2 * FSB_CANDIDATES`` per domain) does not fit in ``memory`` bytes.

    Raises:
        ResourceLimitError: it does not fit (the message gives both sizes and what to change).

    Example:
        >>> check_memory(net, spec, memory=2**20)                        # doctest: +SKIP
        Traceback (most recent call last):
        verify.errors.ResourceLimitError: ...
    """
    rows = max([1, *(int(a.shape[0]) for a, _ in spec.unsafe)])
    need = domain_bytes(net, rows) * batch * (1 + 2 * FSB_CANDIDATES)
    if need > memory:
        raise ResourceLimitError(
            f"branch and bound needs {need / 2**20:.1f} MiB for its first batch of {batch} domains of this "
            f"network ({sum(net.relu_sizes)} ReLU neurons, {rows} clause rows), more than the memory cap of "
            f"{memory / 2**20:.1f} MiB; raise the cap (VerifyOptions(bab_memory=...)) or skip branch and bound "
            "(bab_share=0)")


def _lp_leaf(net, spec: Spec, index: int, lo: list[np.ndarray], up: list[np.ndarray], solver: str,
             time_limit: float):
    """Decide a domain with no unstable neuron by one LP (every ReLU state fixed)."""
    from verify.milp import MilpEncoding

    states = {k: (lo[k] >= 0, (up[k] <= 0) & ~(lo[k] >= 0)) for k in range(len(lo))}
    leaf = Spec(spec.lower, spec.upper, [spec.unsafe[index]], relu_states=states)
    enc = MilpEncoding(net, leaf, list(zip(lo, up, strict=True)), strict_states=True)
    return enc.solve_clause(0, solver, time_limit)


def bab_clause(net, spec: Spec, index: int, root: list[tuple[np.ndarray, np.ndarray]], deadline: float,
               solver: str = "highs", batch: int = 64, check=None, iters: int = 10,
               fixed: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
               intermediate: bool = False, pgd_steps: int = 5, branching: str = "fsb",
               max_batch: int | None = None, device: str = "cpu", memory: int = MAX_DOMAIN_BYTES) -> BabOutcome:
    """Branch and bound on ReLU splits for unsafe clause ``index`` of ``spec``.

    Args:
        net: the :class:`verify.network.ReluNetwork`.
        spec: the property; its box is the root domain (its fixed ``relu_states``, if any, must already be
            reflected in ``root``: clipped bounds).
        index: which clause of ``spec.unsafe``.
        root: sound pre-activation bounds of every ReLU layer over the box (e.g. ``BoxBounds.best[:-1]``).
        deadline: ``time.perf_counter()`` value at which to stop with ``timeout``.
        solver: the LP solver for leaf domains.
        batch: domains bounded at once in the first batch (it grows up to ``max_batch``).
        check: optional callable ``x -> bool`` that re-checks a candidate; a candidate it rejects does not
            stop the search.
        iters: alpha/beta Adam steps per batch at most (0: plain CROWN with beta 0).
        fixed: the property's fixed ReLU states ``{layer: (active, inactive)}`` (NAP properties): they are
            constraints of every domain, so they get beta multipliers like splits.
        intermediate: also recompute the bounds of the layers after a split with CROWN (tighter, but a
            back-substitution of every unstable neuron per domain); without it, splits act through the beta
            multipliers and the clipped bounds, as in beta-CROWN.
        pgd_steps: signed-gradient steps on the network from each domain's bound-minimising input (over the
            whole box) when that input itself is not a counterexample; 0 skips them.
        branching: ``"fsb"`` (filtered smart branching) or ``"babsr"``.
        max_batch: the largest batch (``None``: :data:`MAX_BATCH` of the device's type).
        device: where the engine runs (``"cpu"``, ``"cuda"``).
        memory: bytes the open domains may take (the search stops with ``timeout`` when they would take
            more; a network whose first batch does not fit is refused).

    Returns:
        A :class:`BabOutcome`.

    Raises:
        InvalidParameterError: an unknown ``branching``, a batch size below 1, or a device that is not
            available.
        ResourceLimitError: the first batch of domains does not fit in ``memory``.
    """
    from verify.bounds import one_torch_thread

    if branching not in BRANCHING:
        raise InvalidParameterError(f"branching must be one of {BRANCHING}, got {branching!r}")
    dev = check_device(device)
    if max_batch is None:
        max_batch = MAX_BATCH.get(dev.type, MAX_BATCH["cpu"])
        max_batch = max(batch, max_batch) if isinstance(batch, int) else max_batch
    if not (isinstance(batch, int) and isinstance(max_batch, int) and 1 <= batch <= max_batch):
        raise InvalidParameterError(f"batch and max_batch must be integers with 1 <= batch <= max_batch, got "
                                    f"{batch!r} and {max_batch!r}")
    check_memory(net, Spec(spec.lower, spec.upper, [spec.unsafe[index]]), memory, batch)
    with one_torch_thread(), torch.no_grad():
        run = _Search(net, spec, index, deadline, solver, check, iters, intermediate, pgd_steps, branching,
                      batch, max_batch, dev, memory)
        return run.run(root, fixed or {})


@dataclass
class _Queue:
    """Open domains (first dimension), per ReLU layer: bounds, split signs, slopes and multipliers."""

    lo: list[torch.Tensor]
    up: list[torch.Tensor]
    sign: list[torch.Tensor]  # int8 in {-1, 0, 1}
    lb: torch.Tensor
    choice: torch.Tensor
    splittable: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.lb.shape[0])

    def pick(self, rows: torch.Tensor) -> _Queue:
        def sel(v):
            return [t[rows] for t in v] if isinstance(v, list) else v[rows]

        return _Queue(*(sel(getattr(self, f.name)) for f in fields(self)))

    def extend(self, other: _Queue) -> _Queue:
        def cat(a, b):
            if isinstance(a, list):
                return [torch.cat([x, y], 0) for x, y in zip(a, b, strict=True)]
            return torch.cat([a, b], 0)

        return _Queue(*(cat(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))


class _Search:
    """One branch and bound run (see :func:`bab_clause`)."""

    def __init__(self, net, spec, index, deadline, solver, check, iters, intermediate, pgd_steps, branching,
                 batch, max_batch, device, memory) -> None:
        self.net, self.spec, self.index, self.deadline = net, spec, index, deadline
        self.solver, self.check, self.iters = solver, check, iters
        self.intermediate, self.pgd_steps, self.branching = intermediate, pgd_steps, branching
        self.batch, self.max_batch, self.memory = batch, max_batch, memory
        self.stats: dict[str, Any] = {"domains": 0, "splits": 0, "lps": 0, "max_depth": 0,
                                      "candidates_rejected": 0, "batches": 0, "alpha_steps": 0}
        self.t0 = time.perf_counter()
        a_mat, b_vec = spec.unsafe[index]
        self.tnet = TorchNetwork.of(net, device)
        self.eng = Engine(self.tnet, spec.lower, spec.upper)
        self.dev = self.tnet.device
        self.A = torch.as_tensor(np.asarray(a_mat, dtype=np.float64), device=self.dev)
        self.bvec = torch.as_tensor(np.asarray(b_vec, dtype=np.float64), device=self.dev)
        self.n_relu = len(net.relu_sizes)
        self.offsets = np.cumsum([0, *net.relu_sizes])

    def done(self, status: str, x: np.ndarray | None = None, **extra) -> BabOutcome:
        elapsed = time.perf_counter() - self.t0
        self.stats.update(extra, seconds=round(elapsed, 3),
                          domains_per_second=round(self.stats["domains"] / max(elapsed, 1e-9), 1))
        return BabOutcome(status, x, self.stats)

    # ---- bounding ------------------------------------------------------------------------------------------

    def _clause_inputs(self, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The clause ``A @ y - b`` as the coefficients and constants of the last ReLU layer's output."""
        t, A = self.tnet, self.A
        return (A @ t.W[-1]).expand(B, -1, -1), (A @ t.b[-1] - self.bvec).expand(B, -1)

    def _clause_error(self, rel: list[Relaxation]) -> tuple[torch.Tensor, int]:
        """The magnitudes of the terms already rounded into :meth:`_clause_inputs` (for the sound bound)."""
        t, A = self.tnet, self.A
        err0 = rel[-1].a_mag @ (A.abs() @ t.absW[-1]).T + (A.abs() @ t.absb[-1] + self.bvec.abs())
        return err0, int(t.W[-1].shape[0])

    def bound(self, lo, up, sign, iters: int, lr_alpha: float, tol: float):
        """Optimise slopes/multipliers (warm start) and return the sound clause bounds (B, R), the
        minimising inputs, branching scores, relaxations and the values found."""
        B = lo[0].shape[0]
        rel = [relax(lo[j], up[j]) for j in range(self.n_relu)]
        coef, const = self._clause_inputs(B)
        err0, width0 = self._clause_error(rel)
        split = any(bool((s != 0).any()) for s in sign)
        signs = [s.to(torch.float64) for s in sign] if split else None
        al = be = None
        if iters > 0:
            al, be, steps = self.eng.optimise(rel, self.n_relu, coef, const, signs=signs, iters=iters,
                                              lr_alpha=lr_alpha, deadline=self.deadline, tol=tol)
            self.stats["alpha_steps"] += steps
        low, x_star, kept = self.eng.lower(rel, self.n_relu, coef, const, err0, width0, keep=0, alphas=al,
                                           betas=be, signs=signs)
        scores = []
        for j in range(self.n_relu):
            c = kept[j]  # (B, R, n_j): the coefficient of relu(z_j) in the bound
            r = rel[j]
            gain = (c.clamp(max=0).neg() * r.t_up.unsqueeze(1)).sum(1)
            gain = gain + 1e-3 * (c.clamp(min=0) * torch.minimum(up[j], -lo[j]).clamp(min=0).unsqueeze(1)).sum(1)
            scores.append(torch.where(r.unstable, gain + 1e-12, torch.full_like(gain, -1.0)))
        return low, x_star, torch.cat(scores, 1), rel, al, be, signs

    def fsb(self, rel, alphas, betas, signs, flat: torch.Tensor) -> torch.Tensor:
        """Filtered smart branching: of the top candidates by score, the neuron whose worse child gets the
        highest bound (one engine pass over both children of every candidate, the parent's slopes and
        multipliers); ``(B, 1)`` flat neuron indices."""
        B = flat.shape[0]
        k = min(FSB_CANDIDATES, flat.shape[1])
        top = flat.topk(k, dim=1)
        cand = top.indices  # (B, k)
        n = 2 * k  # child c of candidate i of domain p is row (i * 2 + c) * B + p
        # the parent's relaxations (in float32, as the estimate uses them), the split neuron fixed in each child
        c_rel = [r.to(torch.float32).repeat(n) for r in rel]
        idx = torch.arange(B, device=self.dev)
        for i in range(k):
            layer, neuron = self._locate(cand[:, i])
            for j, sel in self._by_layer(layer):
                for c in (0, 1):
                    c_rel[j].fix((i * 2 + c) * B + idx[sel], neuron[sel], active=bool(c))
        coef, const = self._clause_inputs(n * B)

        def rep(v: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if v is None else [t.to(torch.float32).repeat(n, 1, 1) for t in v]

        sg = None if signs is None else [s.to(torch.float32).repeat(n, 1) for s in signs]
        low = self.eng.estimate(c_rel, self.n_relu, coef, const, alphas=rep(alphas), betas=rep(betas), signs=sg)
        child = low.max(1).values.view(k, 2, B).min(1).values.T  # (B, k): the worse child per candidate
        child = torch.where(top.values >= 0, child, torch.full_like(child, -torch.inf))
        best = child.argmax(1, keepdim=True)
        return cand.gather(1, best)

    def evaluate(self, lo, up, sign, depth, parent_lb=None, root: bool = False):
        """Bound a batch; return it as a queue, the mask of domains still open, and the inputs to try. The
        root gets a longer search from CROWN's slopes; children a short one from their parent's values."""
        if root:
            iters, lr, tol = (max(self.iters, ROOT_ITERS) if self.iters else 0), ROOT_LR_ALPHA, 0.0
        else:
            iters, lr, tol = self.iters, LR_ALPHA, TOL
        low, x_star, flat, rel, al, be, signs = self.bound(lo, up, sign, iters, lr, tol)
        best = low.max(1)
        lb = best.values if parent_lb is None else torch.maximum(best.values, parent_lb)
        empty = torch.zeros_like(lb, dtype=torch.bool)
        for j in range(self.n_relu):
            empty |= (lo[j] > up[j]).any(1)
        open_ = ~((lb > 0) | empty)
        x_try = x_star[torch.arange(low.shape[0], device=self.dev), low.argmin(1)]
        splittable = flat.max(1).values >= 0
        choice = torch.zeros((low.shape[0], MAX_SPLITS), dtype=torch.long, device=self.dev)
        live = torch.nonzero(open_ & splittable).reshape(-1)
        if live.numel():
            if self.branching == "fsb" and MAX_SPLITS == 1:
                def sub(v: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
                    return None if v is None else [t[live] for t in v]

                choice[live] = self.fsb([r.pick(live) for r in rel], sub(al), sub(be), sub(signs), flat[live])
            else:
                choice[live] = flat[live].topk(min(MAX_SPLITS, flat.shape[1]), dim=1).indices
        q = _Queue(lo, up, sign, lb, choice, splittable, depth)
        return q, open_, x_try

    # ---- counterexamples -----------------------------------------------------------------------------------

    def candidate(self, xs: torch.Tensor, lb: torch.Tensor | None = None) -> np.ndarray | None:
        """Try the domains' bound-minimising inputs, then a few PGD steps from those of the
        :data:`PGD_DOMAINS` domains with the lowest bounds ``lb`` (all without ``lb``), on the network."""
        tnet, A, b = self.tnet, self.A, self.bvec
        y = tnet.forward(xs)
        viol = ((y @ A.T - b) <= 0).all(1)
        if not bool(viol.any()) and self.pgd_steps:
            lo, up = self.eng.x_lo, self.eng.x_up
            width = up - lo
            if lb is not None and xs.shape[0] > PGD_DOMAINS:
                xs = xs[torch.argsort(lb)[:PGD_DOMAINS]]
            x = xs.clone()
            for step in range(self.pgd_steps):
                with torch.enable_grad():
                    x.requires_grad_(True)
                    loss = (tnet.forward(x) @ A.T - b).max(1).values
                    (grad,) = torch.autograd.grad(loss.sum(), x)
                x = torch.minimum(torch.maximum(
                    x.detach() - 0.1 * width * (1 - step / self.pgd_steps) * grad.sign(), lo), up)
            y = tnet.forward(x)
            viol = ((y @ A.T - b) <= 0).all(1)
            xs = x
        for i in torch.nonzero(viol).reshape(-1).tolist():
            x = xs[i].cpu().numpy().copy()
            if self.check is None or self.check(x):
                return x
            self.stats["candidates_rejected"] += 1
        return None

    # ---- the search ----------------------------------------------------------------------------------------

    def root_queue(self, root, fixed):
        dev = self.dev
        lo = [torch.as_tensor(np.asarray(lo_, dtype=np.float64), device=dev).reshape(1, -1).clone()
              for lo_, _ in root]
        up = [torch.as_tensor(np.asarray(up_, dtype=np.float64), device=dev).reshape(1, -1).clone()
              for _, up_ in root]
        sign = [torch.zeros(v.shape, dtype=torch.int8, device=dev) for v in lo]
        for k, (act, ina) in fixed.items():
            sign[k][0, torch.as_tensor(np.asarray(act, dtype=bool), device=dev)] = 1
            sign[k][0, torch.as_tensor(np.asarray(ina, dtype=bool), device=dev)] = -1
        return self.evaluate(lo, up, sign, torch.zeros(1, dtype=torch.long, device=dev),
                             root=True)

    def leaves(self, queue: _Queue) -> tuple[BabOutcome | None, _Queue]:
        """Decide the linear regions (no unstable neuron left) of the queue, an exact LP each."""
        for i in torch.nonzero(~queue.splittable).reshape(-1).tolist():
            self.stats["lps"] += 1
            left = self.deadline - time.perf_counter()
            if left <= 0.05:
                return self.done("timeout", open=len(queue)), queue
            out = _lp_leaf(self.net, self.spec, self.index, [queue.lo[j][i].cpu().numpy() for j in range(self.n_relu)],
                           [queue.up[j][i].cpu().numpy() for j in range(self.n_relu)], self.solver, left)
            if out.status == "feasible":
                if self.check is None or self.check(out.x):
                    return self.done("falsified", out.x), queue
                return self.done("timeout", open=len(queue), reason="a leaf LP candidate failed the re-check"), queue
            if out.status != "infeasible":
                return self.done("timeout", open=len(queue), reason=f"leaf LP {out.status}"), queue
        return None, queue.pick(queue.splittable)

    def _locate(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ReLU layer and the neuron within it of flat neuron indices (over all layers)."""
        layer = torch.as_tensor(np.searchsorted(self.offsets, flat.cpu().numpy(), side="right") - 1, device=self.dev)
        return layer, flat - torch.as_tensor(self.offsets, device=self.dev)[layer]

    def _by_layer(self, layer: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(j, positions)`` for every ReLU layer ``j`` that ``layer`` names: where ``layer == j``."""
        for j in range(self.n_relu):
            sel = torch.nonzero(layer == j).reshape(-1)
            if sel.numel():
                yield j, sel

    def _split(self, lo: list[torch.Tensor], up: list[torch.Tensor], sign: list[torch.Tensor] | None,
               rows: torch.Tensor, layer: torch.Tensor, neuron: torch.Tensor, active: bool) -> None:
        """In place: row ``rows[i]`` forces neuron ``neuron[i]`` of ReLU layer ``layer[i]`` active (lower bound
        clipped at 0, sign 1) or inactive (upper bound clipped at 0, sign -1)."""
        for j, sel in self._by_layer(layer):
            r, cols = rows[sel], neuron[sel]
            if active:
                lo[j][r, cols] = lo[j][r, cols].clamp(min=0)
            else:
                up[j][r, cols] = up[j][r, cols].clamp(max=0)
            if sign is not None:
                sign[j][r, cols] = 1 if active else -1

    def children(self, parents: _Queue) -> tuple[list, list, list, torch.Tensor, int]:
        """The children of a batch of parents: each split on its chosen neuron(s)."""
        take = len(parents)
        d = int(min(MAX_SPLITS, parents.choice.shape[1], max(1, np.log2(max(1, self.batch // take)))))
        n_child = 2 ** d
        c_lo = [v.repeat(n_child, 1) for v in parents.lo]  # child c of parent p is row c * take + p
        c_up = [v.repeat(n_child, 1) for v in parents.up]
        c_sign = [v.repeat(n_child, 1) for v in parents.sign]
        idx = torch.arange(take, device=self.dev)
        first = self.n_relu
        for bit in range(d):
            layer, neuron = self._locate(parents.choice[:, bit])
            first = min(first, int(layer.min()))
            for c in range(n_child):
                self._split(c_lo, c_up, c_sign, c * take + idx, layer, neuron, active=bool((c >> bit) & 1))
        if self.intermediate is True or (self.intermediate == "shallow" and int(parents.depth.max()) < SHALLOW):
            self.eng.layer_bounds(c_lo, c_up, first + 1)
        self.stats["splits"] += d * take
        return c_lo, c_up, c_sign, parents.depth.repeat(n_child) + d, n_child

    def run(self, root, fixed) -> BabOutcome:
        if self.A.numel() == 0:
            return self.done("timeout", reason="clause with no rows")
        queue, open_, x_try = self.root_queue(root, fixed)
        self.stats["domains"] = 1
        self.stats["root_bound"] = float(queue.lb[0])
        x = self.candidate(x_try)
        if x is not None:
            return self.done("falsified", x)
        queue = queue.pick(open_)
        per_domain = 17 * int(sum(self.net.relu_sizes)) or 1
        max_open = min(MAX_DOMAINS, self.memory // per_domain)
        last_batch = time.perf_counter() - self.t0  # the root's bounding: a first estimate of a batch's cost
        while len(queue):
            # a batch that would end after the deadline is not started (on large networks one takes seconds)
            if time.perf_counter() + last_batch > self.deadline:
                return self.done("timeout", open=len(queue))
            if len(queue) > max_open:
                return self.done("timeout", open=len(queue), reason="domain limit")
            if not bool(queue.splittable.all()):
                out, queue = self.leaves(queue)
                if out is not None:
                    return out
                continue
            t_batch = time.perf_counter()
            take = min(self.batch, len(queue))
            order = torch.argsort(queue.lb)
            parents, queue = queue.pick(order[:take]), queue.pick(order[take:])
            c_lo, c_up, c_sign, depth, n_child = self.children(parents)
            kids, open_, x_try = self.evaluate(c_lo, c_up, c_sign, depth,
                                               parents.lb.repeat(n_child))
            self.stats["domains"] += n_child * take
            self.stats["batches"] += 1
            self.stats["max_depth"] = max(self.stats["max_depth"], int(depth.max()))
            x = self.candidate(x_try, kids.lb)
            if x is not None:
                return self.done("falsified", x)
            queue = queue.extend(kids.pick(open_))
            last_batch = time.perf_counter() - t_batch
            if last_batch < BATCH_SECONDS and take == self.batch:
                self.batch = min(self.max_batch, 2 * self.batch)
        return self.done("verified")
