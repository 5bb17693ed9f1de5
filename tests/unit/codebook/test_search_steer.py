"""Code search (labels, regex, neuron baseline) against brute force; steering hooks (force, ablate, patch);
FSM state steering; the CLI commands."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model

from codebook import (
    CodeIdError,
    SteeringResult,
    ablate_codes,
    codes_hook_name,
    collect_codes,
    force_codes,
    fsm_state_steering,
    patch_codes,
    record_codes,
    regex_labels,
    search_by_labels,
)
from codebook.search import ClassMatch, _neuron_baseline
from probe.data.tokfsm import TokFSM

FSM = TokFSM()


def test_search_by_labels_matches_brute_force():
    m = tiny_model(n_codes=6)
    tok = FSM.sample(6, seed=1)[:, :21]
    labels = (tok % 3).where(tok != 10, torch.full_like(tok, -1))  # classes 0..2, BOS unlabelled
    mask = torch.ones_like(tok, dtype=torch.bool)
    mask[:, 0] = False
    res = search_by_labels(m, tok, labels, mask=mask, neuron_sites=[])
    codes = collect_codes(m, tok)
    lab = labels[mask]
    best_f1 = {}
    for ids in codes.values():
        ids = ids[mask]  # [N, G, k]
        for g in range(ids.shape[1]):
            for c in range(6):
                fire = (ids[:, g] == c).any(-1)
                for cls in range(3):
                    tp = int((fire & (lab == cls)).sum())
                    prec = tp / max(1, int(fire.sum()))
                    rec = tp / int((lab == cls).sum())
                    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
                    best_f1[cls] = max(best_f1.get(cls, 0.0), f1)
    assert [mt.label for mt in res.matches] == [0, 1, 2]
    for mt in res.matches:
        assert mt.f1 == pytest.approx(best_f1[mt.label], abs=1e-9)
    assert res.n_positions == int(mask.sum())


def test_neuron_baseline_brute_force():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(50, 4, generator=gen)
    lab = torch.randint(-1, 2, (50,), generator=gen)
    acts[:, 2] += 3 * (lab == 1).float()  # neuron 2 tracks class 1
    mt = ClassMatch(label=1, n_positions=int((lab == 1).sum()), site="s", group=0, code=0, precision=1.0,
                    recall=0.5, f1=0.0)
    _neuron_baseline([mt], acts, lab, "n")
    pos = lab == 1
    need = math.ceil(0.5 * int(pos.sum()))
    best = 0.0
    for j in range(4):
        thr = acts[pos, j].sort(descending=True).values[need - 1]
        fire = acts[:, j] >= thr
        best = max(best, float((fire & pos).sum()) / float(fire.sum()))
    assert mt.neuron_precision == pytest.approx(best)
    assert mt.neuron == 2


def test_regex_labels():
    assert regex_labels([["ab", "c", "d", "abc"]], r"cd").tolist() == [[0, 1, 1, 0]]
    assert regex_labels([["x", "y"]], r"z").tolist() == [[0, 0]]


def test_force_ablate_patch():
    m = tiny_model(n_codes=6)
    site = "blocks.0.hook_mlp_out"
    layer = m.codebooks[site]
    tok = FSM.sample(2, seed=3)[:, :9]
    grab = {}
    hooks = [(site, lambda act, hook: grab.__setitem__("act", act.detach()))]
    with force_codes(m, site, [4], positions=[2, -1]), m.hooks(fwd_hooks=hooks):
        m(tok)
    assert torch.allclose(grab["act"][:, 2], layer.codes.detach()[0, 4].expand(2, 16))
    assert torch.allclose(grab["act"][:, -1], layer.codes.detach()[0, 4].expand(2, 16))
    with ablate_codes(m, site, positions=[1]), m.hooks(fwd_hooks=hooks):
        m(tok)
    assert torch.equal(grab["act"][:, 1], torch.zeros(2, 16))
    with force_codes(m, site, [1], mode="append", positions=[0]), m.hooks(fwd_hooks=hooks):
        _, cache = m.run_with_cache(tok)
    assert cache[codes_hook_name(site)].shape[-1] == 2
    src = record_codes(m, FSM.sample(2, seed=4)[:, :9])
    with patch_codes(m, src, positions=8):
        _, cache = m.run_with_cache(tok)
    for s, ids in src.items():
        got = cache[codes_hook_name(s)][:, 8]
        assert torch.equal(got.reshape(ids.shape), ids)


def test_force_codes_in_one_head_leaves_the_other_heads_alone():
    """Per-head attention codebooks (hook_z): forcing a code in head 1 sets that head's output to the code (and
    appending adds it), while head 0's output and code ids stay as they were."""
    m = tiny_model(n_codes=5)
    site = "blocks.0.attn.hook_z"
    codes = m.codebooks[site].codes.detach()  # [heads, n_codes, d_head]
    tok = FSM.sample(2, seed=5)[:, :9]
    _, base = m.run_with_cache(tok)
    with force_codes(m, site, [3], groups=[1]):
        _, forced = m.run_with_cache(tok)
    assert torch.equal(forced[site][:, :, 0], base[site][:, :, 0])
    assert torch.allclose(forced[site][:, :, 1], codes[1, 3].expand(2, 9, -1))
    ids, ids0 = forced[codes_hook_name(site)], base[codes_hook_name(site)]
    assert torch.equal(ids[:, :, 0], ids0[:, :, 0]) and bool((ids[:, :, 1] == 3).all())
    with force_codes(m, site, [3], groups=[1], mode="append"):
        _, added = m.run_with_cache(tok)
    assert torch.equal(added[site][:, :, 0], base[site][:, :, 0])
    assert torch.allclose(added[site][:, :, 1], base[site][:, :, 1] + codes[1, 3], atol=1e-6)


def test_steering_with_out_of_range_code_is_an_error():
    m = tiny_model(n_codes=6)
    with pytest.raises(CodeIdError, match=r"must be in \[0, 6\); got values in \[6, 6\]"):
        with force_codes(m, "blocks.0.hook_mlp_out", [6]):
            pass
    with pytest.raises(CodeIdError, match="groups"):
        with force_codes(m, "blocks.0.attn.hook_z", [0], groups=[2]):
            pass
    with pytest.raises(CodeIdError, match=r"must be in \[0, 6\)"):
        with patch_codes(m, {"blocks.0.hook_mlp_out": torch.full((1, 1, 1), 9)}, positions=0):
            pass


def test_fsm_state_steering_runs(tmp_path):
    m = tiny_model(n_codes=6)
    for mode in ("last", "transition"):
        res = fsm_state_steering(m, FSM, n_pairs=3, n_samples=2, prompt_states=3, positions=mode)
        assert res.n_pairs == 3 and 0 <= res.success_rate <= 1 and 0 <= res.expected_success <= 1
        assert res.positions == mode
    res.save(tmp_path / "s.json")
    assert SteeringResult.load(tmp_path / "s.json").per_pair_success == res.per_pair_success


def test_cli_steer_on_a_saved_run(tmp_path, capsys):
    from codebook.cli import save_tokfsm_run
    from probe.cli import main

    m = tiny_model(n_codes=6)
    save_tokfsm_run(tmp_path, m, m.codebooks, {"note": "test"})
    assert main(["codebook", "steer", str(tmp_path), "--pairs", "2", "--samples", "2", "--prompt-states", "2"]) == 0
    assert "success_rate" in capsys.readouterr().out
    assert main(["codebook", "steer", str(tmp_path / "missing")]) == 1


def test_cli_parser_has_codebook_commands():
    from probe.cli import build_parser

    args = build_parser().parse_args(["codebook", "train-tokfsm", "--out", "x", "--n-codes", "64", "--steps", "3"])
    assert (args.n_codes, args.steps, args.sites, args.k) == (64, 3, "attn_z,mlp_out", 1)
