# %% [markdown]
# # 02 · Neural activation patterns (NAPs)
#
# A NAP of class c fixes the on/off state of the neurons that (almost) always take the same state on class-c inputs (Geng, Le et al., ICML 2023). A neuron is *active* iff its pre-activation is > 0. With `delta`, a neuron enters NAP_c's active set if it is on for at least `delta` of the correctly classified class-c training inputs, and its inactive set if it is on for at most `1 - delta` of them.
#
# We mine the NAPs of the VNN-COMP 2021 network `mnist-net_256x4.onnx` and of the reference MNIST MLP, then measure **coverage** (share of class-c test inputs that follow NAP_c) and **precision** (share of inputs following NAP_c that are labelled c). About a minute on CPU.

# %%
import matplotlib.pyplot as plt

from probe import data, nap
from probe.zoo import load_vnncomp, train_reference

train = data.load_mnist('train').subset(20_000)   # the paper uses 50,000; see benchmarks/nap_mnist.py
test = data.load_mnist('test')
train_loader = data.make_loader(train, batch_size=1000)
test_loader = data.make_loader(test, batch_size=1000)

# %% [markdown]
# ## An external network: `mnist-net_256x4.onnx`
#
# Mining streams over the loader: memory is O(classes x neurons). We mine once at `delta=1.0`; other deltas are re-thresholded from the stored counts, without running the model again.

# %%
net = load_vnncomp('mnist-256x4')
naps = nap.mine(net, train_loader, delta=1.0, verbose=False)
print('ReLU layers:', naps.layers, '| neurons:', naps.num_neurons())
print('counted samples per class:', naps.n_samples.tolist())
for d in (1.0, 0.99, 0.95):
    print(f'delta={d}: NAP sizes', naps.with_delta(d).sizes()['total'])

# %%
deltas = [1.0, 0.99, 0.95, 0.85]
stats = naps.sweep(net, test_loader, deltas, verbose=False)
for st in stats:
    print(f'delta={st.delta}: coverage', [round(c, 3) for c in st.coverage])
    print(f'{"":11}precision', [round(p, 3) for p in st.precision])

# %%
naps99 = naps.with_delta(0.99)
naps99.plot('heatmap', max_neurons=256)
naps.plot('delta', stats=stats)
plt.show()

# %% [markdown]
# Classes whose NAPs share no neuron with opposite states may still overlap; `disjoint_pairs()` is the cheap check (True = provably no input follows both). `verify` proves the rest.

# %%
d = naps99.disjoint_pairs()
print('provably disjoint class pairs at delta=0.99:', int(d.triu(1).sum()), 'of 45')
naps99.save('naps_256x4.json')
print(nap.NAPSet.load('naps_256x4.json') == naps99)

# %% [markdown]
# ## The reference MNIST MLP
#
# Any torch model with `nn.ReLU` modules (or traceable `F.relu` calls) works the same way.

# %%
mlp = train_reference('mnist-mlp', verbose=False)
naps_mlp = nap.mine(mlp, train_loader, delta=1.0, verbose=False)
for st in naps_mlp.sweep(mlp, test_loader, [1.0, 0.99, 0.95], verbose=False):
    n = sum(st.coverage) / 10
    p = sum(st.precision) / 10
    print(f'delta={st.delta}: mean coverage {n:.3f}, mean precision {p:.3f}, mean NAP size',
          sum(naps_mlp.with_delta(st.delta).sizes()['total']) / 10)
