"""The bound engine: sound linear bounds of a ReLU network over an input box, batched over domains (torch).

Everything in :mod:`verify` that bounds a network goes through this module: :class:`verify.bounds.BoxBounds`
(a batch of one domain) and branch and bound (:mod:`verify.bab`, batches of domains that share the input box
and differ in their ReLU splits). One call, :meth:`Engine.lower`, back-substitutes a linear function of a
layer's output through the ReLU relaxations of the earlier layers down to the box; the options of the call
select the method:

* **CROWN** (no options): each unstable ReLU (``l < 0 < u``) is bounded above by the line through
  ``(l, 0)`` and ``(u, u)`` and below by ``alpha * z`` with ``alpha = 1`` if ``u > -l`` else 0;
* **alpha-CROWN** (``alphas``): the lower slopes ``alpha`` in ``[0, 1]`` per domain, row and neuron; any
  value is sound, :meth:`Engine.optimise` searches good ones by projected gradient ascent;
* **beta-CROWN** (``betas`` with ``signs``): Lagrange multipliers ``beta >= 0`` of the split constraints
  ``sign * z >= 0`` of a domain (``sign`` +1: forced active, -1: forced inactive, 0: free), added as
  ``- beta * sign * z``, which is below the function on the domain for every ``beta >= 0``;
* **fixed ReLU states** (NAPs and splits): a neuron forced active has its lower bound clipped at 0 and is
  the identity, one forced inactive has its upper bound clipped at 0 and is zero (:func:`relax`).

:meth:`Engine.layer_bounds` applies the same call to every unstable neuron of the layers after a given one
(intermediate bounds), and :meth:`Engine.optimise` runs the alpha/beta search, warm-started from given
values (a branch and bound child starts from its parent's).

Soundness. Bounds are computed in float64 and lowered by an a-priori bound on their rounding error, in
exactly one place (:meth:`Engine.lower`): alongside the bound it sums the magnitudes of the terms of every
rounded operation (``|coef| (|z| + |W| |a| + |b|)`` per layer, ``|coef| |x|`` at the input, ``|const|``),
and subtracts ``(n + 2k + 8) * 2**-52`` times that sum, where ``n`` is the widest dot product and ``k`` the
number of layers substituted: each rounded sum of ``n`` terms errs by at most ``n * 2**-53`` times the
sum of its magnitudes, and the ``2k + 8`` covers the products and the accumulation across layers. The
relaxation's upper line is lifted by ``8 * 2**-52 * max(|l|, |u|)`` (:func:`relax`) so that its rounded
slope and intercept stay above the ReLU. The search of alphas and betas may run in float32 (it is a
heuristic: every value in the parameters' range gives a sound bound); the bound itself is always
recomputed in float64 with the values found.

Device: every tensor lives on ``device`` (``"cpu"`` or ``"cuda"``); float64 throughout the sound pass.

Example:
    >>> import numpy as np, torch
    >>> from verify.network import ReluNetwork
    >>> net = ReluNetwork([np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1.0, 1.0]])],
    ...                   [np.zeros(2), np.zeros(1)])
    >>> eng = Engine(TorchNetwork(net), -np.ones(2), np.ones(2))
    >>> lo = [torch.tensor([[-2.0, -2.0]], dtype=torch.float64)]
    >>> up = [torch.tensor([[2.0, 2.0]], dtype=torch.float64)]
    >>> low = eng.bound_linear([relax(lo[0], up[0])], torch.tensor([[1.0]], dtype=torch.float64),
    ...                        torch.zeros(1, dtype=torch.float64))
    >>> bool(low.item() <= 0.0)                         # relu(x0 - x1) + relu(x0 + x1) >= 0
    True
"""

from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["EPS", "Engine", "Relaxation", "TorchNetwork", "relax"]

#: float64 machine epsilon (2**-52).
EPS = float(np.finfo(np.float64).eps)
#: Rows of one back-substitution processed at once (bounds the memory on wide layers).
ROW_CHUNK = 2048
#: A weight matrix with at most this share of non-zero entries (a convolution unrolled into a matrix: 1.6% and
#: 7.1% in the first two layers of the marabou-cifar10 networks) is multiplied through a sparse CSR copy
#: (float64 back-substitution through cifar10_small's first layer: 9 ms instead of 105 ms for 576 rows).
SPARSE_DENSITY = 0.25
_MADE: weakref.WeakKeyDictionary[Any, dict[str, TorchNetwork]] = weakref.WeakKeyDictionary()


class TorchNetwork:
    """The affine layers of a :class:`verify.network.ReluNetwork` as float64 tensors on ``device``, with
    their absolute values (for the rounding-error terms).

    Example:
        >>> tnet = TorchNetwork(net, device="cpu")               # doctest: +SKIP
        >>> tnet.sizes, tnet.n_in                                # doctest: +SKIP
        ([256, 256, 10], 784)
    """

    def __init__(self, net: Any, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.W = [torch.as_tensor(np.asarray(w, dtype=np.float64), device=self.device) for w in net.weights]
        self.b = [torch.as_tensor(np.asarray(b, dtype=np.float64), device=self.device) for b in net.biases]
        self.absW = [w.abs() for w in self.W]
        self.absb = [b.abs() for b in self.b]
        self.sizes = [int(w.shape[0]) for w in self.W]
        self.n_in = int(self.W[0].shape[1])
        self._f32: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        #: per layer, whether its products go through sparse CSR copies (see :data:`SPARSE_DENSITY`)
        self.sparse = [w.numel() > 0 and float((w != 0).sum()) <= SPARSE_DENSITY * w.numel() for w in self.W]
        self._csr: dict[tuple[str, int, torch.dtype], torch.Tensor] = {}

    @classmethod
    def of(cls, net: Any, device: str | torch.device = "cpu") -> TorchNetwork:
        """The network's tensors on ``device``, made on the first call and kept while ``net`` lives (its
        weights must not change afterwards: a :class:`~verify.network.ReluNetwork` does not change them)."""
        key = str(torch.device(device))
        per_net = _MADE.setdefault(net, {})
        if key not in per_net:
            per_net[key] = cls(net, device)
        return per_net[key]

    @property
    def n_relu(self) -> int:
        """Number of ReLU layers."""
        return len(self.W) - 1

    def float32(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """float32 copies of the weights and biases (for the heuristic alpha/beta search), made once."""
        if self._f32 is None:
            self._f32 = ([w.float() for w in self.W], [b.float() for b in self.b])
        return self._f32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for a batch of flat inputs ``(B, n_in)`` (float64 or float32)."""
        return self.pre_activations(x)[1]

    def pre_activations(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every ReLU layer's pre-activations and the output for a batch of flat inputs ``(B, n_in)``, in the
        dtype of ``x`` (float64 or float32, with autograd)."""
        b = self.b if x.dtype == torch.float64 else self.float32()[1]
        pre = []
        for k in range(len(self.W) - 1):
            z = self.apply(k, x) + b[k]
            pre.append(z)
            x = torch.relu(z)
        return pre, self.apply(len(self.W) - 1, x) + b[-1]

    def _sparse_copy(self, kind: str, j: int, dtype: torch.dtype) -> torch.Tensor:
        key = (kind, j, dtype)
        if key not in self._csr:
            w = {"wt": self.W[j].T, "w": self.W[j], "absw": self.absW[j]}[kind]
            with warnings.catch_warnings():  # torch calls its CSR support "beta"; its products are exact sums
                warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
                self._csr[key] = w.to(dtype).contiguous().to_sparse_csr()
        return self._csr[key]

    def _sparse_product(self, kind: str, j: int, v: torch.Tensor) -> torch.Tensor:
        flat = v.reshape(-1, v.shape[-1])
        out = self._sparse_copy(kind, j, v.dtype) @ flat.T
        return out.T.reshape(*v.shape[:-1], out.shape[0])

    def back(self, j: int, coef: torch.Tensor) -> torch.Tensor:
        """``coef @ W_j`` for ``coef`` of shape ``(..., m_j)`` in float64 or float32 (with autograd), through
        the sparse copy on a sparse layer."""
        if self.sparse[j] and coef.numel():
            return self._sparse_product("wt", j, coef)
        return coef @ (self.W[j] if coef.dtype == torch.float64 else self.float32()[0][j])

    def apply(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """``x @ W_j.T`` (no bias) for ``x`` of shape ``(..., n_j)`` in float64 or float32."""
        if self.sparse[j] and x.numel():
            return self._sparse_product("w", j, x)
        return x @ (self.W[j] if x.dtype == torch.float64 else self.float32()[0][j]).T

    def apply_abs(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """``x @ |W_j|.T`` (the rounding-error terms) for ``x`` of shape ``(..., n_j)``."""
        if self.sparse[j] and x.numel():
            return self._sparse_product("absw", j, x)
        return x @ self.absW[j].to(x.dtype).T


@dataclass
class Relaxation:
    """Linear bounds ``s_low * z <= relu(z) <= s_up * z + t_up`` of a batch of ReLU layers for
    ``lo <= z <= up`` (each ``(B, n)``), with ``z_mag = max(|lo|, |up|)``, ``a_mag = max(up, 0)`` (the
    largest pre- and post-activation sizes) and ``unstable``: the neurons with the triangle relaxation
    (there any lower slope in ``[0, 1]`` is sound)."""

    s_low: torch.Tensor
    s_up: torch.Tensor
    t_up: torch.Tensor
    z_mag: torch.Tensor
    a_mag: torch.Tensor
    unstable: torch.Tensor

    def pick(self, rows: torch.Tensor) -> Relaxation:
        """The relaxations of some domains of the batch."""
        return Relaxation(*(getattr(self, f)[rows] for f in _RELAXATION_FIELDS))

    def to(self, dtype: torch.dtype) -> Relaxation:
        """The relaxation in ``dtype`` (the mask stays boolean)."""
        return Relaxation(*(getattr(self, f) if f == "unstable" else getattr(self, f).to(dtype)
                            for f in _RELAXATION_FIELDS))

    def repeat(self, n: int) -> Relaxation:
        """The batch ``n`` times over (row ``c * B + p`` is domain ``p``), a copy."""
        return Relaxation(*(getattr(self, f).repeat(n, 1) for f in _RELAXATION_FIELDS))

    def fix(self, rows: torch.Tensor, cols: torch.Tensor, active: bool) -> None:
        """In place: unstable neuron ``cols[i]`` of domain ``rows[i]`` becomes the identity (``active``) or zero,
        as :func:`relax` makes it once its bounds are clipped at 0. ``z_mag`` and ``a_mag`` keep their values:
        they only size rounding-error terms, for which a larger magnitude stays sound."""
        value = 1.0 if active else 0.0
        self.s_low[rows, cols] = value
        self.s_up[rows, cols] = value
        self.t_up[rows, cols] = 0.0
        self.unstable[rows, cols] = False


_RELAXATION_FIELDS = ("s_low", "s_up", "t_up", "z_mag", "a_mag", "unstable")


def relax(lo: torch.Tensor, up: torch.Tensor, active: torch.Tensor | None = None,
          inactive: torch.Tensor | None = None) -> Relaxation:
    """CROWN relaxation of a batch of ReLU layers from their pre-activation bounds ``(B, n)``.

    ``active`` / ``inactive``: optional masks (broadcastable to ``(B, n)``) of neurons forced into that
    state (their bounds should already be clipped at 0): a forced-active neuron is the identity, a
    forced-inactive one is zero (inactive wins where both hold: no input follows such a domain).

    Example:
        >>> r = relax(torch.tensor([[-1.0, 1.0]]).double(), torch.tensor([[1.0, 2.0]]).double())
        >>> r.unstable.tolist(), r.s_up.tolist()
        ([[True, False]], [[0.5, 1.0]])
    """
    unstable = (lo < 0) & (up > 0)
    on = lo >= 0
    if active is not None:
        on = on | active
        unstable = unstable & ~active
    if inactive is not None:
        on = on & ~inactive
        unstable = unstable & ~inactive
    on_f = on.to(lo.dtype)
    width = torch.where(unstable, up - lo, torch.ones_like(lo))
    s_up = torch.where(unstable, up / width, on_f)
    z_mag = torch.maximum(lo.abs(), up.abs())
    # the rounded slope and intercept can put the line below relu by a few ulps of max(|l|, |u|): lift it
    t_up = torch.where(unstable, -up * lo / width + 8 * EPS * z_mag, torch.zeros_like(lo))
    s_low = torch.where(unstable, (up > -lo).to(lo.dtype), on_f)
    return Relaxation(s_low, s_up, t_up, z_mag, up.clamp(min=0), unstable)


class Engine:
    """Batched back-substitution over domains that share one input box ``x_lo <= x <= x_up``.

    Args:
        tnet: the network's :class:`TorchNetwork`.
        x_lo, x_up: the input box (flat, ``(n_in,)``; numpy or torch).

    Example:
        >>> eng = Engine(TorchNetwork(net), spec.lower, spec.upper)                     # doctest: +SKIP
        >>> rel = [relax(lo[j], up[j]) for j in range(len(lo))]                           # doctest: +SKIP
        >>> low = eng.bound_linear(rel, C @ tnet.W[-1], C @ tnet.b[-1])                 # doctest: +SKIP
    """

    def __init__(self, tnet: TorchNetwork, x_lo: Any, x_up: Any) -> None:
        self.t = tnet
        dev = tnet.device
        self.x_lo = torch.as_tensor(np.asarray(x_lo, dtype=np.float64).reshape(-1), device=dev)
        self.x_up = torch.as_tensor(np.asarray(x_up, dtype=np.float64).reshape(-1), device=dev)
        self.x_mag = torch.maximum(self.x_lo.abs(), self.x_up.abs())
        self.size0 = tnet.apply_abs(0, self.x_mag.unsqueeze(0))[0] + tnet.absb[0]  # |W_0| max|x| + |b_0|: the terms of z_0

    # ---- the sound bound -----------------------------------------------------------------------------------

    def lower(self, rel: list[Relaxation], k: int, coef: torch.Tensor, const: torch.Tensor,
              err: torch.Tensor | None = None, width0: int = 0, keep: int | None = None,
              alphas: list[torch.Tensor | None] | None = None, betas: list[torch.Tensor | None] | None = None,
              signs: list[torch.Tensor] | None = None):
        """Sound lower bounds of ``coef @ relu(z_{k-1}) + const`` (``coef @ x + const`` for ``k = 0``) per
        domain and row.

        Args:
            rel: the relaxations of ReLU layers ``0..k-1`` (batch ``B`` or 1).
            k: the layer whose input the function reads (``len(rel)`` for the network's output layer).
            coef: ``(B, R, n_{k-1})``; const ``(B, R)``.
            err: ``(B, R)`` magnitudes of terms already rounded into ``coef``/``const`` (sums of ``width0``
                terms), e.g. ``|C| |W_L| max|a|`` for ``coef = C @ W_L``.
            keep: also return, for ReLU layers ``keep..k-1``, the coefficient their outputs had
                (``(B, R, n_j)``, for branching scores).
            alphas: per layer ``(B, R, n_j)`` lower slopes of the unstable neurons (clipped to ``[0, 1]``).
            betas, signs: per layer ``(B, R, n_j)`` multipliers (clipped at 0) of the split constraints
                ``signs[j] * z_j >= 0`` (``signs[j]``: ``(B, n_j)`` in {-1, 0, 1}).

        Returns:
            ``(low, x_star, kept)``: the bounds ``(B, R)``, the input minimising each linear bound
            ``(B, R, n_in)``, and the kept coefficients ``{layer: (B, R, n_j)}``.
        """
        t = self.t
        if err is None:
            err = torch.zeros_like(const)
        widest = max([t.n_in, *t.sizes[:k], coef.shape[-1], width0])
        gamma = (widest + 2 * k + 8) * EPS
        kept = {}
        for j in range(k - 1, -1, -1):
            r = rel[j]
            if keep is not None and j >= keep:
                kept[j] = coef
            pos, neg = coef.clamp(min=0), coef.clamp(max=0)
            tu = r.t_up.unsqueeze(1)
            const = const + (neg * tu).sum(-1)
            err = err - (neg * tu).sum(-1)
            s_low = r.s_low.unsqueeze(1)
            if alphas is not None and alphas[j] is not None:
                s_low = torch.where(r.unstable.unsqueeze(1), alphas[j].clamp(0, 1), s_low)
            coef = pos * s_low + neg * r.s_up.unsqueeze(1)
            if betas is not None and betas[j] is not None:
                coef = coef - betas[j].clamp(min=0) * signs[j].unsqueeze(1)
            size_j = self.size0 if j == 0 else t.apply_abs(j, rel[j - 1].a_mag) + t.absb[j]
            err = err + (coef.abs() * (r.z_mag + size_j).unsqueeze(1)).sum(-1)
            const = const + coef @ t.b[j]
            coef = t.back(j, coef)
        low = (coef.clamp(min=0) * self.x_lo).sum(-1) + (coef.clamp(max=0) * self.x_up).sum(-1) + const
        err = err + (coef.abs() * self.x_mag).sum(-1) + const.abs()
        x_star = torch.where(coef > 0, self.x_lo, self.x_up)
        return low - gamma * err, x_star, kept

    def bound_linear(self, rel: list[Relaxation], a: torch.Tensor, const: torch.Tensor, k: int | None = None,
                     err: torch.Tensor | None = None, width0: int = 0,
                     alphas: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Sound lower bounds of ``a @ relu(z_{k-1}) + const`` for rows ``a`` ``(R, n)`` shared by a batch of
        one domain (``k`` defaults to ``len(rel)``), processed :data:`ROW_CHUNK` rows at a time. Returns
        ``(R,)``. ``err``/``width0``/``alphas`` (``(R, n_j)`` per layer) as in :meth:`lower`."""
        k = len(rel) if k is None else k
        out = []
        for start in range(0, a.shape[0], ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            al = None if alphas is None else [None if v is None else v[rows].unsqueeze(0) for v in alphas]
            e = None if err is None else err[rows].unsqueeze(0)
            low, _, _ = self.lower(rel, k, a[rows].unsqueeze(0), const[rows].unsqueeze(0), e, width0, alphas=al)
            out.append(low[0])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=self.t.device)

    def layer_bounds(self, lo: list[torch.Tensor], up: list[torch.Tensor], start: int,
                     active: list[torch.Tensor | None] | None = None,
                     inactive: list[torch.Tensor | None] | None = None) -> list[Relaxation]:
        """Recompute, in place, the bounds of the unstable neurons of ReLU layers ``start..`` of a batch of
        domains with CROWN, intersect them with the stored ones, and return every layer's relaxation.
        ``active``/``inactive``: per layer masks of forced states (see :func:`relax`); the bounds of forced
        neurons are clipped at 0 after each layer."""
        t = self.t
        n_relu = len(lo)
        act = active or [None] * n_relu
        ina = inactive or [None] * n_relu
        rel = [relax(lo[j], up[j], act[j], ina[j]) for j in range(n_relu)]
        for m in range(max(start, 1), n_relu):
            rows = torch.nonzero(rel[m].unstable.any(0)).reshape(-1)
            if rows.numel():
                w, b = t.W[m][rows], t.b[m][rows]
                B = lo[m].shape[0]
                r = rows.numel()
                for c0 in range(0, r, ROW_CHUNK // 2):
                    part = slice(c0, c0 + ROW_CHUNK // 2)
                    wp, bp = w[part], b[part]
                    n = wp.shape[0]
                    coef = torch.cat([wp, -wp], 0).expand(B, -1, -1)
                    const = torch.cat([bp, -bp], 0).expand(B, -1)
                    low, _, _ = self.lower(rel, m, coef, const)
                    cols = rows[part]
                    lo[m][:, cols] = torch.maximum(lo[m][:, cols], low[:, :n])
                    up[m][:, cols] = torch.minimum(up[m][:, cols], -low[:, n:])
            if act[m] is not None:
                lo[m] = torch.where(act[m], lo[m].clamp(min=0), lo[m])
            if ina[m] is not None:
                up[m] = torch.where(ina[m], up[m].clamp(max=0), up[m])
            rel[m] = relax(lo[m], up[m], act[m], ina[m])
        return rel

    # ---- the alpha/beta search (heuristic; the bound is recomputed soundly by lower()) -----------------------

    def optimise(self, rel: list[Relaxation], k: int, coef: torch.Tensor, const: torch.Tensor,
                 alphas: list[torch.Tensor] | None = None, betas: list[torch.Tensor] | None = None,
                 signs: list[torch.Tensor] | None = None, iters: int = 10, lr_alpha: float = 0.1,
                 lr_beta: float = 0.05, deadline: float | None = None, float32: bool = True,
                 tol: float = 0.0, patience: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, int]:
        """Search lower slopes (and split multipliers) that raise the bounds of ``coef @ relu(z_{k-1}) +
        const`` by projected Adam ascent on their sum.

        Args:
            rel, k, coef, const, signs: as in :meth:`lower`.
            alphas: starting slopes per layer ``(B, R, n_j)`` (default: CROWN's).
            betas: starting multipliers per layer ``(B, R, n_j)`` (default 0; only with ``signs``).
            iters: Adam steps at most.
            deadline: a ``time.perf_counter()`` value at which the search stops.
            float32: search in float32 (about twice as fast; the sound bound is float64 anyway).
            tol, patience: stop early once the best bounds found rose by less than ``tol`` per domain and
                row (summed) over the last ``patience`` steps.

        Returns:
            ``(alphas, betas, steps)``: the values found (float64, projected into their ranges, detached)
            and the steps taken.
        """
        dt = torch.float32 if float32 else torch.float64
        b = self.t.float32()[1] if float32 else self.t.b
        x_lo, x_up = self.x_lo.to(dt), self.x_up.to(dt)
        B, R = coef.shape[0], coef.shape[1]
        if alphas is None:
            alphas = [r.s_low.unsqueeze(1).expand(B, R, -1) for r in rel[:k]]
        a_par = [a.to(dt).clone().requires_grad_(True) for a in alphas]
        params = list(a_par)
        rates = [lr_alpha] * len(a_par)
        b_par = None
        if signs is not None:
            start = betas if betas is not None else [torch.zeros(B, R, s.shape[1], dtype=dt, device=s.device)
                                                     for s in signs[:k]]
            b_par = [v.to(dt).clone().requires_grad_(True) for v in start]
            params += b_par
            rates += [lr_beta] * len(b_par)
        fixed = _relaxation_terms(rel[:k], dt)
        sg = None if signs is None else [s.to(dt).unsqueeze(1) for s in signs[:k]]
        coef0, const0 = coef.to(dt), const.to(dt)
        adam = _Adam(params, rates)
        steps, history = 0, []
        best_low = None
        best = [p.detach().clone() for p in params]
        with torch.enable_grad():
            for _ in range(iters + 1):
                low = _plain_bound(fixed, coef0, const0, a_par, b_par, sg, self.t, b, x_lo, x_up)
                with torch.no_grad():  # keep, per domain and row, the values with the best bound so far
                    if best_low is None:
                        best_low = low.detach().clone()
                    else:
                        better = low.detach() > best_low
                        best_low = torch.where(better, low.detach(), best_low)
                        for p, q in zip(params, best, strict=True):
                            q.copy_(torch.where(better.unsqueeze(-1), p.detach(), q))
                value = float(best_low.sum())
                if steps >= iters or (deadline is not None and time.perf_counter() > deadline):
                    break
                history.append(value)
                if tol > 0 and len(history) > patience and value - history[-1 - patience] < tol * B * R:
                    break
                grads = torch.autograd.grad(low.sum(), params, allow_unused=True)
                steps += 1
                with torch.no_grad():
                    adam.ascend(grads, steps)
                    for p in a_par:
                        p.clamp_(0, 1)
                    for p in b_par or []:
                        p.clamp_(min=0)
        out_a = [q.double() for q in best[:len(a_par)]]
        out_b = None if b_par is None else [q.double() for q in best[len(a_par):]]
        return out_a, out_b, steps

    def estimate(self, rel: list[Relaxation], k: int, coef: torch.Tensor, const: torch.Tensor,
                 alphas: list[torch.Tensor] | None = None, betas: list[torch.Tensor] | None = None,
                 signs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The bounds of :meth:`lower` in float32 without the rounding padding: **not sound**, for heuristics
        only (e.g. scoring branching candidates). Same arguments; returns ``(B, R)``."""
        b = self.t.float32()[1]
        dt = torch.float32
        B, R = coef.shape[0], coef.shape[1]
        al = [r.s_low.unsqueeze(1).expand(B, R, -1) for r in rel[:k]] if alphas is None else alphas
        return _plain_bound(_relaxation_terms(rel[:k], dt), coef.to(dt), const.to(dt), [a.to(dt) for a in al],
                            None if betas is None or signs is None else [v.to(dt) for v in betas],
                            None if signs is None else [v.to(dt).unsqueeze(1) for v in signs[:k]], self.t, b,
                            self.x_lo.to(dt), self.x_up.to(dt))


class _Adam:
    """Adam (Kingma and Ba 2015) for gradient *ascent*, on tensors, with one learning rate per tensor. Written
    here rather than taken from ``torch.optim``: its first use in a fresh process imports torch's compiler
    stack, which took 9 s of a 20 s query in a Ray worker on the loaded machine."""

    def __init__(self, params: list[torch.Tensor], rates: list[float], b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.params, self.rates, self.b1, self.b2, self.eps = params, rates, b1, b2, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def ascend(self, grads: tuple[torch.Tensor | None, ...], step: int) -> None:
        """One step up the gradient (``step`` counts from 1)."""
        for p, g, m, v, lr in zip(self.params, grads, self.m, self.v, self.rates, strict=True):
            if g is None:
                continue
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            m_hat = m / (1 - self.b1 ** step)
            v_hat = v / (1 - self.b2 ** step)
            p.add_(lr * m_hat / (v_hat.sqrt() + self.eps))


def _relaxation_terms(rel: list[Relaxation], dt: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
    """Per layer ``(s_low, s_up, t_up, unstable)`` in ``dt``, with a row dimension for broadcasting."""
    return [(r.s_low.to(dt).unsqueeze(1), r.s_up.to(dt).unsqueeze(1), r.t_up.to(dt).unsqueeze(1),
             r.unstable.unsqueeze(1)) for r in rel]


def _plain_bound(fixed, coef, const, alphas, betas, signs, tnet: TorchNetwork, b, x_lo, x_up) -> torch.Tensor:
    """The back-substituted bound without rounding terms (the alpha/beta search and estimates), in the dtype
    of ``coef`` (``b``: the biases in that dtype)."""
    cf, c = coef, const
    for j in range(len(fixed) - 1, -1, -1):
        s_low, s_up, t_up, unst = fixed[j]
        pos, neg = cf.clamp(min=0), cf.clamp(max=0)
        c = c + (neg * t_up).sum(-1)
        cf = pos * torch.where(unst, alphas[j], s_low) + neg * s_up
        if betas is not None:
            cf = cf - betas[j] * signs[j]
        c = c + cf @ b[j]
        cf = tnet.back(j, cf)
    return (cf.clamp(min=0) * x_lo).sum(-1) + (cf.clamp(max=0) * x_up).sum(-1) + c
