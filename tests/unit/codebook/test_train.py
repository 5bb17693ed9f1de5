"""Training loop, checkpoints and resume, the NaN stop, save/load, per-codebook metrics."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_model

from codebook import (
    CheckpointMismatchError,
    CodebookConfig,
    CodebookConfigError,
    NonFiniteActivationError,
    TrainConfig,
    TrainResult,
    attach,
    codebook_metrics,
    collect_codes,
    detach,
    init_codebooks,
    load_codebooks,
    save_codebooks,
    site_names,
    train,
)
from probe.data.tokfsm import TokFSM, TokFSMConfig
from probe.zoo.tokfsm import lm_loss

FSM = TokFSM(TokFSMConfig(seq_states=6))


def batches(step: int) -> torch.Tensor:
    return FSM.sample(4, seed=step)


def setup(n_codes: int = 8):
    m = tiny_model()
    cbs = attach(m, site_names(m), CodebookConfig(n_codes=n_codes, dead_code_every=2))
    init_codebooks(m, cbs, [FSM.sample(8, seed=99)[:, :-1]])
    return m, cbs


def test_train_runs_checkpoints_and_resumes(tmp_path):
    m, cbs = setup()
    res = train(m, cbs, batches, TrainConfig(steps=4, check_every=2, checkpoint_every=2), loss_fn=lm_loss,
                checkpoint_dir=tmp_path, verbose=False)
    assert [h["step"] for h in res.history] == [2, 4]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 4
    saved = {s: layer.codes.detach().clone() for s, layer in cbs.items()}
    # a fresh model resumes from the checkpoint: same codes, continues at step 4
    m2 = tiny_model(seed=5)
    cbs2 = attach(m2, site_names(m2), CodebookConfig(n_codes=8, dead_code_every=2))
    res2 = train(m2, cbs2, batches, TrainConfig(steps=6, check_every=2), loss_fn=lm_loss, checkpoint_dir=tmp_path,
                 resume=True, verbose=False)
    assert [h["step"] for h in res2.history] == [2, 4, 6]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 6
    del saved
    res2.save(tmp_path / "r.json")
    assert TrainResult.load(tmp_path / "r.json").history == res2.history


def test_frozen_model_keeps_its_weights():
    m, cbs = setup()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    codes = cbs["blocks.0.hook_mlp_out"].codes.detach().clone()
    train(m, cbs, batches, TrainConfig(steps=2, check_every=1, freeze_model=True, lr_codebook=1e-2), loss_fn=lm_loss,
          verbose=False)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not torch.equal(codes, cbs["blocks.0.hook_mlp_out"].codes.detach())
    assert all(p.requires_grad for p in m.parameters())


def test_nan_in_activations_stops_and_keeps_last_good_checkpoint(tmp_path):
    m, cbs = setup()
    state = {"step": 0}

    def data(step: int) -> torch.Tensor:
        state["step"] = step
        return batches(step)

    def poison(act, hook):
        return act * float("nan") if state["step"] >= 3 else act

    m.add_hook("blocks.0.hook_resid_mid", poison)
    with pytest.raises(NonFiniteActivationError, match=r"NaN or inf.*last good checkpoint: .*step 3"):
        train(m, cbs, data, TrainConfig(steps=10, check_every=1, checkpoint_every=1), loss_fn=lm_loss,
              checkpoint_dir=tmp_path, verbose=False)
    m.reset_hooks()
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["step"] == 3
    from probe.core.artifacts import read_tensors

    tensors = read_tensors(tmp_path / "checkpoint.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_save_load_roundtrip_and_shape_mismatch(tmp_path):
    m, cbs = setup()
    x = FSM.sample(2, seed=3)[:, :-1]
    out = m(x).detach()
    save_codebooks(cbs, tmp_path)
    detach(m)
    cbs2 = load_codebooks(m, tmp_path)
    assert torch.equal(m(x).detach(), out)
    assert cbs2.sites == cbs.sites
    other = tiny_model(d_model=24)
    with pytest.raises(CheckpointMismatchError, match="d_model saved 16 vs model 24"):
        load_codebooks(other, tmp_path)


def test_resume_with_other_shape_is_an_error(tmp_path):
    m, cbs = setup(n_codes=8)
    train(m, cbs, batches, TrainConfig(steps=2, check_every=1), loss_fn=lm_loss, checkpoint_dir=tmp_path,
          verbose=False)
    m2 = tiny_model()
    cbs2 = attach(m2, site_names(m2), CodebookConfig(n_codes=16))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        train(m2, cbs2, batches, TrainConfig(steps=3), loss_fn=lm_loss, checkpoint_dir=tmp_path, resume=True,
              verbose=False)


def test_metrics_match_collected_codes():
    m, cbs = setup(n_codes=8)
    x = FSM.sample(6, seed=11)[:, :-1]
    metrics = codebook_metrics(m, cbs, [x])
    codes = collect_codes(m, x)
    for site, layer in cbs.items():
        ids = codes[site]
        used = torch.zeros(layer.n_groups, layer.n_codes, dtype=torch.bool)
        for g in range(layer.n_groups):
            used[g, ids[:, :, g].reshape(-1).unique()] = True
        assert metrics[site].dead_fraction == pytest.approx(1 - used.float().mean().item())
        assert metrics[site].n_groups == layer.n_groups


def test_train_config_validation():
    with pytest.raises(CodebookConfigError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(CodebookConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
