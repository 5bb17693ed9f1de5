"""Unit tests of verify.network: exact extraction of ReLU networks from torch modules and ONNX files."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import mlp
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from probe.graph.relus import find_relus
from probe.zoo.reference import Normalize
from verify.errors import NetworkError
from verify.network import ReluNetwork

RNG = np.random.default_rng(0)


def _mlp() -> nn.Sequential:
    # Normalize, Flatten, Linear(12, 16), ReLU, Linear(16, 8), ReLU(inplace=True), Linear(8, 3)
    relus = [nn.ReLU, functools.partial(nn.ReLU, inplace=True)]
    return nn.Sequential(Normalize((0.5,), (0.25,)), *mlp((12, 16, 8, 3), seed=1, act=relus, flatten=True))


def _randomise_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen))
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen))


def _cnn() -> nn.Sequential:
    torch.manual_seed(3)
    model = nn.Sequential(
        Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)),
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 10),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(10, 4),
    )
    _randomise_bn(model)
    model.train()  # from_torch must use eval mode (running statistics, no dropout)
    return model


CASES = {"mlp": (_mlp, (1, 3, 4)), "cnn": (_cnn, (3, 8, 8))}


def _double_outputs(model: nn.Module, x: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """Output and ReLU pre-activations (by find_relus name) of a float64 eval copy of ``model``."""
    work = copy.deepcopy(model).double().eval()
    sites = find_relus(work)
    pres: dict[str, torch.Tensor] = {}
    handles = [
        s.module.register_forward_pre_hook(
            lambda _m, args, name=s.name: pres.__setitem__(name, args[0].detach().reshape(len(x), -1).clone())
        )
        for s in sites.sites
    ]
    try:
        with torch.no_grad():
            out = sites.module(torch.from_numpy(x).reshape(len(x), *shape))
    finally:
        for h in handles:
            h.remove()
    return out.reshape(len(x), -1).numpy(), {k: v.numpy() for k, v in pres.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_torch_matches_the_model(case: str) -> None:
    build, shape = CASES[case]
    model = build()
    net = ReluNetwork.from_torch(model, shape)
    assert net.input_shape == shape
    assert net.n_inputs == int(np.prod(shape))
    assert net.relu_names == [s.name for s in find_relus(model).sites]
    assert model.training  # the caller's model is left as it was
    x = RNG.random((7, net.n_inputs))
    ref, pres = _double_outputs(model, x, shape)
    assert net.n_outputs == ref.shape[1]
    assert net.relu_sizes == [pres[name].shape[1] for name in net.relu_names]
    np.testing.assert_allclose(net.forward(x), ref, rtol=0, atol=1e-9)
    for name, ours in zip(net.relu_names, net.pre_activations(x), strict=True):
        np.testing.assert_allclose(ours, pres[name], rtol=0, atol=1e-9)
    with torch.no_grad():
        ref32 = copy.deepcopy(model).eval()(torch.from_numpy(x).float().reshape(len(x), *shape)).numpy()
    np.testing.assert_allclose(net.forward(x), ref32, rtol=0, atol=1e-5)
    np.testing.assert_allclose(net.run_source(x), ref32, rtol=0, atol=1e-6)
    assert net.run_onnx(x) is None and net.source_path is None
    assert all(w.dtype == np.float64 for w in net.weights + net.biases)
    assert len(net.nnz) == len(net.weights) and all(
        0 < n <= w.size for n, w in zip(net.nnz, net.weights, strict=True)
    )


def test_cnn_layers_are_sparse_and_repr() -> None:
    net = ReluNetwork.from_torch(_cnn(), (3, 8, 8))
    assert net.nnz[0] < net.weights[0].size
    assert "ReluNetwork(192-" in repr(net)


def test_single_input_gives_single_output() -> None:
    net = ReluNetwork.from_torch(_mlp(), (1, 3, 4))
    x = RNG.random(12)
    assert net.forward(x).shape == (3,)
    np.testing.assert_array_equal(net.forward(x), net.forward(x[None])[0])
    assert [p.shape for p in net.pre_activations(x)] == [(16,), (8,)]
    assert net.run_source(x).shape == (3,)
    with pytest.raises(NetworkError, match=r"\(n, 12\)"):
        net.forward(np.zeros((2, 11)))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(5, 7)
        self.fc1 = nn.Linear(7, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc0(x))
        g = torch.relu(self.fc1(h) * 2.0 - 0.5)
        return self.out(g).relu() - 1.0  # a ReLU on the output too: the last ReLU layer is the output's


def test_functional_relus_are_traced() -> None:
    model = _Functional()
    net = ReluNetwork.from_torch(model, (5,))
    assert net.relu_names == [s.name for s in find_relus(model).sites]
    assert net.relu_names == ["fx_relu_0", "fx_relu_1", "fx_relu_2"]
    assert net.relu_sizes == [7, 6, 2]
    x = RNG.standard_normal((6, 5))
    np.testing.assert_allclose(net.forward(x), _double_outputs(model, x, (5,))[0], atol=1e-9)


def test_simple_functional_mlp() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(F.relu(self.a(x)))

    model = Net()
    net = ReluNetwork.from_torch(model, 4)
    assert net.relu_names == ["fx_relu_0"]
    x = RNG.standard_normal((3, 4))
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), ref, atol=1e-9)


# ---- rejections -------------------------------------------------------------------------------------------


class _Residual(nn.Module):
    """``h + relu(lin(h))`` around the second ReLU: not a chain of affine layers and ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(4, 6)
        self.act0 = nn.ReLU()
        self.lin1 = nn.Linear(6, 6)
        self.act1 = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act0(self.lin0(x))
        return self.head(h + self.act1(self.lin1(h)))


class _Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0, self.lin1, self.act = nn.Linear(4, 4), nn.Linear(4, 2), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(self.act(self.lin0(self.act(x))))


class _Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def _nan_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].weight[1, 0] = float("nan")
    return model


REJECTED = {
    "gelu": (lambda: nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)), (4,), r"'1' \(GELU\)"),
    "maxpool": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)),
        (1, 4, 4),
        r"'2' \(MaxPool2d\).*max-pooling",
    ),
    "layernorm": (
        lambda: nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2)),
        (4,),
        r"'1' \(LayerNorm\)",
    ),
    "relu6": (lambda: nn.Sequential(nn.Linear(4, 3), nn.ReLU6(), nn.Linear(3, 2)), (4,), r"'1' \(ReLU6\)"),
    "no relu": (lambda: nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), (4,), r"has no ReLU"),
    "nan weight": (_nan_model, (4,), r"parameter '2\.weight'.*NaN"),
    "residual": (_Residual, (4,), r"between ReLU 'act1' and the output is not affine.*residual"),
    "reused relu": (_Reused, (4,), r"'act' runs more than once"),
    "custom non-affine": (
        lambda: nn.Sequential(
            nn.Linear(4, 3), nn.ReLU(), _Square(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)
        ),
        (4,),
        r"between ReLU '1' and ReLU '4' is not affine",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_unsupported_models_are_rejected(case: str) -> None:
    build, shape, message = REJECTED[case]
    with pytest.raises(NetworkError, match=message):
        ReluNetwork.from_torch(build(), shape)


def test_bad_arguments() -> None:
    with pytest.raises(NetworkError, match=r"nn\.Module"):
        ReluNetwork.from_torch("not a model", (4,))  # type: ignore[arg-type]
    with pytest.raises(NetworkError, match="input_shape"):
        ReluNetwork.from_torch(_mlp(), (0, 3))
    with pytest.raises(NetworkError, match="float64"):
        ReluNetwork.from_torch(_mlp(), (5,))  # wrong input size: the model fails


def test_constructor_validates() -> None:
    w0, w1 = RNG.standard_normal((3, 2)), RNG.standard_normal((1, 3))
    net = ReluNetwork([w0, w1], [np.zeros(3), np.zeros(1)], input_shape=(1, 2), relu_names=["h"])
    assert (net.n_inputs, net.n_outputs, net.relu_sizes, net.relu_names) == (2, 1, [3], ["h"])
    x = RNG.standard_normal((4, 2))
    np.testing.assert_allclose(net.forward(x), np.maximum(x @ w0.T, 0) @ w1.T)
    with pytest.raises(NetworkError, match="takes 2 inputs"):
        ReluNetwork([w0, w0], [np.zeros(3), np.zeros(3)])
    with pytest.raises(NetworkError, match="NaN"):
        ReluNetwork([w0, w1], [np.full(3, np.nan), np.zeros(1)])
    with pytest.raises(NetworkError, match="input_shape"):
        ReluNetwork([w0, w1], [np.zeros(3), np.zeros(1)], input_shape=(3,))
    with pytest.raises(NetworkError, match="names"):
        ReluNetwork([w0, w1], [np.zeros(3), np.zeros(1)], relu_names=["a", "b"])
    # built from weights: the source is the same layers in float32
    np.testing.assert_allclose(net.run_source(x), net.forward(x), rtol=1e-5, atol=1e-5)


# ---- ONNX ------------------------------------------------------------------------------------------------


def _onnx_mlp(tmp_path: Path) -> Path:
    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Sub", ["f", "mean"], ["c"]),
        helper.make_node("Gemm", ["c", "w0", "b0"], ["h0"], transB=1),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], transB=1),
    ]
    inits = [init("mean", 6), init("w0", 8, 6), init("b0", 8), init("w1", 8, 5), init("b1", 5)]
    inits += [init("w2", 3, 5), init("b2", 3)]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    return path


def test_from_onnx(tmp_path: Path) -> None:
    path = _onnx_mlp(tmp_path)
    net = ReluNetwork.from_onnx(path)
    assert net.source_path == path
    assert net.input_shape == (2, 3)
    assert net.relu_names == ["relu_0", "relu_1"]
    assert net.relu_sizes == [8, 5] and net.n_outputs == 3
    x = RNG.standard_normal((9, 6))
    ref = net.run_onnx(x)
    assert ref is not None and ref.shape == (9, 3)
    np.testing.assert_allclose(net.forward(x), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(net.run_source(x), ref, rtol=0, atol=1e-5)
    assert net.run_onnx(x[0]).shape == (3,)


def test_from_onnx_missing_file(tmp_path: Path) -> None:
    from probe.core.errors import OnnxFileNotFoundError

    with pytest.raises(OnnxFileNotFoundError, match=r"nope\.onnx' does not exist"):
        ReluNetwork.from_onnx(tmp_path / "nope.onnx")
