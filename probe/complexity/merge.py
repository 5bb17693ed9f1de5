"""Iterative feature merging on the weights (private helper of :mod:`probe.complexity`).

Working state, in float64, one entry per Linear/Conv2d module ``m``:

* ``W[m]`` of shape ``(out, n_in, blk)``: the weight with its input axis organised by input *feature*
  (``n_in`` features of the input group, ``blk`` weights each: ``kh * kw`` for a convolution, the ``H * W``
  flattened columns of a channel for a Linear after a Flatten), or by raw input column when the input is not
  a mergeable feature group;
* ``b[m]`` (out,): the bias (zeros when the module has none);
* ``bn[m]``: the BatchNorm right after ``m`` (``gamma, beta, mean, var, eps``), kept only by the ``paper`` rule;
  the ``exact`` rule folds it into ``W[m], b[m]`` up front.

A feature's vector (for distances) is its producers' BatchNorm-folded rows and biases followed by its
consumers' BatchNorm-folded columns. Distances are kept per group in an ``n x n`` matrix and updated
incrementally: a merge in group ``g`` recomputes one row of ``g``'s matrix, and changes a few coordinates of
every feature of the neighbouring groups, whose matrices get a low-rank correction
(``D += pd(new block) - pd(old blocks)``) instead of a recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from probe.complexity.graph import Analysis

RULES = ("exact", "paper")


def pairwise_sq(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``x`` (n, d), vectorised (float64, clamped at 0)."""
    x = x.reshape(x.shape[0], -1)
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    d.clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


@dataclass
class _BN:
    gamma: torch.Tensor
    beta: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    eps: float

    def scale(self) -> torch.Tensor:
        return self.gamma / torch.sqrt(self.var + self.eps)


class Merger:
    """Holds the working weights and per-group distance matrices; performs merges."""

    def __init__(self, model: nn.Module, analysis: Analysis, rule: str) -> None:
        self.a = analysis
        self.rule = rule
        mods = dict(model.named_modules())
        self.W: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        self.bn: dict[str, _BN] = {}
        for name, mod in analysis.modules.items():
            w = mod.weight.detach().to(torch.float64).cpu()
            out = w.shape[0]
            k = math.prod(w.shape[2:]) if w.dim() > 2 else 1
            w = w.reshape(out, w.shape[1], k)
            g = analysis.in_group[name]
            if g is not None:
                cols = next(c.cols for c in analysis.groups[g].consumers if c.module == name)
                if isinstance(mod, nn.Linear):
                    w = w[:, :, 0][:, cols]  # (out, n, blk)
                else:
                    w = w[:, cols[:, 0], :]
            self.W[name] = w.contiguous()
            bias = mod.bias.detach().to(torch.float64).cpu() if mod.bias is not None else torch.zeros(out, dtype=torch.float64)
            self.b[name] = bias.clone()
            if name in analysis.batchnorm:
                bnm = mods[analysis.batchnorm[name]]
                gamma = bnm.weight.detach().double().cpu() if bnm.weight is not None else torch.ones(out, dtype=torch.float64)
                beta = bnm.bias.detach().double().cpu() if bnm.bias is not None else torch.zeros(out, dtype=torch.float64)
                bn = _BN(gamma.clone(), beta.clone(), bnm.running_mean.detach().double().cpu().clone(),
                         bnm.running_var.detach().double().cpu().clone(), float(bnm.eps))
                if rule == "exact":
                    s = bn.scale()
                    self.W[name] = self.W[name] * s[:, None, None]
                    self.b[name] = (self.b[name] - bn.mean) * s + bn.beta
                else:
                    self.bn[name] = bn
        self.mergeable = [g for g in analysis.order if not analysis.groups[g].frozen]
        self.count = {g: torch.ones(analysis.groups[g].size, dtype=torch.float64) for g in self.mergeable}
        self.members: dict[str, list[list[int]]] = {
            g: [[i] for i in range(analysis.groups[g].size)] for g in self.mergeable}
        self.D = {g: pairwise_sq(self.vectors(g)) for g in self.mergeable}

    # ---- views -------------------------------------------------------------------------------------------

    def folded(self, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchNorm-folded ``(W, b)`` of module ``m``."""
        bn = self.bn.get(m)
        if bn is None:
            return self.W[m], self.b[m]
        s = bn.scale()
        return self.W[m] * s[:, None, None], (self.b[m] - bn.mean) * s + bn.beta

    def _row_block(self, m: str, rows: list[int]) -> list[torch.Tensor]:
        """Folded rows of ``m`` as blocks of the input group's feature vectors: (n_in, blk) each."""
        w, _ = self.folded(m)
        return [w[r].clone() for r in rows]

    def _col_block(self, m: str, cols: list[int]) -> list[torch.Tensor]:
        """Folded input-feature columns of ``m`` as blocks of the output group's vectors: (out, blk) each."""
        w, _ = self.folded(m)
        return [w[:, c, :].clone() for c in cols]

    def vectors(self, g: str) -> torch.Tensor:
        """Current feature vectors of group ``g``: (n, d), producers' rows and biases, consumers' columns."""
        grp = self.a.groups[g]
        parts = []
        for p in grp.producers:
            w, bias = self.folded(p)
            parts += [w.reshape(w.shape[0], -1), bias[:, None]]
        for c in grp.consumers:
            w, _ = self.folded(c.module)
            parts.append(w.permute(1, 0, 2).reshape(w.shape[1], -1))
        return torch.cat(parts, 1)

    def size(self, g: str) -> int:
        return int(self.count[g].numel())

    # ---- merging -----------------------------------------------------------------------------------------

    def closest(self, g: str) -> tuple[int, int, float, float]:
        """The closest pair ``(i, j)``, i < j (first in row-major order on ties), ``d_min`` and ``d_max``."""
        d = self.D[g]
        n = d.shape[0]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        masked = torch.where(upper, d, torch.full_like(d, math.inf))
        flat = int(torch.argmin(masked))
        i, j = divmod(flat, n)
        return i, j, float(masked.view(-1)[flat]), float(d[upper].max())

    def merge(self, g: str, i: int, j: int) -> None:
        """Merge feature ``j`` into feature ``i`` (i < j) of group ``g`` and update the distances."""
        grp = self.a.groups[g]
        ci, cj = self.count[g][i], self.count[g][j]
        # Neighbour groups whose vectors contain coordinates that this merge rewrites.
        fixes: list[tuple[str, list[torch.Tensor], str, str]] = []  # (group, old blocks, kind, module)
        self_loop = False
        for p in grp.producers:
            u = self.a.in_group[p]
            if u is not None and u in self.D:
                if u == g:
                    self_loop = True
                else:
                    fixes.append((u, self._row_block(p, [i, j]), "row", p))
        for c in grp.consumers:
            h = self.a.out_group[c.module]
            if h in self.D:
                if h == g:
                    self_loop = True
                else:
                    fixes.append((h, self._col_block(c.module, [i, j]), "col", c.module))

        keep = [k for k in range(self.size(g)) if k != j]
        for p in grp.producers:
            w, bias = self.W[p], self.b[p]
            if self.rule == "exact":  # centroid of the merged originals
                w[i] = (ci * w[i] + cj * w[j]) / (ci + cj)
                bias[i] = (ci * bias[i] + cj * bias[j]) / (ci + cj)
            else:  # paper: sum the producer rows, BatchNorm statistics included
                w[i] = w[i] + w[j]
                bias[i] = bias[i] + bias[j]
                bn = self.bn.get(p)
                if bn is not None:
                    for t in (bn.gamma, bn.beta, bn.mean, bn.var):
                        t[i] = t[i] + t[j]
                    self.bn[p] = _BN(bn.gamma[keep], bn.beta[keep], bn.mean[keep], bn.var[keep], bn.eps)
            self.W[p], self.b[p] = w[keep].contiguous(), bias[keep].contiguous()
        for c in grp.consumers:
            w = self.W[c.module]
            if self.rule == "exact":  # sum: duplicates carry equal values, so the sum is the same function
                w[:, i] = w[:, i] + w[:, j]
            else:  # paper: count-weighted average of the consumer columns
                w[:, i] = (ci * w[:, i] + cj * w[:, j]) / (ci + cj)
            self.W[c.module] = w[:, keep].contiguous()
        self.count[g][i] = ci + cj
        self.count[g] = self.count[g][keep]
        self.members[g][i] = sorted(self.members[g][i] + self.members[g][j])
        del self.members[g][j]

        for u, old, kind, m in fixes:
            new = self._row_block(m, [i]) if kind == "row" else self._col_block(m, [i])
            self.D[u] += pairwise_sq(new[0]) - pairwise_sq(old[0]) - pairwise_sq(old[1])
            self.D[u].clamp_(min=0.0)
        if self_loop:
            self.D[g] = pairwise_sq(self.vectors(g))
            return
        d = self.D[g][keep][:, keep].contiguous()
        v = self.vectors(g)
        row = ((v - v[i]) ** 2).sum(1)
        row[i] = 0.0
        d[i, :] = row
        d[:, i] = row
        self.D[g] = d

    # ---- results -----------------------------------------------------------------------------------------

    def module_tensors(self, m: str) -> tuple[torch.Tensor, torch.Tensor, _BN | None]:
        """Final ``(W (out, n_in, blk), b, bn)`` of module ``m`` in the module's own (unfolded) terms."""
        return self.W[m], self.b[m], self.bn.get(m)
