"""Codebooks at TransformerLens hook points of tiny TransformerBridge models built offline."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from codebook import (
    CodebookConfig,
    CodebookConfigError,
    SiteShapeError,
    UnknownHookError,
    attach,
    attached,
    codes_hook_name,
    detach,
    generate_with_codes,
    get_codebooks,
    site_names,
)

TOKENS = torch.tensor([[10, 1, 2, 3, 4, 5, 6], [10, 9, 8, 7, 6, 5, 4]])


def test_site_names():
    m = tiny_model(n_layers=2)
    assert site_names(m) == ["blocks.0.attn.hook_z", "blocks.0.hook_mlp_out", "blocks.1.attn.hook_z",
                             "blocks.1.hook_mlp_out"]
    with pytest.raises(CodebookConfigError, match="site kinds"):
        site_names(m, ["attention"])


def test_unknown_hook_name_is_an_error():
    m = tiny_model(n_layers=2)
    with pytest.raises(UnknownHookError, match=r"unknown hook name 'blocks.0.hook_mlp_outt'.*hook_mlp_out"):
        attach(m, ["blocks.0.hook_mlp_outt"], CodebookConfig(n_codes=8))
    assert get_codebooks(m) is None  # nothing was attached


def test_d_model_mismatch_is_an_error():
    m = tiny_model(n_layers=2)
    with pytest.raises(SiteShapeError, match=r"d_model=32 .* is 16"):
        attach(m, ["blocks.0.hook_mlp_out"], CodebookConfig(n_codes=8, d_model=32))
    with pytest.raises(SiteShapeError, match=r"d_head"):
        attach(m, ["blocks.0.attn.hook_z"], CodebookConfig(n_codes=8, d_model=16))
    attach(m, ["blocks.0.attn.hook_z"], CodebookConfig(n_codes=8, d_model=8))


def test_k_larger_than_codes_is_an_error():
    with pytest.raises(CodebookConfigError, match=r"k must be <= n_codes \(4\); got 5"):
        CodebookConfig(n_codes=4, k=5)


def test_activation_is_replaced_by_codes_and_ids_are_cached():
    m = tiny_model(n_layers=2)
    cbs = attach(m, ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"], CodebookConfig(n_codes=8, k=1))
    _, cache = m.run_with_cache(TOKENS)
    z, ids = cache["blocks.0.attn.hook_z"], cache[codes_hook_name("blocks.0.attn.hook_z")]
    assert ids.shape == (2, 7, 2, 1)  # [batch, pos, heads, k]
    codes = cbs["blocks.0.attn.hook_z"].codes.detach()
    want = torch.stack([codes[h][ids[:, :, h, 0]] for h in range(2)], dim=2)
    assert torch.allclose(z, want)
    mids = cache[codes_hook_name("blocks.1.hook_mlp_out")]
    assert mids.shape == (2, 7, 1)
    assert torch.allclose(cache["blocks.1.hook_mlp_out"], cbs["blocks.1.hook_mlp_out"].codes.detach()[0][mids[..., 0]])


def test_hooks_survive_reset_and_detach_restores_the_model():
    m = tiny_model(n_layers=2)
    base = m(TOKENS).detach()
    with attached(m, site_names(m), CodebookConfig(n_codes=8)) as cbs:
        out = m(TOKENS).detach()
        assert not torch.allclose(out, base)
        m.reset_hooks()
        assert torch.equal(m(TOKENS).detach(), out)
        with m.hooks(fwd_hooks=[(codes_hook_name("blocks.0.hook_mlp_out"), lambda ids, hook: ids)]):
            assert torch.equal(m(TOKENS).detach(), out)
        assert torch.equal(m(TOKENS).detach(), out)
        assert len(cbs) == 4 and codes_hook_name("blocks.0.hook_mlp_out") in m.hook_dict
    assert torch.equal(m(TOKENS).detach(), base)
    assert get_codebooks(m) is None
    assert not any("codebook" in k for k in m.hook_dict)


def test_codebooks_act_in_generation_and_move_with_the_model():
    m = tiny_model(n_layers=2)
    cbs = attach(m, ["blocks.0.hook_mlp_out"], CodebookConfig(n_codes=8))
    seen = []
    with m.hooks(fwd_hooks=[(codes_hook_name("blocks.0.hook_mlp_out"), lambda ids, hook: seen.append(ids.shape))]):
        out = generate_with_codes(m, TOKENS[:, :3], 3, seed=0)
    assert out.shape == (2, 6) and len(seen) == 3
    m.to(torch.float64)
    assert cbs["blocks.0.hook_mlp_out"].codes.dtype == torch.float64
    detach(m)


def test_attach_twice_and_bad_sites():
    m = tiny_model(n_layers=2)
    attach(m, ["blocks.0.hook_mlp_out"], CodebookConfig(n_codes=8))
    with pytest.raises(CodebookConfigError, match="already has codebooks"):
        attach(m, ["blocks.1.hook_mlp_out"], CodebookConfig(n_codes=8))
    detach(m)
    with pytest.raises(CodebookConfigError, match="distinct"):
        attach(m, ["blocks.0.hook_mlp_out", "blocks.0.hook_mlp_out"])
    with pytest.raises(CodebookConfigError, match="no entry"):
        attach(m, ["blocks.0.hook_mlp_out"], {"blocks.1.hook_mlp_out": CodebookConfig(n_codes=8)})


def test_ungrouped_head_site_flattens_heads():
    m = tiny_model(n_layers=2)
    cbs = attach(m, ["blocks.0.attn.hook_z"], CodebookConfig(n_codes=8, grouped=False))
    layer = cbs["blocks.0.attn.hook_z"]
    assert (layer.n_groups, layer.d) == (1, 16)
    _, cache = m.run_with_cache(TOKENS)
    ids = cache[codes_hook_name("blocks.0.attn.hook_z")]
    assert ids.shape == (2, 7, 1)
    assert torch.allclose(cache["blocks.0.attn.hook_z"].reshape(2, 7, 16), layer.codes.detach()[0][ids[..., 0]])
