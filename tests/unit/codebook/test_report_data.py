"""What the codebook reports show, checked against brute force: a best code's usage and top contexts
(``search_by_labels(..., contexts=N)``), and the example generations of FSM state steering."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_model

from codebook import SteeringResult, collect_codes, fsm_state_steering, search_by_labels
from codebook.errors import CodebookConfigError
from codebook.report import search_page, steering_page
from codebook.search import LabelSearchResult
from probe.core.errors import InvalidParameterError
from probe.data.tokfsm import TokFSM

FSM = TokFSM()


def test_usage_and_top_contexts_are_where_the_code_fires():
    m = tiny_model(n_codes=6)
    tok = FSM.sample(6, seed=1)[:, :21]
    labels = (tok % 3).where(tok != 10, torch.full_like(tok, -1))
    mask = torch.ones_like(tok, dtype=torch.bool)
    mask[:, 0] = False
    res = search_by_labels(m, tok, labels, mask=mask, neuron_sites=[], contexts=4, context_window=3,
                           decode=lambda t: f"<{t}>")
    codes = collect_codes(m, tok)
    for mt in res.matches:
        fires = (codes[mt.site][:, :, mt.group] == mt.code).any(-1) & mask
        assert mt.usage == int(fires.sum())
        assert len(mt.contexts) == min(4, mt.usage)
        scores = [c["score"] for c in mt.contexts]
        assert scores == sorted(scores, reverse=True)
        for c in mt.contexts:
            b, p = c["sequence"], c["position"]
            assert bool(fires[b, p]) and c["label"] == int(labels[b, p])
            assert c["tokens"][c["index"]] == f"<{int(tok[b, p])}>" and len(c["tokens"]) <= 7
    without = search_by_labels(m, tok, labels, mask=mask, neuron_sites=[])
    assert all(mt.contexts == [] for mt in without.matches)
    assert [mt.code for mt in without.matches] == [mt.code for mt in res.matches]
    with pytest.raises(CodebookConfigError):
        search_by_labels(m, tok, labels, contexts=-1)


def test_contexts_survive_save_and_load_and_old_files_load(tmp_path):
    m = tiny_model(n_codes=6)
    tok = FSM.sample(4, seed=2)[:, :17]
    labels = (tok % 2).where(tok != 10, torch.full_like(tok, -1))
    res = search_by_labels(m, tok, labels, neuron_sites=[], contexts=2)
    res.save(tmp_path / "s.json")
    back = LabelSearchResult.load(tmp_path / "s.json")
    assert [mt.contexts for mt in back.matches] == [mt.contexts for mt in res.matches]
    old = json.loads((tmp_path / "s.json").read_text())
    for mt in old["matches"]:
        del mt["usage"], mt["contexts"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = LabelSearchResult.load(tmp_path / "old.json")
    assert all(mt.usage == -1 and mt.contexts == [] for mt in loaded.matches)
    page = search_page(loaded, timestamp=False)
    assert "kept no contexts" in page
    assert res.to_html(tmp_path / "codes.html").read_text().count("<mark") == sum(len(mt.contexts)
                                                                                  for mt in res.matches)


def test_steering_examples_and_report(tmp_path):
    m = tiny_model(n_codes=6)
    res = fsm_state_steering(m, FSM, n_pairs=3, n_samples=2, prompt_states=3, n_examples=2)
    assert [e["pair"] for e in res.examples] == [0, 1]
    for e in res.examples:
        assert len(e["prompt_states"]) == 3 and e["prompt_states"][-1] == e["state_a"]
        assert len(e["steered_tokens"]) == 2 and len(e["baseline_tokens"]) == 2
        assert e["steered_state"] == (e["steered_tokens"][0] * 10 + e["steered_tokens"][1]
                                      if max(e["steered_tokens"]) < 10 else -1)
    plain = fsm_state_steering(m, FSM, n_pairs=3, n_samples=2, prompt_states=3, n_examples=0)
    assert plain.examples == [] and plain.per_pair_success == res.per_pair_success  # examples change nothing
    res.save(tmp_path / "st.json")
    assert SteeringResult.load(tmp_path / "st.json").examples == res.examples
    html = res.to_html(tmp_path / "st.html").read_text()
    assert "Steered versus baseline" in html and "successor of B" in html
    assert "holds no example generations" in steering_page(plain, timestamp=False)
    with pytest.raises(InvalidParameterError):
        steering_page("not a result")
    with pytest.raises(InvalidParameterError):
        fsm_state_steering(m, FSM, n_pairs=2, n_examples=-1)
