"""Fuzzing the two file parsers on mutated copies of the real VNN-COMP 2021 files.

The seeds are the mnistfc and marabou-cifar10 properties (``verify.vnnlib.read_vnnlib``) and networks
(``probe.graph.onnx.load_onnx``, the loaded module run on a batch, and ``ReluNetwork.from_onnx``). Each
example applies one to three mutations: byte-level (truncate, flip or replace bytes, insert or delete a
range, corrupt the gzip stream) and format-aware (VNN-LIB: replace a number by NaN/inf/huge/empty/garbage,
drop or add a parenthesis, delete or duplicate lines, swap or replace tokens, nest a term deeply; ONNX:
drop or duplicate a node, rename a tensor, change an operator type or domain, change an initializer's
shape, data type or values, remove an initializer, change the declared input shape or type, change
attributes, add or remove node inputs and graph inputs/outputs).

The property: every outcome is an answer (a spec; a network that loads and runs, with finite or non-finite
outputs) or a :class:`probe.core.errors.NeurospecError` -- never another exception, never a hang (each
example runs under a wall-clock alarm). Runs are derandomized: the same code and the same test selection give
the same cases every time (Hypothesis also draws some values from constants found in the loaded modules, so
a change elsewhere in the code base or another selection of test files may give other cases).
``benchmarks/fuzz_parsers.py`` runs these cases with a larger budget and records the outcome classes. The
last fuzz test prints how many cases ran and what they gave.

Regression tests for the inputs that escaped untyped (found by the fuzzer, or by reading the code while
fixing what it found) are at the end.
"""

from __future__ import annotations

import gzip
import math
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from probe.core.errors import NeurospecError, OnnxError
from probe.core.paths import data_root
from probe.graph.onnx import load_onnx
from verify.errors import VnnlibError
from verify.network import ReluNetwork
from verify.properties import Spec
from verify.vnnlib import parse_vnnlib, read_vnnlib

Draw = Callable[[st.SearchStrategy[Any]], Any]

#: Examples per fuzz test in CI (the whole file runs in about 30 s on 2 cores); the benchmark runs more.
VNNLIB_EXAMPLES = 250
ONNX_BYTE_EXAMPLES = 150
ONNX_STRUCT_EXAMPLES = 180
#: Wall-clock bound of one example (seconds); a clean parse of the largest seed takes well under 1 s.
CASE_SECONDS = 20

# ---- seeds -------------------------------------------------------------------------------------------------

VNNLIB_SEEDS = (
    ("mnistfc", "prop_0_0.03.vnnlib", 784),
    ("mnistfc", "prop_7_0.05.vnnlib", 784),
    ("marabou-cifar10", "networkcifar10_small_index1189_eps0.012_target1_orig0.vnnlib", 3072),
    ("marabou-cifar10", "networkcifar10_large_index1556_eps0.024_target9_orig8.vnnlib", 3072),
)
ONNX_SEEDS = (
    ("mnistfc", "mnist-net_256x2.onnx"),
    ("mnistfc", "mnist-net_256x4.onnx"),
    ("mnistfc", "mnist-net_256x6.onnx"),
    ("marabou-cifar10", "cifar10_small.onnx"),
    ("marabou-cifar10", "cifar10_medium.onnx"),
    ("marabou-cifar10", "cifar10_large.onnx"),
)
#: Seeds on which ``ReluNetwork.from_onnx`` also runs: in CI the fast one (0.1 s an extraction), in the
#: benchmark also the small convolutional network (0.4-1 s).
EXTRACTED_CI = frozenset({"mnist-net_256x2.onnx"})
EXTRACTED_ALL = frozenset({"mnist-net_256x2.onnx", "cifar10_small.onnx"})


def vnncomp_dir() -> Path:
    """The ``vnncomp2021`` folder of the data root (the suite needs the data: nothing is skipped for want
    of it; a missing root raises ``DataNotFoundError`` naming the expected layout)."""
    folder = data_root() / "vnncomp2021"
    assert folder.is_dir(), f"no vnncomp2021 folder in the data root {folder.parent}"
    return folder


@cache
def vnnlib_seed(index: int) -> tuple[str, bytes, int]:
    bench, name, n_inputs = VNNLIB_SEEDS[index]
    path = vnncomp_dir() / bench / name
    if not path.is_file():
        path = path.with_name(path.name + ".gz")
    raw = path.read_bytes()
    if path.suffix == ".gz":  # some copies of the benchmarks ship the properties gzip-compressed
        raw = gzip.decompress(raw)
    return name, raw, n_inputs


@cache
def onnx_seed(index: int) -> tuple[str, bytes, onnx.ModelProto]:
    bench, name = ONNX_SEEDS[index]
    raw = (vnncomp_dir() / bench / name).read_bytes()
    return name, raw, onnx.load_from_string(raw)


# ---- the harness -------------------------------------------------------------------------------------------


class Hang(BaseException):
    """An example ran past :data:`CASE_SECONDS` (a BaseException, so that no ``except Exception`` of the code
    under test turns it into an answer or a typed error)."""


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds``; restores any timer already set
    (pytest-timeout uses the same SIGALRM timer)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"the example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


OUTCOMES: dict[str, Counter[str]] = {"vnnlib": Counter(), "onnx": Counter()}
#: How often each mutation was applied (a case applies one to three).
MUTATIONS: dict[str, Counter[str]] = {"vnnlib": Counter(), "onnx": Counter()}
SECONDS: Counter[str] = Counter()


def outcome_of(call: Callable[[], str]) -> str:
    """Run one case: its answer's name, or the :class:`NeurospecError` subclass it raised. Any other exception
    (or a :class:`Hang`) propagates, which fails the property."""
    try:
        with time_bound(CASE_SECONDS):
            return call()
    except NeurospecError as err:
        assert str(err), f"{type(err).__name__} without a message"
        return type(err).__name__


def pick(draw: Draw, items: list[Any] | tuple[Any, ...] | bytes) -> Any:
    return items[draw(st.integers(0, len(items) - 1))]


def position(draw: Draw, size: int) -> int:
    """An offset in ``[0, size]``: anywhere, or near the start or end (where the structure of a file is)."""
    if size == 0:
        return 0
    where = draw(st.sampled_from(("anywhere", "head", "tail")))
    if where == "head":
        return draw(st.integers(0, min(size, 4096)))
    if where == "tail":
        return draw(st.integers(max(0, size - 4096), size))
    return draw(st.integers(0, size))


# ---- byte-level mutations (both formats) -------------------------------------------------------------------


def truncate(raw: bytes, draw: Draw) -> bytes:
    return raw[: position(draw, len(raw))]


def flip_bytes(raw: bytes, draw: Draw) -> bytes:
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 8))):
        if out:
            out[min(position(draw, len(out)), len(out) - 1)] ^= draw(st.integers(1, 255))
    return bytes(out)


ODD_BYTES = b"()-+.;eE0123456789 \n\tXY_\x00\xff\x80"


def replace_bytes(raw: bytes, draw: Draw) -> bytes:
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 8))):
        if out:
            out[min(position(draw, len(out)), len(out) - 1)] = pick(draw, ODD_BYTES)
    return bytes(out)


def insert_bytes(raw: bytes, draw: Draw) -> bytes:
    at = position(draw, len(raw))
    return raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at:]


def delete_range(raw: bytes, draw: Draw) -> bytes:
    at = position(draw, len(raw))
    return raw[:at] + raw[at + draw(st.sampled_from((1, 2, 7, 64, 1000))):]


BYTE_MUTATIONS = (truncate, flip_bytes, replace_bytes, insert_bytes, delete_range)

# ---- VNN-LIB mutations -------------------------------------------------------------------------------------

_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CONSTANT = re.compile(rb"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")  # not X_12
_TOKEN = re.compile(rb"[()]|[^\s()]+")
_PAREN = re.compile(rb"[()]")
_VARIABLE = re.compile(rb"\b[XY]_\d+\b")
ODD_NUMBERS = (b"", b"0", b"-0", b"-0.0", b"1e308", b"-1e308", b"1e309", b"-1e309", b"1e-400", b"nan", b"NaN",
               b"inf", b"-inf", b"+inf", b"Infinity", b"99999999999999999999999999999", b"1" + b"0" * 400,
               b".", b"-", b"+", b"1.2.3", b"0x1p3", b"1e", b"e5", b"--1", b"+5", b"1_000", b"\xc3\xa9")
ODD_TOKENS = (b"and", b"or", b"assert", b"declare-const", b"Real", b"Int", b"X_0", b"Y_9", b"X_784", b"Y_10",
              b"X_3072", b"X_01", b"X_-1", b"<=", b">=", b"<", b">", b"=", b"*", b"/", b"-", b"+",
              b"check-sat", b"set-logic", b"not", b"=>", b"ite", b"()", b";", b"\"", b"|",
              b"X_" + b"9" * 5000)


def spans(pattern: re.Pattern[bytes], raw: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(raw)]


def splice(raw: bytes, span: tuple[int, int], new: bytes) -> bytes:
    return raw[: span[0]] + new + raw[span[1] :]


def change_number(raw: bytes, draw: Draw) -> bytes:
    found = spans(_NUMBER, raw)
    if not found:
        return raw
    new = draw(st.one_of(st.sampled_from(ODD_NUMBERS),
                         st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).encode())))
    return splice(raw, pick(draw, found), new)


def drop_paren(raw: bytes, draw: Draw) -> bytes:
    found = spans(_PAREN, raw)
    return splice(raw, pick(draw, found), b"") if found else raw


def add_paren(raw: bytes, draw: Draw) -> bytes:
    at = position(draw, len(raw))
    return raw[:at] + pick(draw, (b"(", b")", b"()", b"(()")) + raw[at:]


def delete_lines(raw: bytes, draw: Draw) -> bytes:
    lines = raw.split(b"\n")
    at = draw(st.integers(0, len(lines) - 1))
    return b"\n".join(lines[:at] + lines[at + draw(st.integers(1, 4)) :])


def duplicate_lines(raw: bytes, draw: Draw) -> bytes:
    lines = raw.split(b"\n")
    at = draw(st.integers(0, len(lines) - 1))
    block = lines[at : at + draw(st.integers(1, 3))]
    return b"\n".join(lines[:at] + block * draw(st.integers(2, 6)) + lines[at:])


def swap_tokens(raw: bytes, draw: Draw) -> bytes:
    found = spans(_TOKEN, raw)
    if len(found) < 2:
        return raw
    i, j = sorted((draw(st.integers(0, len(found) - 1)), draw(st.integers(0, len(found) - 1))))
    if i == j:
        return raw
    (a0, a1), (b0, b1) = found[i], found[j]
    return raw[:a0] + raw[b0:b1] + raw[a1:b0] + raw[a0:a1] + raw[b1:]


def replace_token(raw: bytes, draw: Draw) -> bytes:
    found = spans(_TOKEN, raw)
    return splice(raw, pick(draw, found), pick(draw, ODD_TOKENS)) if found else raw


def rename_variable(raw: bytes, draw: Draw) -> bytes:
    found = spans(_VARIABLE, raw)
    if not found:
        return raw
    odd = st.sampled_from(("01", "-1", "9" * 30, "9" * 5000))
    index = draw(st.one_of(st.integers(0, 4000).map(str), odd))
    new = pick(draw, (b"X", b"Y")) + b"_" + index.encode()
    return splice(raw, pick(draw, found), new)


def nest_deeply(raw: bytes, draw: Draw) -> bytes:
    """Wrap a constant (or any token) in many levels of one operator (or of bare parentheses)."""
    found = spans(_CONSTANT, raw) or spans(_TOKEN, raw)
    if not found:
        return raw
    span = pick(draw, found)
    op = draw(st.sampled_from((b"+", b"-", b"*", b"and", b"or", b"")))
    depth = draw(st.sampled_from((1, 3, 50, 400, 2000, 20000)))
    head = (b"(" + op + b" ") if op else b"("
    return splice(raw, span, head * depth + raw[span[0] : span[1]] + b")" * depth)


VNNLIB_MUTATIONS = (*BYTE_MUTATIONS, change_number, change_number, drop_paren, add_paren, delete_lines,
                    duplicate_lines, swap_tokens, replace_token, rename_variable, nest_deeply)


def vnnlib_case(draw: Draw, workdir: Path) -> str:
    """One fuzz case of ``read_vnnlib``: mutate a seed property, write it (maybe gzipped), read it back."""
    _, raw, n_inputs = vnnlib_seed(draw(st.integers(0, len(VNNLIB_SEEDS) - 1)))
    for _ in range(draw(st.integers(1, 3))):
        mutate = draw(st.sampled_from(VNNLIB_MUTATIONS))
        MUTATIONS["vnnlib"][mutate.__name__] += 1
        raw = mutate(raw, draw)
    compressed = draw(st.sampled_from(("plain", "plain", "gzip", "gzip-corrupted")))
    MUTATIONS["vnnlib"][compressed] += 1
    path = workdir / ("fuzz.vnnlib" if compressed == "plain" else "fuzz.vnnlib.gz")
    if compressed != "plain":
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
        if compressed == "gzip-corrupted":
            raw = draw(st.sampled_from(BYTE_MUTATIONS))(raw, draw)
    path.write_bytes(raw)
    sizes = draw(st.sampled_from(("checked", "free")))
    expected = (n_inputs, 10) if sizes == "checked" else (None, None)

    def call() -> str:
        spec = read_vnnlib(path, *expected)
        assert isinstance(spec, Spec)
        assert spec.name == "fuzz"
        assert np.all(np.isfinite(spec.lower)) and np.all(spec.lower <= spec.upper)
        if sizes == "checked":
            assert spec.n_inputs == n_inputs
            assert all(a.shape[1] == 10 for a, _ in spec.unsafe)
        return "parsed"

    return outcome_of(call)


# ---- ONNX mutations ----------------------------------------------------------------------------------------

ODD_OPS = ("Sigmoid", "Tanh", "Softmax", "MaxPool", "Foo", "", "Relu", "Gemm", "MatMul", "Conv", "Add", "Sub",
           "Mul", "Div", "Reshape", "Flatten", "Transpose", "Identity", "Dropout", "Constant",
           "BatchNormalization")
ODD_DIMS = (0, 1, 2, 3, 7, 10, 784, 1024, 100_000, -1, 10**12)


def tensor_names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    names = {n for node in g.node for n in (*node.input, *node.output) if n}
    names |= {v.name for v in (*g.input, *g.output)} | {i.name for i in g.initializer}
    return sorted(names)


def drop_node(model: onnx.ModelProto, draw: Draw) -> None:
    del model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]


def duplicate_node(model: onnx.ModelProto, draw: Draw) -> None:
    i = draw(st.integers(0, len(model.graph.node) - 1))
    model.graph.node.insert(draw(st.integers(0, len(model.graph.node))), model.graph.node[i])


def rename_tensor(model: onnx.ModelProto, draw: Draw) -> None:
    """Rename one reference to a tensor: a node's input or output, a graph input/output, an initializer."""
    g = model.graph
    new = draw(st.sampled_from(("", "renamed", *tensor_names(model))))
    where = draw(st.sampled_from(("node input", "node output", "graph input", "graph output", "initializer")))
    if where in ("node input", "node output"):
        node = pick(draw, g.node)
        names = node.input if where == "node input" else node.output
        if names:
            names[draw(st.integers(0, len(names) - 1))] = new
    else:
        items = {"graph input": g.input, "graph output": g.output, "initializer": g.initializer}[where]
        if items:
            pick(draw, items).name = new


def change_op(model: onnx.ModelProto, draw: Draw) -> None:
    node = pick(draw, model.graph.node)
    if draw(st.booleans()):
        node.op_type = draw(st.sampled_from(ODD_OPS))
    else:
        node.domain = draw(st.sampled_from(("com.microsoft", "ai.onnx.ml", "ai.onnx", "")))


def drop_initializer(model: onnx.ModelProto, draw: Draw) -> None:
    if model.graph.initializer:
        del model.graph.initializer[draw(st.integers(0, len(model.graph.initializer) - 1))]


def reshape_initializer(model: onnx.ModelProto, draw: Draw) -> None:
    """Change an initializer's declared dims, keeping its data (so the sizes may no longer agree)."""
    if not model.graph.initializer:
        return
    init = pick(draw, model.graph.initializer)
    dims = list(init.dims)
    how = draw(st.sampled_from(("reverse", "drop", "add", "set", "clear", "flatten")))
    if how == "reverse":
        dims.reverse()
    elif how == "drop" and dims:
        del dims[draw(st.integers(0, len(dims) - 1))]
    elif how == "add":
        dims.insert(draw(st.integers(0, len(dims))), draw(st.sampled_from(ODD_DIMS)))
    elif how == "set" and dims:
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from(ODD_DIMS))
    elif how == "clear":
        dims = []
    elif how == "flatten":
        dims = [math.prod(dims)] if dims else []
    del init.dims[:]
    init.dims.extend(dims)


def retype_initializer(model: onnx.ModelProto, draw: Draw) -> None:
    """Change an initializer's declared element type, keeping its bytes."""
    if model.graph.initializer:
        pick(draw, model.graph.initializer).data_type = draw(st.sampled_from((*range(0, 24), 99)))


def poison_initializer(model: onnx.ModelProto, draw: Draw) -> None:
    """Write NaN, inf or huge values into an initializer's data."""
    if not model.graph.initializer:
        return
    init = pick(draw, model.graph.initializer)
    try:
        array = numpy_helper.to_array(init).copy()
    except Exception:  # an earlier mutation changed its dims or data type: leave it as it is
        return
    if array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        return
    flat = array.reshape(-1)
    value = draw(st.sampled_from((np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0)))
    count = draw(st.sampled_from((1, 10, flat.size)))
    flat[draw(st.integers(0, flat.size - 1)) :][:count] = value
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def change_input_shape(model: onnx.ModelProto, draw: Draw) -> None:
    tensor_type = pick(draw, model.graph.input).type.tensor_type
    dims = tensor_type.shape.dim
    how = draw(st.sampled_from(("set", "param", "drop", "add", "clear shape", "elem type")))
    if how == "set" and dims:
        dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(st.sampled_from(ODD_DIMS))
    elif how == "param" and dims:
        dims[draw(st.integers(0, len(dims) - 1))].dim_param = "n"
    elif how == "drop" and dims:
        del dims[draw(st.integers(0, len(dims) - 1))]
    elif how == "add":
        dims.add().dim_value = draw(st.sampled_from(ODD_DIMS))
    elif how == "clear shape":
        tensor_type.ClearField("shape")
    elif how == "elem type":
        tensor_type.elem_type = draw(st.sampled_from((0, 2, 6, 7, 10, 11, 99)))


def change_attribute(model: onnx.ModelProto, draw: Draw) -> None:
    node = pick(draw, model.graph.node)
    if node.attribute and draw(st.booleans()):
        del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        return
    name = draw(st.sampled_from(("transA", "transB", "alpha", "beta", "axis", "perm", "group", "strides",
                                 "pads", "dilations", "kernel_shape", "auto_pad", "epsilon", "allowzero",
                                 "shape", "value", "is_test", "training_mode", "spatial")))
    value = draw(st.sampled_from((0, 1, -1, 2, 5, 10**9, float("nan"), 0.5, [0], [1, 1], [0, 2, 1, 3],
                                  [-1, -1, -1, -1], [2, 2], "SAME_UPPER", "VALID", "BOGUS")))
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def change_node_inputs(model: onnx.ModelProto, draw: Draw) -> None:
    node = pick(draw, model.graph.node)
    how = draw(st.sampled_from(("drop input", "clear inputs", "add input", "clear outputs", "add output")))
    if how == "drop input" and node.input:
        del node.input[draw(st.integers(0, len(node.input) - 1))]
    elif how == "clear inputs":
        del node.input[:]
    elif how == "add input":
        node.input.append(draw(st.sampled_from(("", "nowhere", *tensor_names(model)))))
    elif how == "clear outputs":
        del node.output[:]
    else:
        node.output.append(draw(st.sampled_from(("", "extra", *tensor_names(model)))))


def change_graph_io(model: onnx.ModelProto, draw: Draw) -> None:
    g = model.graph
    how = draw(st.sampled_from(("add input", "add output", "drop input", "drop output", "swap io")))
    if how == "add input":
        g.input.append(helper.make_tensor_value_info("extra_in", TensorProto.FLOAT, [1, 3]))
    elif how == "add output":
        name = pick(draw, tensor_names(model))
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    elif how == "drop input" and g.input:
        del g.input[draw(st.integers(0, len(g.input) - 1))]
    elif how == "drop output" and g.output:
        del g.output[draw(st.integers(0, len(g.output) - 1))]
    elif how == "swap io" and g.input and g.output:
        g.input[0].name, g.output[0].name = g.output[0].name, g.input[0].name


def rewire_node(model: onnx.ModelProto, draw: Draw) -> None:
    """Give a node another operator and inputs taken from the graph (its first input, then any tensors), so
    that e.g. a Relu becomes a BatchNormalization whose parameters are some of the network's weights."""
    node = pick(draw, model.graph.node)
    node.op_type = draw(st.sampled_from(ODD_OPS))
    names = tensor_names(model)
    first = list(node.input[:1])
    del node.input[:]
    node.input.extend(first + [pick(draw, names) for _ in range(draw(st.integers(0, 4)))])


def constant_node(model: onnx.ModelProto, draw: Draw) -> None:
    """Turn an initializer into a Constant node (or an odd Constant node) feeding the same name."""
    g = model.graph
    if not g.initializer:
        return
    i = draw(st.integers(0, len(g.initializer) - 1))
    init = g.initializer[i]
    how = draw(st.sampled_from(("value", "value_float", "value_ints", "no value")))
    if how == "value":
        node = helper.make_node("Constant", [], [init.name], value=init)
    elif how == "value_float":
        node = helper.make_node("Constant", [], [init.name], value_float=1.5)
    elif how == "value_ints":
        node = helper.make_node("Constant", [], [init.name], value_ints=[1, -1])
    else:
        node = helper.make_node("Constant", [], [init.name])
    del g.initializer[i]
    g.node.insert(0, node)


STRUCT_MUTATIONS = (drop_node, duplicate_node, rename_tensor, change_op, drop_initializer,
                    reshape_initializer, retype_initializer, poison_initializer, change_input_shape,
                    change_attribute, change_node_inputs, change_graph_io, rewire_node, rewire_node,
                    constant_node)


def onnx_case(draw: Draw, workdir: Path, structured: bool, extracted: frozenset[str] = EXTRACTED_CI) -> str:
    """One fuzz case of the ONNX import: mutate a seed network's bytes or its protobuf, write it, load it,
    run it on a batch of the declared shape, and (small seeds) extract it as a ``ReluNetwork``."""
    name, raw, model = onnx_seed(draw(st.integers(0, len(ONNX_SEEDS) - 1)))
    if structured:
        mutated = onnx.ModelProto()
        mutated.CopyFrom(model)
        for _ in range(draw(st.integers(1, 3))):
            if not mutated.graph.node or not mutated.graph.input:  # the mutations pick nodes and inputs
                break
            mutate = draw(st.sampled_from(STRUCT_MUTATIONS))
            MUTATIONS["onnx"][mutate.__name__] += 1
            mutate(mutated, draw)
        raw = mutated.SerializeToString()
    else:
        for _ in range(draw(st.integers(1, 3))):
            mutate = draw(st.sampled_from(BYTE_MUTATIONS))
            MUTATIONS["onnx"][mutate.__name__] += 1
            raw = mutate(raw, draw)
    path = workdir / "fuzz.onnx"
    path.write_bytes(raw)

    def call() -> str:
        net = load_onnx(path)
        x = torch.rand((2, *net.input_shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = net(x)
        assert isinstance(y, torch.Tensor) and tuple(y.shape) == (2, *net.output_shape)
        if name not in extracted:
            return "loaded" if bool(torch.isfinite(y).all()) else "loaded (non-finite outputs)"
        relu = ReluNetwork.from_onnx(path)
        assert relu.n_inputs == math.prod(net.input_shape)
        return "extracted"

    return outcome_of(call)


# ---- the fuzz tests ----------------------------------------------------------------------------------------

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vnncomp_dir()
    return tmp_path_factory.mktemp("fuzz")


def _timed(kind: str, case: Callable[[], str]) -> None:
    start = time.perf_counter()
    OUTCOMES[kind][case()] += 1
    SECONDS[kind] += time.perf_counter() - start


@pytest.mark.slow
@settings(FUZZ, max_examples=VNNLIB_EXAMPLES)
@given(st.data())
def test_fuzz_read_vnnlib(workdir: Path, data: st.DataObject) -> None:
    _timed("vnnlib", lambda: vnnlib_case(data.draw, workdir))


@settings(FUZZ, max_examples=ONNX_BYTE_EXAMPLES)
@given(st.data())
def test_fuzz_onnx_bytes(workdir: Path, data: st.DataObject) -> None:
    _timed("onnx", lambda: onnx_case(data.draw, workdir, structured=False))


@settings(FUZZ, max_examples=ONNX_STRUCT_EXAMPLES)
@given(st.data())
def test_fuzz_onnx_structure(workdir: Path, data: st.DataObject) -> None:
    _timed("onnx", lambda: onnx_case(data.draw, workdir, structured=True))


def test_fuzz_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many fuzz cases ran (when the fuzz tests above ran in this session) and their outcomes."""
    with capsys.disabled():
        for kind, counts in OUTCOMES.items():
            if counts:
                shown = ", ".join(f"{k}: {v}" for k, v in counts.most_common())
                print(f"\nfuzz {kind}: {sum(counts.values())} cases in {SECONDS[kind]:.1f} s ({shown})")


# ---- regressions: inputs that escaped untyped (each raised what its comment says) --------------------------


def _text(*asserts: str) -> str:
    return "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0))\n" + "\n".join(asserts)


def test_regression_vnnlib_corrupt_deflate_stream(tmp_path: Path) -> None:
    # Was zlib.error (gzip raises it, not OSError, for a damaged deflate stream): an invalid block type.
    data = bytearray(gzip.compress(_text("(assert (<= X_0 1))", "(assert (<= Y_0 0))").encode(), mtime=0))
    data[10] = 0xFF  # the first deflate block header: BTYPE=11 is reserved
    path = tmp_path / "p.vnnlib.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(VnnlibError, match=r"cannot read the VNN-LIB file .*p\.vnnlib\.gz.*invalid block"):
        read_vnnlib(path)


@pytest.mark.parametrize("op", ["+", "and"])
def test_regression_vnnlib_deep_nesting(op: str) -> None:
    # Was RecursionError: terms and formulas are read one Python frame per level.
    def nested(depth: int) -> str:
        if op == "+":
            return _text("(assert (<= X_0 " + "(+ " * depth + "1" + ")" * depth + "))", "(assert (<= Y_0 0))")
        return _text("(assert (<= X_0 1))", "(assert " + "(and " * depth + "(<= Y_0 0)" + ")" * depth + ")")

    assert parse_vnnlib(nested(200)).upper.tolist() == [1.0]  # moderate nesting still parses
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib(nested(5000), source="p.vnnlib")
    message = str(info.value)
    line = 4 if op == "+" else 5
    expected = rf"p\.vnnlib:{line}:\d+: the formula is nested too deeply \(500\d levels"
    assert re.match(expected, message), message
    assert "flatten it" in message


def test_regression_vnnlib_huge_variable_index() -> None:
    # Was ValueError: int() refuses strings of more than 4300 digits.
    with pytest.raises(VnnlibError, match=r"^p\.vnnlib:1:16: the index of X_1111.* has 5000 digits"):
        parse_vnnlib("(declare-const X_" + "1" * 5000 + " Real)", source="p.vnnlib")


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
           shape: tuple[int, ...] = (1, 4)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _array(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _gemm(**attrs: Any) -> onnx.ModelProto:
    return _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], **attrs)],
                  [_array("w", np.ones((3, 4))), _array("b", np.zeros(3))])


def _gemm_with(change: Callable[[onnx.TensorProto], None]) -> onnx.ModelProto:
    model = _gemm()
    change(model.graph.initializer[0])
    return model


def _batchnorm(channels: int, epsilon: float = 1e-5) -> onnx.ModelProto:
    return _model([helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], epsilon=epsilon)],
                  [_array("s", np.ones(channels))], shape=(1, 2, 3, 3))


def _then_add(first: onnx.NodeProto, inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    """``first`` computes the constant ``c`` from constants; the graph adds it to ``x``."""
    return _model([first, helper.make_node("Add", ["x", "c"], ["y"])], inits)


def _constant_with_bad_value() -> onnx.ModelProto:
    value = helper.make_tensor("v", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    del value.dims[:]
    value.dims.append(5)
    return _then_add(helper.make_node("Constant", [], ["c"], value=value), [])


# (case, builder, the message's key words); the comment says what escaped before.
ONNX_REGRESSIONS = [
    # ValueError: an initializer whose data does not fit its dims
    ("initializer dims", lambda: _gemm_with(lambda t: t.dims.__setitem__(slice(None), [3, 5])),
     r"initializer 'w' \(data type 1, dims \[3, 5\]\) cannot be decoded"),
    # TypeError: an initializer of UNDEFINED data type
    ("initializer type 0", lambda: _gemm_with(lambda t: setattr(t, "data_type", 0)),
     r"initializer 'w' \(data type 0.* cannot be decoded"),
    # KeyError: an initializer of an unknown data type
    ("initializer type 99", lambda: _gemm_with(lambda t: setattr(t, "data_type", 99)),
     r"initializer 'w' \(data type 99.* cannot be decoded"),
    # ValueError: a Constant node whose value does not fit its dims
    ("constant value", _constant_with_bad_value, r"the value of the Constant 'v' .* cannot be decoded"),
    # IndexError: node.input[0] of a node without inputs
    ("relu without input", lambda: _model([helper.make_node("Relu", [], ["y"])], []),
     r"Relu node #0 .* has inputs \[\] .* needs 1 named input"),
    # IndexError: node.input[1] of a Gemm with one input
    ("gemm with one input", lambda: _model([helper.make_node("Gemm", ["x"], ["y"])], []),
     r"Gemm needs 2 named input"),
    # IndexError: vals[1] when folding an Add of one constant and an omitted ('') input
    ("add with an empty input", lambda: _then_add(helper.make_node("Add", ["a", ""], ["c"]),
                                                  [_array("a", np.ones(4))]), r"Add needs 2 named input"),
    # RuntimeError: the dry-run input of a huge declared shape cannot be allocated
    ("huge input shape",
     lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [], shape=(1, 10**12, 10**6)),
     r"declares the per-sample shape \(1000000000000, 1000000\).*cannot be allocated"),
    # ValueError: int(b'yes')
    ("string transA", lambda: _gemm(transA="yes"), r"attribute 'transA' must be an int, got b'yes'"),
    # TypeError: iterating an int perm
    ("int perm", lambda: _model([helper.make_node("Transpose", ["x"], ["y"], perm=1)], []),
     r"attribute 'perm' must be a list of ints, got 1"),
    # ValueError: int(b'one')
    ("string axis", lambda: _model([helper.make_node("Flatten", ["x"], ["y"], axis="one")], []),
     r"attribute 'axis' must be an int"),
    # RuntimeError: copy_ of a 3-value parameter into a 2-channel BatchNorm
    ("batchnorm parameter size", lambda: _batchnorm(3),
     r"parameter 's' has 3 values for an input of 2 channels"),
    # ValueError: torch's batch_norm refuses a negative eps
    ("batchnorm negative epsilon", lambda: _batchnorm(2, -1.0), r"epsilon=-1.0 is negative"),
    # ValueError: nn.Conv2d refuses out_channels not divisible by groups
    ("conv group", lambda: _model([helper.make_node("Conv", ["x", "w"], ["y"], group=2)],
                                  [_array("w", np.ones((3, 1, 1, 1)))], shape=(1, 2, 3, 3)),
     r"3 output channels, not a multiple of group=2"),
    # UnicodeDecodeError: an auto_pad that is not UTF-8
    ("binary auto_pad", lambda: _model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=b"\xff\xfe")],
                                       [_array("w", np.ones((3, 2, 1, 1)))], shape=(1, 2, 3, 3)),
     r"auto_pad=.* is not supported"),
    # ValueError: folding an Add of constants that do not broadcast
    ("fold add", lambda: _then_add(helper.make_node("Add", ["a", "b"], ["c"]),
                                   [_array("a", np.ones(3)), _array("b", np.ones(2))]),
     r"constants of shapes \[\(3,\), \(2,\)\] that Add cannot combine"),
    # ValueError: folding a Reshape of a constant to a shape of another size
    ("fold reshape", lambda: _then_add(helper.make_node("Reshape", ["a", "s"], ["c"]),
                                       [_array("a", np.ones(4)), _array("s", [3, 3], np.int64)]),
     r"that Reshape cannot combine"),
    # ValueError: int(nan) of a float Reshape shape
    ("reshape to nan",
     lambda: _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_array("s", [1, np.nan])]),
     r"the shape 's' holds \[1.0, nan\], not integers"),
    # ValueError: a STRING weight converted to float32
    ("string weight",
     lambda: _gemm_with(lambda t: t.CopyFrom(helper.make_tensor("w", TensorProto.STRING, [3, 4],
                                                                 [b"a"] * 12))),
     r"B \(weight\) 'w' of data type object cannot be read as float32"),
    # ValueError: bool() of a Dropout training_mode constant with several values
    ("dropout training_mode", lambda: _model([helper.make_node("Dropout", ["x", "", "t"], ["y"])],
                                             [_array("t", [True, False], np.bool_)]),
     r"training_mode 't' has shape \(2,\); it must be a scalar boolean"),
    # ValueError: a STRING constant added to the input
    ("string constant", lambda: _model([helper.make_node("Add", ["x", "c"], ["y"])],
                                       [helper.make_tensor("c", TensorProto.STRING, [4], [b"a"] * 4)]),
     r"the constant 'c' of data type object cannot be read as float32"),
]


def _reversed_chain(n: int) -> onnx.ModelProto:
    """``n`` Relus in a chain, stored last node first (ONNX requires topological order)."""
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}" if i + 1 < n else "y"]) for i in range(n)]
    return _model(nodes[::-1], [])


ONNX_REGRESSIONS.append(
    # RecursionError: the topological sort visits one frame per node of a chain stored out of order (found
    # by reading the code, not by the fuzzer)
    ("nodes out of order", lambda: _reversed_chain(3000),
     r"not in topological order and the graph \(3000 nodes\) is too deep"))


@pytest.mark.parametrize(("build", "words"), [(b, w) for _, b, w in ONNX_REGRESSIONS],
                         ids=[case for case, _, _ in ONNX_REGRESSIONS])
def test_regression_onnx(build: Callable[[], onnx.ModelProto], words: str) -> None:
    with pytest.raises(OnnxError, match=words):
        load_onnx(build())
