"""NAP mining on real networks and data, checked against an independent reference: onnxruntime exposes the
pre-activations (the inputs of every Relu node) of the original ONNX file, and numpy counts them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from probe import data, nap
from probe.zoo.reference import train_reference
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp

pytestmark = pytest.mark.integration

N_TRAIN = 3000


def _reference_counts(onnx_path, x: np.ndarray, y: np.ndarray, classes: int = 10):
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    relu_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Relu"]
    for name in relu_inputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    outs = [sess.run(None, {inp: x[i : i + 1].reshape(1, 784, 1)}) for i in range(len(x))]
    logits = np.concatenate([o[0] for o in outs])
    keep = logits.argmax(1) == y
    counts = []
    for k in range(len(relu_inputs)):
        pre = np.concatenate([o[1 + k].reshape(1, -1) for o in outs])
        counts.append(np.stack([(pre[keep & (y == c)] > 0).sum(0) for c in range(classes)]))
    n = np.array([(keep & (y == c)).sum() for c in range(classes)])
    return n, counts


def test_mnist_256x2_counts_equal_onnxruntime(data_root):
    train = data.load_mnist("train", root=data_root).subset(N_TRAIN)
    x, y = train.tensors()
    net = load_vnncomp("mnist-256x2", root=data_root)
    naps = nap.mine(net, data.make_loader(train, batch_size=500), delta=0.99, verbose=False)
    n, counts = _reference_counts(data_root / VNNCOMP_NETWORKS["mnist-256x2"], x.numpy(), y.numpy())
    assert naps.n_samples.tolist() == n.tolist()
    assert len(naps.layers) == len(counts) == 2
    for layer, ref in zip(naps.layers, counts, strict=True):
        assert np.array_equal(naps.counts[layer].numpy(), ref), layer


def test_reference_mlp_naps_and_stats(data_root, tmp_path):
    model = train_reference("mnist-mlp", root=data_root, seed=0, verbose=False)
    train = data.load_mnist("train", root=data_root).subset(10_000)
    test = data.load_mnist("test", root=data_root).subset(2000)
    naps = nap.mine(model, data.make_loader(train, batch_size=1000), delta=0.99, verbose=False)
    assert naps.layers == ["3", "5"] and naps.num_neurons() == 512
    assert not naps.empty_classes
    stats = naps.sweep(model, data.make_loader(test, batch_size=1000), [1.0, 0.99], verbose=False)
    # Lower delta constrains more neurons, so fewer inputs follow: coverage cannot increase.
    assert all(a >= b for a, b in zip(stats[0].coverage, stats[1].coverage, strict=True))
    assert min(stats[0].coverage) > 0.5
    back = nap.NAPSet.load(naps.save(tmp_path / "n.json"))
    assert back == naps


def test_cli_mine_and_stats(data_root, tmp_path, capsys):
    from probe.cli import main

    out = tmp_path / "naps.json"
    onnx_path = data_root / VNNCOMP_NETWORKS["mnist-256x4"]
    assert main(["nap", "mine", "--onnx", str(onnx_path), "--data", "mnist", "--limit", "2000", "--delta", "0.99",
                 "--out", str(out), "--root", str(data_root), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["nap", "stats", str(out), "--data", "mnist", "--split", "test", "--limit", "1000",
                 "--root", str(data_root), "--quiet", "--deltas", "1.0", "0.99"]) == 0
    text = capsys.readouterr().out
    assert "coverage" in text and "0.99" in text
    assert main(["nap", "stats", str(tmp_path / "nope.json"), "--data", "mnist"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cnn_reference_per_position(data_root):
    model = train_reference("mnist-cnn", root=data_root, seed=0, verbose=False)
    train = data.load_mnist("train", root=data_root).subset(1000)
    naps = nap.mine(model, data.make_loader(train, batch_size=500), verbose=False)
    assert naps.shapes[naps.layers[0]] == (16, 14, 14)
    assert naps.counts[naps.layers[0]].shape == (10, 16 * 14 * 14)
    with torch.no_grad():
        assert naps.follows(model, train.tensors()[0][:10]).shape == (10, 10)
