"""Balanced partitioners of a layer's FFN neurons into equal-size experts (private helpers of probe.moe).

Every partitioner returns integer labels ``(d_ff,)`` in ``0..E-1`` with exactly ``d_ff / E`` neurons per
expert. The balanced assignment step is an exact min-cost transportation problem (each neuron supplies one
unit, each expert takes exactly ``m = d_ff / E``), solved by cycle cancelling on the E-node "move" graph:
moving neuron j from expert a to expert b costs ``cost[j, b] - cost[j, a]``; a balanced labelling is optimal
iff no cycle of moves a1 -> a2 -> ... -> a1 has negative total cost (the residual-graph optimality condition
of min-cost flow, compressed to expert nodes because every simple residual cycle visits an expert at most
once). Each round finds a negative cycle with Bellman-Ford on E nodes (O(E^3), vectorised) after one
O(d_ff * E) pass; a greedy start and warm starts across k-means iterations keep the rounds few.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

from probe.core.errors import InvalidParameterError

logger = logging.getLogger(__name__)


def _greedy(cost: np.ndarray, size: int) -> np.ndarray:
    """A feasible balanced labelling: cheapest (neuron, expert) pairs first while experts have room."""
    n, e = cost.shape
    order = np.argsort(cost, axis=None, kind="stable")
    rows, cols = np.divmod(order, e)
    labels = np.full(n, -1, dtype=np.int64)
    room = np.full(e, size, dtype=np.int64)
    left = n
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        if labels[r] < 0 and room[c] > 0:
            labels[r] = c
            room[c] -= 1
            left -= 1
            if left == 0:
                break
    return labels


def _negative_cycle(w: np.ndarray, tol: float) -> list[int] | None:
    """A cycle of negative total weight in the complete digraph ``w`` (E x E, inf on the diagonal), or None."""
    e = w.shape[0]
    dist = np.zeros(e)
    pred = np.full(e, -1, dtype=np.int64)
    last = -1
    cols = np.arange(e)
    for _ in range(e):
        cand = dist[:, None] + w
        best = cand.argmin(0)
        val = cand[best, cols]
        upd = val < dist - tol
        if not upd.any():
            return None
        dist = np.where(upd, val, dist)
        pred = np.where(upd, best, pred)
        last = int(np.flatnonzero(upd)[0])
    x = last
    for _ in range(e):  # walk back onto the cycle
        x = int(pred[x])
    cycle = [x]
    y = int(pred[x])
    while y != x:
        cycle.append(y)
        y = int(pred[y])
    return cycle[::-1]


def balanced_assignment(cost: np.ndarray, init: np.ndarray | None = None, max_rounds: int = 1_000_000) -> np.ndarray:
    """Exact min-cost assignment of n items to E groups of exactly n / E items each.

    Args:
        cost: (n, E) float array; ``cost[i, e]`` is the price of putting item i in group e.
        init: an optional balanced labelling to start from (warm start).
        max_rounds: safety cap on cycle cancellations.

    Returns:
        int64 labels (n,), each group holding exactly n / E items, minimising the total cost.

    Raises:
        InvalidParameterError: n not divisible by E, or a non-finite cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, e = cost.shape
    if e < 1 or n % e:
        raise InvalidParameterError(f"balanced assignment needs n divisible by E; got n={n}, E={e}")
    if not np.isfinite(cost).all():
        raise InvalidParameterError("balanced assignment got NaN or inf costs")
    size = n // e
    if init is None:
        labels = _greedy(cost, size)
    else:
        labels = np.asarray(init, dtype=np.int64).copy()
        if labels.shape != (n,) or not (np.bincount(labels, minlength=e) == size).all():
            labels = _greedy(cost, size)
    if e == 1:
        return labels
    idx = np.arange(n)
    tol = 1e-12 * max(1.0, float(np.abs(cost).max()))
    for _ in range(max_rounds):
        delta = cost - cost[idx, labels][:, None]
        order = np.argsort(labels, kind="stable")
        starts = np.arange(e) * size  # balanced: group g occupies order[g*size:(g+1)*size]
        w = np.minimum.reduceat(delta[order], starts, axis=0)
        np.fill_diagonal(w, np.inf)
        # Cheap first: all improving swaps (2-cycles) between disjoint expert pairs at once; a general
        # negative cycle (Bellman-Ford) only when no swap improves.
        swap = np.triu(w + w.T, 1)
        swap[np.tril_indices(e)] = np.inf
        cand = np.argwhere(swap < -tol)
        if len(cand):
            cand = cand[np.argsort(swap[cand[:, 0], cand[:, 1]], kind="stable")]
            used = np.zeros(e, dtype=bool)
            cycles = []
            for a, b in cand.tolist():
                if not (used[a] or used[b]):
                    used[a] = used[b] = True
                    cycles.append([a, b])
        else:
            cycle = _negative_cycle(w, tol)
            if cycle is None:
                return labels
            cycles = [cycle]
        moves = []
        for cycle in cycles:
            for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
                members = order[a * size:(a + 1) * size]
                moves.append((int(members[np.argmin(delta[members, b])]), b))
        for j, b in moves:
            labels[j] = b
    logger.warning("balanced assignment stopped after %d cycle cancellations (not proven optimal)", max_rounds)
    return labels


def _kmeans_pp(x: np.ndarray, e: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    centers = [int(rng.integers(n))]
    d2 = ((x - x[centers[0]]) ** 2).sum(1).astype(np.float64)
    for _ in range(1, e):
        total = d2.sum()
        if total > 0:
            pick = int(min(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"), n - 1))
        else:
            pick = int(rng.integers(n))
        centers.append(pick)
        d2 = np.minimum(d2, ((x - x[pick]) ** 2).sum(1))
    return x[centers].copy()


def balanced_kmeans(x: np.ndarray, n_groups: int, seed: int = 0, max_iter: int = 20, tol: float = 1e-4) -> np.ndarray:
    """Balanced k-means: Lloyd iterations whose assignment step is the exact :func:`balanced_assignment`
    (squared Euclidean cost), warm-started from the previous labels; k-means++ seeding. Stops when the
    labels repeat, the objective improves by less than ``tol`` (relative), or after ``max_iter`` rounds.

    Returns:
        int64 labels (n,), exactly n / n_groups per group.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    rng = np.random.default_rng(seed)
    centers = _kmeans_pp(x, n_groups, rng)
    labels: np.ndarray | None = None
    sq = (x ** 2).sum(1)[:, None]
    prev = np.inf
    for _ in range(max_iter):
        cost = (sq - 2.0 * (x @ centers.T) + (centers ** 2).sum(1)[None, :]).astype(np.float64)
        new = balanced_assignment(cost, init=labels)
        obj = float(cost[np.arange(n), new].sum())
        if labels is not None and (np.array_equal(new, labels) or prev - obj <= tol * abs(prev)):
            labels = new
            break
        labels, prev = new, obj
        order = np.argsort(labels, kind="stable")
        centers = x[order].reshape(n_groups, n // n_groups, -1).mean(1)
    assert labels is not None
    return labels


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def random_partition(d_ff: int, n_experts: int, seed: int) -> np.ndarray:
    """Neurons shuffled with ``seed`` and cut into equal consecutive groups."""
    perm = np.random.default_rng(seed).permutation(d_ff)
    labels = np.empty(d_ff, dtype=np.int64)
    labels[perm] = np.arange(d_ff) // (d_ff // n_experts)
    return labels


def weight_partition(w_in: np.ndarray, n_experts: int, seed: int) -> np.ndarray:
    """EMoE / MoEfication: balanced k-means on the L2-normalised rows (keys) of W_in (d_ff, d_in)."""
    return balanced_kmeans(_unit_rows(w_in), n_experts, seed)


@contextmanager
def _one_thread():
    """Small LAPACK calls (QR, SVD, eigh of ~100 x 100) run far faster on one thread: on a loaded machine
    multi-threaded LAPACK spends its time waiting for busy cores. The thread counts are restored on exit."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _reduce(profiles: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Rows projected on their top ``dim`` principal directions when wider than ``dim``: exact thin SVD for
    few rows, else a seeded randomised range finder (one power iteration, float32)."""
    if profiles.shape[1] <= dim:
        return profiles
    import torch

    p = torch.from_numpy(np.ascontiguousarray(profiles, dtype=np.float32))
    if p.shape[0] <= 2 * dim:  # few rows: the exact thin SVD is cheap
        with _one_thread():
            u, s, _ = torch.linalg.svd(p, full_matrices=False)
        return (u * s).numpy()[:, :dim]
    gen = torch.Generator().manual_seed(seed)
    y = p @ torch.randn(p.shape[1], dim + 10, generator=gen)
    with _one_thread():
        q, _ = torch.linalg.qr(y)
    y = p @ (p.T @ q)  # one power iteration sharpens the top directions
    with _one_thread():
        q, _ = torch.linalg.qr(y)
    b = q.T @ p
    with _one_thread():
        u_b, s, _ = torch.linalg.svd(b, full_matrices=False)
    return ((q @ u_b[:, :dim]) * s[:dim]).numpy()


def activation_partition(acts_pos: np.ndarray, n_experts: int, seed: int, dim: int = 128) -> np.ndarray:
    """Balanced k-means of the neurons' L2-normalised positive-activation profiles over data.

    Args:
        acts_pos: (tokens, d_ff) positive parts of the post-activations.
    """
    prof = _unit_rows(np.ascontiguousarray(acts_pos.T, dtype=np.float32))
    return balanced_kmeans(_unit_rows(_reduce(prof, dim, seed)), n_experts, seed)


def coactivation_graph(fires: np.ndarray, knn: int = 16):
    """The neurons' co-activation graph as a networkx Graph.

    Edge weight = cosine similarity of the binary firing patterns (co-firing count over the geometric mean
    of the firing counts), kept for each neuron's ``knn`` strongest partners (symmetrised); every neuron is a
    node, dead neurons are isolated.

    Args:
        fires: (tokens, d_ff) bool/0-1 firing states (post-activation > 0).
    """
    import networkx as nx

    f = fires.astype(np.float32)
    co = (f.T @ f).astype(np.float64)
    diag = np.diag(co).copy()
    norm = np.sqrt(np.outer(diag, diag))
    sim = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
    np.fill_diagonal(sim, 0.0)
    d = sim.shape[0]
    k = min(knn, d - 1)
    graph = nx.Graph()
    graph.add_nodes_from(range(d))
    if k <= 0:
        return graph
    nbrs = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(d), k)
    cols = nbrs.ravel()
    wts = sim[rows, cols]
    keep = wts > 0
    graph.add_weighted_edges_from(zip(rows[keep].tolist(), cols[keep].tolist(), wts[keep].tolist(), strict=True))
    return graph


def graph_partition(graph, n_experts: int, seed: int) -> np.ndarray:
    """Spectral embedding of ``graph`` (the top eigenvectors of its normalised adjacency, rows normalised as
    in Ng-Jordan-Weiss) cut into equal parts by balanced k-means."""
    import networkx as nx
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    d = graph.number_of_nodes()
    adj = nx.to_scipy_sparse_array(graph, nodelist=range(d), weight="weight", format="csr").astype(np.float64)
    # A tiny uniform coupling keeps isolated (dead) neurons and disconnected pieces well defined.
    deg = np.asarray(adj.sum(1)).ravel() + 1e-6 * d
    inv = sp.diags(1.0 / np.sqrt(deg))
    norm_adj = inv @ adj @ inv
    dim = min(n_experts, d - 1)
    with _one_thread():
        if d <= 600 or dim >= d - 1:
            dense = norm_adj.toarray() + 1e-6 * np.outer(1 / np.sqrt(deg), 1 / np.sqrt(deg))
            _, vecs = np.linalg.eigh(dense)
            emb = vecs[:, -dim:]
        else:
            v0 = np.random.default_rng(seed).standard_normal(d)
            _, emb = eigsh(norm_adj, k=dim, which="LA", v0=v0)
    return balanced_kmeans(_unit_rows(emb), n_experts, seed)
