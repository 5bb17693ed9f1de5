"""Topic codes and topic steering in codebook language models: :func:`rank_codes`, :func:`topic_steering`.

The paper's headline language result: codes that fire on a topic's words, forced on at every position,
steer free generation toward that topic. :func:`rank_codes` ranks every code of every codebook by how
precisely it marks one class of labelled positions (e.g. the tokens of a topic's keywords, from
:func:`codebook.regex_labels`), and :func:`topic_steering` forces a list of codes per topic while sampling
continuations of neutral prompts and measures the share the caller's classifier puts on the topic, against
the same sampling without forcing, and the perplexity of what was written under the unmodified model
(:func:`continuation_perplexity`), so that degenerate repetition does not count as success.
:func:`addition_steering` is the activation-addition baseline measured the same way: a topic's
:func:`mean_difference` vector added at one layer.

Example:
    >>> from probe.data.lmtext import NEUTRAL_PROMPTS, on_topic               # doctest: +SKIP
    >>> labels = regex_labels(pieces, r"\\b(?:football|soccer|goal)")          # doctest: +SKIP
    >>> sports = rank_codes(model, tokens, labels, n=8)                         # doctest: +SKIP
    >>> res = topic_steering(model, {"sports": sports}, NEUTRAL_PROMPTS, on_topic)   # doctest: +SKIP
    >>> res.steered["sports"], res.baseline["sports"]                           # doctest: +SKIP
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

from codebook.attach import get_codebooks
from codebook.errors import CodebookConfigError, UnknownHookError
from codebook.io import dataclass_from_dict, read_json
from codebook.search import collect_activations, collect_codes
from codebook.steer import force_codes, generate_with_codes
from probe.core.artifacts import stamp, write_json
from probe.core.errors import InvalidParameterError

__all__ = ["CodeStat", "TopicSteeringResult", "add_vector", "addition_steering", "continuation_perplexity",
           "mean_difference", "mean_differences", "rank_codes", "topic_steering"]


@dataclass
class CodeStat:
    """How one code marks one class of positions.

    Attributes:
        site, group, code: the code (group = head for per-head codebooks).
        hits: labelled positions of the class where it fires; ``fires``: all positions where it fires.
        precision: ``hits / fires``; ``recall``: ``hits`` / positions of the class.
        score: the Wilson lower bound (95%) of the precision, the ranking key (a code that fired 3 of 3
            times ranks below one that fired 25 of 26 times).
    """

    site: str
    group: int
    code: int
    hits: int
    fires: int
    precision: float
    recall: float
    score: float


def _wilson_lower(hits: torch.Tensor, n: torch.Tensor, z: float = 1.96) -> torch.Tensor:
    n = n.clamp(min=1)
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # with no hit, centre and margin are equal and their difference is rounding error of either sign: clip at 0
    return ((centre - margin) / (1 + z * z / n)).clamp(min=0.0)


def rank_codes(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, label: int = 0, *,
               mask: torch.Tensor | None = None, sites: Sequence[str] | None = None, n: int = 10,
               min_hits: int = 3, min_precision: float = 0.5, min_recall: float = 0.0,
               codes: Mapping[str, torch.Tensor] | None = None, batch_size: int = 64) -> list[CodeStat]:
    """The ``n`` codes that mark class ``label`` most precisely, over every codebook (and head).

    A code *fires* at a position when it is among the ids selected there; codes with fewer than
    ``min_hits`` hits, a precision below ``min_precision`` or a recall below ``min_recall`` are left out (the
    paper's code search: precision, with recall above a floor); the rest are ranked by the Wilson lower bound
    of their precision (:class:`CodeStat`).

    Args:
        model: a model with codebooks attached.
        tokens: ``[batch, pos]`` inputs.
        labels: ``[batch, pos]`` class ids (e.g. :func:`codebook.regex_labels`: 1 where a regex matches).
        label: the class to rank codes for.
        mask: ``[batch, pos]`` bool; ``False`` excludes a position.
        sites: codebooks to search (default: all).
        n: codes returned (at most).
        min_hits, min_precision, min_recall: the filters above.
        codes: precomputed :func:`codebook.collect_codes` output for ``tokens`` (skips the forward pass).
        batch_size: forward batch size.

    Returns:
        Up to ``n`` :class:`CodeStat`, best first.

    Raises:
        CodebookConfigError: no codebooks, labels/mask of another shape, or no position of class ``label``.

    Example:
        >>> stats = rank_codes(model, tokens, regex_labels(pieces, r"\\bfootball"), label=1)   # doctest: +SKIP
        >>> [(s.site, s.code, round(s.precision, 2)) for s in stats[:2]]                       # doctest: +SKIP
    """
    cbs = get_codebooks(model)
    if cbs is None:
        raise CodebookConfigError("the model has no codebooks attached; call codebook.attach(model, ...) first")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != tokens.shape:
        raise CodebookConfigError(f"labels must have the shape of tokens {tuple(tokens.shape)}; "
                                  f"got {tuple(labels.shape)}")
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != tokens.shape:
        raise CodebookConfigError(f"mask must have the shape of tokens {tuple(tokens.shape)}; got {tuple(mask.shape)}")
    sites = list(cbs.sites) if sites is None else list(sites)
    if codes is None:
        codes = collect_codes(model, tokens, sites, batch_size)
    m = mask.reshape(-1)
    pos = (labels.reshape(-1) == label) & m
    n_class = int(pos.sum())
    if n_class == 0:
        raise CodebookConfigError(f"no position of class {label} inside the mask")
    out: list[CodeStat] = []
    for s in sites:
        ids = codes[s].cpu()
        ids = ids.reshape(-1, ids.shape[-2], ids.shape[-1])  # [positions, groups, k]
        layer = cbs[s]
        for g in range(ids.shape[1]):
            gid = ids[:, g]
            valid = gid >= 0
            fires = torch.zeros(layer.n_codes, dtype=torch.float64)
            hits = torch.zeros(layer.n_codes, dtype=torch.float64)
            sel = valid & m[:, None]
            fires.index_add_(0, gid[sel], torch.ones(int(sel.sum()), dtype=torch.float64))
            selp = valid & pos[:, None]
            hits.index_add_(0, gid[selp], torch.ones(int(selp.sum()), dtype=torch.float64))
            prec = hits / fires.clamp(min=1)
            score = _wilson_lower(hits, fires)
            keep = torch.nonzero((hits >= min_hits) & (prec >= min_precision)
                                 & (hits >= min_recall * n_class)).reshape(-1)
            for c in keep.tolist():
                out.append(CodeStat(s, g, c, int(hits[c]), int(fires[c]), float(prec[c]),
                                    float(hits[c] / n_class), float(score[c])))
    out.sort(key=lambda st: (-st.score, -st.hits, st.site, st.group, st.code))
    return out[:n]


@dataclass
class TopicSteeringResult:
    """What :func:`topic_steering` measured.

    Attributes:
        steered, baseline: per topic, the share of steered / unsteered continuations on the topic.
        codes: per topic, the forced codes as ``[site, group, code]``.
        prompts: the neutral prompts; ``n_samples`` continuations of ``n_new`` tokens each.
        mode, repeat: how the codes were forced (``force_codes`` mode; each id given ``repeat`` times).
        examples: per topic, the first few steered continuations; ``baseline_examples``: unsteered ones.
        steered_perplexity, baseline_perplexity: the perplexity of the continuations (given their prompt)
            under the unmodified model (codebooks switched off, nothing forced or added): steering that wins
            by degenerate repetition or broken text shows here.
        method: ``"codes"`` (:func:`topic_steering`) or ``"addition"`` (:func:`addition_steering`, which
            also records its ``site`` and ``scale``).
    """

    steered: dict[str, float]
    baseline: dict[str, float]
    codes: dict[str, list[list[Any]]]
    prompts: list[str]
    n_samples: int
    n_new: int
    mode: str
    repeat: int
    examples: dict[str, list[str]] = field(default_factory=dict)
    baseline_examples: list[str] = field(default_factory=list)
    steered_perplexity: dict[str, float] = field(default_factory=dict)
    baseline_perplexity: float = float("nan")
    method: str = "codes"
    site: str = ""
    scale: float = float("nan")

    @property
    def mean_steered(self) -> float:
        """Mean over topics of the steered on-topic share."""
        return float(sum(self.steered.values()) / max(1, len(self.steered)))

    @property
    def mean_baseline(self) -> float:
        """Mean over topics of the unsteered on-topic share."""
        return float(sum(self.baseline.values()) / max(1, len(self.baseline)))

    @property
    def mean_steered_perplexity(self) -> float:
        """Mean over topics of the steered continuations' perplexity under the unmodified model."""
        return float(sum(self.steered_perplexity.values()) / max(1, len(self.steered_perplexity)))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write version-stamped JSON; returns the path."""
        return write_json(path, {**stamp("codebook-topic-steering"), **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TopicSteeringResult:
        """Read a result written by :meth:`save`."""
        return dataclass_from_dict(cls, read_json(path, "codebook-topic-steering"))


def _as_code_list(codes: Sequence[Any]) -> list[tuple[str, int, int]]:
    out = []
    for c in codes:
        if isinstance(c, CodeStat):
            out.append((c.site, c.group, c.code))
        elif len(c) == 2:
            out.append((str(c[0]), -1, int(c[1])))
        else:
            out.append((str(c[0]), int(c[1]), int(c[2])))
    return out


@torch.no_grad()
def _sample(model: nn.Module, prompts: Sequence[str], n_samples: int, n_new: int, temperature: float, top_p: float,
            seed: int, kv_cache: bool) -> tuple[list[str], list[tuple[int, torch.Tensor]]]:
    """``n_samples`` continuations (text after the prompt) of each prompt, seeded per prompt, and per prompt
    its length in tokens with the ``[n_samples, prompt + n_new]`` tokens sampled."""
    tok = model.tokenizer
    out: list[str] = []
    rows: list[tuple[int, torch.Tensor]] = []
    for j, p in enumerate(prompts):
        prompt = model.to_tokens(p, prepend_bos=False).expand(n_samples, -1)
        if kv_cache:
            device = prompt.device
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(seed * 1_000_003 + j)
                toks = model.generate(prompt, max_new_tokens=n_new, do_sample=True, temperature=temperature,
                                      top_p=top_p, stop_at_eos=False, use_past_kv_cache=True, verbose=False,
                                      return_type="tokens")
        else:
            toks = generate_with_codes(model, prompt, n_new, temperature=temperature, seed=seed * 1_000_003 + j)
        out += [tok.decode(row[prompt.shape[1]:]) for row in toks.tolist()]
        rows.append((prompt.shape[1], toks.detach()))
    return out, rows


@torch.no_grad()
def continuation_perplexity(model: nn.Module, samples: Sequence[tuple[int, torch.Tensor]]) -> float:
    """The perplexity of sampled continuations given their prompts under the unmodified model: any
    codebooks are switched off for the call (and restored after), so it measures the text, not the
    intervention that wrote it.

    Args:
        model: a TransformerLens model.
        samples: ``(prompt_length, tokens [n, prompt_length + n_new])`` pairs; the loss counts the tokens after
            the prompt.

    Example:
        >>> continuation_perplexity(model, [(3, tokens)])   # doctest: +SKIP
        18.2
    """
    cbs = get_codebooks(model)
    was = {site: layer.enabled for site, layer in cbs.items()} if cbs is not None else {}
    if cbs is not None:
        cbs.set_enabled(False)
    nll, n = 0.0, 0
    try:
        for plen, toks in samples:
            if toks.shape[1] <= plen:
                continue
            logits = model(toks)[:, plen - 1:-1].float()
            tgt = toks[:, plen:].to(logits.device)
            nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                           reduction="sum"))
            n += tgt.numel()
    finally:
        if cbs is not None:
            for site, layer in cbs.items():
                layer.enabled = was[site]
    if n == 0:
        raise InvalidParameterError("no continuation tokens to score")
    return float(torch.exp(torch.tensor(nll / n)))


def _check_sampling(n_samples: int, n_new: int, repeat: int, prompts: Sequence[str]) -> None:
    for name, value in (("n_samples", n_samples), ("n_new", n_new), ("repeat", repeat)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be an int >= 1; got {value!r}")
    if not prompts:
        raise InvalidParameterError("prompts is empty")


def _measure(model: nn.Module, interventions: Mapping[str, Callable[[ExitStack], None]], prompts: Sequence[str],
             on_topic: Callable[[str, str], bool], sampling: tuple, n_examples: int
             ) -> tuple[dict[str, float], dict[str, float], dict[str, float], float, dict[str, list[str]], list[str]]:
    """Sample without and with each topic's intervention (entered on an ExitStack) and score both."""
    base, base_rows = _sample(model, list(prompts), *sampling)
    baseline = {t: sum(on_topic(c, t) for c in base) / len(base) for t in interventions}
    base_ppl = continuation_perplexity(model, base_rows)
    steered: dict[str, float] = {}
    ppl: dict[str, float] = {}
    examples: dict[str, list[str]] = {}
    for topic, enter in interventions.items():
        with ExitStack() as stack:
            enter(stack)
            outs, rows = _sample(model, list(prompts), *sampling)
        steered[topic] = sum(on_topic(c, topic) for c in outs) / len(outs)
        ppl[topic] = continuation_perplexity(model, rows)
        examples[topic] = outs[:n_examples]
    return steered, baseline, ppl, base_ppl, examples, base[:n_examples]


def topic_steering(model: nn.Module, topic_codes: Mapping[str, Sequence[Any]], prompts: Sequence[str],
                   on_topic: Callable[[str, str], bool], *, n_samples: int = 4, n_new: int = 24,
                   mode: str = "append", repeat: int = 1, temperature: float = 0.8, top_p: float = 0.95,
                   seed: int = 0, kv_cache: bool = True, n_examples: int = 3) -> TopicSteeringResult:
    """Force each topic's codes at every position while sampling continuations of neutral prompts, and
    measure the share that ``on_topic(text, topic)`` accepts, steered and unsteered (same seeds), and the
    perplexity of both under the unmodified model (:func:`continuation_perplexity`).

    Generation uses the bridge's own sampler with its key/value cache (``kv_cache=True``; codebooks and
    interventions act in every cached forward pass, each of which sees only the new token) or
    :func:`codebook.generate_with_codes` (full forward passes, plain softmax sampling, no top-p). Prompts are
    tokenised without BOS.

    Args:
        model: a TransformerLens bridge with a tokenizer and codebooks attached.
        topic_codes: per topic, the codes to force: :class:`CodeStat` (from :func:`rank_codes`), or
            ``(site, code)`` / ``(site, group, code)`` tuples (group ``-1``: all heads).
        prompts: neutral openings.
        on_topic: ``(continuation, topic) -> bool``, e.g. :func:`probe.data.lmtext.on_topic`.
        n_samples: continuations per prompt; ``n_new``: tokens per continuation.
        mode: ``"append"`` (add the codes to the selected ones) or ``"replace"``.
        repeat: append mode: give each id this many times (its code vector counts ``repeat`` times).
            Replace mode forces the first ``k`` codes of each site and ignores ``repeat``.
        temperature, top_p, seed: sampling.
        kv_cache: sample with the key/value cache (see above).
        n_examples: steered continuations kept per topic.

    Raises:
        InvalidParameterError: bad sizes or mode, or a topic without codes.
        CodebookConfigError: the model has no codebooks.

    Example:
        >>> res = topic_steering(model, {"sports": rank_codes(model, toks, labels)}, NEUTRAL_PROMPTS, on_topic)  # doctest: +SKIP
        >>> res.steered, res.baseline                                                        # doctest: +SKIP
    """
    _check_sampling(n_samples, n_new, repeat, prompts)
    if mode not in ("append", "replace"):
        raise InvalidParameterError(f"mode must be 'append' or 'replace'; got {mode!r}")
    cbs = get_codebooks(model)
    if cbs is None:
        raise CodebookConfigError("the model has no codebooks attached; call codebook.attach(model, ...) first")
    lists = {t: _as_code_list(cs) for t, cs in topic_codes.items()}
    empty = [t for t, cs in lists.items() if not cs]
    if empty:
        raise InvalidParameterError(f"topics without codes (a regex that matched nothing finds none; do not steer "
                                    f"with nothing): {empty}")

    def forcing(cs: list[tuple[str, int, int]]) -> Callable[[ExitStack], None]:
        by_site: dict[tuple[str, int], list[int]] = {}
        for site, group, code in cs:
            by_site.setdefault((site, group), []).append(code)

        def enter(stack: ExitStack) -> None:
            for (site, group), ids in by_site.items():
                if mode == "replace":  # the k selected slots of the site take the best ids
                    ids = ids[: cbs[site].config.k]
                else:
                    ids = [i for i in ids for _ in range(repeat)]
                stack.enter_context(force_codes(model, site, ids, groups=None if group < 0 else [group], mode=mode))
        return enter

    steered, baseline, ppl, base_ppl, examples, base_examples = _measure(
        model, {t: forcing(cs) for t, cs in lists.items()}, prompts, on_topic,
        (n_samples, n_new, temperature, top_p, seed, kv_cache), n_examples)
    return TopicSteeringResult(steered, baseline, {t: [list(c) for c in cs] for t, cs in lists.items()},
                               list(prompts), n_samples, n_new, mode, repeat, examples, base_examples,
                               ppl, base_ppl, "codes")


@torch.no_grad()
def mean_difference(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, label: int, site: str, *,
                    mask: torch.Tensor | None = None, batch_size: int = 32) -> torch.Tensor:
    """The activation-addition direction of one class: the mean activation at hook ``site`` over the
    positions labelled ``label`` minus the mean over the other positions (inside ``mask``). For several
    classes, :func:`mean_differences` runs the model once for all of them.

    Args:
        model: a TransformerLens model (codebooks, if attached, act as they are).
        tokens: ``[batch, pos]``; labels: ``[batch, pos]`` class ids (e.g. a text's topic at every position).
        label: the class; site: a hook name whose activation is ``[batch, pos, d]``, e.g.
            ``"blocks.6.hook_resid_post"``.
        mask: ``[batch, pos]`` bool; ``False`` leaves a position out of both means.

    Returns:
        ``[d]`` on the model's device.

    Raises:
        InvalidParameterError: shapes differ, or ``label`` has no position (or every position) in the mask.
        UnknownHookError: ``site`` is not a hook of the model.

    Example:
        >>> v = mean_difference(model, tokens, topic_ids, 3, "blocks.6.hook_resid_post")   # doctest: +SKIP
    """
    return mean_differences(model, tokens, labels, [label], site, mask=mask, batch_size=batch_size)[label]


def mean_differences(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
                     site: str, *, mask: torch.Tensor | None = None, batch_size: int = 32) -> dict[int, torch.Tensor]:
    """:func:`mean_difference` for each of ``classes``, from one pass of the model over ``tokens`` (the
    activations are collected once, then each class's two means are taken from them).

    Args:
        classes: the class ids; the other arguments as in :func:`mean_difference`.

    Returns:
        ``{class: [d] vector}`` on the model's device, in the order of ``classes``.

    Raises:
        InvalidParameterError: shapes differ, ``classes`` is empty, or a class has no position (or every
            position) in the mask; all checked before the model runs.
        UnknownHookError: ``site`` is not a hook of the model.

    Example:
        >>> vectors = mean_differences(model, tokens, topic_ids, range(8), "blocks.6.hook_resid_post")  # doctest: +SKIP
        >>> vectors[3].shape                                                                           # doctest: +SKIP
        torch.Size([576])
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if labels.shape != tokens.shape or mask.shape != tokens.shape:
        raise InvalidParameterError(f"labels and mask must have the shape of tokens {tuple(tokens.shape)}; got "
                                    f"{tuple(labels.shape)} and {tuple(mask.shape)}")
    classes = list(classes)
    if not all(isinstance(c, int) or (torch.is_tensor(c) and c.numel() == 1 and not c.is_floating_point())
               for c in classes):
        raise InvalidParameterError(f"classes must be integer class ids; got {classes!r}")
    classes = [int(c) for c in classes]
    if not classes:
        raise InvalidParameterError("classes is empty: name at least one class id")
    for label in classes:
        inside = (labels == label) & mask
        if not inside.any() or not ((labels != label) & mask).any():
            raise InvalidParameterError(f"class {label} needs positions both inside and outside it (inside the mask)")
    acts = collect_activations(model, tokens, [site], batch_size)[site]
    if acts.dim() != 3:
        raise InvalidParameterError(f"hook {site!r} gives activations of shape {tuple(acts.shape)}; "
                                    "mean_difference needs [batch, pos, d]")
    acts = acts.double()
    labels, mask = labels.to(acts.device), mask.to(acts.device)
    out = {}
    for label in classes:
        inside, outside = (labels == label) & mask, (labels != label) & mask
        out[label] = (acts[inside].mean(0) - acts[outside].mean(0)).float()
    return out


def _check_addition(model: nn.Module, site: str, scale: float) -> None:
    """The checks of :func:`add_vector` (also made by :func:`addition_steering` before it samples anything)."""
    if site not in model.hook_dict:
        raise UnknownHookError(f"unknown hook name {site!r}; use a name from model.hook_dict")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise InvalidParameterError(f"scale must be a finite number; got {scale!r}")


@contextmanager
def add_vector(model: nn.Module, site: str, vector: torch.Tensor, *, scale: float = 1.0) -> Iterator[None]:
    """Add ``scale * vector`` to the activation at hook ``site`` at every position while the block runs.

    Raises:
        UnknownHookError: ``site`` is not a hook of the model.
        InvalidParameterError: ``scale`` is not finite.

    Example:
        >>> with add_vector(model, "blocks.6.hook_resid_post", v, scale=4.0):   # doctest: +SKIP
        ...     text = model.generate("Yesterday, I", max_new_tokens=20)
    """
    _check_addition(model, site, scale)
    delta = float(scale) * torch.as_tensor(vector).detach()

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return act + delta.to(device=act.device, dtype=act.dtype)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield


def addition_steering(model: nn.Module, vectors: Mapping[str, torch.Tensor], prompts: Sequence[str],
                      on_topic: Callable[[str, str], bool], *, site: str, scale: float, n_samples: int = 4,
                      n_new: int = 24, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                      kv_cache: bool = True, n_examples: int = 3) -> TopicSteeringResult:
    """The activation-addition baseline of :func:`topic_steering`: add each topic's vector (e.g. from
    :func:`mean_difference`) times ``scale`` at hook ``site`` at every position while sampling, and measure
    as :func:`topic_steering` does (same prompts, seeds, classifier and perplexity).

    Raises:
        InvalidParameterError: bad sizes or scale, or no vectors.
        UnknownHookError: ``site`` is not a hook of the model.

    Example:
        >>> v = {"sports": mean_difference(model, toks, topic_ids, 4, "blocks.6.hook_resid_post")}   # doctest: +SKIP
        >>> addition_steering(model, v, NEUTRAL_PROMPTS, on_topic, site="blocks.6.hook_resid_post",
        ...                   scale=4.0).steered                                                         # doctest: +SKIP
    """
    _check_sampling(n_samples, n_new, 1, prompts)
    if not vectors:
        raise InvalidParameterError("vectors is empty: give one vector per topic")
    _check_addition(model, site, scale)

    def adding(v: torch.Tensor) -> Callable[[ExitStack], None]:
        return lambda stack: stack.enter_context(add_vector(model, site, v, scale=scale))

    steered, baseline, ppl, base_ppl, examples, base_examples = _measure(
        model, {t: adding(v) for t, v in vectors.items()}, prompts, on_topic,
        (n_samples, n_new, temperature, top_p, seed, kv_cache), n_examples)
    return TopicSteeringResult(steered, baseline, {}, list(prompts), n_samples, n_new, "add", 1, examples,
                               base_examples, ppl, base_ppl, "addition", site, float(scale))
