"""probe.data.tokfsm and probe.zoo.tokfsm: the language, its metrics (against an exact oracle model), training, save/load, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probe.core.errors import InvalidParameterError, ModelError
from probe.data.tokfsm import BOS, TokFSM, TokFSMConfig
from probe.zoo.tokfsm import (
    evaluate,
    generate,
    lm_loss,
    load_model,
    make_model,
    next_state_probs,
    save_model,
    train_model,
)

TINY = dict(n_layers=1, d_model=32, d_mlp=64, n_heads=2)


class OracleModel(nn.Module):
    """Emits the FSM's exact next-token distribution (log-probabilities) at every position."""

    def __init__(self, fsm: TokFSM, n_ctx: int = 128) -> None:
        super().__init__()
        self.fsm = fsm
        self.dummy = nn.Parameter(torch.zeros(1))
        self.cfg = type("Cfg", (), {"n_ctx": n_ctx})()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.fsm.config.n_states
        T = self.fsm.transition  # [n, n]
        out = torch.full((*tokens.shape, 11), -1e9)
        for b in range(tokens.shape[0]):
            for p in range(tokens.shape[1]):
                if p == 0:
                    dist = torch.full((n,), 1.0 / n)  # the first state is uniform
                elif p % 2 == 0:  # second digit of a state: next comes the first digit of its successor
                    s = int(tokens[b, p - 1]) * 10 + int(tokens[b, p])
                    dist = T[s]
                else:  # first digit: next is the second digit of a successor with that first digit
                    prev = T[int(tokens[b, p - 2]) * 10 + int(tokens[b, p - 1])] if p >= 3 else torch.full((n,), 1 / n)
                    d1 = int(tokens[b, p])
                    dist = torch.zeros(n)
                    dist[d1 * 10: d1 * 10 + 10] = prev[d1 * 10: d1 * 10 + 10]
                    probs = torch.zeros(11)
                    probs[:10] = dist.reshape(-1, 10)[d1] / dist.sum() if dist.sum() > 0 else 0.1
                    out[b, p] = probs.clamp_min(1e-30).log()
                    continue
                first = torch.zeros(11)
                first[:10] = dist.reshape(10, 10).sum(1)
                out[b, p] = first.clamp_min(1e-30).log()
        return out + 0 * self.dummy


def test_fsm_matches_the_paper_settings():
    fsm = TokFSM()
    assert fsm.successors.shape == (100, 10)
    assert all(len(set(row.tolist())) == 10 for row in fsm.successors)  # without replacement
    assert torch.equal(fsm.valid.sum(1), torch.full((100,), 10))
    assert torch.allclose(fsm.transition.sum(1), torch.ones(100))
    assert torch.equal(TokFSM().successors, fsm.successors)  # seed 42, deterministic
    assert not torch.equal(TokFSM(TokFSMConfig(seed=1)).successors, fsm.successors)
    assert fsm.seq_tokens == 129


def test_samples_are_valid_walks_with_bos():
    fsm = TokFSM()
    tokens = fsm.sample(16, seed=3)
    assert tokens.shape == (16, 129) and bool((tokens[:, 0] == BOS).all()) and int(tokens[:, 1:].max()) <= 9
    states = fsm.state_sequence(tokens)
    assert states.shape == (16, 64)
    assert bool(fsm.is_valid(states[:, :-1], states[:, 1:]).all())
    assert torch.equal(fsm.sample(16, seed=3), tokens) and not torch.equal(fsm.sample(16, seed=4), tokens)
    first = fsm.sample(4000, seed=0)[:, 1:3]
    assert len(set((first[:, 0] * 10 + first[:, 1]).tolist())) == 100  # the first state is uniform


def test_state_ids_digit_index_and_encode():
    fsm = TokFSM()
    tokens = torch.tensor([[BOS, 0, 7, 4, 2, BOS, 3]])
    assert fsm.encode(torch.tensor([7, 42])).tolist() == [0, 7, 4, 2]
    assert fsm.state_ids(tokens).tolist() == [[-1, 7, 7, 42, 42, -1, -1]]
    assert fsm.digit_index(tokens).tolist() == [[-1, 0, 1, 0, 1, 0, 1]]
    assert not bool(fsm.is_valid(torch.tensor(-1), torch.tensor(3)))


def test_oracle_model_scores_perfectly_and_a_random_model_does_not():
    fsm = TokFSM(TokFSMConfig(seq_states=4))
    oracle = OracleModel(fsm)
    probs = next_state_probs(oracle, fsm)
    assert torch.allclose(probs, fsm.transition, atol=1e-6)
    m = evaluate(oracle, fsm, n_samples=8, seed=0)
    assert (m.transition_accuracy, m.first_transition_accuracy, m.top10_overlap) == (1.0, 1.0, 1.0)
    rnd = evaluate(make_model("relu", **TINY), fsm, n_samples=8, seed=0)
    assert rnd.top10_overlap < 0.5


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    fsm = TokFSM()
    batch = fsm.sample(32, seed=99)
    model = make_model("relu", seed=0, **TINY)
    with torch.no_grad():
        before = float(lm_loss(model, batch))
    train_model(model, fsm, steps=30, batch_size=16, lr=3e-3, verbose=False)
    with torch.no_grad():
        assert float(lm_loss(model, batch)) < before - 0.2

    ckpt = tmp_path / "ckpt.safetensors"
    full = train_model(make_model("gelu", seed=1, **TINY), fsm, steps=6, batch_size=8, checkpoint_every=3,
                       verbose=False)
    part = make_model("gelu", seed=1, **TINY)
    train_model(part, fsm, steps=3, batch_size=8, checkpoint_every=3, checkpoint=ckpt, verbose=False)
    resumed = make_model("gelu", seed=1, **TINY)
    train_model(resumed, fsm, steps=6, batch_size=8, checkpoint_every=3, checkpoint=ckpt, verbose=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    model = make_model("relu", seed=2, **TINY)
    save_model(model, tmp_path / "m", {"note": "x"})
    loaded = load_model(tmp_path / "m")
    x = TokFSM().sample(2)[:, :20]
    assert torch.allclose(model(x), loaded(x)) and loaded.info == {"note": "x"}
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="no TokFSM model"):
        load_model(tmp_path / "missing")


def test_generate_shapes_and_greedy_is_deterministic():
    model = make_model("relu", **TINY)
    prompt = torch.full((3, 1), BOS)
    a, b = generate(model, prompt, 5, temperature=0), generate(model, prompt, 5, temperature=0, seed=9)
    assert a.shape == (3, 6) and torch.equal(a, b)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n_states=101), r"n_states must be in \[1, 100\].*got 101"),
    (dict(n_edges=0), r"n_edges must be in \[1, n_states=100\]; got 0"),
    (dict(n_edges=11, n_states=10), r"n_edges must be in \[1, n_states=10\]; got 11"),
    (dict(seq_states=1), "seq_states must be >= 2; got 1"),
])
def test_bad_fsm_settings(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        TokFSMConfig(**kwargs)


def test_bad_arguments():
    fsm = TokFSM()
    model = make_model("relu", **TINY)
    with pytest.raises(InvalidParameterError, match="act_fn"):
        make_model("tanh")
    with pytest.raises(InvalidParameterError, match="n must be"):
        fsm.sample(0)
    with pytest.raises(InvalidParameterError, match="temperature"):
        generate(model, torch.full((1, 1), BOS), 2, temperature=-1)
    with pytest.raises(InvalidParameterError, match="steps"):
        train_model(model, fsm, steps=0, verbose=False)
    with pytest.raises(InvalidParameterError, match="n_samples"):
        evaluate(model, fsm, n_samples=0)
