"""Write the tutorial notebooks from their cell sources (keeps notebooks reviewable as Python).

Run: .venv/bin/python scripts/make_tutorials.py
"""

from __future__ import annotations

from _notebooks import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

GETTING_STARTED = [
    new_markdown_cell(
        "# 01 · Getting started: real data, a reference model, an external ONNX network\n\n"
        "This notebook loads MNIST from its standard on-disk layout (no download), trains — or loads from the "
        "cache — the reference ReLU MLP, shows a few predictions, and runs a VNN-COMP 2021 network imported "
        "from ONNX. It runs in about a minute on a CPU.\n\n"
        "The data root is `$NEUROSPEC_DATA`, else `../shared/data`."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "from probe import data\n"
        "from probe.models import evaluate, train_reference\n"
        "from verify.onnx_io import load_vnncomp\n\n"
        "train, test = data.load_mnist('train'), data.load_mnist('test')\n"
        "print(len(train), 'training and', len(test), 'test images; classes:', test.classes)\n"
        "x_test, y_test = test.tensors()\n"
        "print('pixel range', float(x_test.min()), float(x_test.max()), '- mean', round(float(x_test.mean()), 4))"
    ),
    new_markdown_cell("## The reference MNIST MLP (784-256-256-10, ReLU)\n\n`train_reference` is seeded and caches "
                      "its weights as safetensors + JSON; the second call loads them."),
    new_code_cell(
        "mlp = train_reference('mnist-mlp', seed=0, verbose=False)\n"
        "print(mlp)\n"
        "print({k: mlp.reference_info[k] for k in ('test_accuracy', 'train_seconds', 'n_parameters')})"
    ),
    new_code_cell(
        "with torch.no_grad():\n"
        "    probs = mlp(x_test[:8]).softmax(1)\n"
        "fig, axes = plt.subplots(1, 8, figsize=(12, 2))\n"
        "for ax, img, label, p in zip(axes, x_test[:8], y_test[:8], probs):\n"
        "    ax.imshow(img[0], cmap='gray')\n"
        "    ax.set_title(f'y={int(label)} pred={int(p.argmax())}\\n{float(p.max()):.2f}', fontsize=9)\n"
        "    ax.axis('off')\n"
        "plt.show()"
    ),
    new_markdown_cell("## An external network: VNN-COMP 2021 `mnist-net_256x4.onnx`\n\nImported into torch with "
                      "`nn.ReLU` modules, so every analysis in `probe` can hook its ReLUs."),
    new_code_cell(
        "net = load_vnncomp('mnist-256x4')\n"
        "print('ReLU layers:', net.relu_names())\n"
        "print('test accuracy: reference MLP', round(evaluate(mlp, x_test, y_test), 4),\n"
        "      '| mnist-net_256x4', round(evaluate(net, x_test, y_test), 4))"
    ),
]

NAP = [
    new_markdown_cell(
        "# 02 · Neural activation patterns (NAPs)\n\n"
        "A NAP of class c fixes the on/off state of the neurons that (almost) always take the same state on "
        "class-c inputs (Geng, Le et al., ICML 2023). A neuron is *active* iff its pre-activation is > 0. With "
        "`delta`, a neuron enters NAP_c's active set if it is on for at least `delta` of the correctly "
        "classified class-c training inputs, and its inactive set if it is on for at most `1 - delta` of them.\n\n"
        "We mine the NAPs of the VNN-COMP 2021 network `mnist-net_256x4.onnx` and of the reference MNIST MLP, "
        "then measure **coverage** (share of class-c test inputs that follow NAP_c) and **precision** (share of "
        "inputs following NAP_c that are labelled c). About a minute on CPU."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n\n"
        "from probe import data, nap\n"
        "from probe.models import train_reference\n"
        "from verify.onnx_io import load_vnncomp\n\n"
        "train = data.load_mnist('train').subset(20_000)   # the paper uses 50,000; see benchmarks/nap_mnist.py\n"
        "test = data.load_mnist('test')\n"
        "train_loader = data.make_loader(train, batch_size=1000)\n"
        "test_loader = data.make_loader(test, batch_size=1000)"
    ),
    new_markdown_cell("## An external network: `mnist-net_256x4.onnx`\n\nMining streams over the loader: memory is "
                      "O(classes x neurons). We mine once at `delta=1.0`; other deltas are re-thresholded from the "
                      "stored counts, without running the model again."),
    new_code_cell(
        "net = load_vnncomp('mnist-256x4')\n"
        "naps = nap.mine(net, train_loader, delta=1.0, verbose=False)\n"
        "print('ReLU layers:', naps.layers, '| neurons:', naps.num_neurons())\n"
        "print('counted samples per class:', naps.n_samples.tolist())\n"
        "for d in (1.0, 0.99, 0.95):\n"
        "    print(f'delta={d}: NAP sizes', naps.with_delta(d).sizes()['total'])"
    ),
    new_code_cell(
        "deltas = [1.0, 0.99, 0.95, 0.85]\n"
        "stats = naps.sweep(net, test_loader, deltas, verbose=False)\n"
        "for st in stats:\n"
        "    print(f'delta={st.delta}: coverage', [round(c, 3) for c in st.coverage])\n"
        "    print(f'{\"\":11}precision', [round(p, 3) for p in st.precision])"
    ),
    new_code_cell(
        "naps99 = naps.with_delta(0.99)\n"
        "naps99.plot('heatmap', max_neurons=256)\n"
        "naps.plot('delta', stats=stats)\n"
        "plt.show()"
    ),
    new_markdown_cell("Classes whose NAPs share no neuron with opposite states may still overlap; `disjoint_pairs()` "
                      "is the cheap check (True = provably no input follows both). `verify` proves the rest."),
    new_code_cell(
        "d = naps99.disjoint_pairs()\n"
        "print('provably disjoint class pairs at delta=0.99:', int(d.triu(1).sum()), 'of 45')\n"
        "naps99.save('naps_256x4.json')\n"
        "print(nap.NAPSet.load('naps_256x4.json') == naps99)"
    ),
    new_markdown_cell("## The reference MNIST MLP\n\nAny torch model with `nn.ReLU` modules (or traceable `F.relu` "
                      "calls) works the same way."),
    new_code_cell(
        "mlp = train_reference('mnist-mlp', verbose=False)\n"
        "naps_mlp = nap.mine(mlp, train_loader, delta=1.0, verbose=False)\n"
        "for st in naps_mlp.sweep(mlp, test_loader, [1.0, 0.99, 0.95], verbose=False):\n"
        "    n = sum(st.coverage) / 10\n"
        "    p = sum(st.precision) / 10\n"
        "    print(f'delta={st.delta}: mean coverage {n:.3f}, mean precision {p:.3f}, mean NAP size',\n"
        "          sum(naps_mlp.with_delta(st.delta).sizes()['total']) / 10)"
    ),
]

VERIFY = [
    new_markdown_cell(
        "# 03 · Verifying ReLU networks: ONNX + VNN-LIB, counterexamples, NAP robustness\n\n"
        "`verify` proves or refutes properties with a sound MILP backend (CBC or HiGHS through PuLP) and branch "
        "and bound on ReLU splits, after a cheap attack and (alpha-)CROWN bounds. Here: two VNN-COMP 2021 properties of `mnist-net_256x2.onnx` — one "
        "violated, one that holds — and a NAP robustness query on `mnist-net_256x4.onnx`. About a minute on CPU."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n\n"
        "import verify\n"
        "from probe import data, nap\n"
        "from probe._paths import data_root\n"
        "from verify.network import ReluNetwork\n"
        "from verify.onnx_io import load_vnncomp\n"
        "from verify.vnnlib import read_vnnlib\n\n"
        "bench = data_root() / 'vnncomp2021' / 'mnistfc'\n"
        "net = ReluNetwork.from_onnx(bench / 'mnist-net_256x2.onnx')\n"
        "net"
    ),
    new_markdown_cell("## A violated property: a counterexample, re-checked\n\n`prop_7_0.03`: every image within "
                      "L-inf distance 0.03 of test image 7 must be classified as its label."),
    new_code_cell(
        "spec = read_vnnlib(bench / 'prop_7_0.03.vnnlib', net.n_inputs, net.n_outputs)\n"
        "res = verify.verify(net, spec, solver='cbc', timeout=60)\n"
        "print(res.status, '| VNN-COMP:', res.vnncomp, '| decided by', res.method, f\"in {res.timings['total']:.2f} s\")\n"
        "cex = res.counterexample\n"
        "centre = (spec.lower + spec.upper) / 2\n"
        "print('max |x - centre| =', float(np.abs(cex.x - centre).max()))\n"
        "print('onnxruntime logits:', np.round(cex.y_onnx, 3))"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(1, 3, figsize=(9, 3))\n"
        "for ax, img, title in zip(axes, [centre, cex.x, cex.x - centre],\n"
        "                          ['box centre', f'counterexample (pred {cex.y_onnx.argmax()})', 'difference']):\n"
        "    ax.imshow(img.reshape(28, 28), cmap='gray' if title != 'difference' else 'bwr')\n"
        "    ax.set_title(title)\n"
        "    ax.axis('off')\n"
        "plt.show()\n"
        "print(res.vnncomp_text()[:120], '...')"
    ),
    new_markdown_cell("## A property that holds\n\n`prop_13_0.03` needs more than bounds: (alpha-)CROWN leaves unstable "
                      "neurons and some clauses open. Each open clause first gets a short MILP try (one binary per "
                      "unstable neuron); what that leaves open goes to branch and bound, which splits unstable neurons "
                      "into active/inactive domains and bounds each with optimised alpha/beta-CROWN."),
    new_code_cell(
        "spec = read_vnnlib(bench / 'prop_13_0.03.vnnlib', net.n_inputs, net.n_outputs)\n"
        "res = verify.verify(net, spec, solver='highs', timeout=120)\n"
        "print(res.status, res.vnncomp, res.method, {k: round(v, 2) for k, v in res.timings.items()})\n"
        "print('unstable neurons per layer:', res.stats['unstable'], '| binaries:', res.stats.get('binaries'))\n"
        "for row in res.stats.get('bab', []):\n"
        "    print(f\"BaB clause {row['clause']}: {row['status']}, {row['domains']} domains, depth {row['max_depth']}, \"\n"
        "          f\"{row['seconds']} s\")"
    ),
    new_markdown_cell("## NAP robustness\n\nMine NAP_1 of `mnist-net_256x4` (delta 0.99), then prove that every input in "
                      "[0, 1]^784 that follows it is classified 1 — one query per competitor class. The NAP fixes most "
                      "neurons, which removes their binaries."),
    new_code_cell(
        "net4 = ReluNetwork.from_onnx(bench / 'mnist-net_256x4.onnx')\n"
        "train = data.load_mnist('train').subset(20_000)\n"
        "naps = nap.mine(load_vnncomp('mnist-256x4'), data.make_loader(train, batch_size=1000), delta=0.99, verbose=False)\n"
        "results = verify.nap_robustness(net4, naps, classes=[1], solver='highs', timeout=60)\n"
        "for j, r in zip([c for c in range(10) if c != 1], results[1]):\n"
        "    print(f'class 1 vs {j}: {r.status:9s} {r.timings[\"total\"]:.2f} s, binaries {r.stats.get(\"binaries\")}')"
    ),
]


def main() -> None:
    write_notebook(GETTING_STARTED, "01_getting_started.ipynb")
    write_notebook(NAP, "02_neural_activation_patterns.ipynb")
    write_notebook(VERIFY, "03_verification.ipynb")


if __name__ == "__main__":
    main()
