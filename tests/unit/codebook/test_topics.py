"""codebook.topics: rank_codes against brute-force counts; topic_steering's checks and its measure on a stand-in
model whose "generations" depend on whether a code is forced."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model

from codebook import CodebookConfigError, collect_codes, rank_codes, topic_steering
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
