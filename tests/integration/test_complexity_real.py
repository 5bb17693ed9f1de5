"""Feature complexity on real networks and data: the VNN-COMP MNIST ONNX networks and a (briefly trained)
VGG-style CIFAR-10 network with BatchNorm, on MNIST / CIFAR-10 test images."""

from __future__ import annotations

import copy

import pytest
import torch

from probe import complexity, data
from probe.cli import main
from probe.zoo.reference import train_reference
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp

pytestmark = pytest.mark.integration


def _plant(net, producer: str, bn: str | None, consumer: str, k: int):
    net = copy.deepcopy(net).eval()
    mods = dict(net.named_modules())
    with torch.no_grad():
        p, c = mods[producer], mods[consumer]
        p.weight[k : 2 * k] = p.weight[:k]
        if p.bias is not None:
            p.bias[k : 2 * k] = p.bias[:k]
        if bn is not None:
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(mods[bn], key)[k : 2 * k] = getattr(mods[bn], key)[:k]
        c.weight[:, :k] /= 2
        c.weight[:, k : 2 * k] = c.weight[:, :k]
    return net


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return data.load_mnist("test", root=data_root).subset(2000).tensors()


@pytest.mark.parametrize("name,depth", [("mnist-256x2", 2), ("mnist-256x4", 4), ("mnist-256x6", 6)])
def test_vnncomp_networks_are_grouped_from_the_onnx_plan(data_root, name, depth):
    net = load_vnncomp(name, root=data_root)
    rep = complexity.measure(net, beta=0.05)
    assert [g.name for g in rep.groups] == [f"gemm_{i}" for i in range(depth)]
    assert all(g.width == 256 for g in rep.groups)
    assert rep.frozen == {f"gemm_{depth}": 10}
    x = torch.rand(3, 1, 28, 28)
    assert rep.merged_model(x).shape == net(x).shape == (3, 10)


def test_merging_256x2_keeps_accuracy_on_mnist(data_root, mnist_test):
    x, y = mnist_test
    net = load_vnncomp("mnist-256x2", root=data_root)
    rep = complexity.measure(net, beta=0.1)
    with torch.no_grad():
        before = float((net(x).argmax(1) == y).float().mean())
        after = float((rep.merged_model(x).argmax(1) == y).float().mean())
    assert rep.params_after < rep.params_before
    assert after >= before - 0.01


def test_exact_rule_on_planted_duplicates_in_256x2(data_root, mnist_test):
    x, _ = mnist_test
    net = _plant(load_vnncomp("mnist-256x2", root=data_root), "gemm_0", None, "gemm_1", 64)
    rep = complexity.measure(net, beta=1e-6, rule="exact")
    assert rep.complexity["gemm_0"] <= 256 - 64
    with torch.no_grad():
        y0, y1 = net(x), rep.merged_model(x)
    assert float((y1 - y0).norm() / y0.norm()) <= 1e-5


def test_vgg_with_batchnorm_planted_duplicates_and_sweep(data_root, tmp_path):
    model = train_reference("cifar10-vgg", root=data_root, epochs=1, train_subset=256, cache_dir=tmp_path,
                            verbose=False)
    test = data.load_cifar10("test", root=data_root).subset(300)
    x, _ = test.tensors()
    net = _plant(model, "12", "13", "15", 16)
    with torch.no_grad():
        y0 = net(x)
    exact = complexity.measure(net, beta=1e-6, rule="exact")
    paper = complexity.measure(net, beta=1e-6, rule="paper")
    assert exact.complexity["12"] <= 128 - 16
    with torch.no_grad():
        assert float((exact.merged_model(x) - y0).norm() / y0.norm()) <= 1e-5
        assert float((paper.merged_model(x) - y0).norm() / y0.norm()) > 1e-3  # summed BN variances mis-scale
    res = complexity.sweep(model, [0.05, 0.2], data.make_loader(test, batch_size=150))
    assert res.n_samples == 300 and len(res.points) == 2
    assert res.points[1].params <= res.points[0].params <= res.params_before


def test_cli_measure_and_reload(data_root, tmp_path, capsys):
    onnx = data_root / VNNCOMP_NETWORKS["mnist-256x2"]
    out = tmp_path / "rep"
    assert main(["complexity", "measure", "--onnx", str(onnx), "--beta", "0.1", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gemm_0" in text and "parameters" in text
    net = load_vnncomp("mnist-256x2", root=data_root)
    rep = complexity.ComplexityReport.load(out, model=net)
    x = torch.rand(4, 1, 28, 28)
    assert rep.merged_model(x).shape == (4, 10)


def test_cli_rejects_bad_beta(data_root, capsys):
    onnx = data_root / VNNCOMP_NETWORKS["mnist-256x2"]
    assert main(["complexity", "measure", "--onnx", str(onnx), "--beta", "1.5", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: beta must be a number in the open interval (0, 1)")


def test_nhwc_onnx_network_flatten_blocks_are_exact(data_root):
    """marabou cifar10_small: conv -> transpose to NHWC -> reshape -> MatMul. Channel c of conv_1 feeds the
    columns c, c + 16, c + 32, ... of matmul_0; duplicates planted that way must merge exactly."""
    net = load_vnncomp("cifar10-small", root=data_root)
    mods = dict(net.named_modules())
    conv, fc = mods["conv_1"], mods["matmul_0"]
    c, k = conv.out_channels, 4
    with torch.no_grad():
        conv.weight[k : 2 * k] = conv.weight[:k]
        conv.bias[k : 2 * k] = conv.bias[:k]
        for f in range(k):
            fc.weight[:, f::c] /= 2
            fc.weight[:, f + k :: c] = fc.weight[:, f::c]
    x = data.load_cifar10("test", root=data_root).subset(200).tensors()[0]
    rep = complexity.measure(net, beta=1e-6)
    assert [cl for cl in rep.groups[1].merged_groups if len(cl) == 2][:k] == [[f, f + k] for f in range(k)]
    assert rep.reshapes == ["reshape_0"]
    with torch.no_grad():
        y0, y1 = net(x), rep.merged_model(x)
    assert float((y1 - y0).norm() / y0.norm()) <= 1e-5
