"""Cheap falsification before any MILP: random sampling and PGD with restarts on the real (float32) model.

The loss of an input is ``min over unsafe clauses of max over its rows of (A @ y - b)``: it is <= 0 exactly
when the output lies in some unsafe clause. PGD minimises it with signed-gradient steps projected onto the
input box. Two stages: 32 uniform starts on the overall loss; if they find nothing, a wider stage of 256
starts, each aimed at one clause in turn (its own loss, so that no clause's gradient hides another's), with
larger steps that shrink on a cosine schedule. A third of its starts are at random vertices of the box, a
third uniform, and a third *output-diversified* (Tashiro et al. 2020): from a uniform point,
:data:`ODS_STEPS` signed-gradient steps that push the output along a random direction, which spreads the
starts over the output space instead of the input space (on mnist-net_256x6 ``prop_3_0.05`` these starts
find the counterexample at once, where 2,048 uniform and vertex starts with 400 steps each do not). In both
stages, even starts descend the max over a clause's rows and odd ones the sum of its violated rows
(``max(A @ y - b, 0)``), which is 0 at the same outputs: on a targeted clause the max follows one competing
class at a time and can stall between two (marabou-cifar10 ``cifar10_medium`` index 2317 and ``cifar10_large``
index 6413 at eps 0.012: margins of 0.15 and 0.04 left after 2,560 starts of 200 steps; with the sum, both
fall in about a second). Every candidate is only a candidate: :func:`verify.api.verify` re-checks it.

Example:
    >>> x = pgd_attack(net, spec, restarts=16, steps=40, seed=0, deadline=None)  # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np
import torch

from verify.properties import Spec

__all__ = ["pattern_search", "pgd_attack", "spec_loss", "state_attack"]

#: Signed-gradient steps of an output-diversified start (each a quarter of the box width at most).
ODS_STEPS = 10
#: :func:`state_attack`: the margin from 0 that the loss asks of a fixed neuron's pre-activation.
STATE_MARGIN = 1e-3
#: :func:`state_attack`: the weights of the states' violation against the property's loss, one per restart in
#: turn. No one weight suits every query: on cifar10_small's NAP robustness queries at delta 0.95, with
#: weight 1 the logits' pull keeps at least one state broken at every restart of six queries that weights 10
#: and 100 falsify; on mnist-net_256x4 NAP_9 vs 4 (delta 0.99), weight 1 finds the counterexample and 10 and
#: 100 do not.
STATE_WEIGHTS = (1.0, 10.0, 100.0)
#: :func:`state_attack`: rounds of restarts at most, each from fresh starts with twice the steps of the last.
STATE_ROUNDS = 3


def spec_loss(spec: Spec, y: torch.Tensor) -> torch.Tensor:
    """Per-sample violation loss (<= 0 means the output is unsafe), shape (batch,)."""
    if any(a.size == 0 for a, _ in spec.unsafe):  # a clause without rows: every output is unsafe
        return torch.full((y.shape[0],), -1.0, dtype=y.dtype)
    return _clause_losses(spec, y).min(dim=1).values


def pgd_attack(net, spec: Spec, restarts: int = 32, steps: int = 50, seed: int = 0,
               deadline: float | None = None) -> np.ndarray | None:
    """Search the box for an unsafe input of ``net.source`` (the float32 model).

    Args:
        net: a :class:`verify.network.ReluNetwork` (its ``source`` module is attacked).
        spec: the property (fixed ReLU states are ignored: candidates are filtered by the re-check).
        restarts: parallel random starts (the box centre is always one of them).
        steps: PGD steps.
        seed: random seed.
        deadline: ``time.perf_counter()`` value at which to stop.

    Returns:
        The most violating input found with loss <= 0 (flattened float64), or ``None``.
    """
    from verify.bounds import one_torch_thread

    with one_torch_thread():
        found = _pgd(net, spec, restarts, steps, seed, deadline)
        if found is None and restarts > 1 and (deadline is None or time.perf_counter() < deadline):
            found = _pgd(net, spec, 8 * restarts, 2 * steps, seed + 1, deadline, wide=True)
        return found


def _clause_losses(spec: Spec, y: torch.Tensor, hinge: bool = False) -> torch.Tensor:
    """(batch, clauses): ``max over rows of (A @ y - b)`` per clause, or with ``hinge`` the sum over rows of
    ``max(A @ y - b, 0)`` (0 exactly when the output lies in the clause, like the max; its gradient pushes
    every violated row at once, where the max's follows one row and can stall between two)."""
    out = []
    for a, b in spec.unsafe:
        r = y @ torch.as_tensor(a, dtype=y.dtype).T - torch.as_tensor(b, dtype=y.dtype)
        out.append(r.clamp(min=0).sum(dim=1) if hinge else r.max(dim=1).values)
    return torch.stack(out, dim=1)


def _diversified(model, shape: tuple[int, ...], x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 gen: torch.Generator) -> torch.Tensor:
    """Output-diversified starts: from ``x``, :data:`ODS_STEPS` signed-gradient steps that raise ``w @ y``
    for a random direction ``w`` per start (drawn uniformly from ``[-1, 1]^outputs``)."""
    if x.shape[0] == 0:
        return x
    width = hi - lo
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            n_out = model(x[:1].view(1, *shape)).reshape(1, -1).shape[1]
        w = torch.rand((x.shape[0], n_out), generator=gen) * 2 - 1
        for _ in range(ODS_STEPS):
            x = x.detach().requires_grad_(True)
            y = model(x.view(x.shape[0], *shape)).reshape(x.shape[0], -1)
            (grad,) = torch.autograd.grad((y * w).sum(), x)
            x = torch.minimum(torch.maximum(x.detach() + 0.25 * width * grad.sign(), lo), hi)
    finally:
        model.train(was_training)
    return x.detach()


def _pgd(net, spec: Spec, restarts: int, steps: int, seed: int, deadline: float | None,
         wide: bool = False) -> np.ndarray | None:
    model = net.source
    shape = tuple(net.input_shape)
    lo = torch.as_tensor(spec.lower, dtype=torch.float32)
    hi = torch.as_tensor(spec.upper, dtype=torch.float32)
    width = hi - lo
    if float(width.max()) == 0.0:
        restarts, steps = 1, 0
    gen = torch.Generator().manual_seed(seed)
    x = lo + width * torch.rand((restarts, lo.numel()), generator=gen)
    if wide:
        third = restarts // 3
        x[:third] = lo + width * (torch.rand((third, lo.numel()), generator=gen) > 0.5).float()
        x[third:2 * third] = _diversified(model, shape, x[third:2 * third], lo, hi, gen)
    x[0] = (lo + hi) / 2
    # wide stage: start i aims at clause i mod n (clauses without rows make every output unsafe: no targets)
    target = None
    rows = all(a.size for a, _ in spec.unsafe)
    if wide and rows:
        target = (torch.arange(restarts) % len(spec.unsafe)).unsqueeze(1)
    hinge = (torch.arange(restarts) % 2 == 1).unsqueeze(1)
    was_training = model.training
    model.eval()
    best, best_loss = None, float("inf")
    try:
        for step in range(steps + 1):
            x = x.detach().requires_grad_(True)
            y = model(x.view(restarts, *shape)).reshape(restarts, -1)
            loss = spec_loss(spec, y)
            flat = loss.detach()
            i = int(torch.argmin(flat))
            if float(flat[i]) < best_loss:
                best_loss, best = float(flat[i]), x[i].detach().clone()
            if best_loss <= 0 and step >= 1:
                break
            if step == steps or (deadline is not None and time.perf_counter() > deadline):
                break
            if rows:  # even starts follow the max of a clause's rows, odd ones the sum of its violated rows
                per_clause = torch.where(hinge, _clause_losses(spec, y, hinge=True), _clause_losses(spec, y))
                aim = per_clause.min(1).values if target is None else per_clause.gather(1, target).squeeze(1)
            else:
                aim = loss
            (grad,) = torch.autograd.grad(aim.sum(), x)
            if wide:
                alpha = 0.3 * width * 0.5 * (1 + np.cos(np.pi * step / max(steps, 1))) + 1e-3 * width
            else:
                alpha = 0.25 * width * (1 - step / max(steps, 1)) + 1e-3 * width
            x = torch.minimum(torch.maximum(x - alpha * grad.sign(), lo), hi)
    finally:
        model.train(was_training)
    if best is None or best_loss > 0:
        return None
    return best.double().numpy()


#: Pre-activation margin that a fixed-active neuron keeps in :func:`pattern_search`'s LPs (fixed states are
#: followed strictly: active means > 0), and that a fixed-inactive one keeps below 0.
PATTERN_MARGIN = 1e-6
#: A free neuron whose pre-activation is within this of 0 at an LP optimum is flipped for the next LP.
PATTERN_TIGHT = 1e-6


def _pattern_affine(net, pattern: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``z_k = A_k x + c_k`` for every ReLU layer and the output while every neuron keeps ``pattern``."""
    a, c = net.weights[0], net.biases[0]
    mats, offs = [a], [c]
    for k in range(1, len(net.weights)):
        d = pattern[k - 1].astype(np.float64)
        a = net.weights[k] @ (d[:, None] * a)
        c = net.weights[k] @ (d * c) + net.biases[k]
        mats.append(a)
        offs.append(c)
    return mats, offs


def _pattern_lp(net, spec: Spec, clause: int, pattern: list[np.ndarray], fixed: list[np.ndarray],
                limit: float) -> tuple[np.ndarray, float] | None:
    """The input of the box with activation ``pattern`` that goes deepest into ``clause`` (the LP
    ``min t`` s.t. ``A y - b <= t``, ``y`` affine in ``x`` under the pattern); ``(x, t)`` or ``None``
    (infeasible pattern, solver stopped)."""
    from scipy.optimize import linprog

    mats, offs = _pattern_affine(net, pattern)
    rows, rhs = [], []
    for k, on in enumerate(pattern):
        sign = np.where(on, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0 (fixed ones by a margin)
        rows.append(sign[:, None] * mats[k])
        rhs.append(-sign * offs[k] - np.where(fixed[k], PATTERN_MARGIN, 0.0))
    a, b = spec.unsafe[clause]
    rows.append(a @ mats[-1])
    rhs.append(b - a @ offs[-1])
    n = net.n_inputs
    a_ub = np.hstack([np.vstack(rows), np.zeros((sum(r.shape[0] for r in rows), 1))])
    a_ub[-a.shape[0]:, -1] = -1.0  # the clause rows: A (M x + m) - b <= t
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    bounds = [*zip(spec.lower, spec.upper, strict=True), (None, None)]
    out = linprog(cost, A_ub=a_ub, b_ub=np.concatenate(rhs), bounds=bounds, method="highs",
                  options={"time_limit": max(limit, 0.01)})
    if out.status != 0 or out.x is None:
        return None
    return np.asarray(out.x[:n], dtype=np.float64), float(out.fun)


def pattern_search(net, spec: Spec, starts: np.ndarray, *, deadline: float | None = None, max_starts: int = 24,
                   max_rounds: int = 10) -> np.ndarray | None:
    """Falsify by local search over activation patterns, from given inputs (e.g. images that follow a NAP).

    Within one activation pattern the network is affine, so the input of the box that goes deepest into an
    unsafe clause while keeping that pattern is one LP. From each start's own pattern (the starts that lie in
    the box and follow ``spec.relu_states``, the most violating first), solve it; if the optimum is not
    inside the clause, flip the free neurons whose pre-activation is 0 there (the walls of the pattern's
    region that the optimum pushes against) and solve again, up to ``max_rounds`` times. Fixed neurons never
    flip and keep a margin of :data:`PATTERN_MARGIN` from 0. NAP robustness queries that the MILP and branch
    and bound cannot settle in 30 s are often falsified this way in a few LPs. Every candidate is only a
    candidate: :func:`verify.api.verify` re-checks it.

    Args:
        net: a :class:`verify.network.ReluNetwork`.
        spec: the property.
        starts: ``(n, n_inputs)`` inputs.
        deadline: ``time.perf_counter()`` value at which to stop.
        max_starts: starts searched at most; max_rounds: LPs per start and clause at most.

    Returns:
        An input whose float64 output lies in an unsafe clause (flattened float64), or ``None``.

    Example:
        >>> x = pattern_search(net, spec, train_images_of_class_3, deadline=time.perf_counter() + 10)  # doctest: +SKIP
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, net.n_inputs)
    inside = np.all((starts >= spec.lower) & (starts <= spec.upper), axis=1)
    starts = starts[inside]
    if not len(starts):
        return None
    pres = net.pre_activations(starts)
    follow = np.ones(len(starts), bool)
    fixed = [np.zeros(p.shape[1], bool) for p in pres]
    for k, (act, ina) in (spec.relu_states or {}).items():
        follow &= np.all(pres[k][:, act] > 0, axis=1) & np.all(pres[k][:, ina] <= 0, axis=1)
        fixed[k] = act | ina
    y = net.forward(starts)
    for clause, (a, b) in enumerate(spec.unsafe):
        if a.size == 0:  # every output is unsafe: a start that follows the states is a counterexample
            if follow.any():
                return starts[int(np.flatnonzero(follow)[0])]
            continue
        depth = np.max(y @ a.T - b, axis=1)
        order = [int(i) for i in np.argsort(np.where(follow, depth, np.inf), kind="stable") if follow[i]]
        for i in order[:max_starts]:
            pattern = [p[i] > 0 for p in pres]
            for _ in range(max_rounds):
                left = np.inf if deadline is None else deadline - time.perf_counter()
                if left <= 0:
                    return None
                found = _pattern_lp(net, spec, clause, pattern, fixed, min(left, 60.0))
                if found is None:
                    break
                x, t = found
                if t <= 0 and spec.violated_by(net.forward(x.reshape(1, -1))[0]):
                    return x
                z = net.pre_activations(x.reshape(1, -1))
                flips = [(np.abs(zk[0]) < PATTERN_TIGHT) & ~fk for zk, fk in zip(z, fixed, strict=True)]
                if not any(f.any() for f in flips):
                    break
                pattern = [np.where(f, ~p, p) for p, f in zip(pattern, flips, strict=True)]
    return None


def state_attack(net, spec: Spec, starts: np.ndarray | None = None, restarts: int = 32, steps: int = 200,
                 seed: int = 0, deadline: float | None = None, check=None,
                 rounds: int = STATE_ROUNDS, ends: list[np.ndarray] | None = None) -> np.ndarray | None:
    """PGD for a property with fixed ReLU states (a NAP): an input of the box that follows every state and
    lies in an unsafe clause.

    It minimises the property's loss (:func:`spec_loss`) plus a weight times the states' violation
    (``max(STATE_MARGIN - z, 0)`` summed over the neurons fixed active, ``max(z + STATE_MARGIN, 0)`` over those
    fixed inactive) by signed-gradient steps on the float32 network (its sparse layers stay sparse); the
    restarts take the weights of :data:`STATE_WEIGHTS` in turn. The first round starts half its restarts
    from the ``starts`` that follow the states and lie deepest in the property (e.g. the test images that
    follow a NAP), the other half from the other starts deepest in the property (e.g. test images of the
    competing class, which must be moved into the NAP), and any left from uniform points of the box. Each
    later round (up to ``rounds``, while ``deadline`` allows) takes a random half of the starts and uniform
    points, with twice the steps. A candidate must follow every state strictly (``z > 0`` / ``z <= 0``) and
    lie in a clause in float32; ``check`` (e.g. the verifier's re-check on the float64 network, the torch
    model and onnxruntime) may still reject it, and the search goes on. The points where a round ends that
    follow every state are good starts for :func:`pattern_search` (``ends``): on mnist-net_256x4 NAP_9 vs 4
    at delta 0.99 PGD alone ends at a margin of about +0.02 and the pattern LPs from its end points find the
    counterexample in 1.7 s.

    With the first version of this search (the NAP's own images as starts, weight 1, one round of 200 steps),
    the verifier left 8 of cifar10_small's NAP robustness queries at delta 0.95 open at 120 s each; with this
    one it falsifies them in 7-8 s (docs/decisions.md).

    Args:
        net: a :class:`verify.network.ReluNetwork`.
        spec: the property; without ``relu_states`` this is plain PGD on the extracted network.
        starts: ``(n, n_inputs)`` inputs (those outside the box are dropped), or None.
        restarts: inputs descended at once; steps: signed-gradient steps of the first round.
        seed: random seed of the uniform starts and of the later rounds' choice of starts.
        deadline: ``time.perf_counter()`` value at which to stop.
        check: optional callable ``x -> bool`` that accepts a candidate.
        rounds: rounds of restarts at most (>= 1).
        ends: a list that receives each finished round's final inputs that follow every state (an
            ``(m, n_inputs)`` float64 array per round), or None.

    Returns:
        A candidate input (flattened float64), or ``None``.

    Example:
        >>> x = state_attack(net, nap_spec, starts=test_images_of_class_3, deadline=time.perf_counter() + 5)  # doctest: +SKIP
    """
    from verify.bounds import one_torch_thread
    from verify.bounds.engine import TorchNetwork

    tnet = TorchNetwork.of(net)
    lo = torch.as_tensor(np.asarray(spec.lower), dtype=torch.float32)
    hi = torch.as_tensor(np.asarray(spec.upper), dtype=torch.float32)
    fixed = [(k, torch.as_tensor(np.asarray(a, dtype=bool)), torch.as_tensor(np.asarray(i, dtype=bool)))
             for k, (a, i) in sorted((spec.relu_states or {}).items())]
    gen = torch.Generator().manual_seed(seed)
    pool = np.zeros((0, net.n_inputs))
    if starts is not None:
        pool = np.asarray(starts, dtype=np.float64).reshape(-1, net.n_inputs)
        pool = pool[np.all((pool >= spec.lower) & (pool <= spec.upper), axis=1)]
    weights = torch.tensor([STATE_WEIGHTS[i % len(STATE_WEIGHTS)] for i in range(restarts)])
    with one_torch_thread():
        xp = torch.as_tensor(pool, dtype=torch.float32)
        for r in range(max(1, int(rounds))):
            if deadline is not None and time.perf_counter() > deadline:
                return None
            with torch.no_grad():
                if r == 0:
                    x = _first_starts(tnet, spec, fixed, xp, restarts)
                else:
                    x = xp[torch.randperm(len(xp), generator=gen)[: restarts // 2]]
                uniform = lo + (hi - lo) * torch.rand((restarts - len(x), lo.numel()), generator=gen)
                x = torch.cat([x, uniform], 0)
            found, x, follow = _state_pgd(tnet, spec, fixed, x, weights, steps * 2**r, lo, hi, deadline, check)
            if found is not None:
                return found
            if ends is not None and x is not None and bool(follow.any()):
                ends.append(x[follow].detach().double().numpy())
    return None


def _first_starts(tnet, spec: Spec, fixed: list, xp: torch.Tensor, restarts: int) -> torch.Tensor:
    """The first round's starts: half of ``restarts`` from those of ``xp`` that follow the states, deepest in
    the property first, the rest from the others deepest in the property."""
    if not len(xp):
        return xp
    pre, y = tnet.pre_activations(xp)
    loss = spec_loss(spec, y)
    first = torch.argsort(loss + 1e6 * (_state_violation(pre, fixed) > 0))[: max(1, restarts // 2)]
    rest = torch.ones(len(xp), dtype=torch.bool)
    rest[first] = False
    others = torch.nonzero(rest).reshape(-1)
    others = others[torch.argsort(loss[others])][: restarts - len(first)]
    return xp[torch.cat([first, others])]


def _state_pgd(tnet, spec: Spec, fixed: list, x: torch.Tensor, weights: torch.Tensor, steps: int,
               lo: torch.Tensor, hi: torch.Tensor, deadline: float | None,
               check) -> tuple[np.ndarray | None, torch.Tensor | None, torch.Tensor | None]:
    """One round of :func:`state_attack`: ``steps`` signed-gradient steps from ``x`` (restart ``i`` weighs the
    states' violation by ``weights[i]``). Returns the first candidate ``check`` accepts (or None), and, for a
    round run to its end, the final inputs and which of them follow every state (else None, None)."""
    width = hi - lo
    w = weights[: len(x)]
    for step in range(steps + 1):
        if deadline is not None and time.perf_counter() > deadline:
            return None, None, None
        x = x.detach().requires_grad_(True)
        pre, y = tnet.pre_activations(x)
        loss = spec_loss(spec, y)
        viol = _state_violation(pre, fixed)
        with torch.no_grad():
            strict = torch.ones(len(x), dtype=torch.bool)
            for k, act, ina in fixed:
                strict &= (pre[k][:, act] > 0).all(1) & (pre[k][:, ina] <= 0).all(1)
            for i in torch.nonzero(strict & (loss <= 0)).reshape(-1).tolist():
                cand = x[i].detach().double().numpy().copy()
                if check is None or check(cand):
                    return cand, None, None
        if step == steps:
            order = torch.argsort(loss.detach())
            return None, x.detach()[order], strict[order]
        (grad,) = torch.autograd.grad((loss + w * viol).sum(), x)
        rate = 0.01 * width * 0.5 * (1 + np.cos(np.pi * step / steps)) + 1e-3 * width
        x = torch.minimum(torch.maximum(x.detach() - rate * grad.sign(), lo), hi)
    return None, None, None


def _state_violation(pre: list[torch.Tensor], fixed: list[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per input: how far its pre-activations are from following the fixed states with :data:`STATE_MARGIN`."""
    out = torch.zeros(pre[0].shape[0] if pre else 0, dtype=pre[0].dtype if pre else torch.float32)
    for k, act, ina in fixed:
        out = out + (STATE_MARGIN - pre[k][:, act]).clamp(min=0).sum(1) + (pre[k][:, ina] + STATE_MARGIN).clamp(min=0).sum(1)
    return out
