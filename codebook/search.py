"""Find what codes mean: :func:`collect_codes`, :func:`search_by_labels`, :func:`search_by_regex`.

A *code* is one ``(site, group, id)`` (group = head for per-head codebooks). A code *fires* at a position
when it is among the ``k`` ids selected there. For labelled positions (``labels >= 0`` are classes, ``-1``
are positions with no class that still count as negatives, and ``mask=False`` excludes a position), a code's

* precision for class ``c`` = (positions of class ``c`` where it fires) / (positions where it fires),
* recall for class ``c`` = (positions of class ``c`` where it fires) / (positions of class ``c``),
* purity = its best precision over classes.

For each class the *best code* is the one with the highest F1 (ties: higher precision); its *usage* is the
number of positions where it fires. With ``contexts=N`` the search also keeps, per best code, its top ``N``
contexts: the positions where it fires with the highest similarity between the codebook's input there and
the code (the layer's similarity; cosine by default), each with the tokens around it. The
*best-single-neuron baseline* thresholds each neuron (e.g. every MLP hidden unit) so that it fires on
exactly the share of class-``c`` positions the best code recalls (the matched recall), and reports the best
precision any neuron reaches at that recall (upper tail: a neuron "fires" when its activation is at or above
the threshold).

Example:
    >>> res = search_by_labels(model, tokens, labels, contexts=5)  # doctest: +SKIP
    >>> res.average_precision, res.share_beating_neuron             # doctest: +SKIP
    >>> res.to_html("codes.html")                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codebook.attach import Codebooks, codes_hook_name, get_codebooks
from codebook.errors import CodebookConfigError, UnknownHookError
from codebook.io import dataclass_from_dict, read_json
from probe.core.artifacts import stamp, write_json

__all__ = ["ClassMatch", "LabelSearchResult", "collect_activations", "collect_codes", "regex_labels",
           "search_by_labels", "search_by_regex"]


def _codebooks(model: nn.Module) -> Codebooks:
    cbs = get_codebooks(model)
    if cbs is None:
        raise CodebookConfigError("the model has no codebooks attached; call codebook.attach(model, ...) first")
    return cbs


@torch.no_grad()
def collect_activations(model: nn.Module, tokens: torch.Tensor, names: Sequence[str], batch_size: int = 256
                        ) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``tokens`` in batches and return the activations at hook ``names`` (on the model's
    device), concatenated along the batch axis.

    Raises:
        UnknownHookError: a name is not a hook of the model.
    """
    hook_dict = model.hook_dict
    for name in names:
        if name not in hook_dict:
            raise UnknownHookError(f"unknown hook name {name!r}; use a name from model.hook_dict")
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def grab(act: torch.Tensor, hook: Any, name: str) -> None:
        out[name].append(act.detach())

    hooks = [(n, lambda act, hook, n=n: grab(act, hook, n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, tokens.shape[0], batch_size):
            with model.hooks(fwd_hooks=hooks):
                model(tokens[i:i + batch_size].to(device))
    finally:
        model.train(was_training)
    return {n: torch.cat(v) for n, v in out.items()}


def collect_codes(model: nn.Module, tokens: torch.Tensor, sites: Sequence[str] | None = None,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Code ids chosen at every position: ``{site: LongTensor [batch, pos, groups, k]}``.

    Example:
        >>> codes = collect_codes(model, tokens)   # doctest: +SKIP
    """
    cbs = _codebooks(model)
    sites = list(cbs.sites) if sites is None else list(sites)
    for s in sites:
        cbs[s]
    acts = collect_activations(model, tokens, [codes_hook_name(s) for s in sites], batch_size)
    out = {}
    for s in sites:
        ids = acts[codes_hook_name(s)]
        out[s] = ids if cbs[s].grouped_input else ids.unsqueeze(-2)
    return out


@dataclass
class ClassMatch:
    """The best code for one class and the neuron baseline at matched recall.

    ``usage`` counts the positions where the code fires (``-1``: not recorded, in files written before it
    was). ``contexts`` holds its top contexts when the search was asked for them (``contexts=N``): dicts
    with ``sequence``, ``position``, ``tokens`` (the tokens around it, as text), ``index`` (where the position
    is in ``tokens``), ``score`` (similarity of the codebook's input to the code) and ``label`` (the position's
    label).
    """

    label: int
    n_positions: int
    site: str
    group: int
    code: int
    precision: float
    recall: float
    f1: float
    neuron_site: str = ""
    neuron: int = -1
    neuron_precision: float = float("nan")
    usage: int = -1
    contexts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LabelSearchResult:
    """Per-class best codes, their precision/recall, and the neuron baseline.

    Attributes:
        matches: one :class:`ClassMatch` per class present in the labels.
        purity: ``{site: [groups][codes]}`` best precision of each code that fired at least ``min_count`` times
            (NaN otherwise), as nested lists.
        n_positions: positions searched.
    """

    matches: list[ClassMatch]
    purity: dict[str, list[list[float]]]
    n_positions: int

    @property
    def average_precision(self) -> float:
        """Mean precision of the best code of each class."""
        return float(sum(m.precision for m in self.matches) / max(1, len(self.matches)))

    @property
    def average_recall(self) -> float:
        """Mean recall of the best code of each class."""
        return float(sum(m.recall for m in self.matches) / max(1, len(self.matches)))

    @property
    def neuron_average_precision(self) -> float:
        """Mean precision of the best neuron at each class's matched recall (NaN without a baseline)."""
        vals = [m.neuron_precision for m in self.matches if not math.isnan(m.neuron_precision)]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    @property
    def share_beating_neuron(self) -> float:
        """Share of classes whose best code is strictly more precise than the best neuron at matched recall."""
        vals = [m.precision > m.neuron_precision for m in self.matches if not math.isnan(m.neuron_precision)]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    @property
    def share_matching_neuron(self) -> float:
        """Share of classes whose best code is at least as precise as the best neuron at matched recall."""
        vals = [m.precision >= m.neuron_precision for m in self.matches if not math.isnan(m.neuron_precision)]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def summary(self) -> dict[str, float]:
        """The headline numbers."""
        return {"classes": len(self.matches), "average_precision": self.average_precision,
                "average_recall": self.average_recall, "neuron_average_precision": self.neuron_average_precision,
                "share_beating_neuron": self.share_beating_neuron, "share_matching_neuron": self.share_matching_neuron}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write version-stamped JSON; returns the path."""
        return write_json(path, {**stamp("codebook-search"), "matches": [asdict(m) for m in self.matches],
                          "purity": self.purity, "n_positions": self.n_positions})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelSearchResult:
        """Read a result written by :meth:`save`."""
        data = read_json(path, "codebook-search")
        return cls([dataclass_from_dict(ClassMatch, m) for m in data["matches"]],
                   data["purity"], int(data["n_positions"]))

    def plot(self, ax: Any = None) -> Any:
        """Best-code precision against best-neuron precision per class (points above the diagonal: code wins)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        ax.scatter([m.neuron_precision for m in self.matches], [m.precision for m in self.matches], s=10)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlabel("best neuron precision (matched recall)")
        ax.set_ylabel("best code precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        return ax

    def to_html(self, path: str | os.PathLike[str], *, class_names: Sequence[str] | None = None,
                title: str | None = None) -> Path:
        """Write a code browser (one self-contained HTML file): per class its best code with precision, recall,
        usage and the neuron baseline, and each code's top contexts with the token marked (searches run with
        ``contexts=N``). See :func:`codebook.report.search_html`.

        Example:
            >>> search_by_labels(model, tokens, labels, contexts=5).to_html("codes.html")  # doctest: +SKIP
        """
        from codebook.report import search_html

        return search_html(self, path, class_names=class_names, title=title)


def _code_label_counts(ids: torch.Tensor, labels: torch.Tensor, n_codes: int, n_classes: int) -> torch.Tensor:
    """``[groups, n_codes, n_classes + 1]`` counts (last column: label -1) from ids ``[N, G, k]``."""
    n, g, k = ids.shape
    lab = torch.where(labels < 0, torch.full_like(labels, n_classes), labels)
    lab = lab.view(n, 1, 1).expand(n, g, k)
    valid = ids >= 0
    grp = torch.arange(g, device=ids.device).view(1, g, 1).expand(n, g, k)
    flat = (grp * n_codes + ids.clamp(min=0)) * (n_classes + 1) + lab
    counts = torch.zeros(g * n_codes * (n_classes + 1), device=ids.device, dtype=torch.float64)
    counts.index_add_(0, flat[valid], torch.ones(int(valid.sum()), device=ids.device, dtype=torch.float64))
    return counts.view(g, n_codes, n_classes + 1)


@torch.no_grad()
def search_by_labels(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, *,
                     mask: torch.Tensor | None = None, sites: Sequence[str] | None = None,
                     neuron_sites: Sequence[str] | None = None, min_count: int = 5, batch_size: int = 256,
                     codes: dict[str, torch.Tensor] | None = None, contexts: int = 0, context_window: int = 8,
                     decode: Callable[[int], str] | None = None) -> LabelSearchResult:
    """Best code per class (by F1), precision/recall, purity, and the best-single-neuron baseline.

    Args:
        model: a model with codebooks attached.
        tokens: ``[batch, pos]`` inputs.
        labels: ``[batch, pos]`` ints: class ids >= 0, or -1 (no class, still a negative).
        mask: ``[batch, pos]`` bool; ``False`` excludes a position entirely (default: all included).
        sites: codebook sites to search (default: all).
        neuron_sites: hook names whose units form the neuron baseline (default: every layer's
            ``blocks.L.mlp.hook_post``; ``[]`` skips the baseline).
        min_count: a code must fire this often to get a purity value.
        batch_size: forward batch size.
        codes: precomputed :func:`collect_codes` output (skips the forward pass for codes).
        contexts: keep the top ``contexts`` contexts of each class's best code (0: none; costs one more
            forward pass per site that holds a best code).
        context_window: tokens kept on each side of a context's position.
        decode: ``token_id -> text`` for the contexts' tokens (default: the ids as text).

    Returns:
        :class:`LabelSearchResult`.

    Raises:
        CodebookConfigError: labels/mask shapes differ from tokens, or no labelled position.
        UnknownHookError: a neuron site is not a hook of the model.

    Example:
        >>> labels = torch.where(fsm.digit_index(tokens) == 1, fsm.state_ids(tokens), -1)   # doctest: +SKIP
        >>> res = search_by_labels(model, tokens, labels, mask=fsm.digit_index(tokens) >= 0)  # doctest: +SKIP
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != tokens.shape:
        raise CodebookConfigError(f"labels must have the shape of tokens {tuple(tokens.shape)}; "
                                  f"got {tuple(labels.shape)}")
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != tokens.shape:
        raise CodebookConfigError(f"mask must have the shape of tokens {tuple(tokens.shape)}; got {tuple(mask.shape)}")
    for name, value in (("contexts", contexts), ("context_window", context_window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CodebookConfigError(f"{name} must be an int >= 0; got {value!r}")
    cbs = _codebooks(model)
    sites = list(cbs.sites) if sites is None else list(sites)
    if codes is None:
        codes = collect_codes(model, tokens, sites, batch_size)
    device = next(iter(codes.values())).device
    m = mask.reshape(-1).to(device)
    lab = labels.reshape(-1).to(device)[m]
    if not bool((lab >= 0).any()):
        raise CodebookConfigError("labels have no position with a class id >= 0 inside the mask")
    n_classes = int(lab.max()) + 1
    class_n = torch.bincount(lab[lab >= 0], minlength=n_classes).double()
    present = [c for c in range(n_classes) if class_n[c] > 0]
    best: dict[int, tuple[float, float, float, str, int, int]] = {}
    purity: dict[str, list[list[float]]] = {}
    for s in sites:
        ids = codes[s]
        ids = ids.reshape(-1, ids.shape[-2], ids.shape[-1])[m]
        layer = cbs[s]
        counts = _code_label_counts(ids, lab, layer.n_codes, n_classes)  # [G, C, classes+1]
        fired = counts.sum(-1)  # [G, C]
        hits = counts[..., :n_classes]
        prec = hits / fired.clamp(min=1).unsqueeze(-1)
        rec = hits / class_n.clamp(min=1)
        f1 = 2 * prec * rec / (prec + rec).clamp(min=1e-12)
        pur = prec.max(-1).values
        purity[s] = torch.where(fired >= min_count, pur, torch.full_like(pur, float("nan"))).cpu().tolist()
        # best per class: F1, then precision as a tie-break
        score = f1 + 1e-9 * prec
        flat = score.reshape(-1, n_classes)
        top = flat.argmax(0)
        for c in present:
            j = int(top[c])
            g, code = divmod(j, layer.n_codes)
            cand = (float(flat[j, c]), float(prec[g, code, c]), float(rec[g, code, c]), s, g, code,
                    int(fired[g, code]))
            if c not in best or cand[0] > best[c][0]:
                best[c] = cand
    matches = [ClassMatch(label=c, n_positions=int(class_n[c]), site=b[3], group=b[4], code=b[5], precision=b[1],
                          recall=b[2], f1=float(2 * b[1] * b[2] / max(1e-12, b[1] + b[2])), usage=b[6])
               for c, b in sorted(best.items())]
    if contexts:
        _top_contexts(model, tokens, labels, mask, matches, codes, contexts, context_window, decode, batch_size)
    if neuron_sites is None:
        neuron_sites = [f"blocks.{i}.mlp.hook_post" for i in range(int(model.cfg.n_layers))]
    if neuron_sites:
        acts = collect_activations(model, tokens, list(neuron_sites), batch_size)
        for name in neuron_sites:
            a = acts[name].reshape(tokens.shape[0] * tokens.shape[1], -1)[m].float()
            _neuron_baseline(matches, a, lab, name)
    return LabelSearchResult(matches, purity, int(m.sum()))


@torch.no_grad()
def _top_contexts(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                  matches: list[ClassMatch], codes: dict[str, torch.Tensor], n: int, window: int,
                  decode: Callable[[int], str] | None, batch_size: int) -> None:
    """Fill each match's ``contexts`` with the ``n`` positions (inside ``mask``) where its code fires with the
    highest similarity of the codebook's input to the code: one forward pass per site, running top-n."""
    cbs = _codebooks(model)
    device = next(model.parameters()).device
    n_seq, n_pos = tokens.shape
    by_site: dict[str, list[ClassMatch]] = {}
    for mt in matches:
        by_site.setdefault(mt.site, []).append(mt)
    keep = mask.to(device)
    was_training = model.training
    model.eval()
    try:
        for site, site_matches in by_site.items():
            layer = cbs[site]
            ids = codes[site].to(device)
            ids = ids if ids.dim() == 4 else ids.unsqueeze(-2)
            vecs = layer.codes.detach()
            best = [(torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device))
                    for _ in site_matches]
            previous = layer.record_inputs
            layer.record_inputs, layer.recorded = True, []
            try:
                for start in range(0, n_seq, batch_size):
                    chunk = tokens[start:start + batch_size].to(device)
                    model(chunk)
                    x = torch.cat(layer.recorded)  # [chunk * pos, groups, d], the codebook's (normed) input
                    layer.recorded = []
                    for j, mt in enumerate(site_matches):
                        xi, code = x[:, mt.group].float(), vecs[mt.group, mt.code].float()
                        if layer.config.similarity == "cosine":
                            score = nn.functional.normalize(xi, dim=-1) @ nn.functional.normalize(code, dim=0)
                        elif layer.config.similarity == "l2":
                            score = -((xi - code) ** 2).sum(-1)
                        else:
                            score = xi @ code
                        fires = (ids[start:start + len(chunk), :, mt.group] == mt.code).any(-1)
                        fires &= keep[start:start + len(chunk)]
                        score = torch.where(fires.reshape(-1), score, torch.full_like(score, -math.inf))
                        flat = torch.arange(start * n_pos, start * n_pos + score.numel(), device=device)
                        s_all, i_all = torch.cat([best[j][0], score]), torch.cat([best[j][1], flat])
                        top = s_all.topk(min(n, s_all.numel())).indices
                        best[j] = (s_all[top], i_all[top])
            finally:
                layer.record_inputs, layer.recorded = previous, []
            for mt, (scores, where) in zip(site_matches, best, strict=True):
                mt.contexts = []
                for sc, w in zip(scores.tolist(), where.tolist(), strict=True):
                    if not math.isfinite(sc):
                        continue
                    b, p = divmod(int(w), n_pos)
                    lo, hi = max(0, p - window), min(n_pos, p + window + 1)
                    toks = [int(t) for t in tokens[b, lo:hi].tolist()]
                    mt.contexts.append({"sequence": b, "position": p, "index": p - lo, "score": float(sc),
                                        "label": int(labels[b, p]),
                                        "tokens": [decode(t) if decode else str(t) for t in toks]})
    finally:
        model.train(was_training)


def _neuron_baseline(matches: list[ClassMatch], acts: torch.Tensor, lab: torch.Tensor, name: str) -> None:
    """Update each match with the best precision of a neuron of ``acts`` ``[N, units]`` at matched recall."""
    for mt in matches:
        pos = acts[lab == mt.label]  # [n_c, units]
        n_c = pos.shape[0]
        need = max(1, math.ceil(mt.recall * n_c - 1e-9))
        thr = pos.topk(need, dim=0).values[-1]  # [units]: the need-th largest activation
        above = acts >= thr
        tp = (above & (lab == mt.label).unsqueeze(1)).sum(0).double()
        prec = tp / above.sum(0).clamp(min=1).double()
        j = int(prec.argmax())
        if math.isnan(mt.neuron_precision) or float(prec[j]) > mt.neuron_precision:
            mt.neuron_precision, mt.neuron, mt.neuron_site = float(prec[j]), j, name


def regex_labels(texts: Sequence[Sequence[str]], pattern: str | re.Pattern[str]) -> torch.Tensor:
    """Label 1 at every token whose characters overlap a regex match in its sequence's decoded text, else 0.

    Args:
        texts: per sequence, the decoded string of each token (``[batch][pos]``).
        pattern: a regular expression.

    Returns:
        ``LongTensor [batch, pos]`` of 0/1.

    Example:
        >>> regex_labels([["a", "b", "cd"]], "bc").tolist()
        [[0, 1, 1]]
    """
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    rows = []
    for toks in texts:
        text = "".join(toks)
        starts, pos = [], 0
        for t in toks:
            starts.append(pos)
            pos += len(t)
        row = [0] * len(toks)
        for mt in rx.finditer(text):
            a, b = mt.span()
            for i, t in enumerate(toks):
                if starts[i] < max(b, a + 1) and starts[i] + len(t) > a:
                    row[i] = 1
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def search_by_regex(model: nn.Module, tokens: torch.Tensor, decode: Callable[[int], str],
                    pattern: str | re.Pattern[str], **kwargs: Any) -> LabelSearchResult:
    """Codes that fire where a regex matches the decoded text (class 1) — :func:`search_by_labels` on
    :func:`regex_labels`. ``decode(token_id) -> str`` turns one token into its text.

    Example:
        >>> res = search_by_regex(model, tokens, lambda t: model.tokenizer.decode([t]), r" Paris")  # doctest: +SKIP
    """
    texts = [[decode(int(t)) for t in row] for row in tokens.tolist()]
    labels = regex_labels(texts, pattern)
    labels = torch.where(labels > 0, torch.zeros_like(labels), torch.full_like(labels, -1))  # class 0 = match
    return search_by_labels(model, tokens, labels, **kwargs)
