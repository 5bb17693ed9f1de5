"""Branch and bound on ReLU states (BaB), with batched CROWN bounds, for clauses the bounds alone leave open.

A *domain* is the input box with some unstable ReLUs split: forced active (``z >= 0``, so ``relu(z) = z``)
or inactive (``z <= 0``, so ``relu(z) = 0``). Each domain keeps sound pre-activation bounds of every ReLU
layer for the inputs of the box that follow its splits. The root starts from the tightest bounds of the
whole box (:class:`verify.bounds.BoxBounds`: CROWN, alpha-CROWN, LP-tightened); a child inherits its parent's
bounds, clips the split neuron's bound at 0, recomputes the layers after the split with CROWN
back-substitution (the same relaxations as :mod:`verify.bounds`, batched over domains in torch float64) and
intersects them with the parent's. Then:

* if a row of the unsafe clause ``A @ y <= b`` has a positive lower bound of ``A_r @ y - b_r``, or a layer's
  lower bound exceeds its upper bound (no input follows the splits), the domain is **pruned**;
* the input minimising the clause's linear lower bound is run through the network: if its output lies in the
  clause, it is a counterexample **candidate** (the caller re-checks it everywhere before any ``sat``);
* otherwise the domain is split on the unstable neuron with the largest BaBSR-style score (its relaxation's
  share of the bound) and both children are queued; domains with the lowest bounds are processed first, in
  batches.

A domain with no unstable neuron left is a linear region: an LP over the box and its sign constraints
(:class:`verify.milp.MilpEncoding` with every state fixed, no binaries) decides it exactly.

The clause is **verified** only when every domain is pruned or its LP is infeasible. Soundness rests on the
bounds: float64, each lowered by an a-priori bound on its rounding error exactly as in
:mod:`verify.bounds` (``(n + 2k + 8) * 2**-52`` times the summed magnitudes of the terms); a test checks the
root bounds equal :func:`verify.bounds.crown_bounds` and the outcomes against brute-force oracles.

Example:
    >>> out = bab_clause(net, spec, 0, shared_bounds, deadline=time.perf_counter() + 30)  # doctest: +SKIP
    >>> out.status, out.stats["domains"]                                                 # doctest: +SKIP
    ('verified', 412)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from verify.properties import Spec

__all__ = ["BabOutcome", "bab_clause"]

logger = logging.getLogger(__name__)

_EPS = float(np.finfo(np.float64).eps)
#: Domains kept at most (see also MAX_DOMAIN_BYTES); beyond this the search stops with ``timeout``.
MAX_DOMAINS = 400_000
#: Memory the open domains may take (bounds and split signs, float64: 24 bytes per ReLU neuron; mnist
#: 256x6 domains take 36 KiB, so about 116,000 of them fit).
MAX_DOMAIN_BYTES = 4 * 2**30
#: Neurons split at once in a domain while the queue is too short to fill a batch (2**k children). 1: off;
#: 4 made mnist 256x4 prop_5_0.03 slower (more domains for the same bounds).
MAX_SPLITS = 1


@dataclass
class BabOutcome:
    """``status`` in {``verified``, ``falsified``, ``timeout``}; ``x`` a counterexample candidate for
    ``falsified`` (to be re-checked by the caller); ``stats``: domains visited, splits, LPs, depth."""

    status: str
    x: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class _TorchNet:
    """float64 torch copies of the network's affine layers, with absolute values for the error terms."""

    def __init__(self, net) -> None:
        self.W = [torch.as_tensor(np.asarray(w, dtype=np.float64)) for w in net.weights]
        self.b = [torch.as_tensor(np.asarray(b, dtype=np.float64)) for b in net.biases]
        self.absW = [w.abs() for w in self.W]
        self.absb = [b.abs() for b in self.b]
        self.sizes = [int(w.shape[0]) for w in self.W]
        self.n_in = int(self.W[0].shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(len(self.W) - 1):
            x = torch.relu(x @ self.W[k].T + self.b[k])
        return x @ self.W[-1].T + self.b[-1]


def _relax(lo: torch.Tensor, up: torch.Tensor):
    """CROWN relaxation of a batch of ReLU layers: slopes, upper intercept, |z| and max(up, 0)."""
    unstable = (lo < 0) & (up > 0)
    active = (lo >= 0).to(lo.dtype)
    width = torch.where(unstable, up - lo, torch.ones_like(lo))
    s_up = torch.where(unstable, up / width, active)
    z_mag = torch.maximum(lo.abs(), up.abs())
    t_up = torch.where(unstable, -up * lo / width + 8 * _EPS * z_mag, torch.zeros_like(lo))
    s_low = torch.where(unstable, (up > -lo).to(lo.dtype), active)
    return s_low, s_up, t_up, z_mag, up.clamp(min=0), unstable


class _Backsub:
    """Batched CROWN back-substitution over domains that share the input box."""

    def __init__(self, tnet: _TorchNet, x_lo: np.ndarray, x_up: np.ndarray) -> None:
        self.t = tnet
        self.x_lo = torch.as_tensor(x_lo, dtype=torch.float64)
        self.x_up = torch.as_tensor(x_up, dtype=torch.float64)
        self.x_mag = torch.maximum(self.x_lo.abs(), self.x_up.abs())
        self.size0 = self.x_mag @ tnet.absW[0].T + tnet.absb[0]  # |W_0| max|x| + |b_0|: terms of z_0

    def lower(self, relax: list, k: int, coef: torch.Tensor, const: torch.Tensor, err: torch.Tensor,
              width0: int, keep: int | None = None, alphas: list | None = None, betas: list | None = None,
              signs: list | None = None):
        """Sound lower bounds of ``coef @ relu(z_{k-1}) + const`` per domain and row: coef (B, R, n_{k-1}),
        const and err (B, R) (err: magnitudes already rounded into coef/const). Returns the bounds (B, R),
        the input that minimises the linear bound (B, R, n_in), and, for ReLU layers ``keep..``, the
        coefficients their outputs had (B, R, n_j) (for branching scores).

        ``alphas[j]`` (B, R, n_j): lower-relaxation slopes of the unstable neurons (any value in [0, 1] is
        sound); ``betas[j]`` (B, R, n_j) >= 0 with ``signs[j]`` (B, n_j) in {-1, 0, 1}: Lagrange multipliers
        of the split constraints ``sign * z_j >= 0`` (beta-CROWN): ``f >= f - beta * sign * z`` on the
        domain, so any ``beta >= 0`` is sound."""
        t = self.t
        widest = max([t.n_in, *t.sizes[:k], coef.shape[-1], width0])
        gamma = (widest + 2 * k + 8) * _EPS
        kept = {}
        for j in range(k - 1, -1, -1):
            s_low, s_up, t_up, z_mag, _a_mag, unstable = relax[j]
            if keep is not None and j >= keep:
                kept[j] = coef
            pos, neg = coef.clamp(min=0), coef.clamp(max=0)
            tu = t_up.unsqueeze(1)
            const = const + (neg * tu).sum(-1)
            err = err - (neg * tu).sum(-1)
            if alphas is not None and alphas[j] is not None:
                low_slope = torch.where(unstable.unsqueeze(1), alphas[j].clamp(0, 1), s_low.unsqueeze(1))
            else:
                low_slope = s_low.unsqueeze(1)
            coef = pos * low_slope + neg * s_up.unsqueeze(1)
            if betas is not None and betas[j] is not None:
                coef = coef - betas[j].clamp(min=0) * signs[j].unsqueeze(1)
            size_j = self.size0 if j == 0 else relax[j - 1][4] @ t.absW[j].T + t.absb[j]
            err = err + (coef.abs() * (z_mag + size_j).unsqueeze(1)).sum(-1)
            const = const + coef @ t.b[j]
            coef = coef @ t.W[j]
        low = (coef.clamp(min=0) * self.x_lo).sum(-1) + (coef.clamp(max=0) * self.x_up).sum(-1) + const
        err = err + (coef.abs() * self.x_mag).sum(-1) + const.abs()
        x_star = torch.where(coef > 0, self.x_lo, self.x_up)
        return low - gamma * err, x_star, kept


def _layer_bounds(bs: _Backsub, lo: list[torch.Tensor], up: list[torch.Tensor], start: int) -> None:
    """Recompute, in place, the bounds of ReLU layers ``start..`` of a batch of domains with CROWN and
    intersect them with the stored ones."""
    t = bs.t
    n_relu = len(lo)
    relax = [_relax(lo[j], up[j]) for j in range(n_relu)]
    for m in range(max(start, 1), n_relu):
        rows = torch.nonzero(((lo[m] < 0) & (up[m] > 0)).any(0)).reshape(-1)
        if rows.numel() == 0:
            continue
        w, b = t.W[m][rows], t.b[m][rows]
        B = lo[m].shape[0]
        coef = torch.cat([w, -w], 0).expand(B, -1, -1)
        const = torch.cat([b, -b], 0).expand(B, -1)
        low, _, _ = bs.lower(relax, m, coef, const, torch.zeros_like(const), 0)
        r = rows.numel()
        new_lo = torch.maximum(lo[m][:, rows], low[:, :r])
        new_up = torch.minimum(up[m][:, rows], -low[:, r:])
        lo[m][:, rows] = new_lo
        up[m][:, rows] = new_up
        relax[m] = _relax(lo[m], up[m])


def _clause_bounds(bs: _Backsub, lo: list[torch.Tensor], up: list[torch.Tensor], a_mat: np.ndarray,
                   b_vec: np.ndarray, signs: list[torch.Tensor] | None = None, iters: int = 0, lr: float = 0.1):
    """Lower bounds of ``A @ y - b`` per domain (B, R), the minimising inputs, and the branching scores
    (B, n_j) per ReLU layer. With ``iters > 0``, the relaxation slopes (alpha) and the split multipliers
    (beta, where ``signs`` mark split neurons) are first optimised by ``iters`` Adam steps of gradient
    ascent on the bound; the returned bound is then recomputed soundly with the slopes and multipliers
    found (every value in their range is sound)."""
    t = bs.t
    relax = [_relax(lo[j], up[j]) for j in range(len(lo))]
    A = torch.as_tensor(a_mat, dtype=torch.float64)
    bb = torch.as_tensor(b_vec, dtype=torch.float64)
    B, R = lo[0].shape[0], A.shape[0]
    coef = (A @ t.W[-1]).expand(B, -1, -1)
    const = (A @ t.b[-1] - bb).expand(B, -1)
    a_mag = relax[-1][4]  # (B, n_last)
    err0 = (a_mag @ (A.abs() @ t.absW[-1]).T) + (A.abs() @ t.absb[-1] + bb.abs())
    width0 = int(t.W[-1].shape[0])
    alphas = betas = None
    if iters > 0:
        alphas = [r[0].unsqueeze(1).expand(B, R, -1).clone().requires_grad_(True) for r in relax]
        params = list(alphas)
        if signs is not None:
            betas = [torch.zeros(B, R, s.shape[1], dtype=torch.float64, requires_grad=True) for s in signs]
            params += betas
        opt = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for _ in range(iters):
                low, _, _ = bs.lower(relax, len(lo), coef, const, err0, width0, alphas=alphas, betas=betas,
                                     signs=signs)
                opt.zero_grad()
                (-low.sum()).backward()
                opt.step()
        alphas = [a.detach() for a in alphas]
        betas = None if betas is None else [b_.detach() for b_ in betas]
    low, x_star, kept = bs.lower(relax, len(lo), coef, const, err0, width0, keep=0, alphas=alphas, betas=betas,
                                 signs=signs)
    scores = []
    for j in range(len(lo)):
        c = kept[j]  # (B, R, n_j): coefficient of relu(z_j) in the bound
        _, _, t_up, _, _, unstable = relax[j]
        gain = (c.clamp(max=0).neg() * t_up.unsqueeze(1)).sum(1)
        gain = gain + 1e-3 * (c.clamp(min=0) * torch.minimum(up[j], -lo[j]).clamp(min=0).unsqueeze(1)).sum(1)
        scores.append(torch.where(unstable, gain + 1e-12, torch.full_like(gain, -1.0)))
    return low, x_star, scores


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
               intermediate: bool = True, pgd_steps: int = 5) -> BabOutcome:
    """Branch and bound on ReLU splits for unsafe clause ``index`` of ``spec``.

    Args:
        net: the :class:`verify.network.ReluNetwork`.
        spec: the property; its box is the root domain (its fixed ``relu_states``, if any, must already be
            reflected in ``root``: clipped bounds).
        index: which clause of ``spec.unsafe``.
        root: sound pre-activation bounds of every ReLU layer over the box (e.g. ``BoxBounds.best[:-1]``).
        deadline: ``time.perf_counter()`` value at which to stop with ``timeout``.
        solver: the LP solver for leaf domains.
        batch: domains bounded at once.
        check: optional callable ``x -> bool`` that re-checks a candidate; a candidate it rejects does not
            stop the search.
        iters: alpha/beta optimisation steps per batch (0: plain CROWN).
        intermediate: also recompute the bounds of the layers after a split with CROWN (tighter big-M for
            the layers below, but it costs a back-substitution of every unstable neuron to the input per
            domain); without it, splits act through the beta multipliers and the clipped bounds.
        pgd_steps: signed-gradient steps on the network from each domain's bound-minimising input (over the
            whole box) when that input itself is not a counterexample; 0 skips them.
        fixed: the property's fixed ReLU states ``{layer: (active, inactive)}`` (NAP properties): they are
            constraints of every domain, so they get beta multipliers like splits.

    Returns:
        A :class:`BabOutcome`.
    """
    from verify.bounds import one_torch_thread

    with one_torch_thread(), torch.no_grad():
        return _bab(net, spec, index, root, deadline, solver, batch, check, iters, fixed or {}, intermediate,
                    pgd_steps)


@dataclass
class _Queue:
    lo: list[torch.Tensor]
    up: list[torch.Tensor]
    sign: list[torch.Tensor]
    lb: torch.Tensor
    choice: torch.Tensor
    splittable: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.lb.shape[0])

    def pick(self, rows: torch.Tensor) -> _Queue:
        return _Queue([v[rows] for v in self.lo], [v[rows] for v in self.up], [v[rows] for v in self.sign],
                      self.lb[rows], self.choice[rows], self.splittable[rows], self.depth[rows])

    def extend(self, other: _Queue) -> _Queue:
        def cat(a, b):
            return torch.cat([a, b], 0)

        return _Queue([cat(a, b) for a, b in zip(self.lo, other.lo, strict=True)],
                      [cat(a, b) for a, b in zip(self.up, other.up, strict=True)],
                      [cat(a, b) for a, b in zip(self.sign, other.sign, strict=True)],
                      cat(self.lb, other.lb), cat(self.choice, other.choice),
                      cat(self.splittable, other.splittable), cat(self.depth, other.depth))


def _bab(net, spec, index, root, deadline, solver, batch, check, iters, fixed, intermediate,
         pgd_steps) -> BabOutcome:
    a_mat, b_vec = spec.unsafe[index]
    stats: dict[str, Any] = {"domains": 0, "splits": 0, "lps": 0, "max_depth": 0, "candidates_rejected": 0}
    t0 = time.perf_counter()

    def done(status: str, x: np.ndarray | None = None, **extra) -> BabOutcome:
        stats.update(extra, seconds=round(time.perf_counter() - t0, 3))
        return BabOutcome(status, x, stats)

    if a_mat.size == 0:
        return done("timeout", reason="clause with no rows")
    tnet = _TorchNet(net)
    bs = _Backsub(tnet, spec.lower, spec.upper)
    n_relu = len(net.relu_sizes)
    offsets = np.cumsum([0, *net.relu_sizes])
    a_t, b_t = torch.as_tensor(a_mat), torch.as_tensor(b_vec)

    def bound(lo_b, up_b, sign_b, depth_b, parent_lb=None) -> tuple[_Queue, torch.Tensor, torch.Tensor]:
        """Bound a batch; return it as a queue, the mask of domains still open, and the inputs to try."""
        low, x_star, scores = _clause_bounds(bs, lo_b, up_b, a_mat, b_vec, sign_b, iters)
        best = low.max(1)
        lb = best.values if parent_lb is None else torch.maximum(best.values, parent_lb)
        empty = torch.zeros_like(lb, dtype=torch.bool)
        for j in range(n_relu):
            empty |= (lo_b[j] > up_b[j]).any(1)
        x_try = x_star[torch.arange(low.shape[0]), low.argmin(1)]
        flat = torch.cat(scores, 1)
        top = flat.topk(min(MAX_SPLITS, flat.shape[1]), dim=1)
        q = _Queue(lo_b, up_b, sign_b, lb, top.indices, top.values[:, 0] >= 0, depth_b)
        return q, ~((lb > 0) | empty), x_try

    x_lo_t, x_up_t = bs.x_lo, bs.x_up
    width = x_up_t - x_lo_t

    def candidate(xs: torch.Tensor) -> np.ndarray | None:
        """Try the domains' bound-minimising inputs, then a few PGD steps from them, on the network."""
        y = tnet.forward(xs)
        viol = ((y @ a_t.T - b_t) <= 0).all(1)
        if not bool(viol.any()) and pgd_steps:
            x = xs.clone()
            for step in range(pgd_steps):
                with torch.enable_grad():
                    x.requires_grad_(True)
                    loss = (tnet.forward(x) @ a_t.T - b_t).max(1).values
                    (grad,) = torch.autograd.grad(loss.sum(), x)
                x = torch.minimum(torch.maximum(x.detach() - 0.1 * width * (1 - step / pgd_steps) * grad.sign(),
                                                x_lo_t), x_up_t)
            y = tnet.forward(x)
            viol = ((y @ a_t.T - b_t) <= 0).all(1)
            xs = x
        for i in torch.nonzero(viol).reshape(-1).tolist():
            x = xs[i].numpy().copy()
            if check is None or check(x):
                return x
            stats["candidates_rejected"] += 1
        return None

    lo = [torch.as_tensor(np.asarray(lo_, dtype=np.float64)).reshape(1, -1).clone() for lo_, _ in root]
    up = [torch.as_tensor(np.asarray(up_, dtype=np.float64)).reshape(1, -1).clone() for _, up_ in root]
    sign = [torch.zeros_like(v) for v in lo]
    for k, (act, ina) in fixed.items():
        sign[k][0, torch.as_tensor(np.asarray(act, dtype=bool))] = 1.0
        sign[k][0, torch.as_tensor(np.asarray(ina, dtype=bool))] = -1.0
    queue, open_, x_try = bound(lo, up, sign, torch.zeros(1, dtype=torch.long))
    stats["domains"] = 1
    stats["root_bound"] = float(queue.lb[0])
    x = candidate(x_try)
    if x is not None:
        return done("falsified", x)
    queue = queue.pick(open_)
    max_open = min(MAX_DOMAINS, MAX_DOMAIN_BYTES // (24 * int(offsets[-1]) or 1))
    last_batch = time.perf_counter() - t0  # the root's bounding: a first estimate of a batch's cost
    while len(queue):
        # a batch that would end after the deadline is not started (on large networks one takes seconds)
        if time.perf_counter() + last_batch > deadline:
            return done("timeout", open=len(queue))
        if len(queue) > max_open:
            return done("timeout", open=len(queue), reason="domain limit")
        # linear regions (no unstable neuron left): an exact LP each
        if not bool(queue.splittable.all()):
            for i in torch.nonzero(~queue.splittable).reshape(-1).tolist():
                stats["lps"] += 1
                left = deadline - time.perf_counter()
                if left <= 0.05:
                    return done("timeout", open=len(queue))
                out = _lp_leaf(net, spec, index, [queue.lo[j][i].numpy() for j in range(n_relu)],
                               [queue.up[j][i].numpy() for j in range(n_relu)], solver, left)
                if out.status == "feasible":
                    if check is None or check(out.x):
                        return done("falsified", out.x)
                    return done("timeout", open=len(queue), reason="a leaf LP candidate failed the re-check")
                if out.status != "infeasible":
                    return done("timeout", open=len(queue), reason=f"leaf LP {out.status}")
            queue = queue.pick(queue.splittable)
            continue
        # the batch: the domains with the lowest bounds
        t_batch = time.perf_counter()
        take = min(batch, len(queue))
        order = torch.argsort(queue.lb)
        parents, queue = queue.pick(order[:take]), queue.pick(order[take:])
        # few domains: split each on its top d neurons at once (2**d children), so batches stay full
        d = int(min(MAX_SPLITS, parents.choice.shape[1], max(1, np.log2(max(1, batch // take)))))
        n_child = 2 ** d
        c_lo = [v.repeat(n_child, 1) for v in parents.lo]  # child c of parent p is row c * take + p
        c_up = [v.repeat(n_child, 1) for v in parents.up]
        c_sign = [v.repeat(n_child, 1) for v in parents.sign]
        idx = torch.arange(take)
        first = n_relu
        for bit in range(d):
            flat_choice = parents.choice[:, bit]
            layer = torch.as_tensor(np.searchsorted(offsets, flat_choice.numpy(), side="right") - 1)
            neuron = flat_choice - torch.as_tensor(offsets)[layer]
            first = min(first, int(layer.min()))
            for c in range(n_child):
                rows_c = c * take + idx
                active = bool((c >> bit) & 1)
                for j in range(n_relu):
                    sel = torch.nonzero(layer == j).reshape(-1)
                    if sel.numel() == 0:
                        continue
                    rows, cols = rows_c[sel], neuron[sel]
                    if active:
                        c_lo[j][rows, cols] = c_lo[j][rows, cols].clamp(min=0)
                        c_sign[j][rows, cols] = 1.0
                    else:
                        c_up[j][rows, cols] = c_up[j][rows, cols].clamp(max=0)
                        c_sign[j][rows, cols] = -1.0
        if intermediate:
            _layer_bounds(bs, c_lo, c_up, first + 1)
        depth = parents.depth.repeat(n_child) + d
        children, open_, x_try = bound(c_lo, c_up, c_sign, depth, parents.lb.repeat(n_child))
        stats["domains"] += n_child * take
        stats["splits"] += d * take
        stats["max_depth"] = max(stats["max_depth"], int(depth.max()))
        x = candidate(x_try)
        if x is not None:
            return done("falsified", x)
        queue = queue.extend(children.pick(open_))
        last_batch = time.perf_counter() - t_batch
    return done("verified")
