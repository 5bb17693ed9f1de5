"""Cheap falsification before any MILP: random sampling and PGD with restarts on the real (float32) model.

The loss of an input is ``min over unsafe clauses of max over its rows of (A @ y - b)``: it is <= 0 exactly
when the output lies in some unsafe clause. PGD minimises it with signed-gradient steps projected onto the
input box. Two stages: 32 uniform starts on the overall loss; if they find nothing, a wider stage of 256
starts, each aimed at one clause in turn (its own loss, so that no clause's gradient hides another's), with
larger steps that shrink on a cosine schedule. A third of its starts are at random vertices of the box, a
third uniform, and a third *output-diversified* (Tashiro et al. 2020): from a uniform point,
:data:`ODS_STEPS` signed-gradient steps that push the output along a random direction, which spreads the
starts over the output space instead of the input space (on mnist-net_256x6 ``prop_3_0.05`` these starts
find the counterexample at once, where 2,048 uniform and vertex starts with 400 steps each do not). Every
candidate is only a candidate: :func:`verify.api.verify` re-checks it.

Example:
    >>> x = pgd_attack(net, spec, restarts=16, steps=40, seed=0, deadline=None)  # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np
import torch

from verify.properties import Spec

__all__ = ["pgd_attack", "spec_loss"]

#: Signed-gradient steps of an output-diversified start (each a quarter of the box width at most).
ODS_STEPS = 10


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


def _clause_losses(spec: Spec, y: torch.Tensor) -> torch.Tensor:
    """(batch, clauses): ``max over rows of (A @ y - b)`` per clause."""
    return torch.stack([(y @ torch.as_tensor(a, dtype=y.dtype).T - torch.as_tensor(b, dtype=y.dtype)).max(dim=1).values
                        for a, b in spec.unsafe], dim=1)


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
    if wide and all(a.size for a, _ in spec.unsafe):
        target = (torch.arange(restarts) % len(spec.unsafe)).unsqueeze(1)
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
            aim = loss if target is None else _clause_losses(spec, y).gather(1, target).squeeze(1)
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
