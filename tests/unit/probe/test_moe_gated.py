"""probe.moe on gated FFNs (h = act(gate) * up, as in LLaMA / SmolLM2 / Gemma): tiny models built in-process,
a TransformerLens bridge (``gated_mlp=True``) and plain torch blocks (``gate_proj``/``up_proj``/``down_proj``);
exact oracles computed from the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from probe import moe
from probe.core.errors import ModelError
from probe.graph.ffn import find_ffns


class GatedMLP(nn.Module):
    """LLaMA-style gated MLP: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, d: int = 6, d_ff: int = 16, act: nn.Module | None = None, bias: bool = True) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, d_ff, bias=bias), nn.Linear(d, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d, bias=bias)
        self.act_fn = act if act is not None else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Net(nn.Module):
    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = GatedMLP(act=act)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.mlp(x))


def _tl_gated(act_fn: str = "silu"):
    from transformer_lens.model_bridge import TransformerBridge

    cfg = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "d_vocab": 11, "n_ctx": 16,
           "act_fn": act_fn, "seed": 0, "gated_mlp": True}
    return TransformerBridge.boot_native(cfg)


def _tokens(n: int = 8, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 11, (n, t), generator=torch.Generator().manual_seed(2))


def test_torch_gated_block_is_one_site_with_gate_and_up_weights():
    net = Net()
    (site,) = find_ffns(net).values()
    assert site.name == "mlp" and site.gated and site.act_label == "gated silu"
    assert torch.equal(site.w_in, net.mlp.gate_proj.weight) and torch.equal(site.w_up, net.mlp.up_proj.weight)
    assert torch.equal(site.w_out, net.mlp.down_proj.weight) and site.keys().shape == (16, 12)
    seen = {}
    handles = site.hook(lambda z, h: seen.update(z=z, h=h))
    x = torch.randn(5, 6)
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    g, u = net.mlp.gate_proj(x), net.mlp.up_proj(x)
    assert torch.allclose(seen["z"], g) and torch.allclose(seen["h"], F.silu(g) * u)


@pytest.mark.parametrize("router", moe.ROUTERS)
def test_torch_gated_moe_form_masks_neurons_and_expert_form_matches(router):
    net = Net()
    x = torch.randn(9, 6)
    dense = net(x)
    labels = torch.arange(16) % 4
    with moe.moe_form(net, {"mlp": labels}, top_k=4, router=router):
        assert torch.equal(net(x), dense)  # all experts: the dense model
    seen = {}
    hook = net.mlp.down_proj.register_forward_hook(lambda m, i, o: seen.update(y=o))
    try:
        with moe.moe_form(net, {"mlp": labels}, top_k=2, router=router):
            sparse = net(x)
    finally:
        hook.remove()
    assert not torch.allclose(sparse, dense)
    ex = moe.to_experts(net, "mlp", labels)
    assert torch.allclose(ex.forward(x, top_k=2, router=router), seen["y"], atol=1e-5)
    w_in, b_in, w_out, b_out = ex.merge()
    w_up, b_up = ex.merge_up()
    mlp = net.mlp
    assert torch.equal(w_in, mlp.gate_proj.weight) and torch.equal(b_in, mlp.gate_proj.bias)
    assert torch.equal(w_up, mlp.up_proj.weight) and torch.equal(b_up, mlp.up_proj.bias)
    assert torch.equal(w_out, mlp.down_proj.weight) and torch.equal(b_out, mlp.down_proj.bias)
    assert torch.equal(net(x), dense)


def test_gated_oracle_scores_the_magnitude_of_h():
    net = Net()
    x = torch.randn(9, 6)
    labels = torch.arange(16) // 4
    h = F.silu(net.mlp.gate_proj(x)) * net.mlp.up_proj(x)
    mass = h.abs() @ F.one_hot(labels, 4).float()
    keep = torch.zeros(9, 4, dtype=torch.bool).scatter_(1, mass.topk(1, dim=1).indices, True)[:, labels]
    expected = net.head(x + net.mlp.down_proj(h * keep))
    with moe.moe_form(net, {"mlp": labels}, top_k=1, router="oracle"):
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_transformerlens_gated_bridge_sites_hooks_and_expert_form():
    model = _tl_gated()
    toks = _tokens(2)
    sites = find_ffns(model)
    assert list(sites) == ["blocks.0.mlp", "blocks.1.mlp"]
    site = sites["blocks.1.mlp"]
    mlp = model.blocks[1].mlp
    assert site.gated and site.act == "silu"
    assert torch.equal(site.w_in, mlp.gate.original_component.weight)
    assert torch.equal(site.w_up, getattr(mlp, "in").original_component.weight)
    labels = moe.partition("weights", 4, w_in=site.keys(), seed=0)
    ex = moe.to_experts(model, 1, labels)
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.hook_dict["blocks.1.mlp.hook_in"].register_forward_hook(lambda m, i, o: seen.update(x=o)),
             model.hook_dict["blocks.1.mlp.hook_out"].register_forward_hook(lambda m, i, o: seen.update(y=o))]
    try:
        dense = model(toks)
        with moe.moe_form(model, {"blocks.1.mlp": labels}, top_k=2, router="avg_k"):
            sparse = model(toks)
    finally:
        for h in hooks:
            h.remove()
    assert not torch.allclose(dense, sparse)
    expected = ex.forward(seen["x"].reshape(-1, 16), top_k=2, router="avg_k")
    assert torch.allclose(expected, seen["y"].reshape(-1, 16), atol=1e-5)
    assert torch.equal(model(toks), dense)


def test_detect_on_gated_bridge_and_torch_block():
    model = _tl_gated("gelu")
    toks = _tokens(8)
    rep = moe.detect(model, [toks[:4], toks[4:]], layers=[0, 1], n_experts=8, top_k=2,
                     method=["activations", "weights", "graph"], routers=("avg_k",), fractions=(0.25, 1.0),
                     verbose=False)
    assert rep.act_fn == {"blocks.0.mlp": "gated gelu", "blocks.1.mlp": "gated gelu"}
    m = rep.metrics["blocks.0.mlp"]
    assert m["coverage"]["activations"][-1] == pytest.approx(1.0)
    assert 0 < m["negative_mass_share"] < 1 and 0 <= m["sparsity"] <= 1
    assert rep.task["curves"]["weights"]["avg_k"][-1] == pytest.approx(rep.task["dense"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, generator=g)
    net = Net()
    rep2 = moe.detect(net, [(x, net(x).argmax(1))], n_experts=4, method=["weights", "activations"],
                      fractions=(1.0,), verbose=False)
    assert rep2.layers == ["mlp"] and rep2.act_fn == {"mlp": "gated silu"}
    assert rep2.task["curves"]["activations"]["similarity"][0] == pytest.approx(rep2.task["dense"])


def test_unsupported_gated_activation_is_named():
    with pytest.raises(moe.UnsupportedActivationError, match="'gated tanh'"):
        moe.detect(Net(act=nn.Tanh()), [(torch.randn(8, 6), torch.zeros(8, dtype=torch.long))], verbose=False)


def test_a_gated_layer_without_its_gate_is_named():
    model = _tl_gated()
    delattr(model.blocks[1].mlp, "gate")
    assert list(find_ffns(model)) == ["blocks.0.mlp"]
    with pytest.raises(ModelError, match=r"blocks\.1\.mlp is a gated MLP without the gate projection \(mlp\.gate\)"):
        moe.detect(model, [(_tokens(2), None)], layers=[1], verbose=False)
