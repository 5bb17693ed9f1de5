"""Write tutorials/05_emergent_moe.ipynb from its cell sources (keeps the notebook reviewable as Python).

Run: .venv/bin/python scripts/make_tutorial_moe.py
"""

from __future__ import annotations

from _notebooks import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# 05 · Emergent mixture-of-experts in FFN layers\n\n"
        "Dense FFN layers often behave like a mixture of experts: for a given input only a few groups of "
        "neurons carry most of the activation (EMoE, Qiu et al. 2023; MoEfication, Zhang et al. 2022). "
        "`probe.moe` splits a layer's neurons into equal-size experts, measures how much of the activation "
        "mass the top experts hold — **against random partitions**, because with an oracle router even a random "
        "partition covers a lot — and runs the model with only the top-k experts active.\n\n"
        "Subjects here: the reference MNIST MLP (real MNIST), then a small TokFSM transformer (TransformerLens). "
        "Runs on a CPU in a couple of minutes."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "from probe import data, moe\n"
        "from probe.models import train_reference\n\n"
        "torch.manual_seed(0)\n"
        "model = train_reference('mnist-mlp', seed=0, verbose=False)   # 784-256-256-10 ReLU, cached\n"
        "fit = data.make_loader(data.load_mnist('train').subset(4096), batch_size=1024)\n"
        "test = data.make_loader(data.load_mnist('test').subset(2000), batch_size=1000)\n"
        "print({name: site.d_ff for name, site in moe.find_ffns(model).items()})  # Linear-ReLU-Linear blocks"
    ),
    new_markdown_cell(
        "## Detect experts\n\n"
        "Four partitioners, each giving 16 experts of 16 neurons: `weights` (balanced k-means on normalised "
        "W_in rows, as in EMoE), `activations` (balanced k-means on activation profiles), `graph` (spectral cut of "
        "the networkx co-activation graph) and `random`. The balanced assignment inside them is exact (a "
        "min-cost transportation solve). Partitions are fitted on the first half of the captured rows; coverage "
        "is measured on the second half."
    ),
    new_code_cell(
        "report = moe.detect(model, fit, n_experts=16, method=['activations', 'graph', 'weights', 'random'],\n"
        "                    eval_loader=test, n_random=3, fractions=(0.25, 0.5), routers=('oracle', 'avg_k'),\n"
        "                    verbose=False)\n"
        "for row in report.table():\n"
        "    print(f\"layer {row['layer']}  {row['method']:<12} coverage@top-{report.top_k} {row['coverage']:.3f}  \"\n"
        "          f\"random {row['random_mean']:.3f}±{row['random_std']:.3f}  gain {row['gain_points']:+.1f} pts  \"\n"
        "          f\"modularity {row['modularity']:.3f} (random {row['random_modularity']:.3f})\")"
    ),
    new_code_cell(
        "report.plot('coverage')\n"
        "plt.show()\n"
        "report.plot('coactivation', layer='3')\n"
        "plt.show()"
    ),
    new_markdown_cell(
        "## Run in MoE form\n\n"
        "`moe_form` masks the post-activations of every neuron outside the top-k experts that a router picks per "
        "input (exactly, with hooks) and restores the dense model on exit. `avg_k` is EMoE's parameter-free gate "
        "(input · mean of the expert's keys). Below: task accuracy versus the fraction of experts active in both "
        "hidden layers at once."
    ),
    new_code_cell(
        "print('dense', report.task['dense'])\n"
        "for meth, per_router in report.task['curves'].items():\n"
        "    for router, vals in per_router.items():\n"
        "        print(meth, router, [round(v['accuracy'], 4) for v in vals], 'at fractions', report.task['fractions'])\n"
        "report.plot('task')\n"
        "plt.show()"
    ),
    new_code_cell(
        "x, y = data.load_mnist('test').tensors(range(1000))\n"
        "parts = report.partitions['activations']\n"
        "with moe.moe_form(model, {'5': parts['5']}, top_k=4, router='avg_k') as state:\n"
        "    acc_one_layer = float((model(x).argmax(1) == y).float().mean())\n"
        "print('only layer 5 in MoE form, 4 of 16 experts:', acc_one_layer)\n"
        "print('expert loads (how often each expert was chosen):', state.loads['5'].tolist())\n"
        "print('dense again after the context:', float((model(x).argmax(1) == y).float().mean()))\n\n"
        "# MoEfication form: the layer's weights split into experts, and merged back exactly\n"
        "experts = moe.to_experts(model, '5', parts['5'])\n"
        "w_in, b_in, w_out, b_out = experts.merge()\n"
        "print('expert weights', tuple(experts.w_in.shape), '| merge is exact:', torch.equal(w_in, model[4].weight))"
    ),
    new_markdown_cell(
        "## A TransformerLens model: a small TokFSM transformer\n\n"
        "On TransformerLens models the FFN layers are `blocks.L.mlp` (hooks `blocks.L.mlp.hook_pre` / "
        "`hook_post`). GELU works too: an expert's score is the sum of its neurons' *positive* post-activations; "
        "the small negative GELU outputs carry no mass (the report gives their share as `negative_mass_share`). "
        "We train a small GELU model for 100 steps here; the benchmark uses the project's full 4-layer "
        "models (`codebook.tokfsm.pretrained('relu' | 'gelu')`)."
    ),
    new_code_cell(
        "from codebook.tokfsm import TokFSM, make_model, train_model\n\n"
        "fsm = TokFSM()\n"
        "lm = make_model('gelu', n_layers=2, d_model=64, d_mlp=256, n_heads=2, seed=0)\n"
        "train_model(lm, fsm, steps=100, batch_size=32, verbose=False)\n"
        "tokens = fsm.sample(48, seed=100)[:, :128]\n"
        "fit_tok, held_tok = list(torch.split(tokens[:32], 16)), [tokens[32:]]\n"
        "lm_report = moe.detect(lm, fit_tok, n_experts=16, method=['activations', 'random'],\n"
        "                       eval_loader=held_tok, routers=('avg_k', 'similarity'), fractions=(0.25, 0.5),\n"
        "                       verbose=False)\n"
        "for row in lm_report.table():\n"
        "    print(f\"{row['layer']}  {row['method']:<12} coverage {row['coverage']:.3f}  random {row['random_mean']:.3f}  \"\n"
        "          f\"gain {row['gain_points']:+.1f} pts  negative GELU mass share \"\n"
        "          f\"{lm_report.metrics[row['layer']]['negative_mass_share']:.3f}\")\n"
        "print('next-token accuracy dense', round(lm_report.task['dense']['accuracy'], 4), '| activations/avg_k at 25%, 50%:',\n"
        "      [round(v['accuracy'], 4) for v in lm_report.task['curves']['activations']['avg_k']])"
    ),
    new_markdown_cell(
        "## GPT-2 (when the weights are available)\n\n"
        "Not run here (tests and tutorials never download). With the weights in the Hugging Face cache:\n\n"
        "```python\n"
        "from transformer_lens.model_bridge import TransformerBridge\n"
        "gpt2 = TransformerBridge.boot_transformers('gpt2')            # d_mlp = 3072, GELU (gelu_new)\n"
        "toks = gpt2.to_tokens(['some text ...'] * 8)                   # any LongTensor batches\n"
        "report = moe.detect(gpt2, [toks], layers=[0, 6, 11], n_experts=64, method=['weights', 'activations'])\n"
        "```\n\n"
        "64 experts of 48 neurons; the HF `Conv1D` weights of GPT-2 are recognised (they are stored transposed)."
    ),
    new_code_cell(
        "report.save('moe_mnist')\n"
        "again = moe.MoEReport.load('moe_mnist')\n"
        "print(again.layers, again.methods, again.coverage('3', 'activations'))"
    ),
]


def main() -> None:
    write_notebook(CELLS, "05_emergent_moe.ipynb")


if __name__ == "__main__":
    main()
