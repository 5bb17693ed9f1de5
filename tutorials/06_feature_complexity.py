# %% [markdown]
# # 06 · Feature complexity by iterative feature merging
#
# How many *different* features does a layer really compute? Chen, Zhou and Yan (ICLR 2024) answer by merging features that are (nearly) the same function until none are left: per layer, the closest pair (squared distance of their incoming and outgoing weights) is merged while `d_min <= beta * d_max`. The number of features left is the layer's **feature complexity**; the merged network is narrower.
#
# `probe.complexity` finds the layers (feature groups) automatically with `torch.fx` — Linear, Conv2d, BatchNorm, ReLU, Flatten, pooling, residual adds — and works on ONNX networks too. Runs on a CPU in about a minute.

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

from probe import complexity, data
from probe.zoo import load_vnncomp

torch.manual_seed(0)
test = data.load_mnist('test').subset(2000)
x, y = test.tensors()

# %% [markdown]
# ## Exact duplicates: the `exact` and the `paper` merge rule
#
# A small conv net with BatchNorm whose channels 4..7 copy channels 0..3 (each copy carries half the outgoing weight, so the function is unchanged). Merging at a tiny beta merges exactly the copies. The `exact` rule (BatchNorm folded, producers averaged, consumers summed) keeps the function; the published rule sums BatchNorm statistics and mis-scales the merged channels by sqrt(2).

# %%
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()
with torch.no_grad():
    bn = net[1]
    bn.weight.uniform_(0.5, 2)
    bn.bias.uniform_(-0.5, 0.5)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2)
    net[0].weight[4:] = net[0].weight[:4]
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t[4:] = t[:4]
    w = net[5].weight.view(10, 8, 196)
    w[:, :4] /= 2
    w[:, 4:] = w[:, :4]

for rule in ('exact', 'paper'):
    rep = complexity.measure(net, beta=1e-6, rule=rule, input_shape=(1, 28, 28))
    with torch.no_grad():
        err = float((rep.merged_model(x) - net(x)).norm() / net(x).norm())
    print(f'{rule:5s}: merged {rep.groups[0].merged_groups}, relative output change {err:.1e}')

# %% [markdown]
# ## A real network: VNN-COMP 2021 `mnist-net_256x2` (ONNX)
#
# The layers are found from the ONNX graph. `measure` returns the complexity per layer, the merged groups, the merged `nn.Module`, and parameters/FLOPs before and after.

# %%
net = load_vnncomp('mnist-256x2')
report = complexity.measure(net, beta=0.1)
print('complexity per layer:', report.complexity, 'of', report.widths)
print(f'parameters removed: {100 * report.params_removed:.1f}%, FLOPs removed: '
      f'{100 * report.flops_removed:.1f}%, {report.seconds:.1f} s')
print('largest merged group in gemm_0:', max(report.groups[0].merged_groups, key=len))
def acc(m):
    return float((m(x).argmax(1) == y).float().mean())


with torch.no_grad():
    print('accuracy: original', acc(net), '| merged', acc(report.merged_model))
report.plot()
plt.show()

# %% [markdown]
# ## Accuracy versus parameters: a beta sweep (no fine-tuning)
#
# Larger beta merges more. Note how sharp the transition is: once merged features start to dominate `d_max`, a layer collapses within a few rounds.

# %%
res = complexity.sweep(net, [0.05, 0.1, 0.12, 0.15, 0.18, 0.2], data.make_loader(test, batch_size=1000))
for p in res.points:
    print(f'beta={p.beta:<5g} accuracy={p.accuracy:.4f} params kept={p.params / res.params_before:.3f} '
          f'complexity={p.complexity}')
best = res.best_within(0.01)
print('fewest parameters within 1 point of', res.baseline_accuracy, ':', best)
res.plot()
plt.show()

# %% [markdown]
# ## Deeper: complexity per layer of `mnist-net_256x6`

# %%
deep = complexity.measure(load_vnncomp('mnist-256x6'), beta=0.2)
print(deep.complexity)
deep.plot()
plt.show()

# %% [markdown]
# ## Save, load, and what is not supported
#
# Reports save as JSON + safetensors; give the original model to `load` to rebuild the merged one. A layer that merging cannot follow is named in the error.

# %%
report.save('ifm_256x2')
again = complexity.ComplexityReport.load('ifm_256x2', model=net)
print(again.complexity, again.merged_model(x[:2]).shape)

from probe.core.errors import ModelError

try:
    complexity.measure(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2)), beta=0.1)
except ModelError as err:
    print('ModelError:', str(err)[:120], '...')
