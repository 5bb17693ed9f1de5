"""Emergent mixture-of-experts in FFN layers: partition neurons into experts, route, run in MoE form, measure.

Follows "Emergent Mixture-of-Experts" (EMoE; Qiu, Huang, Fu, 2023) and MoEfication (Zhang et al., 2022),
for TransformerLens models (``blocks.L.mlp``) and torch Linear-act-Linear blocks, and measures modularity
against random partitions instead of assuming it.

Definitions (one FFN layer with d_ff neurons, post-activations h, pre-activations z, E experts of m = d_ff/E):

* **partition**: labels (d_ff,) with exactly m neurons per expert. Methods: ``"random"`` (baseline),
  ``"weights"`` (balanced k-means on L2-normalised rows of W_in, as EMoE/MoEfication), ``"activations"``
  (balanced k-means on the neurons' normalised positive-activation profiles over data), ``"graph"``
  (networkx co-activation graph, spectral embedding, balanced assignment). The balanced assignment is an
  exact min-cost transportation solve (see :func:`balanced_assignment`).
* **activation mass**: a neuron's mass on a token is ``max(h, 0)``. For ReLU this is h; for GELU/SiLU the
  small negative outputs (>= -0.17 for GELU) carry no mass. **Gated** FFNs (``h = act(gate) * up``, LLaMA /
  SmolLM2 / Gemma) use ``|h|``: the sign comes from the up projection and is as large either way; a neuron
  *fires* when its gate is open (``z > 0``, z the gate's pre-activation), and ``"weights"`` clusters the gate
  and up rows side by side. An expert's score under the **oracle** router is the sum of its neurons' mass.
* **routers** (scores per expert; the top-k experts are kept): ``"oracle"`` (mass above), ``"avg_k"``
  (EMoE's gate: x . mean of the expert's keys = mean over its neurons of z - b_in; no new parameters),
  ``"similarity"`` (x . centroid of the L2-normalised keys = mean of (z - b_in) / ||W_in row||).
* **MoE form**: h of the neurons outside the selected experts is set to 0 (exact masking through hooks, in
  a context manager; leaving it merges back to the dense model). For GELU that also removes the small
  negative outputs of unselected experts.
* **metrics** per layer: sparsity (share of h <= 0), oracle coverage at k (mean over tokens of the share of
  positive mass inside the top-k experts) for each method and for random partitions (mean and std over
  seeds), load entropy (normalised entropy of how often each expert is in the oracle top-k), networkx
  modularity of the co-activation graph under the partition, routing stability (share of the oracle's top-k
  experts that a parameter-free router also picks) and partition stability (adjusted Rand index between
  partitions from two seeds), and the task metric versus the fraction of experts active.

Activation-based partitions are fitted on the first half of the captured tokens and all coverage /
routing metrics are measured on the second half.

Example:
    >>> from probe import data, moe
    >>> from probe.zoo import train_reference
    >>> model = train_reference("mnist-mlp")                                       # doctest: +SKIP
    >>> loader = data.make_loader(data.load_mnist("test"), batch_size=500)          # doctest: +SKIP
    >>> report = moe.detect(model, loader, n_experts=16, method=["weights", "activations"])  # doctest: +SKIP
    >>> report.table()                                                              # doctest: +SKIP
    >>> with moe.moe_form(model, report.partitions["activations"], top_k=4, router="avg_k"):  # doctest: +SKIP
    ...     logits = model(x)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from probe.core.artifacts import check_stamp, read_json, read_tensors, stamp, write_json, write_tensors
from probe.core.device import resolve_device
from probe.core.errors import (
    CorruptDataError,
    DataError,
    DataNotFoundError,
    InvalidParameterError,
    ModelError,
)
from probe.core.progress import progress
from probe.core.table import Table
from probe.core.validate import check_choice, check_int
from probe.graph.ffn import SUPPORTED_ACTS, FFNSite, UnsupportedActivationError, find_ffns, select_sites
from probe.moe.partition import (
    activation_partition,
    balanced_assignment,
    balanced_kmeans,
    coactivation_graph,
    graph_partition,
    random_partition,
    weight_partition,
)

__all__ = [
    "METHODS",
    "ROUTERS",
    "SUPPORTED_ACTS",
    "DetectOptions",
    "ExpertFFN",
    "MoEReport",
    "MoEState",
    "UnsupportedActivationError",
    "balanced_assignment",
    "balanced_kmeans",
    "capture",
    "coverage_curve",
    "detect",
    "find_ffns",
    "load_entropy",
    "modularity",
    "moe_form",
    "partition",
    "task_metric",
    "to_experts",
]

logger = logging.getLogger(__name__)

METHODS = ("random", "weights", "activations", "graph")
ROUTERS = ("oracle", "similarity", "avg_k")
_KIND = "moe"


# ------------------------------------------------------------------------------------------ validation




def _check_experts(site: FFNSite, n_experts: int) -> int:
    m, rem = divmod(site.d_ff, n_experts)
    if rem or n_experts > site.d_ff:
        divisors = [e for e in range(2, min(site.d_ff, 1024) + 1) if site.d_ff % e == 0]
        near = sorted(divisors, key=lambda e: (abs(e - n_experts), e))[:6]
        raise InvalidParameterError(
            f"n_experts={n_experts} does not divide d_ff={site.d_ff} of layer {site.name!r}: experts must have "
            f"equal size; use a divisor of {site.d_ff} such as {sorted(near)}"
        )
    return m


def _check_top_k(top_k: Any, n_experts: int) -> int:
    return check_int("top_k", top_k, 1, n_experts,
                      f" (top_k counts the experts kept per token and cannot exceed n_experts={n_experts})")


# ------------------------------------------------------------------------------------------ partitions
def partition(
    method: str,
    n_experts: int,
    *,
    w_in: torch.Tensor | np.ndarray | None = None,
    activations: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    graph_knn: int = 16,
) -> torch.Tensor:
    """Split d_ff neurons into ``n_experts`` equal experts.

    Args:
        method: ``"random"``, ``"weights"`` (needs ``w_in`` (d_ff, d_in)), ``"activations"`` or ``"graph"``
            (need ``activations`` (tokens, d_ff) post-activations).
        n_experts: number of experts; must divide d_ff.
        w_in: the FFN's input weights, one row (key) per neuron.
        activations: post-activations over data.
        seed: seeds k-means++ and the random partition; same seed, same partition.
        graph_knn: neighbours kept per neuron in the co-activation graph.

    Returns:
        int64 labels (d_ff,), exactly d_ff / n_experts per expert.

    Raises:
        InvalidParameterError: unknown method, missing input, n_experts not dividing d_ff.

    Example:
        >>> labels = partition("weights", 4, w_in=torch.randn(32, 8), seed=0)
        >>> torch.bincount(labels).tolist()
        [8, 8, 8, 8]
    """
    check_choice("method", method, METHODS)
    if method == "weights":
        if w_in is None:
            raise InvalidParameterError("method='weights' needs w_in (d_ff, d_in)")
        d_ff = int(w_in.shape[0])
    else:
        if activations is None and method != "random":
            raise InvalidParameterError(f"method={method!r} needs activations (tokens, d_ff)")
        src = activations if activations is not None else w_in
        if src is None:
            raise InvalidParameterError("method='random' needs w_in or activations to know d_ff")
        d_ff = int(src.shape[1] if activations is not None else src.shape[0])
    n_experts = check_int("n_experts", n_experts, 1)
    if d_ff % n_experts:
        raise InvalidParameterError(f"n_experts={n_experts} does not divide d_ff={d_ff}; experts must have equal size")
    if method == "random":
        labels = random_partition(d_ff, n_experts, seed)
    elif method == "weights":
        labels = weight_partition(_np(w_in), n_experts, seed)
    elif method == "activations":
        labels = activation_partition(np.maximum(_np(activations), 0), n_experts, seed)
    else:
        labels = graph_partition(coactivation_graph(_np(activations) > 0, graph_knn), n_experts, seed)
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _check_partition(site: FFNSite, labels: Any) -> tuple[torch.Tensor, int]:
    labels = torch.as_tensor(labels).to(torch.int64).cpu()
    if labels.shape != (site.d_ff,):
        raise InvalidParameterError(f"partition of layer {site.name!r} must have shape ({site.d_ff},); "
                                    f"got {tuple(labels.shape)}")
    n_experts = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=n_experts)
    if int(labels.min()) < 0 or not bool((counts == counts[0]).all()):
        raise InvalidParameterError(f"partition of layer {site.name!r} must give every expert 0..E-1 the same "
                                    f"number of neurons; got sizes {counts.tolist()}")
    return labels, n_experts


# ------------------------------------------------------------------------------------------ routing
class _Gate:
    """Scores experts from (z, h) and turns the top-k into a neuron mask."""

    def __init__(self, site: FFNSite, labels: torch.Tensor, router: str, top_k: int) -> None:
        self.labels, self.n_experts = _check_partition(site, labels)
        self.top_k = _check_top_k(top_k, self.n_experts)
        self.router = check_choice("router", router, ROUTERS)
        m = site.d_ff // self.n_experts
        onehot = F.one_hot(self.labels, self.n_experts).to(torch.float32)
        self.onehot = onehot
        self.mass = site.mass
        self.b_in = site.b_in.detach().float()
        if router == "avg_k":
            self.weight = onehot / m
        elif router == "similarity":
            norms = site.w_in.detach().float().norm(dim=1).clamp_min(1e-12)
            self.weight = onehot / norms[:, None] / m
        else:
            self.weight = onehot

    def to(self, device: torch.device) -> _Gate:
        self.labels, self.onehot = self.labels.to(device), self.onehot.to(device)
        self.b_in, self.weight = self.b_in.to(device), self.weight.to(device)
        return self

    def scores(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.router == "oracle":
            return self.mass(h.float()) @ self.onehot
        return (z.float() - self.b_in) @ self.weight

    def select(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Bool (..., E): the experts kept for each token."""
        s = self.scores(z, h)
        top = s.topk(self.top_k, dim=-1).indices
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device).scatter_(-1, top, True)


@dataclass
class MoEState:
    """What :func:`moe_form` yields: per layer, how many tokens selected each expert (``loads``) and the
    number of tokens seen (``tokens``), counted while inside the context."""

    top_k: dict[str, int]
    router: str
    loads: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


@contextmanager
def moe_form(
    model: nn.Module,
    partitions: Mapping[str, Any],
    top_k: int | Mapping[str, int],
    router: str = "avg_k",
) -> Iterator[MoEState]:
    """Run ``model`` with only the top-k experts of the given layers active.

    Inside the context, each listed FFN layer's post-activations are multiplied by a 0/1 mask that keeps the
    neurons of the ``top_k`` experts chosen per token by ``router``; on exit the hooks are removed and the
    model is dense again (exactly the original function).

    Args:
        model: a TransformerLens model or a torch model with Linear-act-Linear blocks.
        partitions: layer name -> labels (d_ff,) with equal-size experts (e.g. ``report.partitions[method]``).
        top_k: experts kept per token (one int, or per layer).
        router: ``"oracle"``, ``"similarity"`` or ``"avg_k"``.

    Yields:
        A :class:`MoEState` counting expert loads.

    Raises:
        ModelError: a layer is not an FFN of the model. InvalidParameterError: bad top_k / router / labels.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> labels = torch.arange(8) // 2
        >>> with moe_form(net, {"1": labels}, top_k=4, router="oracle"):
        ...     torch.allclose(net(torch.ones(1, 4)), net[2](net[1](net[0](torch.ones(1, 4)))))
        True
    """
    check_choice("router", router, ROUTERS)
    if not partitions:
        raise InvalidParameterError("partitions is empty: give at least one layer -> labels")
    sites = select_sites(model, list(partitions))
    device = resolve_device(model, None)
    ks = {s.name: (top_k[s.name] if isinstance(top_k, Mapping) else top_k) for s in sites}
    gates = {s.name: _Gate(s, partitions[s.name] if s.name in partitions else _lookup(partitions, s.name),
                           router, ks[s.name]).to(device) for s in sites}
    state = MoEState({k: g.top_k for k, g in gates.items()}, router,
                     {k: torch.zeros(g.n_experts, dtype=torch.int64) for k, g in gates.items()},
                     {k: 0 for k in gates})
    handles: list[Any] = []

    def make(name: str, gate: _Gate) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def fn(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            sel = gate.select(z, h)
            state.loads[name] += sel.reshape(-1, gate.n_experts).sum(0).cpu()
            state.tokens[name] += sel.reshape(-1, gate.n_experts).shape[0]
            return h * sel[..., gate.labels].to(h.dtype)

        return fn

    try:
        for site in sites:
            handles += site.hook(make(site.name, gates[site.name]))
        yield state
    finally:
        for h in handles:
            h.remove()


def _lookup(partitions: Mapping[Any, Any], name: str) -> Any:
    for key, value in partitions.items():
        if isinstance(key, int) and name == f"blocks.{key}.mlp":
            return value
        if isinstance(key, str) and key.startswith(name):
            return value
    raise ModelError(f"no partition given for layer {name!r}")


# ------------------------------------------------------------------------------------------ expert form
_ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


@dataclass
class ExpertFFN:
    """An FFN layer split into E experts (MoEfication form): expert e owns neurons ``neurons[e]``.

    Attributes:
        w_in: (E, m, d_in); b_in: (E, m); w_out: (E, d_out, m); b_out: (d_out,); neurons: (E, m) int64.
        act: activation function name.
        w_up, b_up: gated FFNs only, the up projection (E, m, d_in), (E, m); ``w_in``/``b_in`` are then the
            gate's and a neuron computes ``act(gate) * up``.
    """

    w_in: torch.Tensor
    b_in: torch.Tensor
    w_out: torch.Tensor
    b_out: torch.Tensor
    neurons: torch.Tensor
    act: str
    w_up: torch.Tensor | None = None
    b_up: torch.Tensor | None = None

    @property
    def n_experts(self) -> int:
        return int(self.w_in.shape[0])

    def merge(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The dense ``(W_in (d_ff, d_in), b_in, W_out (d_out, d_ff), b_out)`` in the original neuron order."""
        e, m, d_in = self.w_in.shape
        order = self.neurons.reshape(-1)
        w_in = torch.empty(e * m, d_in, dtype=self.w_in.dtype)
        b_in = torch.empty(e * m, dtype=self.b_in.dtype)
        w_out = torch.empty(self.w_out.shape[1], e * m, dtype=self.w_out.dtype)
        w_in[order] = self.w_in.reshape(e * m, d_in)
        b_in[order] = self.b_in.reshape(-1)
        w_out[:, order] = self.w_out.permute(1, 0, 2).reshape(-1, e * m)
        return w_in, b_in, w_out, self.b_out.clone()

    def merge_up(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated FFNs: the dense up projection ``(W_up (d_ff, d_in), b_up)`` in the original neuron order.

        Raises:
            ModelError: the FFN is not gated.
        """
        if self.w_up is None or self.b_up is None:
            raise ModelError("merge_up() needs a gated FFN (h = act(gate) * up); this one has no up projection")
        e, m, d_in = self.w_up.shape
        order = self.neurons.reshape(-1)
        w_up = torch.empty(e * m, d_in, dtype=self.w_up.dtype)
        b_up = torch.empty(e * m, dtype=self.b_up.dtype)
        w_up[order] = self.w_up.reshape(e * m, d_in)
        b_up[order] = self.b_up.reshape(-1)
        return w_up, b_up

    def _h(self, x: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        """Neuron activations: (n, E, m) for all experts, or (n, m) of expert ``e[i]`` for row i."""
        act = _ACT_FNS[self.act]
        if e is None:
            h = act(torch.einsum("emd,nd->nem", self.w_in, x) + self.b_in)
            if self.w_up is not None and self.b_up is not None:
                h = h * (torch.einsum("emd,nd->nem", self.w_up, x) + self.b_up)
            return h
        h = act(torch.einsum("nmd,nd->nm", self.w_in[e], x) + self.b_in[e])
        if self.w_up is not None and self.b_up is not None:
            h = h * (torch.einsum("nmd,nd->nm", self.w_up[e], x) + self.b_up[e])
        return h

    def forward(self, x: torch.Tensor, top_k: int, router: str = "avg_k") -> torch.Tensor:
        """The FFN output computing only the ``top_k`` experts chosen per input row by ``router``.

        Args:
            x: (n, d_in) FFN inputs.
        """
        _check_top_k(top_k, self.n_experts)
        check_choice("router", router, ROUTERS)
        if router == "oracle":
            h_all = self._h(x)  # (n, E, m)
            scores = (h_all.abs() if self.w_up is not None else h_all.clamp_min(0)).sum(-1)
        else:
            keys = self.w_in if router == "avg_k" else self.w_in / self.w_in.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            scores = torch.einsum("emd,nd->ne", keys, x) / self.w_in.shape[1]
        top = scores.topk(top_k, dim=-1).indices  # (n, k)
        out = self.b_out.expand(len(x), -1).clone()
        for slot in range(top_k):
            e = top[:, slot]
            out += torch.einsum("nom,nm->no", self.w_out[e], self._h(x, e))
        return out


def to_experts(model: nn.Module, layer: str | int, labels: Any) -> ExpertFFN:
    """Split an FFN layer's weights into experts following ``labels`` (see :class:`ExpertFFN`).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> ex = to_experts(net, "1", torch.arange(8) % 4)
        >>> torch.equal(ex.merge()[0], net[0].weight.detach())
        True
    """
    (site,) = select_sites(model, [layer])
    labels, n_experts = _check_partition(site, labels)
    neurons = torch.argsort(labels, stable=True).reshape(n_experts, -1)
    gated = site.w_up is not None and site.b_up is not None
    return ExpertFFN(site.w_in[neurons].clone(), site.b_in[neurons].clone(),
                     site.w_out[:, neurons].permute(1, 0, 2).clone(), site.b_out.clone(), neurons, site.act,
                     site.w_up[neurons].clone() if gated else None, site.b_up[neurons].clone() if gated else None)


# ------------------------------------------------------------------------------------------ capture
def _batch_tensors(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    if isinstance(batch, Mapping) and isinstance(batch.get("tokens"), torch.Tensor):
        return batch["tokens"], None
    raise DataError("the loader must yield tensors (token batches), (inputs, labels) pairs or {'tokens': ...}; "
                    f"got a batch of type {type(batch).__name__}")


@dataclass
class FFNActivations:
    """Captured pre-activations ``z`` and post-activations ``h`` per layer, as (tokens, d_ff) float32."""

    z: dict[str, torch.Tensor]
    h: dict[str, torch.Tensor]

    @property
    def n_tokens(self) -> int:
        return int(next(iter(self.h.values())).shape[0])


@torch.no_grad()
def capture(
    model: nn.Module,
    loader: Iterable[Any],
    layers: Sequence[str | int] | None = None,
    max_tokens: int = 8192,
    device: str | torch.device | None = None,
    verbose: bool = False,
) -> FFNActivations:
    """Record the FFN pre- and post-activations of ``layers`` over ``loader`` (streamed: batches are run
    one at a time until ``max_tokens`` token rows are stored; every position of a sequence is a row).

    Raises:
        DataError: the loader yields nothing. ModelError / UnsupportedActivationError: see :func:`detect`.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> acts = capture(net, [(torch.randn(5, 4), torch.zeros(5))])
        >>> acts.h["1"].shape
        torch.Size([5, 8])
    """
    max_tokens = check_int("max_tokens", max_tokens, 2)
    sites = select_sites(model, layers)
    dev = resolve_device(model, device)
    zs: dict[str, list[torch.Tensor]] = {s.name: [] for s in sites}
    hs: dict[str, list[torch.Tensor]] = {s.name: [] for s in sites}
    budget = {"left": max_tokens}

    def make(name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def fn(z: torch.Tensor, h: torch.Tensor) -> None:
            take = budget["left"]
            zs[name].append(z.reshape(-1, z.shape[-1])[:take].float().cpu())
            hs[name].append(h.reshape(-1, h.shape[-1])[:take].float().cpu())

        return fn

    handles: list[Any] = []
    was_training = model.training
    model.eval()
    try:
        for site in sites:
            handles += site.hook(make(site.name))
        for batch in progress(loader, verbose, "capture FFN"):
            x, _ = _batch_tensors(batch)
            if x.numel() == 0:
                continue
            model(x.to(dev))
            budget["left"] -= int(hs[sites[0].name][-1].shape[0])
            if budget["left"] <= 0:
                break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if budget["left"] == max_tokens:
        raise DataError("the loader yielded no samples; pass a loader over a non-empty data set")
    z = {k: torch.cat(v) for k, v in zs.items()}
    h = {k: torch.cat(v) for k, v in hs.items()}
    bad = [k for k in h if not bool(torch.isfinite(h[k]).all())]
    if bad:
        raise ModelError(f"non-finite (NaN or inf) activations at FFN layers {bad}; check inputs and weights")
    return FFNActivations(z, h)


# ------------------------------------------------------------------------------------------ metrics
def _expert_mass(h: torch.Tensor, labels: torch.Tensor, n_experts: int) -> torch.Tensor:
    return h.clamp_min(0) @ F.one_hot(labels, n_experts).to(h.dtype)


def coverage_curve(h: torch.Tensor, labels: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Oracle coverage at k = 1..E: mean over tokens (with any positive mass) of the share of positive
    activation mass inside the k experts with the most mass. Shape (E,)."""
    mass = _expert_mass(h, labels, n_experts)
    total = mass.sum(1)
    keep = total > 0
    if not bool(keep.any()):
        return torch.full((n_experts,), float("nan"))
    srt = mass[keep].sort(dim=1, descending=True).values.cumsum(1) / total[keep, None]
    return srt.mean(0)


def _oracle_select(h: torch.Tensor, labels: torch.Tensor, n_experts: int, top_k: int) -> torch.Tensor:
    mass = _expert_mass(h, labels, n_experts)
    top = mass.topk(top_k, dim=1).indices
    return torch.zeros(mass.shape, dtype=torch.bool).scatter_(1, top, True)


def load_entropy(selected: torch.Tensor) -> float:
    """Normalised entropy (0..1) of the experts' shares of the selections in ``selected`` (tokens, E) bool."""
    counts = selected.sum(0).double()
    p = counts / counts.sum()
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return float(ent / math.log(selected.shape[1])) if selected.shape[1] > 1 else 1.0


def modularity(graph: Any, labels: torch.Tensor | np.ndarray) -> float:
    """networkx modularity Q of ``graph`` with the experts of ``labels`` as communities."""
    from networkx.algorithms.community import modularity as nx_modularity

    labels = np.asarray(labels)
    if graph.number_of_edges() == 0:
        return float("nan")
    comms = [set(np.flatnonzero(labels == e).tolist()) for e in range(int(labels.max()) + 1)]
    return float(nx_modularity(graph, comms, weight="weight"))


def _router_agreement(site: FFNSite, z: torch.Tensor, h: torch.Tensor, labels: torch.Tensor, router: str,
                      top_k: int) -> float:
    gate = _Gate(site, labels, router, top_k)
    oracle = _Gate(site, labels, "oracle", top_k)
    sel, ref = gate.select(z, h), oracle.select(z, h)
    return float((sel & ref).sum(1).float().mean() / top_k)


def _ari(a: torch.Tensor, b: torch.Tensor) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a.numpy(), b.numpy()))


# ------------------------------------------------------------------------------------------ task metric
@torch.no_grad()
def task_metric(model: nn.Module, loader: Iterable[Any], device: str | torch.device | None = None) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``loader``: classification for (inputs, labels)
    batches with (batch, classes) outputs; next-token prediction (targets = the inputs shifted by one) for
    token batches with (batch, seq, vocab) outputs.

    Raises:
        DataError: empty loader. ModelError: outputs of another shape.
    """
    dev = resolve_device(model, device)
    correct, total, loss_sum = 0, 0, 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            x, y = _batch_tensors(batch)
            if x.numel() == 0:
                continue
            out = model(x.to(dev)).float()
            if out.ndim == 2 and y is not None:
                target, logits = y.to(dev).long(), out
            elif out.ndim == 3 and not x.dtype.is_floating_point:
                target, logits = x[:, 1:].to(dev).long(), out[:, :-1]
            else:
                raise ModelError(f"cannot score outputs of shape {tuple(out.shape)}: expected (batch, classes) with "
                                 "labels, or (batch, seq, vocab) on token inputs; pass task_metric=callable")
            logits = logits.reshape(-1, logits.shape[-1])
            target = target.reshape(-1)
            correct += int((logits.argmax(-1) == target).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            total += int(target.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise DataError("the evaluation loader yielded no samples")
    return {"accuracy": correct / total, "loss": loss_sum / total}


# ------------------------------------------------------------------------------------------ result
@dataclass
class MoEReport:
    """What :func:`detect` found.

    Attributes:
        methods: partition methods fitted (the first is the primary one, used for ``coactivation``).
        n_experts: experts per layer; ``top_k``: experts kept in the headline metrics.
        layers: FFN layer names; ``d_ff`` and ``act_fn`` per layer.
        partitions: method -> layer -> labels (d_ff,) int64.
        metrics: layer -> JSON-friendly dict: ``sparsity``, ``coverage`` (method -> list over k=1..E),
            ``random_coverage_mean`` / ``random_coverage_std`` (lists over k), ``load_entropy``,
            ``modularity`` (method -> Q; ``random`` -> mean over seeds), ``routing_stability``
            (method -> router -> share of the oracle's top-k also chosen), ``partition_stability``
            (method -> ARI between seeds), ``negative_mass_share`` (GELU: share of |h| mass below 0).
        coactivation: layer -> (E, E) share of tokens on which experts i and j are both in the oracle top-k
            (primary method).
        task: ``{"fractions": [...], "top_k": [...], "dense": {...}, "curves": {method: {router: [..]}}}``.
        settings: the arguments and token counts.
    """

    methods: list[str]
    n_experts: int
    top_k: int
    layers: list[str]
    d_ff: dict[str, int]
    act_fn: dict[str, str]
    partitions: dict[str, dict[str, torch.Tensor]]
    metrics: dict[str, dict[str, Any]]
    coactivation: dict[str, torch.Tensor]
    task: dict[str, Any]
    settings: dict[str, Any]

    def coverage(self, layer: str, method: str | None = None, k: int | None = None) -> float:
        """Oracle coverage at ``k`` (default top_k) of ``method`` (default primary; ``"random"``: the mean)."""
        k = self.top_k if k is None else _check_top_k(k, self.n_experts)
        m = self.metrics[layer]
        if method == "random" and "random" not in m["coverage"]:
            return float(m["random_coverage_mean"][k - 1])
        return float(m["coverage"][method or self.methods[0]][k - 1])

    def gain(self, layer: str, method: str | None = None, k: int | None = None) -> float:
        """Coverage of ``method`` minus the mean coverage of random partitions, in points (x100)."""
        k = self.top_k if k is None else k
        return 100.0 * (self.coverage(layer, method, k) - float(self.metrics[layer]["random_coverage_mean"][k - 1]))

    def best_method(self, layer: str) -> str:
        fitted = [m for m in self.methods if m != "random"] or self.methods
        return max(fitted, key=lambda m: self.coverage(layer, m))

    def table(self) -> Table:
        """One row per (layer, method): coverage at top_k, random mean +- std, gain, modularity, stability
        (a list of dicts that prints as a table)."""
        rows = []
        for layer in self.layers:
            m = self.metrics[layer]
            for method in self.methods:
                rows.append({
                    "layer": layer, "method": method, "sparsity": m["sparsity"],
                    "coverage": self.coverage(layer, method),
                    "random_mean": float(m["random_coverage_mean"][self.top_k - 1]),
                    "random_std": float(m["random_coverage_std"][self.top_k - 1]),
                    "gain_points": self.gain(layer, method),
                    "modularity": m["modularity"][method], "random_modularity": m["modularity"]["random"],
                    "load_entropy": m["load_entropy"][method],
                    "routing_stability": m["routing_stability"].get(method, {}),
                    "partition_stability": m["partition_stability"].get(method),
                })
        columns = ["layer", "method", "coverage", "random_mean", "random_std", "gain_points", "modularity",
                   "sparsity"]
        return Table(rows, columns=columns, title=f"emergent experts: {self.n_experts} per layer, top-{self.top_k}")

    def __repr__(self) -> str:
        gains = {layer: round(self.gain(layer, self.best_method(layer)), 1) for layer in self.layers}
        return (f"MoEReport(layers={self.layers}, methods={self.methods}, n_experts={self.n_experts}, "
                f"top_k={self.top_k}, coverage gain over random (points, best method)={gains})")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``moe_report.json`` and ``partitions.safetensors`` (+ co-activation matrices) to ``directory``."""
        directory = Path(directory)
        tensors = {f"partition/{meth}/{layer}": lab for meth, d in self.partitions.items() for layer, lab in d.items()}
        tensors.update({f"coactivation/{layer}": c.float() for layer, c in self.coactivation.items()})
        write_tensors(directory / "partitions.safetensors", tensors, metadata={"format": stamp(_KIND)["format"]})
        write_json(directory / "moe_report.json", {
            **stamp(_KIND), "methods": self.methods, "n_experts": self.n_experts, "top_k": self.top_k,
            "layers": self.layers, "d_ff": self.d_ff, "act_fn": self.act_fn, "metrics": self.metrics,
            "task": self.task, "settings": self.settings})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> MoEReport:
        """Read a report written by :meth:`save`.

        Raises:
            DataError: missing or not an MoE report.
        """
        directory = Path(directory)
        try:
            obj = read_json(directory / "moe_report.json", what="MoE report")
            tensors = read_tensors(directory / "partitions.safetensors")
        except DataNotFoundError as err:
            raise DataNotFoundError(f"no MoE report in {str(directory)!r}: {err}") from err
        except DataError as err:
            raise CorruptDataError(f"unreadable MoE report in {str(directory)!r}: {err}") from err
        check_stamp(obj, _KIND, directory, what="neurospec MoE report")
        parts: dict[str, dict[str, torch.Tensor]] = {}
        coact: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            kind, rest = key.split("/", 1)
            if kind == "partition":
                meth, layer = rest.split("/", 1)
                parts.setdefault(meth, {})[layer] = value
            else:
                coact[rest] = value
        return cls(obj["methods"], obj["n_experts"], obj["top_k"], obj["layers"], obj["d_ff"], obj["act_fn"],
                   parts, obj["metrics"], coact, obj["task"], obj["settings"])

    # ---------------------------------------------------------------- views
    def plot(self, kind: str = "coverage", layer: str | None = None, **kwargs: Any) -> Any:
        """Matplotlib views: ``"coverage"`` (coverage versus k per layer, each method versus random mean +- std),
        ``"coactivation"`` (expert co-activation heatmap of ``layer``, default the first), ``"task"`` (task
        accuracy versus fraction of experts active, per router). Returns the figure."""
        from probe.moe import plot as plotting

        check_choice("kind", kind, ("coverage", "coactivation", "task"))
        if kind == "coverage":
            return plotting.moe_coverage(self, **kwargs)
        if kind == "coactivation":
            return plotting.moe_coactivation(self, layer or self.layers[0], **kwargs)
        return plotting.moe_task(self, **kwargs)


# ------------------------------------------------------------------------------------------ detect
def _as_methods(method: str | Sequence[str]) -> list[str]:
    methods = [method] if isinstance(method, str) else list(method)
    if not methods:
        raise InvalidParameterError(f"method must name at least one of {list(METHODS)}")
    for m in methods:
        check_choice("method", m, METHODS)
    if len(set(methods)) != len(methods):
        raise InvalidParameterError(f"method lists a method twice: {methods}")
    return methods


@dataclass(frozen=True)
class DetectOptions:
    """The checked settings of one :func:`detect` run: every argument but the model, the data and the layers.

    Build it with :meth:`build`, which checks the arguments exactly as :func:`detect` does and fills in the
    defaults; the fields then hold normalised values (tuples, ints, floats).

    Attributes:
        methods: partition methods, the primary one first. n_experts: experts per layer. top_k: experts kept
            per token in the headline metrics. routers: routers of the task curves. fractions: fractions of
            experts active in the task curves. task: True, False or a callable, as in :func:`detect`.
        n_random, seed, max_tokens, graph_knn, device, verbose: as in :func:`detect` (``max_tokens`` is
            checked by :func:`capture`, after the layers).
    """

    methods: tuple[str, ...]
    n_experts: int
    top_k: int
    routers: tuple[str, ...]
    fractions: tuple[float, ...]
    task: bool | Callable[[nn.Module], float | Mapping[str, float]]
    n_random: int
    seed: int
    max_tokens: int
    graph_knn: int
    device: str | torch.device | None
    verbose: bool

    @classmethod
    def build(
        cls,
        n_experts: int = 16,
        method: str | Sequence[str] = "activations",
        top_k: int | None = None,
        *,
        routers: Sequence[str] = ROUTERS,
        fractions: Sequence[float] = (0.125, 0.25, 0.5),
        task: bool | Callable[[nn.Module], float | Mapping[str, float]] = True,
        n_random: int = 5,
        seed: int = 0,
        max_tokens: int = 8192,
        graph_knn: int = 16,
        device: str | torch.device | None = None,
        verbose: bool = True,
    ) -> DetectOptions:
        """Check the arguments of :func:`detect` (same names and defaults) and normalise them.

        Raises:
            InvalidParameterError: unknown or repeated method, unknown router, n_experts < 1, top_k outside
                1..n_experts, n_random < 1, a fraction outside (0, 1].

        Example:
            >>> DetectOptions.build(16, ["weights", "random"]).top_k
            4
        """
        methods = _as_methods(method)
        routers = [routers] if isinstance(routers, str) else list(routers)  # one router may be named alone
        for r in routers:
            check_choice("routers", r, ROUTERS)
        n_experts = check_int("n_experts", n_experts, 1)
        top_k = _check_top_k(max(1, n_experts // 4) if top_k is None else top_k, n_experts)
        n_random = check_int("n_random", n_random, 1)
        fracs = [float(f) for f in fractions]
        if any(not (0 < f <= 1) or math.isnan(f) for f in fracs):
            raise InvalidParameterError(f"fractions must lie in (0, 1]; got {list(fractions)}")
        return cls(tuple(methods), n_experts, top_k, tuple(routers), tuple(fracs), task, n_random, seed,
                   max_tokens, graph_knn, device, verbose)


def _detect_sites(model: nn.Module, layers: Sequence[str | int] | str | int | None,
                  opts: DetectOptions) -> list[FFNSite]:
    """Step "select sites": the FFN layers to study, each checked to split into ``opts.n_experts`` experts."""
    sites = select_sites(model, [layers] if isinstance(layers, (str, int)) else layers)
    for site in sites:
        _check_experts(site, opts.n_experts)
    return sites


def _detect_capture(model: nn.Module, loader: Iterable[Any], sites: list[FFNSite],
                    opts: DetectOptions) -> FFNActivations:
    """Step "capture activations": the layers' activations, at least 4 token rows (half fit, half measure)."""
    acts = capture(model, loader, [s.name for s in sites], max_tokens=opts.max_tokens, device=opts.device,
                   verbose=opts.verbose)
    n_tok = acts.n_tokens
    if n_tok < 4:
        raise DataError(f"the loader gave only {n_tok} token rows; need at least 4 (half fit, half measure)")
    return acts


@dataclass
class _LayerData:
    """One layer's activations ``h`` split in halves: ``h_fit`` fits the partitions, ``h_ev`` / ``z_ev``
    measure them (for gated sites the halves hold the mass ``|h|``); ``graph`` is the co-activation graph of
    the fit half; ``sparsity`` the share of neurons not firing over all tokens."""

    site: FFNSite
    h: torch.Tensor
    h_fit: torch.Tensor
    h_ev: torch.Tensor
    z_ev: torch.Tensor
    graph: Any
    sparsity: float

    @classmethod
    def split(cls, site: FFNSite, acts: FFNActivations, opts: DetectOptions) -> _LayerData:
        """The halves of ``site``'s captured activations (first half fits, second half measures)."""
        half = acts.n_tokens // 2
        h, z = acts.h[site.name], acts.z[site.name]
        mass = site.mass(h) if site.gated else h  # ungated: the consumers take the positive part themselves
        fires = site.fires(z, h)
        return cls(site, h, mass[:half], mass[half:], z[half:],
                   coactivation_graph(fires[:half].numpy(), opts.graph_knn),
                   float(1.0 - fires.float().mean()))


def _fit_partition(layer: _LayerData, meth: str, seed: int, opts: DetectOptions) -> torch.Tensor:
    """The partition of ``layer`` by ``meth`` fitted on the fit half (``"graph"`` reuses ``layer.graph``)."""
    if meth == "graph":
        return torch.from_numpy(graph_partition(layer.graph, opts.n_experts, seed))
    return partition(meth, opts.n_experts, w_in=layer.site.keys(), activations=layer.h_fit, seed=seed,
                     graph_knn=opts.graph_knn)


@dataclass
class _RandomBaseline:
    """Random partitions of one layer and their metrics (coverage over k: mean and std over the seeds)."""

    partitions: list[torch.Tensor]
    coverage_mean: list[float]
    coverage_std: list[float]
    modularity: float
    load_entropy: float


def _random_baseline(layer: _LayerData, opts: DetectOptions) -> _RandomBaseline:
    """Step "random baseline": ``opts.n_random`` random partitions (seeds ``seed ..``), measured."""
    n, rand_seed = opts.n_experts, opts.seed
    rand = [partition("random", n, w_in=layer.site.w_in, seed=rand_seed + i) for i in range(opts.n_random)]
    curves = torch.stack([coverage_curve(layer.h_ev, lab, n) for lab in rand])
    return _RandomBaseline(
        rand, curves.mean(0).tolist(), (curves.std(0) if opts.n_random > 1 else torch.zeros(n)).tolist(),
        float(np.mean([modularity(layer.graph, lab) for lab in rand])),
        float(np.mean([load_entropy(_oracle_select(layer.h_ev, lab, n, opts.top_k)) for lab in rand])))


def _measure_method(layer: _LayerData, meth: str, baseline: _RandomBaseline,
                    opts: DetectOptions) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
    """Step "partition per method" for one method: ``(labels, metric -> value, oracle top-k selection)``;
    ``"random"`` takes the first random partition and has no partition stability."""
    labels = baseline.partitions[0] if meth == "random" else _fit_partition(layer, meth, opts.seed, opts)
    sel = _oracle_select(layer.h_ev, labels, opts.n_experts, opts.top_k)
    values: dict[str, Any] = {
        "coverage": coverage_curve(layer.h_ev, labels, opts.n_experts).tolist(),
        "load_entropy": load_entropy(sel),
        "modularity": modularity(layer.graph, labels),
        "routing_stability": {r: _router_agreement(layer.site, layer.z_ev, layer.h_ev, labels, r, opts.top_k)
                              for r in ("similarity", "avg_k")},
    }
    if meth != "random":
        values["partition_stability"] = _ari(labels, _fit_partition(layer, meth, opts.seed + 1, opts))
    return labels, values, sel


def _layer_metrics(layer: _LayerData, opts: DetectOptions,
                   tick: Callable[[int], Any] = lambda n: None,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any], torch.Tensor]:
    """Step "metrics per layer": ``(method -> labels, the layer's entry of MoEReport.metrics, co-activation of
    the primary method's oracle top-k)``."""
    h = layer.h
    negative_share = float(h.clamp_max(0).abs().sum() / h.abs().sum().clamp_min(1e-30))
    m: dict[str, Any] = {"sparsity": layer.sparsity, "negative_mass_share": negative_share,
                         "coverage": {}, "load_entropy": {}, "modularity": {}, "routing_stability": {},
                         "partition_stability": {}}
    base = _random_baseline(layer, opts)
    tick(1)
    m["random_coverage_mean"], m["random_coverage_std"] = base.coverage_mean, base.coverage_std
    m["modularity"]["random"], m["load_entropy"]["random"] = base.modularity, base.load_entropy
    labels_of: dict[str, torch.Tensor] = {}
    selected: dict[str, torch.Tensor] = {}
    for meth in opts.methods:
        labels_of[meth], values, selected[meth] = _measure_method(layer, meth, base, opts)
        tick(1)
        for key, value in values.items():
            m[key][meth] = value
    s_f = selected[opts.methods[0]].float()
    return labels_of, m, (s_f.T @ s_f) / len(s_f)


@dataclass
class _Fitted:
    """What the per-layer steps produced, keyed as in :class:`MoEReport`."""

    partitions: dict[str, dict[str, torch.Tensor]]
    metrics: dict[str, dict[str, Any]]
    coactivation: dict[str, torch.Tensor]


def _partition_layers(sites: list[FFNSite], acts: FFNActivations, opts: DetectOptions) -> _Fitted:
    """Steps "partition per method", "random baseline" and "metrics per layer" over every layer."""
    from tqdm.auto import tqdm

    fitted = _Fitted({m: {} for m in opts.methods}, {}, {})
    # One bar over every (layer, method) unit plus each layer's random baseline, so long layers show progress.
    bar = tqdm(total=len(sites) * (len(opts.methods) + 1), disable=not opts.verbose, desc="partition layers",
               leave=False)
    for site in sites:
        bar.set_postfix_str(site.name)
        labels_of, metrics, coact = _layer_metrics(_LayerData.split(site, acts, opts), opts, bar.update)
        for meth, labels in labels_of.items():
            fitted.partitions[meth][site.name] = labels
        fitted.metrics[site.name] = metrics
        fitted.coactivation[site.name] = coact
    bar.close()
    return fitted


def _run_task(model: nn.Module, task: bool | Callable[[nn.Module], float | Mapping[str, float]],
              loader: Iterable[Any], device: str | torch.device | None) -> dict[str, float]:
    """One task measurement: ``task(model)`` as a dict (a float becomes ``{"metric": value}``), or
    :func:`task_metric` on ``loader`` when ``task`` is not callable."""
    if callable(task):
        val = task(model)
        return dict(val) if isinstance(val, Mapping) else {"metric": float(val)}
    return task_metric(model, loader, device)


def _task_curves(model: nn.Module, loader: Iterable[Any], eval_loader: Iterable[Any] | None,
                 partitions: dict[str, dict[str, torch.Tensor]], opts: DetectOptions) -> dict[str, Any]:
    """Step "task curves": the task metric dense and in MoE form per method, router and fraction of experts
    active (``{}`` when ``opts.task`` is False)."""
    if opts.task is False:
        return {}
    ev = eval_loader if eval_loader is not None else loader
    ks = [max(1, round(f * opts.n_experts)) for f in opts.fractions]
    from tqdm.auto import tqdm

    bar = tqdm(total=1 + len(opts.methods) * len(opts.routers) * len(ks), disable=not opts.verbose,
               desc="task curves", leave=False)
    out: dict[str, Any] = {"fractions": list(opts.fractions), "top_k": ks,
                           "dense": _run_task(model, opts.task, ev, opts.device), "curves": {}}
    bar.update(1)
    for meth in opts.methods:
        out["curves"][meth] = {}
        for r in opts.routers:
            vals = []
            for k in ks:
                bar.set_postfix_str(f"{meth}/{r} top-{k}")
                with moe_form(model, partitions[meth], top_k=k, router=r):
                    vals.append(_run_task(model, opts.task, ev, opts.device))
                bar.update(1)
            out["curves"][meth][r] = vals
    bar.close()
    return out


def _assemble_report(sites: list[FFNSite], n_tokens: int, fitted: _Fitted, task_out: dict[str, Any],
                     opts: DetectOptions) -> MoEReport:
    """Step "assemble report": the :class:`MoEReport`, with the settings and the fit / measure token
    counts."""
    half = n_tokens // 2
    settings = {"seed": opts.seed, "n_random": opts.n_random, "max_tokens": opts.max_tokens,
                "graph_knn": opts.graph_knn, "fit_tokens": half, "eval_tokens": n_tokens - half,
                "routers": list(opts.routers)}
    return MoEReport(list(opts.methods), opts.n_experts, opts.top_k, [s.name for s in sites],
                     {s.name: s.d_ff for s in sites}, {s.name: s.act_label for s in sites}, fitted.partitions,
                     fitted.metrics, fitted.coactivation, task_out, settings)


def detect(
    model: nn.Module,
    loader: Iterable[Any],
    layers: Sequence[str | int] | str | int | None = None,
    n_experts: int = 16,
    method: str | Sequence[str] = "activations",
    top_k: int | None = None,
    *,
    routers: Sequence[str] = ROUTERS,
    fractions: Sequence[float] = (0.125, 0.25, 0.5),
    eval_loader: Iterable[Any] | None = None,
    task: bool | Callable[[nn.Module], float | Mapping[str, float]] = True,
    n_random: int = 5,
    seed: int = 0,
    max_tokens: int = 8192,
    graph_knn: int = 16,
    device: str | torch.device | None = None,
    verbose: bool = True,
) -> MoEReport:
    """Find emergent experts in FFN layers and measure how modular they are.

    Args:
        model: a TransformerLens model (``blocks.L.mlp``) or a torch model with Linear-act-Linear blocks.
        loader: yields token batches (LongTensor (batch, seq)), or (inputs, labels) pairs; used to capture
            activations (first half of the captured tokens fits, second half measures).
        layers: FFN layers (names, or ints L for ``blocks.L.mlp``); default all.
        n_experts: experts per layer; must divide every chosen layer's d_ff.
        method: partition method(s) among :data:`METHODS`; the first is the primary one.
        top_k: experts kept per token for the headline metrics (default n_experts // 4, at least 1).
        routers: routers whose task curves are measured (``"oracle"``, ``"similarity"``, ``"avg_k"``).
        fractions: fractions of experts active for the task curves (top_k = round(fraction x E), >= 1).
        eval_loader: data for the task metric (default ``loader``).
        task: True: accuracy/loss from :func:`task_metric`; a callable ``model -> float | dict`` (run inside
            the MoE context, e.g. TokFSM's ``evaluate``); False: skip the task curves.
        n_random: random partitions (seeds ``seed .. seed + n_random - 1``) for the baseline.
        seed: seed of the fitted partitions.
        max_tokens: token rows captured per layer.
        graph_knn: neighbours per neuron in the co-activation graph.
        device: where to run (default: the model's device).
        verbose: progress bars.

    Returns:
        A :class:`MoEReport`.

    Raises:
        ModelError: no FFN at a given layer name. UnsupportedActivationError: an activation the method cannot
        handle (named). InvalidParameterError: n_experts not dividing d_ff (the sizes that work are listed),
        top_k > n_experts, unknown method/router, bad fractions. DataError: empty loader.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x = torch.randn(64, 4)
        >>> rep = detect(net, [(x, net(x).argmax(1))], n_experts=4, method="weights", verbose=False)
        >>> rep.layers, len(rep.metrics["1"]["coverage"]["weights"])
        (['1'], 4)
    """
    opts = DetectOptions.build(n_experts, method, top_k, routers=routers, fractions=fractions, task=task,
                               n_random=n_random, seed=seed, max_tokens=max_tokens, graph_knn=graph_knn,
                               device=device, verbose=verbose)
    sites = _detect_sites(model, layers, opts)
    acts = _detect_capture(model, loader, sites, opts)
    fitted = _partition_layers(sites, acts, opts)
    task_out = _task_curves(model, loader, eval_loader, fitted.partitions, opts)
    return _assemble_report(sites, acts.n_tokens, fitted, task_out, opts)
