"""ONNX networks as torch modules with hookable ReLUs, and an onnxruntime reference to check them against.

:func:`load_onnx` turns an ONNX graph of affine layers and ReLUs (the VNN-COMP kind of network) into an
:class:`OnnxModule`: a torch ``nn.Module`` whose ReLUs are ``nn.ReLU`` modules (so hooks and
``named_modules()`` find them, as NAP mining needs) and whose affine layers are real ``nn.Linear`` /
``nn.Conv2d`` / ``nn.BatchNorm2d`` modules holding the ONNX weights. A small executor runs a plan of
``(module name, input tensors, output tensor)`` steps, so residual graphs (an ``Add`` of two tensors) work;
a pure chain behaves like an ``nn.Sequential`` (see :meth:`OnnxModule.as_sequential`).

Conventions:
    * The leading dimension of every tensor is the batch. A network declared with a fixed batch of 1 still
      accepts any batch size; a ``Reshape`` to ``(1, ...)``, ``(-1, ...)`` or ``(0, ...)`` keeps the batch.
    * Modules are named by operator type and order: ``gemm_0``, ``relu_0``, ``conv_1``, ``matmul_0`` (a
      ``MatMul`` + ``Add`` fused into one ``nn.Linear``), ``pad_0`` (asymmetric convolution padding), ...
    * Inputs are adapted to the ONNX layout by :meth:`OnnxModule.forward` (``input_layout="auto"``): NCHW
      images go into networks declared NHWC, ``(N, 1, 28, 28)`` goes into networks declared ``(1, 784, 1)``.

Example:
    >>> import torch
    >>> from probe.zoo import load_vnncomp
    >>> net = load_vnncomp("mnist-256x2")  # doctest: +SKIP
    >>> net.relu_names()  # doctest: +SKIP
    ['relu_0', 'relu_1']
    >>> net(torch.rand(5, 1, 28, 28)).shape  # doctest: +SKIP
    torch.Size([5, 10])
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from probe.core.errors import (
    InputShapeError,
    ModelError,
    OnnxError,
    OnnxFileNotFoundError,
    UnsupportedOperatorError,
)

__all__ = [
    "SUPPORTED_OPS",
    "ConstantBinary",
    "OnnxModule",
    "Permute",
    "PlanStep",
    "Reshape",
    "TensorBinary",
    "load_onnx",
    "run_reference",
]

logger = logging.getLogger(__name__)

InputLayout = Literal["auto", "exact"]

#: ONNX operators that :func:`load_onnx` imports (``Dropout`` only in inference mode).
SUPPORTED_OPS: tuple[str, ...] = (
    "Add",
    "BatchNormalization",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "Identity",
    "MatMul",
    "Mul",
    "Relu",
    "Reshape",
    "Sub",
    "Transpose",
)

_MODULE_PREFIX = {"BatchNormalization": "batchnorm"}

# The fewest inputs each supported operator takes (Reshape's shape is an attribute before opset 5).
_MIN_INPUTS = {"Add": 2, "BatchNormalization": 5, "Conv": 2, "Div": 2, "Gemm": 2, "MatMul": 2, "Mul": 2,
               "Sub": 2, "Dropout": 1, "Flatten": 1, "Identity": 1, "Relu": 1, "Reshape": 1, "Transpose": 1}


# --------------------------------------------------------------------------------------------------------
# Small modules for the operators torch has no module for
# --------------------------------------------------------------------------------------------------------


class Permute(nn.Module):
    """``x.permute(*dims)`` with the batch axis fixed (ONNX ``Transpose``)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Reshape(nn.Module):
    """``x.reshape(N, *shape)``: reshape each sample, keeping the batch (ONNX ``Reshape``)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape=(N, {', '.join(map(str, self.shape))})"


class ConstantBinary(nn.Module):
    """``x op c`` (or ``c op x``) with a constant ``c``, e.g. input normalisation ``(x - mean) / std``."""

    def __init__(self, op: str, constant: torch.Tensor, constant_first: bool = False) -> None:
        super().__init__()
        if op not in ("Add", "Sub", "Mul", "Div"):
            raise ValueError(f"op must be Add, Sub, Mul or Div, got {op!r}")
        self.op = op
        self.constant_first = constant_first
        self.register_buffer("constant", constant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.constant
        if self.op == "Add":
            return x + c
        if self.op == "Mul":
            return x * c
        if self.op == "Sub":
            return c - x if self.constant_first else x - c
        return c / x if self.constant_first else x / c

    def extra_repr(self) -> str:
        side = "c {} x" if self.constant_first else "x {} c"
        sym = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}[self.op]
        return f"{side.format(sym)}, c.shape={tuple(self.constant.shape)}"


class TensorBinary(nn.Module):
    """``a + b`` or ``a - b`` of two graph tensors (residual connections)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        if op not in ("Add", "Sub"):
            raise ValueError(f"op must be Add or Sub, got {op!r}")
        self.op = op

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.op == "Add" else a - b

    def extra_repr(self) -> str:
        return f"op={self.op}"


# --------------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    """One step of an :class:`OnnxModule`'s execution plan.

    Attributes:
        module: name of the submodule to call (a key of ``named_children()``).
        inputs: names of the tensors passed to it, in order.
        output: name of the tensor it produces (an ONNX tensor name).
        onnx_nodes: names (or ``#index`` when unnamed) of the ONNX nodes it implements.
    """

    module: str
    inputs: tuple[str, ...]
    output: str
    onnx_nodes: tuple[str, ...] = ()


class OnnxModule(nn.Module):
    """A torch module converted from an ONNX graph; build it with :func:`load_onnx`.

    The submodules are registered directly on the module under readable names (``gemm_0``, ``relu_0``,
    ...), so ``dict(net.named_modules())[name]`` finds every name of :meth:`relu_names` and
    :meth:`layers`.

    Attributes:
        input_name: the ONNX graph input's name.
        output_name: the ONNX graph output's name.
        input_shape: the declared per-sample input shape (without the batch dimension), ONNX layout.
        output_shape: the per-sample output shape.
        declared_batch: the ONNX input's fixed batch size, or ``None`` when it is dynamic.
        source_path: the ONNX file, or ``None`` when built from an in-memory model.
        input_layout: ``"auto"`` or ``"exact"`` (see :meth:`forward`).
        plan: the execution plan, one :class:`PlanStep` per submodule call.

    Example:
        >>> net = load_onnx("mnist-net_256x2.onnx")  # doctest: +SKIP
        >>> [name for name, _ in net.layers()]  # doctest: +SKIP
        ['flatten_0', 'gemm_0', 'relu_0', 'gemm_1', 'relu_1', 'gemm_2']
    """

    def __init__(
        self,
        steps: Sequence[tuple[PlanStep, nn.Module]],
        *,
        input_name: str,
        output_name: str,
        input_shape: tuple[int, ...],
        output_shape: tuple[int, ...],
        declared_batch: int | None = None,
        source_path: Path | None = None,
        input_layout: InputLayout = "auto",
        result_tensor: str | None = None,
    ) -> None:
        super().__init__()
        _check_layout(input_layout)
        for step, module in steps:
            self.add_module(step.module, module)
        self.plan: tuple[PlanStep, ...] = tuple(step for step, _ in steps)
        self.input_name = input_name
        self.output_name = output_name
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = tuple(int(d) for d in output_shape)
        self.declared_batch = declared_batch
        self.source_path = source_path
        self.input_layout: InputLayout = input_layout
        # The tensor holding the output: differs from output_name when the graph ends in an Identity.
        self._result = result_tensor if result_tensor is not None else output_name
        # Free intermediate tensors after their last use (matters for wide conv nets on big batches).
        last_use: dict[str, int] = {}
        for i, step in enumerate(self.plan):
            for name in step.inputs:
                last_use[name] = i
        self._release: tuple[tuple[str, ...], ...] = tuple(
            tuple(n for n in set(step.inputs) if last_use[n] == i and n != self._result)
            for i, step in enumerate(self.plan)
        )

    # ---- introspection ----------------------------------------------------------------------------------

    def layers(self) -> Iterator[tuple[str, nn.Module]]:
        """Iterate over ``(name, module)`` in execution order.

        Returns:
            An iterator of the plan's submodules (one entry per plan step).

        Example:
            >>> [type(m).__name__ for _, m in net.layers()]  # doctest: +SKIP
            ['Flatten', 'Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
        """
        for step in self.plan:
            yield step.module, getattr(self, step.module)

    def relu_names(self) -> list[str]:
        """Names of the ``nn.ReLU`` submodules in execution order.

        Returns:
            E.g. ``["relu_0", "relu_1"]``; each is a key of ``dict(self.named_modules())``.

        Example:
            >>> net.relu_names()  # doctest: +SKIP
            ['relu_0', 'relu_1']
        """
        return [name for name, module in self.layers() if isinstance(module, nn.ReLU)]

    @property
    def is_chain(self) -> bool:
        """Whether every step consumes exactly the previous step's output (no branches)."""
        prev = self.input_name
        for step in self.plan:
            if step.inputs != (prev,):
                return False
            prev = step.output
        return prev == self._result

    def as_sequential(self) -> nn.Sequential:
        """The same layers as an ``nn.Sequential`` (sharing parameters), for chain-shaped networks.

        The sequential takes inputs in the ONNX layout (no input adaptation).

        Returns:
            ``nn.Sequential`` whose children have the names of :meth:`layers`.

        Raises:
            OnnxError: the graph is not a chain (e.g. it has a residual ``Add``).

        Example:
            >>> seq = net.as_sequential()  # doctest: +SKIP
        """
        if not self.is_chain:
            raise OnnxError(
                f"the network from {self._source()} is not a chain (it branches or merges tensors); "
                "run it as an OnnxModule instead"
            )
        return nn.Sequential(OrderedDict(self.layers()))

    def extra_repr(self) -> str:
        batch = "N" if self.declared_batch is None else f"N (declared {self.declared_batch})"
        return (
            f"input={self.input_name!r} ({batch}, {', '.join(map(str, self.input_shape))}), "
            f"output={self.output_name!r}, layout={self.input_layout!r}"
        )

    def _source(self) -> str:
        return repr(str(self.source_path)) if self.source_path is not None else "an in-memory ONNX model"

    # ---- running -----------------------------------------------------------------------------------------

    def adapt_input(self, x: torch.Tensor) -> torch.Tensor:
        """Bring ``x`` into the ONNX input layout ``(N, *input_shape)``.

        With ``input_layout="auto"``, in this order: ``x`` already has per-sample shape ``input_shape``:
        unchanged; ``x`` is 4-D ``(N, C, H, W)`` and ``input_shape`` is ``(H, W, C)``: permuted to NHWC
        (torch loaders give NCHW, some ONNX networks such as the marabou CIFAR-10 ones take NHWC);
        ``input_shape`` has a single dimension larger than 1 (e.g. ``(784, 1)``) and ``x`` has as many
        values per sample: reshaped. With ``"exact"`` only the first case is accepted.

        Args:
            x: a batch; the first dimension is always the batch.

        Returns:
            A tensor of shape ``(N, *input_shape)``.

        Raises:
            InputShapeError: ``x`` fits none of the cases (the message names both shapes and the fix).

        Example:
            >>> net.adapt_input(torch.zeros(2, 1, 28, 28)).shape  # doctest: +SKIP
            torch.Size([2, 784, 1])
        """
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(
                f"expected a torch.Tensor of shape (N, *{self.input_shape}), got {type(x)!r}"
            )
        expected = self.input_shape
        got = tuple(x.shape)
        if x.dim() >= 1 and got[1:] == expected:
            return x
        shown = f"(N, {', '.join(map(str, expected))})"
        if got == expected:
            raise InputShapeError(
                f"input of shape {got} has no batch dimension; the network from {self._source()} expects "
                f"{shown}: add one, e.g. x.unsqueeze(0)"
            )
        if self.input_layout == "auto" and x.dim() >= 1:
            if x.dim() == 4 and len(expected) == 3 and (got[2], got[3], got[1]) == expected:
                return x.permute(0, 2, 3, 1)
            per_sample = math.prod(got[1:])
            if sum(d != 1 for d in expected) <= 1 and per_sample == math.prod(expected):
                return x.reshape(got[0], *expected)
        hint = (
            f"pass a tensor of shape {shown}"
            if self.input_layout == "exact"
            else f"pass {shown}, or NCHW images for an NHWC network, or any shape with "
            f"{math.prod(expected)} values per sample when the input is a flat vector"
        )
        raise InputShapeError(
            f"input of shape {got} does not fit the network from {self._source()}, which expects {shown} "
            f"(input_layout={self.input_layout!r}): {hint}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on a batch.

        Args:
            x: a batch; see :meth:`adapt_input` for the accepted layouts.

        Returns:
            The ONNX graph output, ``(N, *output_shape)``.

        Raises:
            InputShapeError: ``x`` does not fit the declared input shape.

        Example:
            >>> net(torch.rand(4, 1, 28, 28)).shape  # doctest: +SKIP
            torch.Size([4, 10])
        """
        env: dict[str, torch.Tensor] = {self.input_name: self.adapt_input(x)}
        for step, release in zip(self.plan, self._release, strict=True):
            module = getattr(self, step.module)
            env[step.output] = module(*(env[name] for name in step.inputs))
            for name in release:
                del env[name]
        return env[self._result]


def _check_layout(input_layout: str) -> None:
    if input_layout not in ("auto", "exact"):
        raise ModelError(f"input_layout must be 'auto' or 'exact', got {input_layout!r}")


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def _read_model(source: Any) -> tuple[Any, Path | None]:
    import onnx

    if isinstance(source, onnx.ModelProto):
        model, path = source, None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise OnnxFileNotFoundError(f"ONNX file {str(path)!r} does not exist or is not a file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf raises DecodeError, onnx may raise others on bad external data
            raise OnnxError(
                f"cannot read {str(path)!r} as an ONNX model: {type(exc).__name__}: {exc}"
            ) from exc
    where = repr(str(path)) if path is not None else "the in-memory ONNX model"
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise OnnxError(f"{where} is not an ONNX network: its graph has no nodes, inputs or outputs")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        # The checker also flags what runtimes accept (e.g. outputs without a declared shape); the
        # conversion validates everything it uses, so this is only worth a note.
        logger.info("%s does not pass onnx.checker (%s); converting anyway", where, exc)
    return model, path


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode_tensor(tensor: Any, what: str, where: str) -> np.ndarray:
    """``numpy_helper.to_array(tensor)``, with a damaged tensor (data that does not fit its dims, an unknown
    or undefined data type) reported as an :class:`OnnxError` naming it."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # ValueError (size), TypeError (UNDEFINED type), KeyError (unknown type), ...
        raise OnnxError(
            f"{where}: {what} {tensor.name!r} (data type {tensor.data_type}, dims {list(tensor.dims)}) "
            f"cannot be decoded ({type(exc).__name__}: {exc}); the file is damaged or was written by a "
            "broken exporter: re-export the network"
        ) from exc


def _constant_node_value(node: Any, where: str) -> np.ndarray:
    for attr in node.attribute:
        if attr.name == "value":
            return _decode_tensor(attr.t, "the value of the Constant", where)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    raise UnsupportedOperatorError(
        f"{where}: Constant without a value/value_float(s)/value_int(s) attribute is not supported"
    )


class _Converter:
    """Walks an ONNX graph in topological order and builds the plan (one instance per load)."""

    def __init__(self, model: Any, path: Path | None) -> None:
        self.graph = model.graph
        self.where = repr(str(path)) if path is not None else "the in-memory ONNX model"
        self.consts: dict[str, np.ndarray] = {
            init.name: _decode_tensor(init, "initializer", self.where) for init in self.graph.initializer
        }
        self.alias: dict[str, str] = {}
        self.values: dict[str, torch.Tensor] = {}  # a batch-1 dry run, for shapes and checks
        self.steps: list[tuple[PlanStep, nn.Module]] = []
        self.counters: dict[str, int] = {}
        self.fused: set[int] = set()

    # ---- helpers ------------------------------------------------------------------------------------------

    def node_label(self, index: int, node: Any) -> str:
        name = f"{node.name!r}" if node.name else "(unnamed)"
        return f"{node.op_type} node #{index} {name} in {self.where}"

    def unsupported(self, index: int, node: Any, why: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(
            f"{self.node_label(index, node)}: {why}. Supported operators: {', '.join(SUPPORTED_OPS)}"
        )

    def attrs(self, index: int, node: Any) -> dict[str, Any]:
        """The node's attributes by name; an attribute onnx cannot decode is an :class:`OnnxError`."""
        try:
            return _attrs(node)
        except Exception as exc:  # get_attribute_value rejects e.g. an attribute of undefined type
            raise OnnxError(
                f"{self.node_label(index, node)}: an attribute cannot be read ({type(exc).__name__}: {exc}). "
                "The graph is malformed; re-export the network"
            ) from exc

    def bad_attribute(self, index: int, node: Any, name: str, kind: str, value: Any) -> OnnxError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return OnnxError(
            f"{self.node_label(index, node)}: attribute {name!r} must be {kind}, got {shown}; fix the "
            "attribute (see the operator's ONNX specification) or re-export the network"
        )

    def attr_int(self, index: int, node: Any, attrs: dict[str, Any], name: str, default: int) -> int:
        value = attrs.get(name, default)
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.bad_attribute(index, node, name, "an int", value) from exc

    def attr_float(self, index: int, node: Any, attrs: dict[str, Any], name: str, default: float) -> float:
        value = attrs.get(name, default)
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.bad_attribute(index, node, name, "a float", value) from exc

    def attr_ints(
        self, index: int, node: Any, attrs: dict[str, Any], name: str, default: Sequence[int]
    ) -> list[int]:
        value = attrs.get(name, default)
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.bad_attribute(index, node, name, "a list of ints", value) from exc

    def float_const(self, index: int, node: Any, name: str, what: str) -> np.ndarray:
        """A constant input as float32 (weights, biases, normalisation parameters)."""
        value = self.const(name)
        try:
            return value.astype(np.float32)
        except (TypeError, ValueError) as exc:
            raise OnnxError(
                f"{self.node_label(index, node)}: {what} {name!r} of data type {value.dtype} cannot be read "
                f"as float32 ({exc}); it must hold numbers: re-export the network"
            ) from exc

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def is_const(self, name: str) -> bool:
        return self.resolve(name) in self.consts

    def const(self, name: str) -> np.ndarray:
        return self.consts[self.resolve(name)]

    def tensor(self, index: int, node: Any, name: str) -> str:
        """The resolved name of a graph (non-constant) tensor input."""
        resolved = self.resolve(name)
        if resolved in self.consts:
            raise self.unsupported(
                index, node, f"input {name!r} is a constant where a graph tensor is expected"
            )
        if resolved not in self.values:
            raise OnnxError(f"{self.node_label(index, node)}: input {name!r} is not produced by any node")
        return resolved

    def add(
        self, op_key: str, module: nn.Module, inputs: Sequence[str], output: str, nodes: Sequence[str]
    ) -> str:
        count = self.counters.get(op_key, 0)
        self.counters[op_key] = count + 1
        name = f"{op_key}_{count}"
        module.eval()
        step = PlanStep(module=name, inputs=tuple(inputs), output=output, onnx_nodes=tuple(nodes))
        try:
            with torch.no_grad():
                self.values[output] = module(*(self.values[i] for i in step.inputs))
        except RuntimeError as exc:
            raise OnnxError(
                f"{name} (ONNX nodes {list(nodes)}) in {self.where} does not fit its input shapes "
                f"{[tuple(self.values[i].shape) for i in step.inputs]}: {exc}"
            ) from exc
        self.steps.append((step, module))
        logger.debug("%s <- %s %s", name, list(nodes), tuple(self.values[output].shape))
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.values[name].shape)

    # ---- graph walk ----------------------------------------------------------------------------------------

    def topological(self) -> list[tuple[int, Any]]:
        nodes = list(enumerate(self.graph.node))
        producer = {out: i for i, node in nodes for out in node.output if out}
        # Keep only what the output needs (dead branches of exported graphs would otherwise be rejected).
        needed: set[int] = set()
        stack = [producer[o.name] for o in self.graph.output if o.name in producer]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            stack.extend(producer[n] for n in self.graph.node[i].input if n in producer)
        order: list[tuple[int, Any]] = []
        done: set[int] = set()
        visiting: set[int] = set()

        def visit(i: int) -> None:
            if i in done:
                return
            if i in visiting:
                raise OnnxError(f"the graph of {self.where} has a cycle through node #{i}")
            visiting.add(i)
            for name in self.graph.node[i].input:
                if name in producer:
                    visit(producer[name])
            visiting.discard(i)
            done.add(i)
            order.append((i, self.graph.node[i]))

        try:
            for i in sorted(needed):
                visit(i)
        except RecursionError as exc:  # one frame per node of a chain stored out of order
            raise OnnxError(
                f"the nodes of {self.where} are not in topological order and the graph ({len(needed)} nodes) "
                "is too deep to reorder; ONNX requires the nodes sorted so that each comes after its inputs' "
                "producers: re-export the network or sort its nodes"
            ) from exc
        return order

    def consumers(self, order: list[tuple[int, Any]], tensor: str) -> list[tuple[int, Any]]:
        return [(i, n) for i, n in order if tensor in n.input]

    def run(self) -> OnnxModule:
        graph = self.graph
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise OnnxError(
                f"{self.where} has {len(inputs)} graph inputs {[i.name for i in inputs]}; "
                "only networks with exactly one input are supported"
            )
        if len(graph.output) != 1:
            raise OnnxError(
                f"{self.where} has {len(graph.output)} graph outputs {[o.name for o in graph.output]}; "
                "only networks with exactly one output are supported"
            )
        inp = inputs[0]
        tensor_type = inp.type.tensor_type
        if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) < 2:
            raise OnnxError(
                f"input {inp.name!r} of {self.where} must declare a shape (batch, ...) with at least 2 "
                f"dimensions, got {_shape_text(tensor_type)}"
            )
        dims = list(tensor_type.shape.dim)
        declared_batch = (
            dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        )
        if any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims[1:]):
            raise OnnxError(
                f"input {inp.name!r} of {self.where} has non-static per-sample dimensions "
                f"{_shape_text(tensor_type)}; only the batch dimension may be dynamic"
            )
        input_shape = tuple(d.dim_value for d in dims[1:])
        try:
            self.values[inp.name] = torch.zeros((1, *input_shape))
        except (RuntimeError, MemoryError) as exc:
            raise OnnxError(
                f"input {inp.name!r} of {self.where} declares the per-sample shape {input_shape} "
                f"({math.prod(input_shape)} values), which cannot be allocated: {exc}. Check the declared "
                "input shape"
            ) from exc

        order = self.topological()
        # Constant nodes first: they have no inputs, and fusion looks ahead at constants.
        for index, node in order:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.check_arity(index, node)
                self.consts[node.output[0]] = _constant_node_value(node, self.node_label(index, node))
        for pos, (index, node) in enumerate(order):
            if index in self.fused or node.op_type == "Constant":
                continue
            self.convert(index, node, order[pos + 1 :])

        result = self.resolve(graph.output[0].name)
        if result in self.consts:
            raise OnnxError(f"the output of {self.where} is a constant; it does not depend on the input")
        if result not in self.values:
            raise OnnxError(
                f"the output {graph.output[0].name!r} of {self.where} is not produced by any node"
            )
        return OnnxModule(
            self.steps,
            input_name=inp.name,
            output_name=graph.output[0].name,
            input_shape=input_shape,
            output_shape=tuple(self.values[result].shape[1:]),
            declared_batch=declared_batch,
            result_tensor=result,
        )

    # ---- operators -------------------------------------------------------------------------------------

    def check_arity(self, index: int, node: Any) -> None:
        """A supported node names the inputs its operator requires and an output (else the graph is
        malformed)."""
        needed = _MIN_INPUTS.get(node.op_type, 0)
        if len(node.input) < needed or not all(node.input[:needed]) or not node.output:
            raise OnnxError(
                f"{self.node_label(index, node)} has inputs {list(node.input)} and outputs "
                f"{list(node.output)}; {node.op_type} needs {needed} named input(s) and an output. The graph "
                "is malformed: re-export the network"
            )

    def convert(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise self.unsupported(index, node, f"operator domain {node.domain!r} is not supported")
        if op not in SUPPORTED_OPS:
            raise self.unsupported(index, node, f"operator {op!r} is not supported")
        self.check_arity(index, node)
        if self.fold_constant(index, node):
            return
        handler = getattr(self, f"op_{op.lower()}")
        handler(index, node, rest)

    def fold_constant(self, index: int, node: Any) -> bool:
        """Evaluate nodes whose inputs are all constants (e.g. shape arithmetic) with numpy."""
        ins = [n for n in node.input if n]
        if not ins or not all(self.is_const(n) for n in ins):
            return False
        op = node.op_type
        vals = [self.const(n) for n in ins]
        try:
            out = self.fold(index, node, vals)
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            raise OnnxError(
                f"{self.node_label(index, node)}: its inputs are constants of shapes "
                f"{[v.shape for v in vals]} that {op} cannot combine ({type(exc).__name__}: {exc}); fix the "
                "constants or re-export the network"
            ) from exc
        self.consts[node.output[0]] = np.asarray(out)
        return True

    def fold(self, index: int, node: Any, vals: list[np.ndarray]) -> np.ndarray:
        op = node.op_type
        out: np.ndarray
        if op in ("Identity", "Dropout"):
            out = vals[0]
        elif op in ("Add", "Sub", "Mul", "Div"):
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            out = fn(vals[0], vals[1])
            if np.issubdtype(vals[0].dtype, np.integer) and op == "Div":
                out = np.floor_divide(vals[0], vals[1])
            out = out.astype(vals[0].dtype)
        elif op == "Transpose":
            out = np.transpose(vals[0], self.attrs(index, node).get("perm"))
        elif op == "Reshape" and len(vals) == 2:
            out = vals[0].reshape([int(s) if s != 0 else vals[0].shape[i] for i, s in enumerate(vals[1])])
        else:
            raise self.unsupported(index, node, "all inputs are constants, and this operator is not folded")
        return out

    def op_identity(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        self.alias[node.output[0]] = self.tensor(index, node, node.input[0])

    def op_dropout(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        attrs = self.attrs(index, node)
        if attrs.get("is_test", 1) == 0 and "is_test" in attrs:
            raise self.unsupported(index, node, "Dropout in training mode (is_test=0) is not supported")
        if len(node.input) >= 3 and node.input[2]:
            if self.is_const(node.input[2]) and self.const(node.input[2]).size != 1:
                raise OnnxError(
                    f"{self.node_label(index, node)}: training_mode {node.input[2]!r} has shape "
                    f"{self.const(node.input[2]).shape}; it must be a scalar boolean"
                )
            if not self.is_const(node.input[2]) or bool(self.const(node.input[2])):
                raise self.unsupported(index, node, "Dropout with training_mode true is not supported")
        if len(node.output) > 1 and node.output[1] and any(node.output[1] in n.input for _, n in rest):
            raise self.unsupported(index, node, "Dropout's mask output is used; only inference is supported")
        self.alias[node.output[0]] = self.tensor(index, node, node.input[0])

    def op_relu(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        x = self.tensor(index, node, node.input[0])
        self.add("relu", nn.ReLU(), [x], node.output[0], [node.name or f"#{index}"])

    def op_flatten(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        x = self.tensor(index, node, node.input[0])
        rank = len(self.shape(x))
        axis = self.attr_int(index, node, self.attrs(index, node), "axis", 1)
        axis = axis + rank if axis < 0 else axis
        if axis != 1:
            raise self.unsupported(
                index,
                node,
                f"Flatten with axis={axis} on a rank-{rank} tensor mixes the batch dimension; only axis=1",
            )
        self.add("flatten", nn.Flatten(1), [x], node.output[0], [node.name or f"#{index}"])

    def op_transpose(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        x = self.tensor(index, node, node.input[0])
        rank = len(self.shape(x))
        perm = self.attr_ints(index, node, self.attrs(index, node), "perm", list(reversed(range(rank))))
        if sorted(perm) != list(range(rank)):
            raise OnnxError(
                f"{self.node_label(index, node)}: perm {perm} is not a permutation of {rank} axes"
            )
        if perm[0] != 0:
            raise self.unsupported(index, node, f"Transpose with perm={perm} moves the batch axis 0")
        self.add("transpose", Permute(perm), [x], node.output[0], [node.name or f"#{index}"])

    def op_reshape(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        x = self.tensor(index, node, node.input[0])
        attrs = self.attrs(index, node)
        if len(node.input) >= 2 and node.input[1]:
            if not self.is_const(node.input[1]):
                raise self.unsupported(
                    index, node, "Reshape with a computed (non-constant) shape is not supported"
                )
            shape = self.const(node.input[1]).reshape(-1)
            try:
                target = [int(s) for s in shape]
            except (TypeError, ValueError, OverflowError) as exc:
                raise OnnxError(
                    f"{self.node_label(index, node)}: the shape {node.input[1]!r} holds "
                    f"{shape.tolist()[:8]}, not integers; a Reshape shape must be an int64 tensor"
                ) from exc
        elif "shape" in attrs:  # opset < 5
            target = self.attr_ints(index, node, attrs, "shape", [])
        else:
            raise OnnxError(f"{self.node_label(index, node)}: Reshape without a shape")
        in_shape = self.shape(x)
        sample = in_shape[1:]
        numel = math.prod(sample)
        declared = self.declared_batch_of_input()
        if len(target) < 2:
            raise self.unsupported(index, node, f"Reshape to {target} drops the batch dimension")
        if self.attr_int(index, node, attrs, "allowzero", 0) and 0 in target:
            raise self.unsupported(
                index, node, "Reshape with allowzero=1 and a 0 in the shape is not supported"
            )
        first = target[0]
        keeps_batch = (
            first in (-1, 0)
            or (first == 1 and declared in (1, None))
            or (declared is not None and first == declared)
        )
        if not keeps_batch:
            raise self.unsupported(
                index,
                node,
                f"Reshape to {target} does not keep the batch dimension (declared batch {declared})",
            )
        rest_shape: list[int] = []
        for i, s in enumerate(target[1:], start=1):
            if s == 0:
                if i >= len(in_shape):
                    raise OnnxError(
                        f"{self.node_label(index, node)}: shape {target} copies a missing axis {i}"
                    )
                rest_shape.append(in_shape[i])
            else:
                rest_shape.append(s)
        if rest_shape.count(-1) > 1 or (first == -1 and -1 in rest_shape):
            raise OnnxError(f"{self.node_label(index, node)}: shape {target} has more than one -1")
        if -1 in rest_shape:
            known = math.prod(s for s in rest_shape if s != -1)
            if known == 0 or numel % known:
                raise OnnxError(f"{self.node_label(index, node)}: cannot reshape {sample} into {target}")
            rest_shape[rest_shape.index(-1)] = numel // known
        if math.prod(rest_shape) != numel:
            raise self.unsupported(
                index,
                node,
                f"Reshape of per-sample shape {sample} to {target} would move values across the batch dimension",
            )
        self.add("reshape", Reshape(rest_shape), [x], node.output[0], [node.name or f"#{index}"])

    def declared_batch_of_input(self) -> int | None:
        inp = next(i for i in self.graph.input if i.name not in self.consts)
        d0 = inp.type.tensor_type.shape.dim[0]
        return d0.dim_value if d0.HasField("dim_value") and d0.dim_value > 0 else None

    def fusable_add(
        self, output: str, rest: list[tuple[int, Any]], channels: int, channel_axis: int, rank: int
    ) -> tuple[int, Any, np.ndarray] | None:
        """A following ``Add`` of a constant that can become the bias of the layer producing ``output``."""
        if output in {o.name for o in self.graph.output}:
            return None
        users = self.consumers(rest, output)
        if len(users) != 1 or users[0][1].op_type != "Add":
            return None
        idx, add = users[0]
        others = [n for n in add.input if n != output]
        if len(add.input) != 2 or len(others) != 1 or not self.is_const(others[0]):
            return None
        c = self.const(others[0])
        if c.ndim > rank or not np.issubdtype(c.dtype, np.floating):
            return None
        padded = (1,) * (rank - c.ndim) + c.shape
        ok = all(d == 1 for i, d in enumerate(padded) if i != channel_axis % rank)
        if not ok or padded[channel_axis % rank] not in (1, channels):
            return None
        return idx, add, np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)

    def absorb_add(
        self, output: str, rest: list[tuple[int, Any]], bias: np.ndarray, names: list[str], channels: int,
        channel_axis: int, rank: int,
    ) -> tuple[np.ndarray, str]:
        """Fold a following constant ``Add`` (see :meth:`fusable_add`) into ``bias``; returns the new bias and
        the tensor the layer now produces, and records the folded node in ``names`` and ``self.fused``."""
        fused = self.fusable_add(output, rest, channels, channel_axis, rank)
        if fused is None:
            return bias, output
        add_index, add, extra = fused
        self.fused.add(add_index)
        names.append(add.name or f"#{add_index}")
        return bias + extra, add.output[0]

    def op_gemm(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        attrs = self.attrs(index, node)
        alpha = self.attr_float(index, node, attrs, "alpha", 1.0)
        beta = self.attr_float(index, node, attrs, "beta", 1.0)
        if self.attr_int(index, node, attrs, "transA", 0):
            raise self.unsupported(index, node, "Gemm with transA=1 transposes the batch axis")
        x = self.tensor(index, node, node.input[0])
        if not self.is_const(node.input[1]):
            raise self.unsupported(index, node, "Gemm with a non-constant B (weight) is not supported")
        b = self.float_const(index, node, node.input[1], "B (weight)")
        if b.ndim != 2:
            raise OnnxError(f"{self.node_label(index, node)}: B has shape {b.shape}, expected 2-D")
        weight = alpha * (b if self.attr_int(index, node, attrs, "transB", 0) else b.T)  # (out, in)
        out_f, in_f = weight.shape
        if len(self.shape(x)) != 2 or self.shape(x)[1] != in_f:
            raise OnnxError(
                f"{self.node_label(index, node)}: A has shape {self.shape(x)}, expected (N, {in_f})"
            )
        bias = np.zeros(out_f, dtype=np.float32)
        if len(node.input) >= 3 and node.input[2]:
            if not self.is_const(node.input[2]):
                raise self.unsupported(index, node, "Gemm with a non-constant C (bias) is not supported")
            c = self.float_const(index, node, node.input[2], "C (bias)")
            try:
                bias = beta * np.broadcast_to(c, (1, out_f)).reshape(out_f)
            except ValueError as exc:
                raise self.unsupported(
                    index, node, f"Gemm bias C of shape {c.shape} is not a per-output vector"
                ) from exc
        self.linear("gemm", weight, bias, x, node, index, rest)

    def op_matmul(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        if self.is_const(node.input[0]) or not self.is_const(node.input[1]):
            raise self.unsupported(
                index, node, "MatMul is supported only as (graph tensor) @ (constant 2-D weight)"
            )
        x = self.tensor(index, node, node.input[0])
        w = self.float_const(index, node, node.input[1], "the weight")
        if w.ndim != 2 or len(self.shape(x)) < 2 or self.shape(x)[-1] != w.shape[0]:
            raise self.unsupported(
                index,
                node,
                f"MatMul of {self.shape(x)} by a constant of shape {w.shape} (need (.., K) @ (K, M))",
            )
        self.linear("matmul", w.T, np.zeros(w.shape[1], dtype=np.float32), x, node, index, rest)

    def linear(
        self,
        key: str,
        weight: np.ndarray,
        bias: np.ndarray,
        x: str,
        node: Any,
        index: int,
        rest: list[tuple[int, Any]],
    ) -> None:
        out_f, in_f = weight.shape
        output, names = node.output[0], [node.name or f"#{index}"]
        rank = len(self.shape(x))
        bias, output = self.absorb_add(output, rest, bias, names, out_f, -1, rank)
        layer = nn.Linear(in_f, out_f)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)))
        self.add(key, layer, [x], output, names)

    def op_conv(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        attrs = self.attrs(index, node)
        x = self.tensor(index, node, node.input[0])
        if not self.is_const(node.input[1]):
            raise self.unsupported(index, node, "Conv with a non-constant weight is not supported")
        w = self.float_const(index, node, node.input[1], "the weight")
        in_shape = self.shape(x)
        if w.ndim != 4 or len(in_shape) != 4:
            raise self.unsupported(
                index, node, f"only 2-D convolutions are supported (weight {w.shape}, input {in_shape})"
            )
        out_c, in_per_group, kh, kw = w.shape
        group = self.attr_int(index, node, attrs, "group", 1)
        kernel_shape = self.attr_ints(index, node, attrs, "kernel_shape", [kh, kw])
        if tuple(kernel_shape) != (kh, kw):
            raise OnnxError(
                f"{self.node_label(index, node)}: kernel_shape {attrs['kernel_shape']} != weight {w.shape}"
            )
        strides = tuple(self.attr_ints(index, node, attrs, "strides", (1, 1)))
        dilations = tuple(self.attr_ints(index, node, attrs, "dilations", (1, 1)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode(errors="replace") if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("NOTSET", ""):
            pads = self.attr_ints(index, node, attrs, "pads", (0, 0, 0, 0))
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            # The spatial size is static here, so the padding is too.
            begins, ends = [], []
            for size, k, s, d in zip(in_shape[2:], (kh, kw), strides, dilations, strict=True):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begins.append(small if auto_pad == "SAME_UPPER" else large)
                ends.append(large if auto_pad == "SAME_UPPER" else small)
            pads = begins + ends
        else:
            raise self.unsupported(index, node, f"auto_pad={auto_pad!r} is not supported")
        if len(pads) != 4 or min(pads) < 0:
            raise self.unsupported(index, node, f"pads={pads} (need 4 non-negative values)")
        if in_shape[1] != in_per_group * group:
            raise OnnxError(
                f"{self.node_label(index, node)}: input has {in_shape[1]} channels, weight {w.shape} with "
                f"group={group} expects {in_per_group * group}"
            )
        if out_c % group:
            raise OnnxError(
                f"{self.node_label(index, node)}: weight {w.shape} has {out_c} output channels, not a "
                f"multiple of group={group}; fix the weight or the group attribute"
            )
        bias = np.zeros(out_c, dtype=np.float32)
        if len(node.input) >= 3 and node.input[2]:
            if not self.is_const(node.input[2]):
                raise self.unsupported(index, node, "Conv with a non-constant bias is not supported")
            bias = self.float_const(index, node, node.input[2], "the bias")
            if bias.size != out_c:
                raise OnnxError(
                    f"{self.node_label(index, node)}: the bias {node.input[2]!r} has {bias.size} values for "
                    f"{out_c} output channels; it must have one per channel"
                )
            bias = bias.reshape(out_c)
        names = [node.name or f"#{index}"]
        top, left, bottom, right = pads
        if (top, left) != (bottom, right):
            padded = node.output[0] + "::padded"
            self.add("pad", nn.ZeroPad2d((left, right, top, bottom)), [x], padded, names)
            x = padded
            padding: tuple[int, int] = (0, 0)
        else:
            padding = (top, left)
        output = node.output[0]
        bias, output = self.absorb_add(output, rest, bias, names, out_c, 1, 4)
        conv = nn.Conv2d(
            in_per_group * group,
            out_c,
            (kh, kw),
            stride=strides,
            padding=padding,
            dilation=dilations,
            groups=group,
            bias=True,
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
        self.add("conv", conv, [x], output, names)

    def op_batchnormalization(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        attrs = self.attrs(index, node)
        if self.attr_int(index, node, attrs, "training_mode", 0):
            raise self.unsupported(index, node, "BatchNormalization with training_mode=1 is not supported")
        if self.attr_int(index, node, attrs, "spatial", 1) == 0:
            raise self.unsupported(index, node, "BatchNormalization with spatial=0 is not supported")
        if any(o and any(o in n.input for _, n in rest) for o in node.output[1:]):
            raise self.unsupported(index, node, "BatchNormalization's running statistics outputs are used")
        x = self.tensor(index, node, node.input[0])
        params = []
        for name in node.input[1:5]:
            if not self.is_const(name):
                raise self.unsupported(
                    index, node, f"BatchNormalization parameter {name!r} is not a constant"
                )
            params.append(torch.from_numpy(self.float_const(index, node, name, "parameter").reshape(-1)))
        scale, shift, mean, var = params
        rank = len(self.shape(x))
        channels = self.shape(x)[1]
        eps = self.attr_float(index, node, attrs, "epsilon", 1e-5)
        bn: nn.Module
        if rank == 4:
            bn = nn.BatchNorm2d(channels, eps=eps)
        elif rank in (2, 3):
            bn = nn.BatchNorm1d(channels, eps=eps)
        else:
            raise self.unsupported(
                index, node, f"BatchNormalization on a rank-{rank} tensor is not supported"
            )
        for name, param in zip(node.input[1:5], params, strict=True):
            if param.numel() not in (1, channels):  # one value is broadcast to every channel
                raise OnnxError(
                    f"{self.node_label(index, node)}: parameter {name!r} has {param.numel()} values for an "
                    f"input of {channels} channels; scale, B, mean and var need one value per channel"
                )
        if eps < 0:
            raise OnnxError(f"{self.node_label(index, node)}: epsilon={eps} is negative; it must be >= 0")
        with torch.no_grad():
            bn.weight.copy_(scale)
            bn.bias.copy_(shift)
            bn.running_mean.copy_(mean)  # type: ignore[operator]
            bn.running_var.copy_(var)  # type: ignore[operator]
        self.add("batchnorm", bn, [x], node.output[0], [node.name or f"#{index}"])

    def binary(self, index: int, node: Any) -> None:
        op = node.op_type
        a, b = node.input[0], node.input[1]
        names = [node.name or f"#{index}"]
        if self.is_const(a) or self.is_const(b):
            constant_first = self.is_const(a)
            x = self.tensor(index, node, b if constant_first else a)
            if constant_first and op == "Div":
                raise self.unsupported(index, node, "Div of a constant by a graph tensor is not affine")
            c = self.const(a if constant_first else b)
            if not np.issubdtype(c.dtype, np.floating):
                c = self.float_const(index, node, a if constant_first else b, "the constant")
            if c.ndim > len(self.shape(x)):
                raise self.unsupported(
                    index, node, f"constant of shape {c.shape} has more axes than the tensor"
                )
            module: nn.Module = ConstantBinary(
                op, torch.from_numpy(np.array(c, dtype=np.float32)), constant_first
            )
            name = self.add(op.lower(), module, [x], node.output[0], names)
            if self.shape(node.output[0]) != self.shape(x):
                raise self.unsupported(
                    index,
                    node,
                    f"{name}: the constant of shape {c.shape} broadcasts the tensor {self.shape(x)} to "
                    f"{self.shape(node.output[0])}",
                )
            return
        if op not in ("Add", "Sub"):
            raise self.unsupported(
                index, node, f"{op} of two graph tensors is not affine; only by a constant"
            )
        xa, xb = self.tensor(index, node, a), self.tensor(index, node, b)
        self.add(op.lower(), TensorBinary(op), [xa, xb], node.output[0], names)

    def op_add(self, index: int, node: Any, rest: list[tuple[int, Any]]) -> None:
        self.binary(index, node)

    op_sub = op_mul = op_div = op_add


def _shape_text(tensor_type: Any) -> str:
    if not tensor_type.HasField("shape"):
        return "no shape"
    dims = [
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim
    ]
    return f"({', '.join(dims)})"


def load_onnx(
    path: str | os.PathLike[str] | Any,
    input_layout: InputLayout = "auto",
    *,
    check: bool = False,
    atol: float = 1e-5,
) -> OnnxModule:
    """Convert an ONNX network of affine layers and ReLUs into a torch module.

    Supported operators (:data:`SUPPORTED_OPS`): ``Gemm`` (constant ``B``/``C``, any ``alpha``/``beta``/
    ``transB``; ``transA=1`` is rejected), ``MatMul`` by a constant weight (a following ``Add`` of a constant
    vector becomes its bias: one ``nn.Linear``), ``Conv`` 2-D (pads, strides, dilations, group, ``auto_pad``
    including ``SAME_*``; asymmetric pads become an ``nn.ZeroPad2d`` step), ``BatchNormalization`` (eval
    mode), ``Relu``, ``Flatten`` (axis 1), ``Reshape`` to a constant shape that keeps the batch, ``Transpose``
    keeping axis 0, ``Identity``/``Dropout`` (dropped), ``Add``/``Sub``/``Mul``/``Div`` by constants, ``Add``/
    ``Sub`` of two tensors (residuals) and ``Constant``.

    Args:
        path: an ``.onnx`` file, or an ``onnx.ModelProto``.
        input_layout: ``"auto"`` adapts NCHW images and flattened vectors to the ONNX input (see
            :meth:`OnnxModule.adapt_input`); ``"exact"`` requires ``(N, *input_shape)``.
        check: also compare the module with :func:`run_reference` on 4 random inputs in ``[0, 1)``.
        atol: the largest absolute difference ``check`` accepts.

    Returns:
        The module, float32, in eval mode.

    Raises:
        OnnxFileNotFoundError: the file does not exist.
        OnnxError: the file is not a valid ONNX model, has several inputs or outputs, has no static
            per-sample input shape, or (with ``check``) disagrees with the reference runtime.
        UnsupportedOperatorError: a node's operator or attribute is not supported (the message names the
            operator, the node and the supported operators).
        ModelError: ``input_layout`` is not ``"auto"`` or ``"exact"``.

    Example:
        >>> net = load_onnx("mnist-net_256x2.onnx")  # doctest: +SKIP
        >>> net.input_shape, net.relu_names()  # doctest: +SKIP
        ((784, 1), ['relu_0', 'relu_1'])
    """
    _check_layout(input_layout)
    model, source = _read_model(path)
    converter = _Converter(model, source)
    net = converter.run()
    net.source_path = source
    net.input_layout = input_layout
    net.float().eval()
    logger.info(
        "loaded %s: %d layers, %d ReLU layers, input %s",
        net._source(),
        len(net.plan),
        len(net.relu_names()),
        net.input_shape,
    )
    if check:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((4, *net.input_shape), generator=gen)
        with torch.no_grad():
            ours = net(x).numpy()
        ref = run_reference(model if source is None else source, x.numpy())
        err = float(np.max(np.abs(ours - ref))) if ours.size else 0.0
        if ours.shape != ref.shape or not err <= atol:
            raise OnnxError(
                f"the converted {net._source()} disagrees with the reference runtime: output shapes "
                f"{ours.shape} vs {ref.shape}, max abs difference {err:.3g} > atol={atol}"
            )
    return net


def run_reference(path: str | os.PathLike[str] | Any, x: np.ndarray) -> np.ndarray:
    """Run an ONNX network with onnxruntime (or ``onnx.reference`` when onnxruntime is not installed).

    Args:
        path: an ``.onnx`` file or an ``onnx.ModelProto``.
        x: inputs in the ONNX model's own layout, ``(N, *per-sample shape)``; cast to float32. A network
            with a fixed batch size ``B`` is run ``B`` samples at a time.

    Returns:
        The outputs for all ``N`` samples, concatenated along axis 0.

    Raises:
        OnnxFileNotFoundError: the file does not exist.
        OnnxError: the model cannot be read or has several inputs/outputs.
        InputShapeError: ``x`` does not have the declared per-sample shape, or ``N`` is not a multiple of
            a fixed batch size.

    Example:
        >>> y = run_reference("mnist-net_256x2.onnx", np.zeros((3, 784, 1), np.float32))  # doctest: +SKIP
        >>> y.shape  # doctest: +SKIP
        (3, 10)
    """
    model, source = _read_model(path)
    where = repr(str(source)) if source is not None else "the in-memory ONNX model"
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise OnnxError(f"{where} must have exactly one input and one output")
    dims = list(inputs[0].type.tensor_type.shape.dim)
    per_sample = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != len(dims) or any(
        e is not None and e != g for e, g in zip(per_sample, x.shape[1:], strict=True)
    ):
        raise InputShapeError(
            f"input of shape {x.shape} does not fit {where}, which declares {_shape_text(inputs[0].type.tensor_type)}"
        )
    step = batch if batch is not None else max(len(x), 1)
    if len(x) % step:
        raise InputShapeError(f"{where} has a fixed batch of {batch}; got {len(x)} samples, not a multiple")
    name = inputs[0].name
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)

        def run(chunk: np.ndarray) -> np.ndarray:
            return np.asarray(evaluator.run(None, {name: chunk})[0])
    else:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )

        def run(chunk: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {name: chunk})[0])

    outputs = [run(x[i : i + step]) for i in range(0, len(x), step)]
    return np.concatenate(outputs, axis=0) if outputs else np.zeros((0,), np.float32)
