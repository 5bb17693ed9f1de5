# %% [markdown]
# # 04 · Codebook features: discrete, steerable hidden states
#
# Codebook features (Tamkin, Taufeeque, Goodman, 2023) replace a hidden activation by the mean of its top-k most similar vectors from a learned *codebook*. The model keeps working, and each code id is a discrete feature you can read, ablate and patch.
#
# This notebook trains a small transformer on **TokFSM** (a random finite-state machine written as two digit tokens per state), attaches codebooks to every attention head and every MLP output, fine-tunes, finds the codes that stand for FSM states, and steers the model into another state by patching codes. Settings are small so that it runs on a CPU in a couple of minutes; the full-size figures come from `benchmarks/codebook_tokfsm.py` on a GPU (see README).

# %%
import matplotlib.pyplot as plt
import torch

import codebook
from probe.data.tokfsm import TokFSM, TokFSMConfig
from probe.zoo.tokfsm import evaluate, lm_loss, make_model, train_model

torch.manual_seed(0)
torch.set_num_threads(1)   # tiny models: one thread is much faster on a small, busy CPU
# The paper's FSM has 100 states with 10 successors each (TokFSM()); a smaller one learns in a CPU minute.
fsm = TokFSM(TokFSMConfig(n_states=30, n_edges=5, seq_states=16))
print(fsm.sample(1, seed=0)[0].tolist())     # BOS=10, then two digits per state

# %% [markdown]
# ## 1. A small TokFSM transformer
#
# The paper's model has 4 layers and d_model 128 (`probe.zoo.tokfsm.pretrained()` trains and caches it); here 2 layers and d_model 64.

# %%
model = make_model('gelu', seed=0, n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128)
train_model(model, fsm, steps=400, batch_size=32, lr=3e-3, verbose=False)
base = evaluate(model, fsm, n_samples=24, seed=1)
print(base)

# %% [markdown]
# ## 2. Attach codebooks
#
# `site_names` lists the standard hook points: `blocks.L.attn.hook_z` (per head: one codebook per head, all heads scored in one batched matmul) and `blocks.L.hook_mlp_out`. Each codebook is a permanent hook on its site; its code ids pass through a hook point of their own, `<site>.codebook.hook_codes`.

# %%
sites = codebook.site_names(model, ['attn_z', 'mlp_out'])
config = codebook.CodebookConfig(n_codes=128, k=1, similarity='cosine', commitment=0.25, dead_code_every=20)
cbs = codebook.attach(model, sites, config)
codebook.init_codebooks(model, cbs, [fsm.sample(64, seed=7)[:, :-1]])   # k-means on real activations
print(len(cbs), 'codebooks at', cbs.sites)
print('with fresh codebooks:', evaluate(model, fsm, n_samples=24, seed=1).transition_accuracy)

# %% [markdown]
# ## 3. Fine-tune model and codebooks jointly
#
# AdamW with separate learning rates; dead codes (unused since the last replacement) are re-seeded from recent activations every `dead_code_every` steps.

# %%
train_cfg = codebook.TrainConfig(steps=150, lr_codebook=1e-3, lr_model=3e-4, warmup_steps=20,
                                 lr_schedule='cosine', check_every=25)
result = codebook.train(model, cbs, lambda step: fsm.sample(32, seed=1000 + step), train_cfg,
                        loss_fn=lm_loss, verbose=False)
after = evaluate(model, fsm, n_samples=24, seed=1)
print('transition accuracy', round(base.transition_accuracy, 4), '->', round(after.transition_accuracy, 4))
held_out = [fsm.sample(128, seed=99)[:, :-1]]
for site, m in codebook.codebook_metrics(model, cbs, held_out).items():
    print(f'{site:24s} dead {m.dead_fraction:.2f}  mse {m.mse:.4f}  usage entropy {m.usage_entropy:.2f}')
result.plot()
plt.show()

# %% [markdown]
# ## 4. Which codes stand for FSM states?
#
# Label each state's second-digit position with the state id (first-digit positions are negatives) and search all codebooks: per state, the code with the best F1, its precision and recall, and the best single MLP neuron thresholded at the same recall.

# %%
tokens = fsm.sample(64, seed=5)[:, :-1]
digit = fsm.digit_index(tokens)
labels = torch.where(digit == 1, fsm.state_ids(tokens), torch.full_like(tokens, -1))
search = codebook.search_by_labels(model, tokens, labels, mask=digit >= 0)
print(search.summary())
best = max(search.matches, key=lambda m: m.f1)
print('state', best.label, '->', best.site, 'head', best.group, 'code', best.code,
      f'precision {best.precision:.2f} recall {best.recall:.2f}')
search.plot()
plt.show()

# %% [markdown]
# ## 5. Code interventions are ordinary hooks
#
# Cache the ids with `run_with_cache`, force or ablate codes, or patch the codes of one input into another — each as a context manager that also acts during generation.

# %%
prompt = fsm.sample(2, seed=11)[:, :9]
_, cache = model.run_with_cache(prompt)
print(cache[codebook.codes_hook_name(sites[0])].shape)   # [batch, pos, heads, k]
site = sites[-1]
with codebook.force_codes(model, site, [best.code if best.site == site else 0]):
    print(codebook.generate_with_codes(model, prompt, 4, seed=0)[:, 9:])
with codebook.ablate_codes(model, site):
    print(codebook.generate_with_codes(model, prompt, 4, seed=0)[:, 9:])

# %% [markdown]
# ## 6. Steering the FSM state
#
# At the last token of a state-A prompt, patch in (at every codebook) the codes a state-B prompt produces there, then sample the next state: success = it is a successor of B (pairs have disjoint successor sets). `positions='transition'` also patches the generated first digit with B's codes.

# %%
for mode in ('last', 'transition'):
    res = codebook.fsm_state_steering(model, fsm, n_pairs=16, n_samples=4, prompt_states=6, positions=mode)
    print(f'{mode:10s} success {res.success_rate:.2f} (unsteered {res.baseline_success:.2f}), '
          f'normalised JS {res.normalized_js:.2f}')
res.plot()
plt.show()

# %% [markdown]
# ## 7. Save and load
#
# safetensors + JSON with a version stamp; loading checks the model shape.

# %%
codebook.save_codebooks(cbs, 'tokfsm_codebooks')
codebook.detach(model)
cbs = codebook.load_codebooks(model, 'tokfsm_codebooks')
print(cbs.sites)

# %% [markdown]
# ## The same calls on a pretrained model (not run here)
#
# Tutorials never download. With GPT-2 in the Hugging Face cache, topic steering looks like this:
#
# ```python
# from transformer_lens.model_bridge import TransformerBridge
# gpt2 = TransformerBridge.boot_transformers('gpt2')
# sites = codebook.site_names(gpt2, ['attn_z'])                       # 12 layers x 12 heads
# cbs = codebook.attach(gpt2, sites, codebook.CodebookConfig(n_codes=10_000, k=8))
# batches = [gpt2.to_tokens(texts) for texts in corpus_batches]
# codebook.init_codebooks(gpt2, cbs, batches[:4])
# codebook.train(gpt2, cbs, batches, codebook.TrainConfig(steps=5000, lr_model=0, freeze_model=True))
# # codes that fire on a topic, found by a regex over the decoded tokens
# res = codebook.search_by_regex(gpt2, batches[0], lambda t: gpt2.tokenizer.decode([t]), r' (dragon|wizard)')
# m = res.matches[0]
# with codebook.force_codes(gpt2, m.site, [m.code], groups=[m.group], mode='append'):
#     out = codebook.generate_with_codes(gpt2, gpt2.to_tokens('Once upon a time'), 40)
# print(gpt2.to_string(out[0]))
# ```
