"""probe.moe: exact oracles on tiny models (brute-force assignment, hand-computed coverage and modularity,
explicit expert computation) and one test per bad input named in issue 6."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import mlp
from scipy.optimize import linear_sum_assignment
from torch import nn

from probe import moe
from probe.core.errors import DataError, InvalidParameterError, ModelError


def _tl(act_fn: str = "relu", n_layers: int = 2, d_mlp: int = 32):
    from transformer_lens.model_bridge import TransformerBridge

    cfg = {"n_layers": n_layers, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": d_mlp, "d_vocab": 11,
           "n_ctx": 16, "act_fn": act_fn, "seed": 0}
    return TransformerBridge.boot_native(cfg)


WIDTHS = (6, 16, 12, 3)


def _xy(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    return [(x[: n // 2], torch.zeros(n // 2, dtype=torch.long)), (x[n // 2:], torch.ones(n - n // 2, dtype=torch.long))]


def _tokens(n: int = 8, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 11, (n, t), generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------------------------ balanced assignment
def _brute(cost: np.ndarray) -> float:
    n, e = cost.shape
    size = n // e
    best = np.inf
    for perm in itertools.permutations(range(n)):
        labels = np.empty(n, dtype=int)
        labels[list(perm)] = np.arange(n) // size
        best = min(best, cost[np.arange(n), labels].sum())
    return best


def test_balanced_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        cost = rng.standard_normal((6, 3))
        labels = moe.balanced_assignment(cost)
        assert np.bincount(labels, minlength=3).tolist() == [2, 2, 2]
        assert cost[np.arange(6), labels].sum() == pytest.approx(_brute(cost), abs=1e-12)


@pytest.mark.parametrize("n,e", [(24, 4), (60, 6), (64, 16), (96, 8)])
def test_balanced_assignment_matches_linear_sum_assignment(n, e):
    rng = np.random.default_rng(n + e)
    for trial in range(4):
        cost = rng.standard_normal((n, e)) if trial % 2 else rng.integers(0, 4, (n, e)).astype(float)  # ties too
        labels = moe.balanced_assignment(cost)
        rows, cols = linear_sum_assignment(np.repeat(cost, n // e, axis=1))
        assert (np.bincount(labels, minlength=e) == n // e).all()
        assert cost[np.arange(n), labels].sum() == pytest.approx(cost[rows, cols // (n // e)].sum(), abs=1e-9)
        # a warm start from any balanced labelling reaches the same optimum
        warm = moe.balanced_assignment(cost, init=np.random.default_rng(trial).permutation(n) % e)
        assert cost[np.arange(n), warm].sum() == pytest.approx(cost[rows, cols // (n // e)].sum(), abs=1e-9)


def test_balanced_kmeans_recovers_planted_equal_clusters():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 5)) * 20
    truth = np.repeat(np.arange(4), 8)
    x = centers[truth] + rng.standard_normal((32, 5))
    labels = moe.balanced_kmeans(x, 4, seed=3)
    # same grouping up to renaming
    assert len({(int(t), int(lab)) for t, lab in zip(truth, labels, strict=True)}) == 4


@pytest.mark.parametrize("method", moe.METHODS)
def test_partitions_balanced_and_deterministic(method):
    torch.manual_seed(0)
    w_in = torch.randn(32, 6)
    acts = torch.relu(torch.randn(200, 32))
    a = moe.partition(method, 8, w_in=w_in, activations=acts, seed=5)
    b = moe.partition(method, 8, w_in=w_in, activations=acts, seed=5)
    assert torch.equal(a, b)
    assert torch.bincount(a, minlength=8).tolist() == [4] * 8


# ------------------------------------------------------------------------------ metrics
def test_coverage_curve_closed_form():
    h = torch.tensor([[3.0, 1.0, 0.0, 0.0], [1.0, 0.0, 2.0, 1.0], [-0.1, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    cov = moe.coverage_curve(h, labels, 2)
    # token 0: masses (4, 0) -> 1.0 at k=1; token 1: masses (1, 3) -> 0.75; token 2 has no positive mass
    assert cov.tolist() == pytest.approx([(1.0 + 0.75) / 2, 1.0])


def test_load_entropy_and_modularity_closed_forms():
    import networkx as nx

    sel = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    assert moe.load_entropy(sel) == pytest.approx(1.0)
    assert moe.load_entropy(torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)) == pytest.approx(0.0)
    g = nx.Graph()
    g.add_weighted_edges_from([(0, 1, 1.0), (2, 3, 1.0), (1, 2, 1.0)])
    # Q = sum_c [L_c / m - (d_c / 2m)^2] with m = 3, communities {0,1} and {2,3}: L = 1, d = 3 each
    assert moe.modularity(g, np.array([0, 0, 1, 1])) == pytest.approx(2 * (1 / 3 - (3 / 6) ** 2))


# ------------------------------------------------------------------------------ MoE form and experts
def test_moe_form_all_experts_is_dense_and_exit_restores():
    net = mlp(WIDTHS, seed=0, flatten=True)
    x = torch.randn(10, 6)
    dense = net(x)
    labels = {"2": torch.arange(16) % 4, "4": torch.arange(12) % 4}
    for router in moe.ROUTERS:
        with moe.moe_form(net, labels, top_k=4, router=router):
            assert torch.equal(net(x), dense)
    with moe.moe_form(net, labels, top_k=1, router="avg_k") as state:
        assert not torch.allclose(net(x), dense)
    assert state.tokens == {"2": 10, "4": 10}
    assert int(state.loads["2"].sum()) == 10
    assert torch.equal(net(x), dense)
    assert not net[2]._forward_hooks and not net[2]._forward_pre_hooks


def test_moe_form_masks_exactly_the_unselected_experts():
    net = mlp(WIDTHS, seed=0, flatten=True)
    x = torch.randn(10, 6)
    labels = torch.arange(16) // 4
    w1, b1 = net[1].weight, net[1].bias
    z = x @ w1.T + b1
    h = torch.relu(z)
    # avg-k gate by its definition: x . mean of the expert's keys
    keys = torch.stack([w1[labels == e].mean(0) for e in range(4)])
    top = (x @ keys.T).topk(2, dim=1).indices
    keep = torch.zeros(10, 4, dtype=torch.bool).scatter_(1, top, True)[:, labels]
    expected = net[5](net[4](net[3](h * keep)))
    with moe.moe_form(net, {"2": labels}, top_k=2, router="avg_k"):
        assert torch.allclose(net(x), expected, atol=1e-6)


@pytest.mark.parametrize("router", moe.ROUTERS)
def test_expert_form_matches_masked_ffn_and_merges_back(router):
    net = mlp(WIDTHS, seed=0, flatten=True)
    labels = moe.partition("weights", 4, w_in=net[1].weight, seed=0)
    ex = moe.to_experts(net, "2", labels)
    w_in, b_in, w_out, b_out = ex.merge()
    assert torch.equal(w_in, net[1].weight) and torch.equal(b_in, net[1].bias)
    assert torch.equal(w_out, net[3].weight) and torch.equal(b_out, net[3].bias)
    x = torch.randn(7, 6)
    with moe.moe_form(net, {"2": labels}, top_k=2, router=router):
        masked = net[3](net[2](net[1](x)))
    assert torch.allclose(ex.forward(x, top_k=2, router=router), masked, atol=1e-5)


@pytest.mark.parametrize("act_fn", ["relu", "gelu"])
def test_transformerlens_hooks_weights_and_expert_form(act_fn):
    model = _tl(act_fn)
    toks = _tokens(2)
    sites = moe.find_ffns(model)
    assert list(sites) == ["blocks.0.mlp", "blocks.1.mlp"]
    labels = moe.partition("weights", 4, w_in=sites["blocks.1.mlp"].w_in, seed=0)
    ex = moe.to_experts(model, 1, labels)
    assert torch.equal(ex.merge()[0], sites["blocks.1.mlp"].w_in)
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.hook_dict["blocks.1.mlp.hook_in"].register_forward_hook(lambda m, i, o: seen.update(x=o)),
             model.hook_dict["blocks.1.mlp.hook_out"].register_forward_hook(lambda m, i, o: seen.update(y=o))]
    try:
        dense = model(toks)
        with moe.moe_form(model, {"blocks.1.mlp": labels}, top_k=2, router="similarity"):
            sparse = model(toks)
    finally:
        for h in hooks:
            h.remove()
    assert not torch.allclose(dense, sparse)
    expected = ex.forward(seen["x"].reshape(-1, 16), top_k=2, router="similarity")
    assert torch.allclose(expected, seen["y"].reshape(-1, 16), atol=1e-5)
    assert torch.equal(model(toks), dense)


# ------------------------------------------------------------------------------ detect end to end
def test_detect_mlp_save_load_plot(tmp_path):
    net = mlp(WIDTHS, seed=0, flatten=True)
    rep = moe.detect(net, _xy(), n_experts=4, method=["activations", "weights", "graph"], n_random=3,
                     fractions=(0.25, 1.0), verbose=False)
    assert rep.layers == ["2", "4"] and rep.top_k == 1
    m = rep.metrics["2"]
    assert m["coverage"]["weights"][-1] == pytest.approx(1.0)
    assert len(m["random_coverage_mean"]) == 4 and 0 <= m["sparsity"] <= 1
    # all experts active is the dense model, whatever the router
    for router in moe.ROUTERS:
        assert rep.task["curves"]["weights"][router][-1] == pytest.approx(rep.task["dense"])
    rep.save(tmp_path / "r")
    back = moe.MoEReport.load(tmp_path / "r")
    assert back.metrics == rep.metrics and back.task == rep.task
    assert all(torch.equal(back.partitions[k][la], rep.partitions[k][la]) for k in rep.partitions
               for la in rep.layers)
    import matplotlib

    matplotlib.use("Agg")
    for kind in ("coverage", "coactivation", "task"):
        assert rep.plot(kind) is not None


@pytest.mark.parametrize("act_fn", ["relu", "gelu"])
def test_detect_transformerlens_tokens(act_fn):
    model = _tl(act_fn)
    toks = _tokens(8)
    calls = []
    rep = moe.detect(model, [toks[:4], toks[4:]], layers=[0, "blocks.1.mlp.hook_post"], n_experts=8, top_k=2,
                     method="activations", routers=("avg_k",), fractions=(0.25,),
                     task=lambda m: calls.append(1) or 0.5, verbose=False)
    assert rep.layers == ["blocks.0.mlp", "blocks.1.mlp"]
    assert rep.act_fn["blocks.0.mlp"] == act_fn
    assert rep.task["curves"]["activations"]["avg_k"] == [{"metric": 0.5}] and len(calls) == 2
    if act_fn == "gelu":
        assert rep.metrics["blocks.0.mlp"]["negative_mass_share"] > 0
    assert moe.task_metric(model, [toks])["accuracy"] >= 0


# ------------------------------------------------------------------------------ bad input (issue 6)
def test_bad_layer_with_no_ffn():
    with pytest.raises(ModelError, match=r"no FFN layer at \['blocks.7.mlp'\].*blocks.0.mlp"):
        moe.detect(_tl(), [_tokens()], layers=[7], verbose=False)
    with pytest.raises(ModelError, match="no FFN layer at"):
        moe.detect(mlp(WIDTHS, seed=0, flatten=True), _xy(), layers=["1"], verbose=False)
    with pytest.raises(ModelError, match="has no FFN layer"):
        moe.detect(nn.Sequential(nn.Linear(3, 3)), [(torch.zeros(2, 3), torch.zeros(2))], verbose=False)


def test_bad_d_ff_not_divisible():
    with pytest.raises(InvalidParameterError, match=r"n_experts=5 does not divide d_ff=16.*\[.*4.*8"):
        moe.detect(mlp(WIDTHS, seed=0, flatten=True), _xy(), layers=["2"], n_experts=5, verbose=False)


def test_bad_top_k_above_experts():
    with pytest.raises(InvalidParameterError, match=r"top_k must be an int in 1..4; got 5"):
        moe.detect(mlp(WIDTHS, seed=0, flatten=True), _xy(), n_experts=4, top_k=5, verbose=False)
    with pytest.raises(InvalidParameterError, match="top_k"), moe.moe_form(
            mlp(WIDTHS, seed=0, flatten=True), {"2": torch.arange(16) % 4}, top_k=9):
        pass


def test_bad_empty_loader():
    with pytest.raises(DataError, match="yielded no samples"):
        moe.detect(mlp(WIDTHS, seed=0, flatten=True), [], n_experts=4, verbose=False)
    with pytest.raises(DataError, match="yielded no samples"):
        moe.detect(_tl(), [torch.zeros(0, 16, dtype=torch.long)], verbose=False)


def test_bad_activation_function_is_named():
    with pytest.raises(moe.UnsupportedActivationError, match="'tanh'"):
        moe.detect(mlp(WIDTHS, seed=0, act=nn.Tanh, flatten=True), _xy(), verbose=False)
    with pytest.raises(moe.UnsupportedActivationError, match="solu_ln"):
        moe.detect(_tl("solu_ln"), [_tokens()], verbose=False)


def test_bad_method_router_and_partition():
    with pytest.raises(InvalidParameterError, match="method must be one of"):
        moe.detect(mlp(WIDTHS, seed=0, flatten=True), _xy(), method="kmeans", verbose=False)
    with pytest.raises(InvalidParameterError, match="router must be one of"), moe.moe_form(
            mlp(WIDTHS, seed=0, flatten=True), {"2": torch.arange(16) % 4}, top_k=1, router="learned"):
        pass
    with pytest.raises(InvalidParameterError, match="same number of neurons"), moe.moe_form(
            mlp(WIDTHS, seed=0, flatten=True), {"2": torch.tensor([0] * 10 + [1] * 6)}, top_k=1):
        pass


def test_hf_conv1d_weights_are_transposed_into_rows_per_neuron():
    # GPT-2's MLP (through TransformerBridge) uses HF Conv1D, whose weight is stored (in, out)
    from transformers.pytorch_utils import Conv1D

    from probe.graph.ffn import _linear_weight

    c_fc, c_proj = Conv1D(12, 4), Conv1D(4, 12)  # d_in 4 -> d_ff 12 -> 4
    w_in, b_in = _linear_weight(c_fc, 12, into_ff=True)
    w_out, _ = _linear_weight(c_proj, 12, into_ff=False)
    x = torch.randn(3, 4)
    assert w_in.shape == (12, 4) and w_out.shape == (4, 12)
    assert torch.allclose(x @ w_in.T + b_in, c_fc(x), atol=1e-6)
