"""Steer a model through its codes: force, ablate or patch code ids as ordinary TransformerLens hooks.

Every intervention is a context manager that adds temporary hooks at ``"<site>.codebook.hook_codes"``
through ``model.hooks(...)``, so it acts in every forward pass inside the ``with`` block (including
:func:`generate_with_codes` and ``run_with_cache``) and is removed on exit, also on error:

* :func:`force_codes` — replace the selected ids by given ids, or append them (``mode="append"``);
* :func:`ablate_codes` — drop given ids (or all) so they contribute nothing;
* :func:`patch_codes` — write ids recorded on another input (:func:`record_codes`) at chosen positions.

:func:`fsm_state_steering` measures FSM state steering on TokFSM: at the last token of a state-A prompt,
patch in (at every codebook) the codes a state-B prompt produces there, then sample the next state.

Example:
    >>> src = record_codes(model, prompt_b)                          # doctest: +SKIP
    >>> with patch_codes(model, src, positions=prompt_a.shape[1] - 1):   # doctest: +SKIP
    ...     out = generate_with_codes(model, prompt_a, 2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codebook.attach import Codebooks, codes_hook_name, get_codebooks
from codebook.errors import CodebookConfigError, CodeIdError
from codebook.io import dataclass_from_dict, read_json
from probe.core.artifacts import stamp, write_json
from probe.core.errors import InvalidParameterError

__all__ = ["SteeringResult", "ablate_codes", "force_codes", "fsm_state_steering", "generate_with_codes",
           "patch_codes", "record_codes"]

Positions = int | Sequence[int] | torch.Tensor | None


def _codebooks(model: nn.Module) -> Codebooks:
    cbs = get_codebooks(model)
    if cbs is None:
        raise CodebookConfigError("the model has no codebooks attached; call codebook.attach(model, ...) first")
    return cbs


def _check_ids(cbs: Codebooks, site: str, ids: torch.Tensor, allow_ablate: bool = False) -> torch.Tensor:
    layer = cbs[site]
    ids = torch.as_tensor(ids, dtype=torch.long)
    lo = -1 if allow_ablate else 0
    if ids.numel() and (int(ids.min()) < lo or int(ids.max()) >= layer.n_codes):
        raise CodeIdError(f"code ids for {site!r} must be in [0, {layer.n_codes}); got values in "
                          f"[{int(ids.min())}, {int(ids.max())}]. The codebook there has n_codes={layer.n_codes}.")
    return ids


def _check_groups(cbs: Codebooks, site: str, groups: Sequence[int] | None) -> list[int] | None:
    if groups is None:
        return None
    n = cbs[site].n_groups
    groups = [int(g) for g in groups]
    bad = [g for g in groups if not 0 <= g < n]
    if bad:
        raise CodeIdError(f"groups (heads) for {site!r} must be in [0, {n}); got {bad}")
    return groups


def _pos_index(positions: Positions, length: int, device: torch.device) -> torch.Tensor | slice:
    if positions is None:
        return slice(None)
    pos = torch.as_tensor(positions, dtype=torch.long, device=device).reshape(-1)
    return torch.where(pos < 0, pos + length, pos)


def _as_groups(ids: torch.Tensor, grouped: bool) -> torch.Tensor:
    return ids if grouped else ids.unsqueeze(-2)


def _from_groups(ids: torch.Tensor, grouped: bool) -> torch.Tensor:
    return ids if grouped else ids.squeeze(-2)


@contextmanager
def _hooks(model: nn.Module, hooks: list[tuple[str, Callable[..., Any]]]) -> Iterator[None]:
    with model.hooks(fwd_hooks=hooks):
        yield


@contextmanager
def force_codes(model: nn.Module, site: str, codes: Sequence[int] | torch.Tensor, *, positions: Positions = None,
                groups: Sequence[int] | None = None, mode: str = "replace") -> Iterator[None]:
    """Force code ids at a codebook: ``mode="replace"`` overwrites the ``k`` selected ids with ``codes``
    (one id per slot, broadcast if fewer); ``mode="append"`` adds ``codes`` to the selected ones.

    Args:
        model: a model with codebooks attached.
        site: the codebook's site.
        codes: code ids in ``[0, n_codes)``.
        positions: sequence positions (negative counts from the end; ``None``: all).
        groups: heads to force (per-head codebooks; ``None``: all).
        mode: ``"replace"`` or ``"append"``.

    Raises:
        CodeIdError: an id is out of range, or a group does not exist.
        UnknownHookError: no codebook at ``site``.
        InvalidParameterError: unknown mode.

    Example:
        >>> with force_codes(model, "blocks.1.hook_mlp_out", [17]):   # doctest: +SKIP
        ...     logits = model(tokens)
    """
    if mode not in ("replace", "append"):
        raise InvalidParameterError(f"mode must be 'replace' or 'append'; got {mode!r}")
    cbs = _codebooks(model)
    layer = cbs[site]
    ids = _check_ids(cbs, site, codes).reshape(-1)
    if ids.numel() == 0:
        raise CodeIdError("codes must name at least one code id")
    if mode == "replace" and ids.numel() > layer.config.k:
        raise CodeIdError(f"mode='replace' takes at most k={layer.config.k} ids; got {ids.numel()}. "
                          "Use mode='append' to add codes.")
    grp = _check_groups(cbs, site, groups)
    grouped = layer.grouped_input

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        v = _as_groups(act, grouped).clone()
        b, p, g, k = v.shape
        sel = torch.zeros(p, g, dtype=torch.bool, device=v.device)
        pi = _pos_index(positions, p, v.device)
        gi = slice(None) if grp is None else torch.tensor(grp, device=v.device)
        if isinstance(pi, slice):
            sel[:, gi] = True
        else:
            rows = sel[pi]
            rows[:, gi] = True
            sel[pi] = rows
        forced = ids.to(v.device)
        if mode == "replace":
            new = forced.repeat(math.ceil(k / forced.numel()))[:k].view(1, 1, 1, k).expand(b, p, g, k)
            v = torch.where(sel.view(1, p, g, 1), new, v)
        else:
            extra = forced.view(1, 1, 1, -1).expand(b, p, g, -1)
            extra = torch.where(sel.view(1, p, g, 1), extra, torch.full_like(extra, -1))
            v = torch.cat([v, extra], dim=-1)
        return _from_groups(v, grouped)

    with _hooks(model, [(codes_hook_name(site), hook)]):
        yield


@contextmanager
def ablate_codes(model: nn.Module, site: str, codes: Sequence[int] | torch.Tensor | None = None, *,
                 positions: Positions = None, groups: Sequence[int] | None = None) -> Iterator[None]:
    """Ablate codes: wherever one of ``codes`` (``None``: any code) is selected, it contributes nothing.

    Raises:
        CodeIdError: an id is out of range, or a group does not exist.

    Example:
        >>> with ablate_codes(model, "blocks.0.attn.hook_z", [3, 8], groups=[1]):   # doctest: +SKIP
        ...     logits = model(tokens)
    """
    cbs = _codebooks(model)
    layer = cbs[site]
    ids = None if codes is None else _check_ids(cbs, site, codes).reshape(-1)
    grp = _check_groups(cbs, site, groups)
    grouped = layer.grouped_input

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        v = _as_groups(act, grouped)
        _, p, g, _ = v.shape
        hit = torch.ones_like(v, dtype=torch.bool) if ids is None else torch.isin(v, ids.to(v.device))
        sel = torch.zeros(1, p, g, 1, dtype=torch.bool, device=v.device)
        pi = _pos_index(positions, p, v.device)
        gi = slice(None) if grp is None else torch.tensor(grp, device=v.device)
        if isinstance(pi, slice):
            sel[:, :, gi] = True
        else:
            rows = sel[:, pi]
            rows[:, :, gi] = True
            sel[:, pi] = rows
        return _from_groups(torch.where(hit & sel, torch.full_like(v, -1), v), grouped)

    with _hooks(model, [(codes_hook_name(site), hook)]):
        yield


@torch.no_grad()
def record_codes(model: nn.Module, tokens: torch.Tensor, positions: int | torch.Tensor = -1,
                 sites: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The code ids each codebook selects at one position per row: ``{site: LongTensor [batch, groups, k]}``.

    Args:
        tokens: ``[batch, pos]``.
        positions: one position for all rows (negative from the end) or a ``[batch]`` tensor.
        sites: codebooks to record (default: all).

    Example:
        >>> src = record_codes(model, prompt_b)   # doctest: +SKIP
    """
    cbs = _codebooks(model)
    sites = list(cbs.sites) if sites is None else list(sites)
    out: dict[str, torch.Tensor] = {}
    device = next(model.parameters()).device
    tokens = torch.as_tensor(tokens, dtype=torch.long).to(device)
    b, p = tokens.shape
    pos = torch.as_tensor(positions, dtype=torch.long, device=device).expand(b)
    pos = torch.where(pos < 0, pos + p, pos)

    def grab(act: torch.Tensor, hook: Any, site: str) -> None:
        v = _as_groups(act, cbs[site].grouped_input)
        out[site] = v[torch.arange(b, device=v.device), pos].clone()

    hooks = [(codes_hook_name(s), lambda act, hook, s=s: grab(act, hook, s)) for s in sites]
    for s in sites:
        cbs[s]
    with _hooks(model, hooks):
        model(tokens)
    return out


@contextmanager
def patch_codes(model: nn.Module, source: Mapping[str, torch.Tensor], positions: int | torch.Tensor
                ) -> Iterator[None]:
    """Write recorded code ids (``record_codes`` output, ``{site: [batch or 1, groups, k]}``) at ``positions``
    (one absolute position, or one per row) of every forward pass in the block.

    Raises:
        CodeIdError: a recorded id is out of range for its codebook.
        UnknownHookError: a site has no codebook.

    Example:
        >>> with patch_codes(model, record_codes(model, prompt_b), positions=prompt_a.shape[1] - 1):  # doctest: +SKIP
        ...     logits = model(prompt_a)
    """
    cbs = _codebooks(model)
    src = {s: _check_ids(cbs, s, ids) for s, ids in source.items()}
    hooks = []
    for s, ids in src.items():
        layer = cbs[s]
        if ids.dim() == 2:
            ids = ids.unsqueeze(0)
        if ids.dim() != 3 or ids.shape[-2] != layer.n_groups:
            raise CodeIdError(f"patch source for {s!r} must be [batch, {layer.n_groups}, k]; got {tuple(ids.shape)}")

        def hook(act: torch.Tensor, hook: Any = None, ids: torch.Tensor = ids, grouped: bool = layer.grouped_input
                 ) -> torch.Tensor:
            v = _as_groups(act, grouped).clone()
            b, p = v.shape[:2]
            rows = torch.arange(b, device=v.device)
            pos = torch.as_tensor(positions, dtype=torch.long, device=v.device).expand(b)
            pos = torch.where(pos < 0, pos + p, pos)
            new = ids.to(v.device).expand(b, -1, -1)
            k = min(new.shape[-1], v.shape[-1])
            keep = (pos < p)
            cur = v[rows[keep], pos[keep]]
            cur[..., :k] = new[keep][..., :k]
            v[rows[keep], pos[keep]] = cur
            return _from_groups(v, grouped)

        hooks.append((codes_hook_name(s), hook))
    with _hooks(model, hooks):
        yield


@torch.no_grad()
def generate_with_codes(model: nn.Module, prompt: torch.Tensor, n_new: int, *,
                        interventions: Sequence[Any] = (), temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Sample ``n_new`` tokens with full forward passes (no KV cache), so code hooks act at every step.

    Args:
        prompt: ``[batch, pos]`` tokens.
        n_new: tokens to add.
        interventions: context managers to hold during generation (e.g. ``[force_codes(model, site, [3])]``);
            interventions opened around the call act as well.
        temperature: softmax temperature (0: greedy).
        seed: sampling seed.

    Returns:
        ``[batch, pos + n_new]`` tokens.

    Example:
        >>> generate_with_codes(model, prompt, 2, interventions=[force_codes(model, site, [5])])  # doctest: +SKIP
    """
    if n_new < 0 or temperature < 0:
        raise InvalidParameterError(f"n_new and temperature must be >= 0; got {n_new}, {temperature}")
    device = next(model.parameters()).device
    tokens = torch.as_tensor(prompt, dtype=torch.long).to(device)
    if tokens.dim() == 1:
        tokens = tokens[None]
    gen = torch.Generator(device=device).manual_seed(seed)
    n_ctx = int(getattr(model.cfg, "n_ctx", 1 << 30))
    was_training = model.training
    model.eval()
    try:
        with ExitStack() as stack:
            for cm in interventions:
                stack.enter_context(cm)
            for _ in range(n_new):
                logits = model(tokens[:, -n_ctx:])[:, -1].float()
                if temperature == 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)
                tokens = torch.cat([tokens, nxt], dim=1)
    finally:
        model.train(was_training)
    return tokens


@dataclass
class SteeringResult:
    """FSM state steering (see :func:`fsm_state_steering`).

    Attributes:
        success_rate: share of sampled next states that are successors of B and not of A.
        expected_success: the same share under the model's exact next-state distribution.
        baseline_success: that share without the patch (chance level of the unsteered model).
        normalized_js: mean over pairs of ``JSD(P_steered, U_B) / JSD(P_unsteered, U_B)`` (0: the steered
            distribution is B's true successor distribution, 1: no change), natural-log JSD.
        js_steered: mean ``JSD(P_steered, U_B)`` (nats; ``log 2`` is the maximum).
        n_pairs, n_samples: pairs (A, B) and samples per pair.
        per_pair_success: sampled success rate of each pair.
        sites: codebooks patched.
        positions: ``"last"`` (last token), ``"state"`` (both tokens of the last state) or ``"transition"``
            (last token, then the generated first digit too).
        examples: the first pairs' generations, steered and not: dicts with ``pair``, ``state_a``,
            ``state_b``, ``prompt_states`` (the A prompt's states), ``baseline_tokens`` / ``baseline_state`` /
            ``baseline_success`` (sampled without the patch) and ``steered_tokens`` / ``steered_state`` /
            ``steered_success`` (the first steered sample); success: the next state is a successor of B only.
    """

    success_rate: float
    expected_success: float
    baseline_success: float
    normalized_js: float
    js_steered: float
    n_pairs: int
    n_samples: int
    per_pair_success: list[float] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    positions: str = "last"
    examples: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write version-stamped JSON; returns the path."""
        return write_json(path, {**stamp("codebook-steering"), **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringResult:
        """Read a result written by :meth:`save`."""
        return dataclass_from_dict(cls, read_json(path, "codebook-steering"))

    def plot(self, ax: Any = None) -> Any:
        """Histogram of per-pair steering success."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        ax.hist(self.per_pair_success, bins=20, range=(0, 1))
        ax.set_xlabel("steering success per (A, B) pair")
        ax.set_ylabel("pairs")
        ax.set_title(f"success {self.success_rate:.1%}, normalised JS {self.normalized_js:.3f}")
        return ax

    def to_html(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write the steering report (one self-contained HTML file): the headline rates, steered versus
        baseline generations of the example pairs, and the per-pair success. See
        :func:`codebook.report.steering_html`.

        Example:
            >>> fsm_state_steering(model, fsm, n_pairs=50).to_html("steering.html")  # doctest: +SKIP
        """
        from codebook.report import steering_html

        return steering_html(self, path, title=title)


def _jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.clamp(min=1e-30).log() - b.clamp(min=1e-30).log()), torch.zeros_like(a)).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@torch.no_grad()
def _next_state_dist(model: nn.Module, prompts: torch.Tensor, n_states: int,
                     sources: Sequence[tuple[Mapping[str, torch.Tensor], int]], batch_size: int = 512) -> torch.Tensor:
    """Exact ``P(next state | prompt)`` ``[batch, n_states]`` (two digit steps), with the codes of each
    ``(source, position)`` patched at that position."""
    device = next(model.parameters()).device
    b, _ = prompts.shape
    rows = torch.cat([prompts.repeat_interleave(10, 0), torch.arange(10).repeat(b)[:, None]], 1).to(device)
    srcs = [({s: v if v.shape[0] == rows.shape[0] else v.repeat_interleave(10, 0) for s, v in src.items()}, pos)
            for src, pos in sources]
    out = []
    for i in range(0, rows.shape[0], batch_size):
        chunk = rows[i:i + batch_size]
        with ExitStack() as stack:
            for src, pos in srcs:
                stack.enter_context(patch_codes(model, {s: v[i:i + batch_size] for s, v in src.items()}, pos))
            out.append(torch.log_softmax(model(chunk).float(), -1)[:, -2:, :10])
    logp = torch.cat(out).view(b, 10, 2, 10)
    joint = (logp[:, 0, 0, :, None] + logp[:, :, 1, :]).exp().reshape(b, 100)
    return joint[:, :n_states]


def _record_batched(model: nn.Module, tokens: torch.Tensor, pos: int, sites: Sequence[str], batch_size: int
                    ) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, tokens.shape[0], batch_size):
        for s, v in record_codes(model, tokens[i:i + batch_size], pos, sites).items():
            parts.setdefault(s, []).append(v)
    return {s: torch.cat(v) for s, v in parts.items()}


@torch.no_grad()
def fsm_state_steering(model: nn.Module, fsm: Any, *, n_pairs: int = 100, n_samples: int = 20,
                       prompt_states: int = 8, sites: Sequence[str] | None = None, seed: int = 0,
                       positions: str = "last", batch_size: int = 512, n_examples: int = 8) -> SteeringResult:
    """FSM state steering with code patching.

    Pairs (A, B) come from the final states of sampled prompts of ``prompt_states`` states (BOS + 2 tokens per
    state); only pairs with A != B and disjoint successor sets are kept, so "successor of B and not of A" is
    just "successor of B". For each pair the codes that the B prompt selects at its last token (at every
    codebook in ``sites``) are patched into the A prompt's last token; then ``n_samples`` next states are
    sampled with :func:`generate_with_codes` (two tokens) and the exact next-state distribution is computed.

    Args:
        model: a TokFSM model with codebooks attached.
        fsm: the :class:`~probe.data.tokfsm.TokFSM`.
        n_pairs: (A, B) pairs.
        n_samples: sampled next states per pair.
        prompt_states: states per prompt.
        sites: codebooks to patch (default: all — all-layer patching).
        seed: seed of the prompts and of sampling.
        positions: ``"last"`` patches the last token (the state's second digit) as in the paper; ``"state"``
            patches both tokens of the last state; ``"transition"`` patches the last token and, while the next
            state is generated, also its first digit with the codes the B prompt produces after that digit.
        batch_size: forward batch size.
        n_examples: pairs whose generations (steered and one unsteered sample) are kept in
            ``SteeringResult.examples``.

    Returns:
        :class:`SteeringResult`.

    Raises:
        InvalidParameterError: non-positive counts, or prompts longer than the model's context.

    Example:
        >>> res = fsm_state_steering(model, fsm, n_pairs=50)   # doctest: +SKIP
        >>> res.success_rate, res.normalized_js                 # doctest: +SKIP
    """
    if positions not in ("last", "state", "transition"):
        raise InvalidParameterError(f"positions must be 'last', 'state' or 'transition'; got {positions!r}")
    for name, v in (("n_pairs", n_pairs), ("n_samples", n_samples), ("prompt_states", prompt_states)):
        if not isinstance(v, int) or v < 1:
            raise InvalidParameterError(f"{name} must be a positive int; got {v!r}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
        raise InvalidParameterError(f"n_examples must be an int >= 0; got {n_examples!r}")
    if 1 + 2 * prompt_states + 2 > int(model.cfg.n_ctx):
        raise InvalidParameterError(f"prompt_states={prompt_states} does not fit n_ctx={model.cfg.n_ctx}")
    if prompt_states > fsm.config.seq_states:
        raise InvalidParameterError(f"prompt_states must be <= the FSM's seq_states ({fsm.config.seq_states})")
    cbs = _codebooks(model)
    sites = list(cbs.sites) if sites is None else list(sites)
    n_states = fsm.config.n_states
    length = 1 + 2 * prompt_states
    a_list, b_list, pa, pb = [], [], [], []
    draw = 0
    while len(a_list) < n_pairs and draw < 50:
        ta = fsm.sample(4 * n_pairs, seed=seed * 7919 + 2 * draw)[:, :length]
        tb = fsm.sample(4 * n_pairs, seed=seed * 7919 + 2 * draw + 1)[:, :length]
        sa, sb = fsm.state_ids(ta)[:, -1], fsm.state_ids(tb)[:, -1]
        ok = (sa != sb) & ~(fsm.valid[sa] & fsm.valid[sb]).any(-1)
        for i in torch.nonzero(ok).flatten().tolist():
            if len(a_list) < n_pairs:
                a_list.append(int(sa[i]))
                b_list.append(int(sb[i]))
                pa.append(ta[i])
                pb.append(tb[i])
        draw += 1
    if not a_list:
        raise InvalidParameterError("no (A, B) pair with disjoint successor sets was found; use a larger FSM")
    a = torch.tensor(a_list)
    b = torch.tensor(b_list)
    prompts_a, prompts_b = torch.stack(pa), torch.stack(pb)
    n = len(a_list)
    sources = []
    for pos in ([length - 2, length - 1] if positions == "state" else [length - 1]):
        sources.append((_record_batched(model, prompts_b, pos, sites, batch_size), pos))
    p_clean = _next_state_dist(model, prompts_a, n_states, [], batch_size).cpu()
    steer_sources = list(sources)
    if positions == "transition":  # codes of "B prompt + first digit" at the first digit, for every digit
        rows_b = torch.cat([prompts_b.repeat_interleave(10, 0), torch.arange(10).repeat(n)[:, None]], 1)
        steer_sources.append((_record_batched(model, rows_b, length, sites, batch_size), length))
    p_steer = _next_state_dist(model, prompts_a, n_states, steer_sources, batch_size).cpu()
    target = fsm.transition[b]
    target_only = fsm.valid[b] & ~fsm.valid[a]
    expected = (p_steer * target_only).sum(-1)
    baseline = (p_clean * target_only).sum(-1)
    js_steer, js_clean = _jsd(p_steer, target), _jsd(p_clean, target)
    norm_js = js_steer / js_clean.clamp(min=1e-12)
    # sampled: n_samples copies of each A prompt, patched at its last token
    rep_prompts = prompts_a.repeat_interleave(n_samples, 0)
    rep_src = [({s: v.repeat_interleave(n_samples, 0) for s, v in src.items()}, pos) for src, pos in sources]
    rep_b = prompts_b.repeat_interleave(n_samples, 0)
    succ = []
    steered: dict[int, tuple[list[int], int, bool]] = {}
    for i in range(0, rep_prompts.shape[0], batch_size):
        chunk = rep_prompts[i:i + batch_size]
        patches = [({s: v[i:i + batch_size] for s, v in src.items()}, pos) for src, pos in rep_src]
        if positions == "transition":
            first = generate_with_codes(model, chunk, 1, seed=seed + i, interventions=[
                patch_codes(model, src, pos) for src, pos in patches])
            rows_b = torch.cat([rep_b[i:i + batch_size], first[:, -1:].cpu()], 1)
            patches.append((record_codes(model, rows_b, length, sites), length))
            out = generate_with_codes(model, first, 1, seed=seed + i + 1, interventions=[
                patch_codes(model, src, pos) for src, pos in patches])
        else:
            out = generate_with_codes(model, chunk, 2, seed=seed + i, interventions=[
                patch_codes(model, src, pos) for src, pos in patches])
        nxt = fsm.state_ids(out.cpu())[:, -1]
        rows = torch.arange(i, i + chunk.shape[0]) // n_samples
        ok = (nxt >= 0) & target_only[rows, nxt.clamp(min=0)]
        succ.append(ok.float())
        for local in range(chunk.shape[0]):
            if (i + local) % n_samples == 0 and int(rows[local]) < n_examples:
                steered[int(rows[local])] = (out[local, -2:].cpu().tolist(), int(nxt[local]), bool(ok[local]))
    per_pair = torch.cat(succ).view(n, n_samples).mean(1)
    examples = _steering_examples(model, fsm, prompts_a, a, b, target_only, steered, seed)
    return SteeringResult(success_rate=float(per_pair.mean()), expected_success=float(expected.mean()),
                          baseline_success=float(baseline.mean()), normalized_js=float(norm_js.mean()),
                          js_steered=float(js_steer.mean()), n_pairs=n, n_samples=n_samples,
                          per_pair_success=[float(x) for x in per_pair], sites=sites, positions=positions,
                          examples=examples)


def _steering_examples(model: nn.Module, fsm: Any, prompts_a: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                       target_only: torch.Tensor, steered: dict[int, tuple[list[int], int, bool]], seed: int
                       ) -> list[dict[str, Any]]:
    """The example pairs of :class:`SteeringResult`: the steered sample recorded during the run, and one
    sample of the same prompt without the patch (its own seed: the measured rates are unchanged)."""
    pairs = sorted(steered)
    if not pairs:
        return []
    base = generate_with_codes(model, prompts_a[pairs], 2, seed=seed + 104_729).cpu()
    base_state = fsm.state_ids(base)[:, -1]
    out = []
    for row, p in enumerate(pairs):
        s_tokens, s_state, s_ok = steered[p]
        bs = int(base_state[row])
        out.append({"pair": p, "state_a": int(a[p]), "state_b": int(b[p]),
                    "prompt_states": [int(x) for x in fsm.state_sequence(prompts_a[p]).tolist()],
                    "baseline_tokens": base[row, -2:].tolist(), "baseline_state": bs,
                    "baseline_success": bool(bs >= 0 and target_only[p, bs]),
                    "steered_tokens": s_tokens, "steered_state": s_state, "steered_success": s_ok})
    return out
