# %% [markdown]
# # 03 · Verifying ReLU networks: ONNX + VNN-LIB, counterexamples, NAP robustness
#
# `verify` proves or refutes properties with a sound MILP backend (CBC or HiGHS through PuLP) and branch and bound on ReLU splits, after a cheap attack and (alpha-)CROWN bounds. Here: two VNN-COMP 2021 properties of `mnist-net_256x2.onnx` — one violated, one that holds — a counterexample on a convolutional CIFAR-10 network, and a NAP robustness query on `mnist-net_256x4.onnx`. About a minute on CPU.

# %%
import matplotlib.pyplot as plt
import numpy as np

import verify
from probe import data, nap
from probe.core.paths import data_root
from probe.zoo import load_vnncomp
from verify.network import ReluNetwork
from verify.vnnlib import read_vnnlib

bench = data_root() / 'vnncomp2021' / 'mnistfc'
net = ReluNetwork.from_onnx(bench / 'mnist-net_256x2.onnx')
net

# %% [markdown]
# ## A violated property: a counterexample, re-checked
#
# `prop_7_0.03`: every image within L-inf distance 0.03 of test image 7 must be classified as its label.

# %%
spec = read_vnnlib(bench / 'prop_7_0.03.vnnlib', net.n_inputs, net.n_outputs)
res = verify.verify(net, spec, solver='cbc', timeout=60)
print(res.status, '| VNN-COMP:', res.vnncomp, '| decided by', res.method, f"in {res.timings['total']:.2f} s")
cex = res.counterexample
centre = (spec.lower + spec.upper) / 2
print('max |x - centre| =', float(np.abs(cex.x - centre).max()))
print('onnxruntime logits:', np.round(cex.y_onnx, 3))

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, img, title in zip(axes, [centre, cex.x, cex.x - centre],
                          ['box centre', f'counterexample (pred {cex.y_onnx.argmax()})', 'difference'], strict=True):
    ax.imshow(img.reshape(28, 28), cmap='gray' if title != 'difference' else 'bwr')
    ax.set_title(title)
    ax.axis('off')
plt.show()
print(res.vnncomp_text()[:120], '...')

# %% [markdown]
# ## A property that holds
#
# `prop_13_0.03` needs more than bounds: (alpha-)CROWN leaves unstable neurons and some clauses open. Each open clause first gets a short MILP try (one binary per unstable neuron); what that leaves open goes to branch and bound, which splits unstable neurons into active/inactive domains and bounds each with optimised alpha/beta-CROWN.

# %%
spec = read_vnnlib(bench / 'prop_13_0.03.vnnlib', net.n_inputs, net.n_outputs)
res = verify.verify(net, spec, solver='highs', timeout=120)
print(res.status, res.vnncomp, res.method, {k: round(v, 2) for k, v in res.timings.items()})
print('unstable neurons per layer:', res.stats['unstable'], '| binaries:', res.stats.get('binaries'))
for row in res.stats.get('bab', []):
    print(f"BaB clause {row['clause']}: {row['status']}, {row['domains']} domains, depth {row['max_depth']}, "
          f"{row['seconds']} s")

# %% [markdown]
# ## A convolutional network
#
# The VNN-COMP 2021 `marabou-cifar10` networks are convolutional. `ReluNetwork` unrolls each convolution into a matrix (1.6% and 7.1% of whose entries are non-zero in their first two layers); the bound engine multiplies such sparse layers through sparse copies (`TorchNetwork.sparse`), which keeps bounds and branch and bound fast on them. The property below is targeted: "class 6 never beats every other class within eps 0.012 of test image 2317". Half of the attack's starts descend the sum of the clause's violated rows, which finds this counterexample in about a second (the max of the rows alone stalls between two competing classes).

# %%
from verify.bounds import TorchNetwork

cifar = data_root() / 'vnncomp2021' / 'marabou-cifar10'
cnet = ReluNetwork.from_onnx(cifar / 'cifar10_medium.onnx')
print(cnet, '| sparse layers:', TorchNetwork.of(cnet).sparse)
spec = read_vnnlib(cifar / 'networkcifar10_medium_index2317_eps0.012_target6_orig5.vnnlib', cnet.n_inputs,
                   cnet.n_outputs)
res = verify.verify(cnet, spec, solver='highs', timeout=60)
print(res.status, res.vnncomp, res.method, f"in {res.timings['total']:.2f} s;",
      'onnxruntime logits:', np.round(res.counterexample.y_onnx, 2))

# %% [markdown]
# ## NAP robustness
#
# Mine NAP_1 of `mnist-net_256x4` (delta 0.99), then prove that every input in [0, 1]^784 that follows it is classified 1 — one query per competitor class. The NAP fixes most neurons, which removes their binaries.

# %%
net4 = ReluNetwork.from_onnx(bench / 'mnist-net_256x4.onnx')
train = data.load_mnist('train').subset(20_000)
naps = nap.mine(load_vnncomp('mnist-256x4'), data.make_loader(train, batch_size=1000), delta=0.99, verbose=False)
results = verify.nap_robustness(net4, naps, classes=[1], solver='highs', timeout=60)
for j, r in zip([c for c in range(10) if c != 1], results[1], strict=True):
    print(f'class 1 vs {j}: {r.status:9s} {r.timings["total"]:.2f} s, binaries {r.stats.get("binaries")}')

# %% [markdown]
# ## NAP non-ambiguity
#
# No input should follow two classes' NAPs at once. A pair whose NAPs conflict (a neuron active in one and inactive in the other) is decided without a solver (method `nap-conflict`). For the other pairs, `starts` (here test images) seed the search for an input that follows both NAPs: PGD that keeps the NAPs' states, then activation-pattern LPs, before the bounds and the MILP try to prove that none exists.

# %%
test_x = data.load_mnist('test').tensors(range(500))[0].reshape(500, -1).numpy()
amb = verify.nap_ambiguity(net4, naps, pairs=[(1, 7), (3, 5)], solver='highs', timeout=30, starts=test_x)
for (i, j), r in amb.items():
    print(f'NAP_{i} and NAP_{j}: {r.status} ({r.method or r.message})')
