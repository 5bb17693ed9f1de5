"""codebook.topics: rank_codes against brute-force counts; topic_steering's checks and its measure on a stand-in
model whose "generations" depend on whether a code is forced."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model

from codebook import (
    CodebookConfigError,
    UnknownHookError,
    add_vector,
    addition_steering,
    collect_codes,
    continuation_perplexity,
    mean_difference,
    mean_differences,
    rank_codes,
    topic_steering,
)
from codebook.search import collect_activations
from codebook.topics import _wilson_lower
from probe.core.errors import InvalidParameterError
from probe.data.tokfsm import TokFSM


def test_rank_codes_matches_brute_force():
    m = tiny_model(n_codes=6)
    tok = TokFSM().sample(6, seed=1)[:, :21]
    labels = (tok % 2).where(tok != 10, torch.full_like(tok, -1))
    mask = torch.ones_like(tok, dtype=torch.bool)
    mask[:, 0] = False
    stats = rank_codes(m, tok, labels, 1, mask=mask, n=1000, min_hits=1, min_precision=0.0)
    codes = collect_codes(m, tok)
    n_class = int(((labels == 1) & mask).sum())
    assert stats, "some code fires on class 1"
    for st in stats:
        fired = (codes[st.site][..., st.group, :] == st.code).any(-1) & mask
        hits = int((fired & (labels == 1)).sum())
        assert (st.hits, st.fires) == (hits, int(fired.sum()))
        assert st.precision == pytest.approx(hits / int(fired.sum()))
        assert st.recall == pytest.approx(hits / n_class)
    scores = [st.score for st in stats]
    assert scores == sorted(scores, reverse=True)
    every = sum(len(codes[s][0, 0]) * m.codebooks[s].n_codes for s in codes)  # groups x codes
    assert len(stats) <= every
    strict = rank_codes(m, tok, labels, 1, mask=mask, min_hits=3, min_precision=0.9, codes=codes)
    assert all(st.hits >= 3 and st.precision >= 0.9 for st in strict)
    floor = rank_codes(m, tok, labels, 1, mask=mask, n=1000, min_hits=1, min_precision=0.0, min_recall=0.2,
                       codes=codes)
    assert [st for st in stats if st.recall >= 0.2] == floor
    with pytest.raises(CodebookConfigError, match="no position of class 7"):
        rank_codes(m, tok, labels, 7, codes=codes)
    with pytest.raises(CodebookConfigError, match="shape of tokens"):
        rank_codes(m, tok, labels[:, :5], 1)


def test_wilson_lower_bound_ranks_support():
    lo = _wilson_lower(torch.tensor([3.0, 25.0, 0.0]), torch.tensor([3.0, 26.0, 0.0]))
    assert lo[0] < lo[1] and lo[2] == 0 and not math.isnan(float(lo[2]))
    assert float(_wilson_lower(torch.tensor([3.0]), torch.tensor([3.0]))[0]) == pytest.approx(0.4385, abs=1e-3)


class _Tok:
    def decode(self, ids):
        return " ".join("ball" if i == 5 else "word" for i in ids)


def test_topic_steering_measures_forced_codes():
    m = tiny_model(n_codes=8)
    m.tokenizer = _Tok()
    m.to_tokens = lambda text, prepend_bos=False: torch.tensor([[1, 2, 3]])
    site = next(iter(m.codebooks.sites))
    res = topic_steering(m, {"sports": [(site, 0, 3)]}, ["x", "y"], lambda text, topic: "ball" in text,
                         n_samples=2, n_new=3, kv_cache=False)
    assert set(res.steered) == {"sports"} and 0 <= res.steered["sports"] <= 1 and 0 <= res.baseline["sports"] <= 1
    assert res.codes == {"sports": [[site, 0, 3]]} and len(res.baseline_examples) == 3
    with pytest.raises(InvalidParameterError, match="mode"):
        topic_steering(m, {"sports": [(site, 3)]}, ["x"], lambda t, s: True, mode="add", kv_cache=False)
    with pytest.raises(InvalidParameterError, match="without codes"):
        topic_steering(m, {"sports": []}, ["x"], lambda t, s: True, kv_cache=False)
    with pytest.raises(InvalidParameterError, match="n_new"):
        topic_steering(m, {"sports": [(site, 3)]}, ["x"], lambda t, s: True, n_new=0, kv_cache=False)


def test_steering_reports_perplexity_under_the_unmodified_model():
    m = tiny_model(n_codes=8)
    m.tokenizer = _Tok()
    m.to_tokens = lambda text, prepend_bos=False: torch.tensor([[1, 2, 3]])
    site = next(iter(m.codebooks.sites))
    res = topic_steering(m, {"sports": [(site, 0, 3)]}, ["x"], lambda text, topic: "ball" in text,
                         n_samples=2, n_new=4, kv_cache=False)
    assert res.method == "codes" and math.isfinite(res.baseline_perplexity) and res.baseline_perplexity > 1
    assert set(res.steered_perplexity) == {"sports"} and res.mean_steered_perplexity > 1
    # the perplexity is the model's own, codebooks off, and the codebooks are left as they were
    toks = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 6, 5, 4]])
    m.codebooks.set_enabled(False)
    with torch.no_grad():
        logits = m(toks)[:, 2:-1]
    want = math.exp(float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), toks[:, 3:].reshape(-1))))
    m.codebooks.set_enabled(True)
    assert continuation_perplexity(m, [(3, toks)]) == pytest.approx(want, rel=1e-5)
    assert all(layer.enabled for _, layer in m.codebooks.items())
    with pytest.raises(InvalidParameterError, match="no continuation"):
        continuation_perplexity(m, [(6, toks)])


def test_mean_difference_and_addition_steering():
    m = tiny_model()
    m.tokenizer = _Tok()
    m.to_tokens = lambda text, prepend_bos=False: torch.tensor([[1, 2, 3]])
    tok = TokFSM().sample(4, seed=2)[:, :12]
    labels = torch.zeros_like(tok)
    labels[:2] = 1
    mask = torch.ones_like(tok, dtype=torch.bool)
    mask[:, 0] = False
    site = "blocks.0.hook_resid_post"
    v = mean_difference(m, tok, labels, 1, site, mask=mask)
    acts = collect_activations(m, tok, [site])[site].double()
    want = acts[(labels == 1) & mask].mean(0) - acts[(labels == 0) & mask].mean(0)
    assert torch.allclose(v.double(), want, atol=1e-6)
    out = {}
    m.add_hook(site, lambda act, hook: out.__setitem__("plain", act.clone()))
    m(tok)
    m.reset_hooks()
    with add_vector(m, site, v, scale=2.0):
        m.add_hook(site, lambda act, hook: out.__setitem__("added", act.clone()))
        m(tok)
        m.reset_hooks()
    assert torch.allclose(out["added"], out["plain"] + 2.0 * v, atol=1e-6)  # hooks after it see the sum
    res = addition_steering(m, {"sports": v}, ["x"], lambda text, topic: "ball" in text, site=site, scale=4.0,
                            n_samples=2, n_new=3, kv_cache=False)
    assert res.method == "addition" and res.site == site and res.scale == 4.0 and res.codes == {}
    assert 0 <= res.steered["sports"] <= 1 and res.steered_perplexity["sports"] > 1
    with pytest.raises(UnknownHookError):
        addition_steering(m, {"sports": v}, ["x"], lambda t, s: True, site="blocks.9.hook_resid_post", scale=1.0)
    with pytest.raises(InvalidParameterError, match="scale"):
        addition_steering(m, {"sports": v}, ["x"], lambda t, s: True, site=site, scale=float("nan"))
    with pytest.raises(InvalidParameterError, match="vectors is empty"):
        addition_steering(m, {}, ["x"], lambda t, s: True, site=site, scale=1.0)
    with pytest.raises(InvalidParameterError, match="inside and outside"):
        mean_difference(m, tok, torch.ones_like(tok), 1, site)


def test_mean_differences_run_the_model_once_and_match_one_class_at_a_time(monkeypatch):
    import codebook.topics as topics

    m = tiny_model()
    tok = TokFSM().sample(6, seed=3)[:, :10]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])[:, None].expand_as(tok).clone()
    mask = torch.ones_like(tok, dtype=torch.bool)
    mask[:, :2] = False
    site = "blocks.0.hook_resid_post"
    calls = []
    collect = topics.collect_activations
    monkeypatch.setattr(topics, "collect_activations", lambda *a, **k: calls.append(1) or collect(*a, **k))
    both = mean_differences(m, tok, labels, [2, 0], site, mask=mask)
    assert list(both) == [2, 0] and len(calls) == 1  # the activations are collected once for every class
    for c in (0, 2):
        assert torch.allclose(both[c], mean_difference(m, tok, labels, c, site, mask=mask), atol=1e-6)
    with pytest.raises(InvalidParameterError, match="classes is empty"):
        mean_differences(m, tok, labels, [], site)
    with pytest.raises(InvalidParameterError, match="class 5"):
        mean_differences(m, tok, labels, [0, 5], site)
    with pytest.raises(InvalidParameterError, match="integer class ids"):
        mean_differences(m, tok, labels, ["sports"], site)
