"""Write tutorials/06_feature_complexity.ipynb from its cell sources (keeps the notebook reviewable as Python).

Run: .venv/bin/python scripts/make_tutorial_complexity.py
"""

from __future__ import annotations

from _notebooks import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# 06 · Feature complexity by iterative feature merging\n\n"
        "How many *different* features does a layer really compute? Chen, Zhou and Yan (ICLR 2024) answer by "
        "merging features that are (nearly) the same function until none are left: per layer, the closest pair "
        "(squared distance of their incoming and outgoing weights) is merged while `d_min <= beta * d_max`. The "
        "number of features left is the layer's **feature complexity**; the merged network is narrower.\n\n"
        "`probe.complexity` finds the layers (feature groups) automatically with `torch.fx` — Linear, Conv2d, "
        "BatchNorm, ReLU, Flatten, pooling, residual adds — and works on ONNX networks too. Runs on a CPU in "
        "about a minute."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n"
        "from torch import nn\n\n"
        "from probe import complexity, data\n"
        "from verify.onnx_io import load_vnncomp\n\n"
        "torch.manual_seed(0)\n"
        "test = data.load_mnist('test').subset(2000)\n"
        "x, y = test.tensors()"
    ),
    new_markdown_cell(
        "## Exact duplicates: the `exact` and the `paper` merge rule\n\n"
        "A small conv net with BatchNorm whose channels 4..7 copy channels 0..3 (each copy carries half the "
        "outgoing weight, so the function is unchanged). Merging at a tiny beta merges exactly the copies. "
        "The `exact` rule (BatchNorm folded, producers averaged, consumers summed) keeps the function; the "
        "published rule sums BatchNorm statistics and mis-scales the merged channels by sqrt(2)."
    ),
    new_code_cell(
        "net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()\n"
        "with torch.no_grad():\n"
        "    bn = net[1]\n"
        "    bn.weight.uniform_(0.5, 2); bn.bias.uniform_(-0.5, 0.5)\n"
        "    bn.running_mean.uniform_(-0.2, 0.2); bn.running_var.uniform_(0.5, 2)\n"
        "    net[0].weight[4:] = net[0].weight[:4]\n"
        "    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):\n"
        "        t[4:] = t[:4]\n"
        "    w = net[5].weight.view(10, 8, 196)\n"
        "    w[:, :4] /= 2; w[:, 4:] = w[:, :4]\n\n"
        "for rule in ('exact', 'paper'):\n"
        "    rep = complexity.measure(net, beta=1e-6, rule=rule, input_shape=(1, 28, 28))\n"
        "    with torch.no_grad():\n"
        "        err = float((rep.merged_model(x) - net(x)).norm() / net(x).norm())\n"
        "    print(f'{rule:5s}: merged {rep.groups[0].merged_groups}, relative output change {err:.1e}')"
    ),
    new_markdown_cell(
        "## A real network: VNN-COMP 2021 `mnist-net_256x2` (ONNX)\n\n"
        "The layers are found from the ONNX graph. `measure` returns the complexity per layer, the merged "
        "groups, the merged `nn.Module`, and parameters/FLOPs before and after."
    ),
    new_code_cell(
        "net = load_vnncomp('mnist-256x2')\n"
        "report = complexity.measure(net, beta=0.1)\n"
        "print('complexity per layer:', report.complexity, 'of', report.widths)\n"
        "print(f'parameters removed: {100 * report.params_removed:.1f}%, FLOPs removed: '\n"
        "      f'{100 * report.flops_removed:.1f}%, {report.seconds:.1f} s')\n"
        "print('largest merged group in gemm_0:', max(report.groups[0].merged_groups, key=len))\n"
        "with torch.no_grad():\n"
        "    acc = lambda m: float((m(x).argmax(1) == y).float().mean())\n"
        "    print('accuracy: original', acc(net), '| merged', acc(report.merged_model))\n"
        "report.plot(); plt.show()"
    ),
    new_markdown_cell(
        "## Accuracy versus parameters: a beta sweep (no fine-tuning)\n\n"
        "Larger beta merges more. Note how sharp the transition is: once merged features start to dominate "
        "`d_max`, a layer collapses within a few rounds."
    ),
    new_code_cell(
        "res = complexity.sweep(net, [0.05, 0.1, 0.12, 0.15, 0.18, 0.2], data.make_loader(test, batch_size=1000))\n"
        "for p in res.points:\n"
        "    print(f'beta={p.beta:<5g} accuracy={p.accuracy:.4f} params kept={p.params / res.params_before:.3f} '\n"
        "          f'complexity={p.complexity}')\n"
        "best = res.best_within(0.01)\n"
        "print('fewest parameters within 1 point of', res.baseline_accuracy, ':', best)\n"
        "res.plot(); plt.show()"
    ),
    new_markdown_cell("## Deeper: complexity per layer of `mnist-net_256x6`"),
    new_code_cell(
        "deep = complexity.measure(load_vnncomp('mnist-256x6'), beta=0.2)\n"
        "print(deep.complexity)\n"
        "deep.plot(); plt.show()"
    ),
    new_markdown_cell(
        "## Save, load, and what is not supported\n\n"
        "Reports save as JSON + safetensors; give the original model to `load` to rebuild the merged one. "
        "A layer that merging cannot follow is named in the error."
    ),
    new_code_cell(
        "report.save('ifm_256x2')\n"
        "again = complexity.ComplexityReport.load('ifm_256x2', model=net)\n"
        "print(again.complexity, again.merged_model(x[:2]).shape)\n\n"
        "from probe.errors import ModelError\n"
        "try:\n"
        "    complexity.measure(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2)), beta=0.1)\n"
        "except ModelError as err:\n"
        "    print('ModelError:', str(err)[:120], '...')"
    ),
]


def main() -> None:
    write_notebook(CELLS, "06_feature_complexity.ipynb")


if __name__ == "__main__":
    main()
