# %% [markdown]
# # 05 · Emergent mixture-of-experts in FFN layers
#
# Dense FFN layers often behave like a mixture of experts: for a given input only a few groups of neurons carry most of the activation (EMoE, Qiu et al. 2023; MoEfication, Zhang et al. 2022). `probe.moe` splits a layer's neurons into equal-size experts, measures how much of the activation mass the top experts hold — **against random partitions**, because with an oracle router even a random partition covers a lot — and runs the model with only the top-k experts active.
#
# Subjects here: the reference MNIST MLP (real MNIST), then a small TokFSM transformer (TransformerLens). Runs on a CPU in a couple of minutes.

# %%
import matplotlib.pyplot as plt
import torch

from probe import data, moe
from probe.zoo import train_reference

torch.manual_seed(0)
model = train_reference('mnist-mlp', seed=0, verbose=False)   # 784-256-256-10 ReLU, cached
fit = data.make_loader(data.load_mnist('train').subset(4096), batch_size=1024)
test = data.make_loader(data.load_mnist('test').subset(2000), batch_size=1000)
print({name: site.d_ff for name, site in moe.find_ffns(model).items()})  # Linear-ReLU-Linear blocks

# %% [markdown]
# ## Detect experts
#
# Four partitioners, each giving 16 experts of 16 neurons: `weights` (balanced k-means on normalised W_in rows, as in EMoE), `activations` (balanced k-means on activation profiles), `graph` (spectral cut of the networkx co-activation graph) and `random`. The balanced assignment inside them is exact (a min-cost transportation solve). Partitions are fitted on the first half of the captured rows; coverage is measured on the second half.

# %%
report = moe.detect(model, fit, n_experts=16, method=['activations', 'graph', 'weights', 'random'],
                    eval_loader=test, n_random=3, fractions=(0.25, 0.5), routers=('oracle', 'avg_k'),
                    verbose=False)
for row in report.table():
    print(f"layer {row['layer']}  {row['method']:<12} coverage@top-{report.top_k} {row['coverage']:.3f}  "
          f"random {row['random_mean']:.3f}±{row['random_std']:.3f}  gain {row['gain_points']:+.1f} pts  "
          f"modularity {row['modularity']:.3f} (random {row['random_modularity']:.3f})")

# %%
report.plot('coverage')
plt.show()
report.plot('coactivation', layer='3')
plt.show()

# %% [markdown]
# ## Run in MoE form
#
# `moe_form` masks the post-activations of every neuron outside the top-k experts that a router picks per input (exactly, with hooks) and restores the dense model on exit. `avg_k` is EMoE's parameter-free gate (input · mean of the expert's keys). Below: task accuracy versus the fraction of experts active in both hidden layers at once.

# %%
print('dense', report.task['dense'])
for meth, per_router in report.task['curves'].items():
    for router, vals in per_router.items():
        print(meth, router, [round(v['accuracy'], 4) for v in vals], 'at fractions', report.task['fractions'])
report.plot('task')
plt.show()

# %%
x, y = data.load_mnist('test').tensors(range(1000))
parts = report.partitions['activations']
with moe.moe_form(model, {'5': parts['5']}, top_k=4, router='avg_k') as state:
    acc_one_layer = float((model(x).argmax(1) == y).float().mean())
print('only layer 5 in MoE form, 4 of 16 experts:', acc_one_layer)
print('expert loads (how often each expert was chosen):', state.loads['5'].tolist())
print('dense again after the context:', float((model(x).argmax(1) == y).float().mean()))

# MoEfication form: the layer's weights split into experts, and merged back exactly
experts = moe.to_experts(model, '5', parts['5'])
w_in, b_in, w_out, b_out = experts.merge()
print('expert weights', tuple(experts.w_in.shape), '| merge is exact:', torch.equal(w_in, model[4].weight))

# %% [markdown]
# ## A TransformerLens model: a small TokFSM transformer
#
# On TransformerLens models the FFN layers are `blocks.L.mlp` (hooks `blocks.L.mlp.hook_pre` / `hook_post`). GELU works too: an expert's score is the sum of its neurons' *positive* post-activations; the small negative GELU outputs carry no mass (the report gives their share as `negative_mass_share`). We train a small GELU model for 100 steps here; the benchmark uses the project's full 4-layer models (`probe.zoo.tokfsm.pretrained('relu' | 'gelu')`).

# %%
from probe.data.tokfsm import TokFSM
from probe.zoo.tokfsm import make_model, train_model

fsm = TokFSM()
lm = make_model('gelu', n_layers=2, d_model=64, d_mlp=256, n_heads=2, seed=0)
train_model(lm, fsm, steps=100, batch_size=32, verbose=False)
tokens = fsm.sample(48, seed=100)[:, :128]
fit_tok, held_tok = list(torch.split(tokens[:32], 16)), [tokens[32:]]
lm_report = moe.detect(lm, fit_tok, n_experts=16, method=['activations', 'random'],
                       eval_loader=held_tok, routers=('avg_k', 'similarity'), fractions=(0.25, 0.5),
                       verbose=False)
for row in lm_report.table():
    print(f"{row['layer']}  {row['method']:<12} coverage {row['coverage']:.3f}  random {row['random_mean']:.3f}  "
          f"gain {row['gain_points']:+.1f} pts  negative GELU mass share "
          f"{lm_report.metrics[row['layer']]['negative_mass_share']:.3f}")
print('next-token accuracy dense', round(lm_report.task['dense']['accuracy'], 4), '| activations/avg_k at 25%, 50%:',
      [round(v['accuracy'], 4) for v in lm_report.task['curves']['activations']['avg_k']])

# %% [markdown]
# ## GPT-2 (when the weights are available)
#
# Not run here (tests and tutorials never download). With the weights in the Hugging Face cache:
#
# ```python
# from transformer_lens.model_bridge import TransformerBridge
# gpt2 = TransformerBridge.boot_transformers('gpt2')            # d_mlp = 3072, GELU (gelu_new)
# toks = gpt2.to_tokens(['some text ...'] * 8)                   # any LongTensor batches
# report = moe.detect(gpt2, [toks], layers=[0, 6, 11], n_experts=64, method=['weights', 'activations'])
# ```
#
# 64 experts of 48 neurons; the HF `Conv1D` weights of GPT-2 are recognised (they are stored transposed).

# %%
report.save('moe_mnist')
again = moe.MoEReport.load('moe_mnist')
print(again.layers, again.methods, again.coverage('3', 'activations'))
