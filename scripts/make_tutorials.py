"""Write the tutorial notebooks from their cell sources (keeps notebooks reviewable as Python).

Run: .venv/bin/python scripts/make_tutorials.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent.parent / "tutorials"

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


def main() -> None:
    OUT.mkdir(exist_ok=True)
    nb = new_notebook(cells=GETTING_STARTED, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.write(nb, OUT / "01_getting_started.ipynb")


if __name__ == "__main__":
    main()
