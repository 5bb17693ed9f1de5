"""The codebook bottleneck: :class:`CodebookConfig` and :class:`CodebookLayer`.

A codebook layer holds ``n_groups`` independent codebooks of ``n_codes`` vectors of width ``d``. For an
activation ``x`` (``[..., d]``, or ``[..., n_groups, d]`` for a grouped/per-head site) it scores every code
of the group by cosine similarity (default), inner product or negative L2 distance, keeps the ``k`` best,
and replaces ``x`` by the mean of those ``k`` code vectors (``reduce="sum"``: their sum). The backward pass
is straight-through: the gradient of the task loss reaches both the selected codes and ``x`` (identity).
The codebook's own loss is ``recon_coef * MSE(codes, stop-grad(x)) + commitment * MSE(x, stop-grad(codes))``.

The selected code ids ``[..., k]`` (``[..., n_groups, k]`` when grouped) pass through the layer's own
:class:`~transformer_lens.hook_points.HookPoint` ``hook_codes`` *before* the code vectors are looked up, so a
hook there can read the ids (caching), ablate them (set an id to ``-1``: that slot then contributes a zero
vector) or replace them (patching, forcing); it may also append ids along the last axis. Once attached,
the hook point is registered on the model as ``"<site>.codebook.hook_codes"``.

Scores are computed under ``torch.no_grad`` in chunks (the selection needs no gradient), usage counts are
accumulated on the device with ``index_add_`` (no host synchronisation), and dead-code replacement is a
branch-free ``torch.where`` over the whole codebook, so a training step never waits on the host.

Example:
    >>> import torch
    >>> from codebook.layer import CodebookConfig, CodebookLayer
    >>> layer = CodebookLayer(8, CodebookConfig(n_codes=16, k=1), seed=0)
    >>> y = layer(torch.randn(2, 5, 8))
    >>> y.shape, layer.last_codes.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 1]))
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from codebook.errors import CodebookConfigError, CodeIdError

__all__ = ["SIMILARITIES", "CodebookConfig", "CodebookLayer"]

logger = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "inner", "l2")
REDUCTIONS = ("mean", "sum")
_KMEANSPP_MAX = 1024  # k-means++ seeding up to this many codes, distinct random samples above
_CHUNK_BYTES = 2 << 30  # the score tensor of one chunk takes at most 2 GiB


@dataclass
class CodebookConfig:
    """Settings of one codebook layer (JSON round-trip with :meth:`to_dict` / :meth:`from_dict`).

    Args:
        n_codes: codes per codebook (per group).
        k: codes selected per activation (``1 <= k <= n_codes``).
        similarity: ``"cosine"`` (default), ``"inner"`` (inner product) or ``"l2"`` (negative distance).
        reduce: ``"mean"`` (default) or ``"sum"`` of the selected code vectors.
        grouped: one codebook per head for 4-d sites ``[batch, pos, heads, d_head]`` (e.g. ``attn.hook_z``);
            ``False`` flattens the heads into one vector of ``heads * d_head``.
        d_model: the expected activation width at the site (``d_head`` for grouped sites); ``None`` takes
            whatever the site has. A mismatch is an error at attach time.
        layer_norm: apply a LayerNorm (no affine) to the input before scoring and reconstruction.
        recon_coef: weight of ``MSE(codes, stop-grad(input))``.
        commitment: weight of ``MSE(input, stop-grad(codes))`` (0 disables it).
        dead_code_every: training steps between dead-code replacements (0 disables).
        dead_code_min_usage: a code selected fewer times than this since the last replacement is dead.
        kmeans_iters: Lloyd iterations of the k-means initialisation (0: random real activations).
        kmeans_samples: activations collected per codebook for the k-means initialisation.
        fast_scores: on CUDA, compute cosine scores in float16 (selection only; outputs and gradients stay in
            the model's dtype).

    Example:
        >>> CodebookConfig(n_codes=10_000, k=1).similarity
        'cosine'
    """

    n_codes: int = 1024
    k: int = 1
    similarity: str = "cosine"
    reduce: str = "mean"
    grouped: bool = True
    d_model: int | None = None
    layer_norm: bool = False
    recon_coef: float = 1.0
    commitment: float = 0.0
    dead_code_every: int = 100
    dead_code_min_usage: int = 1
    kmeans_iters: int = 10
    kmeans_samples: int = 65536
    fast_scores: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every setting; raise :class:`CodebookConfigError` naming the bad one."""
        def bad(name: str, allowed: str, got: Any, fix: str) -> CodebookConfigError:
            return CodebookConfigError(f"CodebookConfig.{name} must be {allowed}; got {got!r}. {fix}")

        if not isinstance(self.n_codes, int) or isinstance(self.n_codes, bool) or self.n_codes < 1:
            raise bad("n_codes", "a positive int", self.n_codes, "Use e.g. n_codes=1024.")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise bad("k", "a positive int", self.k, "Use k=1 for one code per activation.")
        if self.k > self.n_codes:
            raise bad("k", f"<= n_codes ({self.n_codes})", self.k,
                      "Lower k or raise n_codes: top-k needs at least k codes.")
        if self.similarity not in SIMILARITIES:
            raise bad("similarity", f"one of {SIMILARITIES}", self.similarity, "Pick one of the listed names.")
        if self.reduce not in REDUCTIONS:
            raise bad("reduce", f"one of {REDUCTIONS}", self.reduce, "Pick one of the listed names.")
        if self.d_model is not None and (not isinstance(self.d_model, int) or self.d_model < 1):
            raise bad("d_model", "None or a positive int", self.d_model, "Leave it None to use the site's width.")
        for name in ("recon_coef", "commitment"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad(name, "a finite number >= 0", value, "Use 1.0 for recon_coef, 0.0-0.25 for commitment.")
        for name in ("dead_code_every", "dead_code_min_usage", "kmeans_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "an int >= 0", value, "Use 0 to disable.")
        if not isinstance(self.kmeans_samples, int) or self.kmeans_samples < 1:
            raise bad("kmeans_samples", "a positive int", self.kmeans_samples, "Use e.g. 65536.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodebookConfig:
        """Build a config from :meth:`to_dict` output (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CodebookConfigError(f"unknown CodebookConfig keys {unknown}; allowed: {sorted(names)}")
        return cls(**data)


class CodebookLayer(nn.Module):
    """``n_groups`` codebooks of ``n_codes`` trainable vectors of width ``d`` (see the module docstring).

    Args:
        d: activation width per group (``d_head`` for per-head codebooks).
        config: the :class:`CodebookConfig`.
        n_groups: number of independent codebooks (heads); inputs then end in ``[..., n_groups, d]``.
        seed: seed of the random initial codes (replaced by :meth:`kmeans_init` in practice).

    Attributes:
        codes: ``nn.Parameter`` ``[n_groups, n_codes, d]``.
        usage: buffer ``[n_groups, n_codes]``, times each code was selected since :meth:`reset_usage`.
        hook_codes: the hook point the selected ids pass through.
        last_codes: the ids used in the latest forward (after ``hook_codes``).
        last_loss: the codebook loss of the latest forward (a 0-d tensor on the device).

    Raises:
        CodebookConfigError: ``d`` or ``n_groups`` is not a positive int.

    Example:
        >>> layer = CodebookLayer(4, CodebookConfig(n_codes=8), n_groups=2)
        >>> layer(torch.randn(3, 2, 4)).shape
        torch.Size([3, 2, 4])
    """

    def __init__(self, d: int, config: CodebookConfig | None = None, n_groups: int = 1, seed: int = 0,
                 grouped_input: bool | None = None) -> None:
        super().__init__()
        config = config if config is not None else CodebookConfig()
        config.validate()
        for name, value in (("d", d), ("n_groups", n_groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CodebookConfigError(f"CodebookLayer {name} must be a positive int; got {value!r}")
        self.config = config
        self.d = d
        self.n_groups = n_groups
        # whether inputs carry a group axis [..., G, d] (always when G > 1)
        self.grouped_input = bool(n_groups > 1 if grouped_input is None else grouped_input)
        gen = torch.Generator().manual_seed(seed)
        init = torch.randn(n_groups, config.n_codes, d, generator=gen) / math.sqrt(d)
        self.codes = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(n_groups, config.n_codes))
        self.hook_codes = HookPoint()
        self.norm = nn.LayerNorm(d, elementwise_affine=False) if config.layer_norm else None
        self.enabled = True
        self.record_inputs = False
        self.recorded: list[torch.Tensor] = []
        self.last_codes: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None
        self.last_mse: torch.Tensor | None = None
        self._offs = (torch.arange(n_groups) * config.n_codes).view(1, -1, 1)
        self._last_input: torch.Tensor | None = None

    # -- shapes --------------------------------------------------------------------------------------
    @property
    def n_codes(self) -> int:
        """Codes per group."""
        return self.config.n_codes

    def extra_repr(self) -> str:
        c = self.config
        return (f"d={self.d}, n_groups={self.n_groups}, n_codes={c.n_codes}, k={c.k}, "
                f"similarity={c.similarity!r}, reduce={c.reduce!r}")

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[N, G, d]``."""
        if self.grouped_input:
            if x.dim() < 2 or x.shape[-2] != self.n_groups or x.shape[-1] != self.d:
                raise CodebookConfigError(
                    f"codebook input must end in [n_groups={self.n_groups}, d={self.d}]; got {tuple(x.shape)}")
            return x.reshape(-1, self.n_groups, self.d)
        if x.shape[-1] != self.d:
            raise CodebookConfigError(f"codebook input must end in d={self.d}; got {tuple(x.shape)}")
        return x.reshape(-1, 1, self.d)

    # -- selection -----------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Similarity of every input to every code: ``[G, N, n_codes]``.

        For cosine similarity only the codes are normalised: the input's norm does not change which code
        is best, so the ranking equals the cosine ranking (the values are cosines times ``|x|``).

        Args:
            x: ``[N, G, d]`` inputs (already layer-normed if the config says so).
            codes: prepared codes from :meth:`_prepared_codes` (computed if ``None``).
        """
        c = self._prepared_codes() if codes is None else codes
        q = x.transpose(0, 1).to(c.dtype)  # [G, N, d]
        s = torch.bmm(q, c.transpose(1, 2))
        if self.config.similarity == "l2":  # argmax of -|x - c|^2 = argmax of 2 x.c - |c|^2
            s = 2 * s - (c * c).sum(-1).unsqueeze(1)
        return s

    @torch.no_grad()
    def _prepared_codes(self) -> torch.Tensor:
        c = self.codes.detach()
        if self.config.similarity == "cosine":
            c = nn.functional.normalize(c, dim=-1)
            if c.is_cuda and self.config.fast_scores:
                # float16 halves the memory traffic of the [G, N, n_codes] score tensor, which dominates the
                # codebook's cost; unit codes keep the scores within |x| and ~3 significant digits
                c = c.half()
        return c

    @torch.no_grad()
    def select(self, x: torch.Tensor) -> torch.Tensor:
        """Top-k code ids ``[N, G, k]`` of inputs ``[N, G, d]``, computed in chunks of at most 2 GiB of scores."""
        n, k = x.shape[0], self.config.k
        c = self._prepared_codes()
        step = max(1, _CHUNK_BYTES // (c.element_size() * max(1, self.n_groups * self.n_codes)))
        out = []
        for start in range(0, n, step):
            s = self.scores(x[start:start + step], c)
            ids = s.argmax(-1, keepdim=True) if k == 1 else s.topk(k, dim=-1).indices
            out.append(ids.transpose(0, 1))
        return torch.cat(out) if len(out) > 1 else out[0].contiguous()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """The reduced code vectors ``[N, G, d]`` of ids ``[N, G, k']`` (``-1`` contributes zeros)."""
        flat_codes = self.codes.reshape(-1, self.d)
        valid = ids >= 0
        vecs = flat_codes[(ids.clamp(min=0) + self._offsets()).reshape(-1)].view(*ids.shape, self.d)
        vecs = vecs * valid.unsqueeze(-1).to(vecs.dtype)
        out = vecs.sum(-2)
        return out / self.config.k if self.config.reduce == "mean" else out

    def _offsets(self) -> torch.Tensor:
        offs = self._offs
        if offs.device != self.codes.device:
            offs = self._offs = offs.to(self.codes.device)
        return offs

    def _check_ids(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        """Validate ids returned by a user hook (only then: it costs a host synchronisation)."""
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise CodeIdError(f"a hook on {self.hook_codes.name!r} must return an integer tensor of code ids; "
                              f"got {type(ids).__name__} {getattr(ids, 'dtype', '')}")
        ids = ids.long().reshape(n, self.n_groups, -1)
        if ids.numel() and (int(ids.max()) >= self.n_codes or int(ids.min()) < -1):
            raise CodeIdError(f"code ids at {self.hook_codes.name!r} must be in [0, {self.n_codes}) "
                              f"(or -1 to ablate); got values in [{int(ids.min())}, {int(ids.max())}]")
        return ids

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantise ``x`` (shape ``[..., d]`` or ``[..., n_groups, d]``); returns a tensor of the same shape."""
        if not self.enabled:
            if self.record_inputs:
                self.recorded.append(self._flat(x).detach())
            return x
        shape = x.shape
        flat = self._flat(x)
        if self.norm is not None:
            flat = self.norm(flat)
        if self.record_inputs:
            self.recorded.append(flat.detach())
        n = flat.shape[0]
        ids = self.select(flat.detach())  # [N, G, k]
        lead = shape[:-2] if self.grouped_input else shape[:-1]
        view = ids.view(*lead, self.n_groups, -1) if self.grouped_input else ids.view(*lead, -1)
        hooked = self.hook_codes(view)
        self.last_codes = hooked
        if hooked is view:  # fast path: every id valid, one gather
            gidx = (ids + self._offsets()).reshape(-1)
            with torch.no_grad():
                self.usage.view(-1).index_add_(0, gidx, torch.ones(gidx.shape, device=gidx.device,
                                                                   dtype=self.usage.dtype))
            q = nn.functional.embedding(gidx, self.codes.view(-1, self.d)).view(n, self.n_groups, -1, self.d)
            q = q.squeeze(2) if q.shape[2] == 1 else q.sum(2)
            if self.config.reduce == "mean" and self.config.k > 1:
                q = q / self.config.k
        else:  # a hook replaced the ids (patching, ablation, forcing): validate, allow -1 and extra ids
            ids = self._check_ids(hooked, n)
            self._count(ids)
            q = self.lookup(ids)
        if self.training:
            self._last_input = flat.detach()
        mse = nn.functional.mse_loss(q, flat.detach())
        self.last_mse = mse.detach()
        loss = self.config.recon_coef * mse if self.config.recon_coef else flat.new_zeros(())
        if self.config.commitment:
            loss = loss + self.config.commitment * nn.functional.mse_loss(flat, q.detach())
        self.last_loss = loss
        out = q + (flat - flat.detach())  # value q; gradient straight through to the input
        return out.view(shape)

    @torch.no_grad()
    def _count(self, ids: torch.Tensor) -> None:
        idx = (ids.clamp(min=0) + self._offsets()).reshape(-1)
        w = (ids >= 0).reshape(-1).to(self.usage.dtype)
        self.usage.view(-1).index_add_(0, idx, w)

    @torch.no_grad()
    def input_is_finite(self) -> bool:
        """Whether the latest training input was finite (one host synchronisation)."""
        return self._last_input is None or bool(torch.isfinite(self._last_input).all())

    # -- usage, dead codes, initialisation -----------------------------------------------------------
    @torch.no_grad()
    def reset_usage(self) -> None:
        """Zero the usage counts."""
        self.usage.zero_()

    @torch.no_grad()
    def dead_mask(self, min_usage: int | None = None) -> torch.Tensor:
        """Boolean ``[n_groups, n_codes]``: codes used fewer than ``min_usage`` times since the last reset."""
        m = self.config.dead_code_min_usage if min_usage is None else min_usage
        return self.usage < max(1, m)

    @torch.no_grad()
    def replace_dead_codes(self, generator: torch.Generator | None = None,
                           optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """Re-seed dead codes with randomly chosen recent training inputs (plus tiny noise), reset the
        optimizer moments of those codes, and zero the usage counts. Branch-free: no host sync.

        Args:
            generator: a generator on the layer's device (seeded sampling); ``None`` uses the global RNG.
            optimizer: an optimizer holding ``codes``; its per-element state for the replaced codes is zeroed.

        Returns:
            The number of codes replaced (a 0-d tensor on the device).
        """
        dead = self.dead_mask()
        recent = self._last_input
        if recent is None or recent.shape[0] == 0:
            self.reset_usage()
            return dead.sum()
        n = recent.shape[0]
        idx = torch.randint(0, n, (self.n_groups, self.n_codes), device=recent.device, generator=generator)
        cand = recent.transpose(0, 1).gather(1, idx.unsqueeze(-1).expand(-1, -1, self.d))  # [G, C, d]
        noise = torch.randn(cand.shape, device=cand.device, generator=generator, dtype=cand.dtype)
        cand = cand + 1e-3 * cand.norm(dim=-1, keepdim=True) * noise / math.sqrt(self.d)
        self.codes.copy_(torch.where(dead.unsqueeze(-1), cand.to(self.codes.dtype), self.codes))
        if optimizer is not None:
            state = optimizer.state.get(self.codes, {})
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == self.codes.shape:
                    value.masked_fill_(dead.unsqueeze(-1), 0.0)
        self.reset_usage()
        return dead.sum()

    @torch.no_grad()
    def kmeans_init(self, samples: torch.Tensor, iters: int | None = None, seed: int = 0) -> None:
        """Set the codes to k-means centroids of real activations, all groups at once (batched).

        Seeding is k-means++ for codebooks of at most 1024 codes, distinct random samples above (k-means++ is
        a sequential loop over the codes). Cosine similarity uses spherical assignment (normalised vectors) but keeps raw-scale centroids, since
        the layer outputs raw code vectors. Empty clusters are re-seeded with random samples. With fewer
        samples than codes, samples are reused with a little noise.

        Args:
            samples: ``[N, n_groups, d]`` (or ``[N, d]`` for one group) activations, layer-normed if configured.
            iters: Lloyd iterations (default ``config.kmeans_iters``).
            seed: seed of the initial choice.

        Raises:
            CodebookConfigError: the samples have the wrong shape or are not finite.
        """
        iters = self.config.kmeans_iters if iters is None else iters
        if samples.dim() == 2:
            samples = samples.unsqueeze(1)
        if samples.dim() != 3 or samples.shape[1:] != (self.n_groups, self.d) or samples.shape[0] == 0:
            raise CodebookConfigError(f"kmeans_init samples must be [N, {self.n_groups}, {self.d}]; "
                                      f"got {tuple(samples.shape)}")
        if not torch.isfinite(samples).all():
            raise CodebookConfigError("kmeans_init samples contain NaN or inf; check the model's activations")
        dev = self.codes.device
        x = samples.to(device=dev, dtype=self.codes.dtype).transpose(0, 1).contiguous()  # [G, N, d]
        g, n, _ = x.shape
        c = self.n_codes
        gen = torch.Generator(device=dev).manual_seed(seed)
        if n >= c and c <= _KMEANSPP_MAX:
            idx = _kmeanspp(x, c, gen, self.config.similarity == "cosine")
        elif n >= c:  # k-means++ is a sequential loop over codes: for large codebooks, distinct random samples
            idx = torch.stack([torch.randperm(n, device=dev, generator=gen)[:c] for _ in range(g)])
        else:
            logger.info("k-means init: %d samples for %d codes; reusing samples with noise", n, c)
            idx = torch.randint(0, n, (g, c), device=dev, generator=gen)
        cent = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, self.d)).clone()
        if n < c:
            cent += 1e-2 * cent.norm(dim=-1, keepdim=True).clamp(min=1e-6) * torch.randn(
                cent.shape, device=dev, generator=gen) / math.sqrt(self.d)
        for _ in range(iters):
            assign = _assign(x, cent, self.config.similarity == "cosine")  # [G, N]
            sums = torch.zeros_like(cent).scatter_add_(1, assign.unsqueeze(-1).expand(-1, -1, self.d), x)
            counts = torch.zeros(g, c, device=dev, dtype=x.dtype).scatter_add_(
                1, assign, torch.ones_like(assign, dtype=x.dtype))
            reseed = x.gather(1, torch.randint(0, n, (g, c), device=dev, generator=gen).unsqueeze(-1)
                              .expand(-1, -1, self.d))
            cent = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp(min=1).unsqueeze(-1), reseed)
        self.codes.data.copy_(cent)
        self.reset_usage()


@torch.no_grad()
def _assign(x: torch.Tensor, cent: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Nearest centroid ``[G, N]`` of ``x`` ``[G, N, d]`` among ``cent`` ``[G, C, d]``: by cosine (spherical
    k-means) or by Euclidean distance, in chunks of at most 2 GiB of scores."""
    g, n, _ = x.shape
    c = cent.shape[1]
    if cosine:
        x, cent = nn.functional.normalize(x, dim=-1), nn.functional.normalize(cent, dim=-1)
    sq = (cent * cent).sum(-1).unsqueeze(1)
    step = max(1, _CHUNK_BYTES // (x.element_size() * max(1, g * c)))
    out = []
    for start in range(0, n, step):
        s = torch.bmm(x[:, start:start + step], cent.transpose(1, 2))
        out.append(s.argmax(-1) if cosine else (2 * s - sq).argmax(-1))
    return torch.cat(out, dim=1)


@torch.no_grad()
def _kmeanspp(x: torch.Tensor, c: int, gen: torch.Generator, cosine: bool) -> torch.Tensor:
    """k-means++ seeding, all groups at once: sample indices ``[G, c]`` of ``x`` ``[G, N, d]``."""
    g, n, _ = x.shape
    xs = nn.functional.normalize(x, dim=-1) if cosine else x
    rows = torch.arange(g, device=x.device)
    idx = torch.randint(0, n, (g,), device=x.device, generator=gen)
    chosen = [idx]
    d2 = ((xs - xs[rows, idx].unsqueeze(1)) ** 2).sum(-1)
    for _ in range(1, c):
        idx = torch.multinomial(d2.clamp(min=0) + 1e-12, 1, generator=gen).squeeze(1)
        chosen.append(idx)
        d2 = torch.minimum(d2, ((xs - xs[rows, idx].unsqueeze(1)) ** 2).sum(-1))
    return torch.stack(chosen, 1)
