"""Unit tests of probe.graph.onnx on tiny ONNX graphs built in-process, checked against onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from probe.core.errors import (
    InputShapeError,
    ModelError,
    OnnxError,
    OnnxFileNotFoundError,
    UnsupportedOperatorError,
)
from probe.graph.onnx import OnnxModule, load_onnx, run_reference
from probe.zoo.vnncomp import load_vnncomp

ATOL = 1e-5
RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    in_shape: list[int | str],
    out_name: str = "y",
    inputs: list[onnx.ValueInfoProto] | None = None,
    outputs: list[onnx.ValueInfoProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        outputs or [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _save(model: onnx.ModelProto, tmp_path: Path, name: str = "net.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _assert_matches(net: OnnxModule, model: onnx.ModelProto, x: np.ndarray) -> None:
    ref = run_reference(model, x)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= ATOL


def _mlp(alpha: float = 1.0, beta: float = 1.0, trans_b: int = 1) -> onnx.ModelProto:
    w0, w1 = _rand(16, 12), _rand(3, 16)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1),
        helper.make_node(
            "Gemm", ["f", "w0", "b0"], ["h"], name="fc0", alpha=alpha, beta=beta, transB=trans_b
        ),
        helper.make_node("Relu", ["h"], ["r"], name="act0"),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], name="fc1", transB=1),
    ]
    inits = [
        _init("w0", w0 if trans_b else w0.T.copy()),
        _init("b0", _rand(16)),
        _init("w1", w1),
        _init("b1", _rand(1, 3)),
    ]
    return _model(nodes, inits, [1, 12, 1])


@pytest.mark.parametrize(("alpha", "beta", "trans_b"), [(1.0, 1.0, 1), (0.5, 2.0, 0)])
def test_gemm_chain_matches_onnxruntime(tmp_path: Path, alpha: float, beta: float, trans_b: int) -> None:
    model = _mlp(alpha, beta, trans_b)
    path = _save(model, tmp_path)
    net = load_onnx(path)
    assert net.source_path == path
    assert net.input_shape == (12, 1) and net.output_shape == (3,)
    assert net.declared_batch == 1
    assert [name for name, _ in net.layers()] == ["flatten_0", "gemm_0", "relu_0", "gemm_1"]
    assert isinstance(net.gemm_0, nn.Linear) and net.gemm_0.weight.dtype == torch.float32
    assert not net.training
    # A declared batch of 1 is looped over by the reference; our module takes any batch.
    _assert_matches(net, model, _rand(5, 12, 1))
    seq = net.as_sequential()
    x = torch.from_numpy(_rand(4, 12, 1))
    assert net.is_chain and torch.equal(seq(x), net(x))


def test_relus_are_hookable_modules() -> None:
    net = load_onnx(_mlp())
    modules = dict(net.named_modules())
    assert net.relu_names() == ["relu_0"]
    assert all(isinstance(modules[name], nn.ReLU) for name in net.relu_names())
    assert [name for name, m in net.named_modules() if isinstance(m, nn.ReLU)] == net.relu_names()
    seen: list[torch.Tensor] = []
    handle = modules["relu_0"].register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        net(torch.zeros(2, 12, 1))
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape == (2, 16)


def test_matmul_add_fused_into_linear() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
        helper.make_node("Relu", ["a"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["b2", "m2"], ["y"], name="bias2"),  # constant first
    ]
    model = _model(
        nodes,
        [_init("w", _rand(6, 5)), _init("b", _rand(5)), _init("w2", _rand(5, 2)), _init("b2", _rand(1, 2))],
        ["batch", 6],
    )
    net = load_onnx(model)
    assert net.declared_batch is None and net.source_path is None
    assert [type(m).__name__ for _, m in net.layers()] == ["Linear", "ReLU", "Linear"]
    assert [s.module for s in net.plan] == ["matmul_0", "relu_0", "matmul_1"]
    assert net.plan[0].onnx_nodes == ("mm", "bias")
    _assert_matches(net, model, _rand(7, 6))


def _conv_model(
    pads: list[int] | None, strides: list[int], dilations: list[int], group: int, auto_pad: str | None = None
) -> onnx.ModelProto:
    attrs: dict[str, object] = {
        "strides": strides,
        "dilations": dilations,
        "group": group,
        "kernel_shape": [3, 3],
    }
    if pads is not None:
        attrs["pads"] = pads
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **attrs),
        helper.make_node("Relu", ["c"], ["y"], name="act"),
    ]
    inits = [_init("w", _rand(4, 4 // group, 3, 3)), _init("b", _rand(4))]
    return _model(nodes, inits, ["N", 4, 9, 8])


@pytest.mark.parametrize(
    ("pads", "strides", "dilations", "group", "auto_pad", "modules"),
    [
        ([1, 1, 1, 1], [2, 2], [1, 1], 1, None, ["Conv2d", "ReLU"]),
        ([0, 1, 2, 1], [1, 2], [1, 1], 1, None, ["ZeroPad2d", "Conv2d", "ReLU"]),
        ([1, 2, 1, 2], [1, 1], [2, 1], 2, None, ["Conv2d", "ReLU"]),
        (None, [2, 2], [1, 1], 1, "SAME_UPPER", ["ZeroPad2d", "Conv2d", "ReLU"]),
        (None, [2, 1], [1, 1], 4, "VALID", ["Conv2d", "ReLU"]),
    ],
)
def test_conv_relu_matches_onnxruntime(
    pads: list[int] | None,
    strides: list[int],
    dilations: list[int],
    group: int,
    auto_pad: str | None,
    modules: list[str],
) -> None:
    model = _conv_model(pads, strides, dilations, group, auto_pad)
    net = load_onnx(model)
    assert [type(m).__name__ for _, m in net.layers()] == modules
    conv = dict(net.layers())["conv_0"]
    assert isinstance(conv, nn.Conv2d) and conv.groups == group
    _assert_matches(net, model, _rand(3, 4, 9, 8))


def _nhwc_model() -> onnx.ModelProto:
    # The marabou CIFAR-10 pattern: NHWC input, Transpose, Conv, Transpose back, Reshape, MatMul + Add.
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w", "b"], ["c"], name="conv", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="act"),
        helper.make_node("Transpose", ["r"], ["t2"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t2", "shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w2"], ["m"], name="dense"),
        helper.make_node("Add", ["m", "b2"], ["y"], name="dense_bias"),
    ]
    inits = [
        _init("w", _rand(5, 3, 2, 2)),
        _init("b", _rand(5)),
        _init("shape", np.array([-1, 4 * 3 * 5], dtype=np.int64)),
        _init("w2", _rand(60, 4)),
        _init("b2", _rand(4)),
    ]
    return _model(nodes, inits, ["unk", 8, 6, 3])


def test_transpose_reshape_and_nchw_auto_layout() -> None:
    model = _nhwc_model()
    net = load_onnx(model)
    assert net.input_shape == (8, 6, 3)
    assert [s.module for s in net.plan] == [
        "transpose_0",
        "conv_0",
        "relu_0",
        "transpose_1",
        "reshape_0",
        "matmul_0",
    ]
    x = _rand(4, 8, 6, 3)
    _assert_matches(net, model, x)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        assert torch.equal(net(nchw), net(torch.from_numpy(x)))
    exact = load_onnx(model, input_layout="exact")
    with pytest.raises(InputShapeError, match=r"\(4, 3, 8, 6\)"):
        exact(nchw)


def test_reshape_with_constant_node_and_leading_one() -> None:
    shape = helper.make_tensor("s", TensorProto.INT64, [3], [1, 0, -1])
    nodes = [
        helper.make_node("Constant", [], ["shape"], name="shape_const", value=shape),
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
        helper.make_node("Relu", ["r"], ["y"], name="act"),
    ]
    model = _model(nodes, [], [1, 2, 3, 4])
    net = load_onnx(model)
    assert net.output_shape == (2, 12)
    x = _rand(3, 2, 3, 4)
    _assert_matches(net, model, x)


def test_batchnorm_in_eval_mode() -> None:
    c = 3
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["y"], name="act"),
    ]
    inits = [
        _init("s", _rand(c)),
        _init("bb", _rand(c)),
        _init("m", _rand(c)),
        _init("v", np.abs(_rand(c)) + 0.5),
    ]
    model = _model(nodes, inits, ["N", c, 4, 5])
    net = load_onnx(model)
    bn = dict(net.layers())["batchnorm_0"]
    assert isinstance(bn, nn.BatchNorm2d) and not bn.training
    _assert_matches(net, model, _rand(6, c, 4, 5))


def test_sub_div_normalisation_and_constant_first_sub() -> None:
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="sub_mean"),
        helper.make_node("Div", ["centred", "std"], ["norm"], name="div_std"),
        helper.make_node("Mul", ["norm", "scale"], ["scaled"], name="mul"),
        helper.make_node("Sub", ["one", "scaled"], ["flipped"], name="flip"),
        helper.make_node("Flatten", ["flipped"], ["f"], name="flat"),
        helper.make_node("Relu", ["f"], ["y"], name="act"),
    ]
    inits = [
        _init("mean", np.array([[[0.5]], [[0.25]]], dtype=np.float32)),
        _init("std", np.array([[[2.0]], [[0.5]]], dtype=np.float32)),
        _init("scale", np.array(3.0, dtype=np.float32)),
        _init("one", np.array([1.0], dtype=np.float32)),
    ]
    model = _model(nodes, inits, [1, 2, 3, 3])
    net = load_onnx(model)
    assert [s.module for s in net.plan] == ["sub_0", "div_0", "mul_0", "sub_1", "flatten_0", "relu_0"]
    _assert_matches(net, model, _rand(4, 2, 3, 3))


def _residual_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="act0"),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["h1"], name="fc1", transB=1),
        helper.make_node("Add", ["h1", "r"], ["s"], name="skip"),
        helper.make_node("Relu", ["s"], ["r2"], name="act1"),
        helper.make_node("Identity", ["r2"], ["y"], name="out"),
    ]
    inits = [_init("w0", _rand(8, 5)), _init("b0", _rand(8)), _init("w1", _rand(8, 8)), _init("b1", _rand(8))]
    return _model(nodes, inits, ["N", 5])


def test_residual_add() -> None:
    model = _residual_model()
    net = load_onnx(model)
    assert net.relu_names() == ["relu_0", "relu_1"]
    assert net.plan[3].module == "add_0" and net.plan[3].inputs == ("h1", "r")
    assert net.output_name == "y"
    assert not net.is_chain
    _assert_matches(net, model, _rand(5, 5))
    with pytest.raises(OnnxError, match="not a chain"):
        net.as_sequential()


def test_check_against_reference() -> None:
    assert isinstance(load_onnx(_residual_model(), check=True), OnnxModule)


@pytest.mark.parametrize(
    ("op", "attrs"),
    [("Sigmoid", {}), ("MaxPool", {"kernel_shape": [2, 2]})],
)
def test_unsupported_operator_names_op_and_node(op: str, attrs: dict[str, object]) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node(op, ["r"], ["y"], name="the_bad_node", **attrs),
    ]
    with pytest.raises(UnsupportedOperatorError) as info:
        load_onnx(_model(nodes, [], ["N", 2, 4, 4]))
    message = str(info.value)
    assert op in message and "the_bad_node" in message and "Gemm" in message


@pytest.mark.parametrize(
    ("node", "inits", "in_shape", "fragment"),
    [
        (
            helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1),
            [_init("w", _rand(3, 3))],
            [3, 3],
            "transA",
        ),
        (helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[1, 0, 2]), [], [1, 2, 3], "batch axis"),
        (
            helper.make_node("Reshape", ["x", "s"], ["y"], name="r"),
            [_init("s", np.array([-1, 3], dtype=np.int64))],
            ["N", 2, 3],
            "batch",
        ),
        (helper.make_node("Mul", ["x", "x"], ["y"], name="sq"), [], ["N", 3], "not affine"),
        (
            helper.make_node("Div", ["c", "x"], ["y"], name="inv"),
            [_init("c", _rand(3))],
            ["N", 3],
            "not affine",
        ),
        (helper.make_node("Flatten", ["x"], ["y"], name="f", axis=0), [], ["N", 3], "axis"),
    ],
)
def test_unsupported_attributes(node: onnx.NodeProto, inits: list, in_shape: list, fragment: str) -> None:
    with pytest.raises(UnsupportedOperatorError, match=fragment) as info:
        load_onnx(_model([node], inits, in_shape))
    assert node.op_type in str(info.value) and repr(node.name) in str(info.value)


def test_input_shape_errors() -> None:
    net = load_onnx(_mlp())  # declared (1, 12, 1)
    with pytest.raises(InputShapeError) as info:
        net(torch.zeros(2, 5))
    assert "(2, 5)" in str(info.value) and "(N, 12, 1)" in str(info.value)
    with pytest.raises(InputShapeError, match="no batch dimension"):
        net(torch.zeros(12, 1))
    # Auto layout: any shape with 12 values per sample for a flat (12, 1) input.
    with torch.no_grad():
        x = torch.from_numpy(_rand(3, 12, 1))
        assert torch.equal(net(x.reshape(3, 1, 3, 4)), net(x))
    with pytest.raises(InputShapeError, match=r"expects \(N, 12, 1\).*pass a tensor of shape"):
        load_onnx(_mlp(), input_layout="exact")(torch.zeros(3, 12))
    with pytest.raises(ModelError, match="input_layout"):
        load_onnx(_mlp(), input_layout="nhwc")  # type: ignore[arg-type]
    with pytest.raises(InputShapeError, match=r"\(3, 5\)"):
        run_reference(_mlp(), np.zeros((3, 5), np.float32))


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(OnnxError, match=r"corrupt\.onnx"):
        load_onnx(bad)
    missing = tmp_path / "missing.onnx"
    with pytest.raises(OnnxFileNotFoundError, match=r"missing\.onnx") as info:
        load_onnx(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, OnnxError)


def test_several_inputs_or_outputs_rejected() -> None:
    two_in = _model(
        [helper.make_node("Add", ["x", "z"], ["y"], name="add")],
        [],
        [],
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3]),
        ],
    )
    with pytest.raises(OnnxError, match="2 graph inputs"):
        load_onnx(two_in)
    two_out = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["z"], name="b")],
        [],
        ["N", 3],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
        ],
    )
    with pytest.raises(OnnxError, match="2 graph outputs"):
        load_onnx(two_out)


def test_load_vnncomp_unknown_name() -> None:
    with pytest.raises(ModelError, match="mnist-256x2"):
        load_vnncomp("mnist-256x3")


def test_conv_bias_add_fused_dropout_dropped_batchnorm1d() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad="SAME_LOWER", strides=[2, 2]),
        helper.make_node("Add", ["c", "cb"], ["a"], name="conv_bias"),
        helper.make_node("Dropout", ["a"], ["d"], name="drop"),
        helper.make_node("Relu", ["d"], ["r"], name="act"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("BatchNormalization", ["f", "s", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Identity", ["bn"], ["y"], name="out"),
    ]
    inits = [
        _init("w", _rand(3, 2, 3, 3)),
        _init("cb", _rand(3, 1, 1)),
        _init("s", _rand(27)),
        _init("b", _rand(27)),
        _init("m", _rand(27)),
        _init("v", np.abs(_rand(27)) + 0.1),
    ]
    model = _model(nodes, inits, ["N", 2, 5, 5])
    net = load_onnx(model, check=True)
    assert [s.module for s in net.plan] == ["conv_0", "relu_0", "flatten_0", "batchnorm_0"]
    assert net.plan[0].onnx_nodes == ("conv", "conv_bias")
    assert isinstance(net.batchnorm_0, nn.BatchNorm1d) and net.output_name == "y"
    _assert_matches(net, model, _rand(3, 2, 5, 5))


def test_run_reference_falls_back_to_onnx_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _residual_model()
    x = _rand(3, 5)
    expected = run_reference(model, x)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    assert np.max(np.abs(run_reference(model, x) - expected)) <= ATOL
