# %% [markdown]
# # 01 · Getting started: real data, a reference model, an external ONNX network
#
# This notebook loads MNIST from its standard on-disk layout (no download), trains — or loads from the cache — the reference ReLU MLP, shows a few predictions, and runs a VNN-COMP 2021 network imported from ONNX. It runs in about a minute on a CPU.
#
# The data root is `$NEUROSPEC_DATA`, else `../shared/data`.

# %%
import matplotlib.pyplot as plt
import torch

from probe import data
from probe.zoo import evaluate, load_vnncomp, train_reference

train, test = data.load_mnist('train'), data.load_mnist('test')
print(len(train), 'training and', len(test), 'test images; classes:', test.classes)
x_test, y_test = test.tensors()
print('pixel range', float(x_test.min()), float(x_test.max()), '- mean', round(float(x_test.mean()), 4))

# %% [markdown]
# ## The reference MNIST MLP (784-256-256-10, ReLU)
#
# `train_reference` is seeded and caches its weights as safetensors + JSON; the second call loads them.

# %%
mlp = train_reference('mnist-mlp', seed=0, verbose=False)
print(mlp)
print({k: mlp.reference_info[k] for k in ('test_accuracy', 'train_seconds', 'n_parameters')})

# %%
with torch.no_grad():
    probs = mlp(x_test[:8]).softmax(1)
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, img, label, p in zip(axes, x_test[:8], y_test[:8], probs, strict=True):
    ax.imshow(img[0], cmap='gray')
    ax.set_title(f'y={int(label)} pred={int(p.argmax())}\n{float(p.max()):.2f}', fontsize=9)
    ax.axis('off')
plt.show()

# %% [markdown]
# ## An external network: VNN-COMP 2021 `mnist-net_256x4.onnx`
#
# Imported into torch with `nn.ReLU` modules, so every analysis in `probe` can hook its ReLUs.

# %%
net = load_vnncomp('mnist-256x4')
print('ReLU layers:', net.relu_names())
print('test accuracy: reference MLP', round(evaluate(mlp, x_test, y_test), 4),
      '| mnist-net_256x4', round(evaluate(net, x_test, y_test), 4))
