"""Automatic feature grouping for iterative feature merging (private helper of :mod:`probe.complexity`).

A *feature group* is a set of channels (or units) that must be merged together: the output features of one
or more producers (``nn.Linear`` / ``nn.Conv2d``, each optionally followed directly by a BatchNorm), carried
through feature-wise operations (ReLU, pooling, Flatten, reshapes, dropout) to the consumers whose input
columns (or input channels) they feed. A residual ``a + b`` ties the groups of ``a`` and ``b`` into one.

The graph comes from ``torch.fx`` (any traceable module) or, for :class:`probe.graph.onnx.OnnxModule`, from its
execution plan. It is run once on a batch-1 example while every tensor that carries features also carries two
integer maps of the same shape: ``fmap`` (which feature each element belongs to) and ``pmap`` (the element's
position inside its feature, e.g. ``h * W + w``). Shape operations are applied to the maps exactly as to the
values, so a ``Flatten`` after a convolution ties each channel to the block of ``H * W`` input columns of the
next ``nn.Linear`` without any special case, whatever the memory layout (NCHW or NHWC + transpose).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from probe.core.errors import ModelError

_PRODUCERS = (nn.Linear, nn.Conv2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_ELEMENTWISE_MODULES = (nn.ReLU, nn.Identity, nn.Dropout)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCS = {torch.relu, F.relu, F.dropout, torch.nn.functional.dropout}
_POOL_FUNCS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.max_pool2d}
_SHAPE_FUNCS = {torch.flatten, torch.reshape, torch.permute, torch.transpose}
_SHAPE_METHODS = {"flatten", "view", "reshape", "permute", "transpose", "contiguous"}
_ELEMENTWISE_METHODS = {"relu"}
_ADD_FUNCS = {operator.add, torch.add, operator.iadd}
SUPPORTED = ("Linear, Conv2d (groups=1), BatchNorm1d/2d directly after a Linear/Conv2d, ReLU, Identity, "
             "Dropout, Flatten/flatten/view/reshape/permute/transpose, MaxPool2d, AvgPool2d, "
             "AdaptiveAvg/MaxPool2d, residual a + b of two feature tensors")


@dataclass
class Consumer:
    """A Linear/Conv2d reading a group: ``cols[f]`` are the input columns (Linear, ordered by position
    inside the feature) or the single input channel (Conv2d) of feature ``f``."""

    module: str
    cols: torch.Tensor


@dataclass
class Group:
    """One feature group after ties are resolved."""

    name: str
    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    frozen: bool = False
    frozen_reason: str = ""


@dataclass
class Analysis:
    """Everything the merger needs: groups, and for each weight module its input/output groups."""

    groups: dict[str, Group]
    order: list[str]  # mergeable-or-not group names in execution order
    modules: dict[str, nn.Module]  # weight modules (Linear/Conv2d) by qualified name, execution order
    out_group: dict[str, str]  # weight module -> group of its outputs
    in_group: dict[str, str | None]  # weight module -> group of its inputs (None: not features)
    batchnorm: dict[str, str]  # weight module -> the BatchNorm right after it
    reshapes: list[str]  # ONNX Reshape modules on features (rewritten to (N, -1) when widths change)
    output_shape: tuple[int, ...]


@dataclass
class _Tag:
    gid: int
    fmap: torch.Tensor
    pmap: torch.Tensor


class _Ties:
    """Union-find over group ids."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


@dataclass
class _Node:
    name: str
    op: str  # placeholder | get_attr | call_module | call_function | call_method | output
    target: Any
    args: tuple
    kwargs: dict
    users: int = 0


def _fx_nodes(model: nn.Module) -> list[_Node]:
    import torch.fx

    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as err:  # fx raises many kinds of errors for untraceable control flow
        raise ModelError(
            f"could not trace the model with torch.fx ({type(err).__name__}: {err}); feature complexity needs "
            "a model without data-dependent control flow (e.g. an nn.Sequential of " + SUPPORTED + ")"
        ) from err
    nodes = []
    for n in traced.graph.nodes:
        args = torch.fx.node.map_arg(n.args, lambda a: _Ref(a.name))
        kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: _Ref(a.name))
        nodes.append(_Node(n.name, n.op, n.target, args, kwargs, len(n.users)))
    return nodes


def _plan_nodes(model: nn.Module) -> list[_Node]:
    nodes = [_Node(model.input_name, "placeholder", model.input_name, (), {})]
    for step in model.plan:
        nodes.append(_Node(step.output, "call_module", step.module, tuple(_Ref(i) for i in step.inputs), {}))
    nodes.append(_Node("output", "output", "output", (_Ref(model._result),), {}))
    counts: dict[str, int] = {}
    for n in nodes:
        for a in n.args:
            counts[a.name] = counts.get(a.name, 0) + 1
    for n in nodes:
        n.users = counts.get(n.name, 0)
    return nodes


@dataclass(frozen=True)
class _Ref:
    name: str


def is_onnx_module(model: nn.Module) -> bool:
    return hasattr(model, "plan") and hasattr(model, "adapt_input") and hasattr(model, "input_name")


def _map(obj: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(obj, _Ref):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _refs(obj: Any) -> list[_Ref]:
    out: list[_Ref] = []
    _map(obj, lambda r: out.append(r))
    return out


def _swap(tags: dict[str, _Tag], env: dict[str, Any], name: str, which: str) -> Callable[[_Ref], Any]:
    """Argument resolver that substitutes the feature map ``which`` for the tensor ``name``."""
    return lambda ref: getattr(tags[ref.name], which) if ref.name == name else env[ref.name]


def _describe(node: _Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)!r} (graph node {node.name!r})"
    return f"method .{node.target}() (graph node {node.name!r})"


def _feature_channels(tag: _Tag, where: str) -> torch.Tensor:
    """For a (1, C, ...) tensor whose channels are features: the feature id of every channel."""
    f = tag.fmap
    if f.dim() < 2:
        raise ModelError(f"{where} needs a (N, C, ...) feature tensor, got shape {tuple(f.shape)}")
    flat = f.reshape(f.shape[0], f.shape[1], -1)
    if not torch.equal(flat, flat[..., :1].expand_as(flat)):
        raise ModelError(f"{where} reads a tensor whose channels are not whole features (its input was "
                         "reshaped across the channel axis); supported: " + SUPPORTED)
    return flat[0, :, 0]


def _consumer_cols(mod: nn.Module, tag: _Tag, n_features: int, where: str) -> torch.Tensor:
    """The ``cols`` of a :class:`Consumer`: per feature, the Linear's input columns ordered by position inside
    the feature (n_features, width), or the Conv2d's input channel (n_features, 1)."""
    if isinstance(mod, nn.Linear):
        if tag.fmap.dim() != 2:
            raise ModelError(f"{where} reads features of shape {tuple(tag.fmap.shape[1:])}; only "
                             "(N, features) inputs to nn.Linear are supported (flatten first)")
        fm, pm = tag.fmap[0], tag.pmap[0]
        cols = []
        for f in range(n_features):
            idx = torch.nonzero(fm == f).flatten()
            cols.append(idx[torch.argsort(pm[idx])])
        widths = {len(c) for c in cols}
        if len(widths) != 1 or 0 in widths:
            raise ModelError(f"{where}: the features feeding it do not map to equal-size column "
                             "blocks; supported: " + SUPPORTED)
        return torch.stack(cols)
    ch = _feature_channels(tag, where)
    if not torch.equal(torch.sort(ch).values, torch.arange(n_features)):
        raise ModelError(f"{where}: its input channels are not a permutation of the features "
                         "feeding it; supported: " + SUPPORTED)
    return torch.argsort(ch).view(-1, 1)


def _feature_op(node: _Node, mod: nn.Module | None, onnx: bool) -> str | None:
    """Which feature-wise operation ``node`` is (``"batchnorm"``, ``"elementwise"``, ``"shape"``, ``"pool"``,
    ``"add"``), checked in that order; None: unsupported."""
    fn, method = node.op == "call_function", node.op == "call_method"
    if isinstance(mod, _BATCHNORMS):
        return "batchnorm"
    if isinstance(mod, _ELEMENTWISE_MODULES) or (fn and node.target in _ELEMENTWISE_FUNCS) or (
            method and node.target in _ELEMENTWISE_METHODS):
        return "elementwise"
    if isinstance(mod, nn.Flatten) or (fn and node.target in _SHAPE_FUNCS) or (
            method and node.target in _SHAPE_METHODS) or (
            mod is not None and type(mod).__name__ in ("Permute", "Reshape") and onnx):
        return "shape"
    if isinstance(mod, _POOL_MODULES) or (fn and node.target in _POOL_FUNCS):
        return "pool"
    if (fn and node.target in _ADD_FUNCS) or (method and node.target == "add") or (
            mod is not None and type(mod).__name__ == "TensorBinary" and getattr(mod, "op", "") == "Add"):
        return "add"
    return None


class _Propagation:
    """One run of the graph on the example with feature maps: the values, the tags of the tensors that carry
    features, and what every (not yet tied) group id is made of."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model, self.example = model, example
        self.modules = dict(model.named_modules())
        self.onnx = is_onnx_module(model)
        self.nodes = _plan_nodes(model) if self.onnx else _fx_nodes(model)
        self.by_name = {n.name: n for n in self.nodes}
        self.ties = _Ties()
        self.env: dict[str, Any] = {}
        self.tags: dict[str, _Tag] = {}
        self.producers_of: dict[int, list[str]] = {}
        self.consumers_of: dict[int, list[Consumer]] = {}
        self.sizes: dict[int, int] = {}
        self.frozen: dict[int, str] = {}
        self.weight_modules: dict[str, nn.Module] = {}
        self.out_gid: dict[str, int] = {}
        self.in_gid: dict[str, int | None] = {}
        self.batchnorm: dict[str, str] = {}
        self.reshapes: list[str] = []
        self.output_shape: tuple[int, ...] = ()

    def run(self) -> _Propagation:
        """Visit every node in execution order."""
        for node in self.nodes:
            if node.op == "placeholder":
                self.env[node.name] = self.example
            elif node.op == "get_attr":
                value: Any = self.model
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                self.env[node.name] = value
            elif node.op == "output":
                self.visit_output(node)
            else:
                self.visit_call(node)
        return self

    def visit_output(self, node: _Node) -> None:
        """Record the output shape; groups whose features are a model output are frozen."""
        out_refs = _refs(node.args)
        result = self.env[out_refs[0].name] if out_refs else None
        if isinstance(result, torch.Tensor):
            self.output_shape = tuple(result.shape[1:])
        for r in out_refs:
            if r.name in self.tags:
                self.frozen.setdefault(self.tags[r.name].gid, "its features are a model output")

    def apply(self, node: _Node, args: tuple, kwargs: dict) -> Any:
        """Run the operation of ``node`` on ``args`` / ``kwargs``."""
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        obj, *rest = args
        return getattr(obj, node.target)(*rest, **kwargs)

    def visit_call(self, node: _Node) -> None:
        """Run a module / function / method node, then tag its output (a producer starts a new group)."""
        args = _map(node.args, lambda r: self.env[r.name])
        kwargs = _map(node.kwargs, lambda r: self.env[r.name])
        tagged = [r for r in _refs((node.args, node.kwargs)) if r.name in self.tags]
        try:
            value = self.apply(node, args, kwargs)
        except Exception as err:
            raise ModelError(
                f"running {_describe(node, self.modules)} on a batch-1 example of shape "
                f"{tuple(self.example.shape)} failed ({type(err).__name__}: {err}); check input_shape or the "
                "model's hard-coded sizes"
            ) from err
        self.env[node.name] = value
        mod = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, _PRODUCERS):
            self.visit_producer(node, mod, value, tagged)
        elif tagged and isinstance(value, torch.Tensor):
            self.visit_feature_op(node, mod, value, tagged)
        # else nothing here carries features (input normalisation, x.shape[0], ...): no constraint

    def new_group(self, module: str, value: torch.Tensor) -> _Tag:
        """A fresh group for the output features of producer ``module``, with its identity feature maps."""
        gid = self.ties.new()
        self.producers_of[gid] = [module]
        self.consumers_of[gid] = []
        self.sizes[gid] = int(value.shape[1])
        shape = value.shape
        idx = torch.arange(shape[1]).view(1, -1, *([1] * (value.dim() - 2)))
        fmap = idx.expand(shape).clone()
        spatial = math.prod(shape[2:])
        pmap = torch.arange(spatial).view(1, 1, *shape[2:]).expand(shape).clone() if value.dim() > 2 else \
            torch.zeros(shape, dtype=torch.long)
        return _Tag(gid, fmap, pmap)

    def visit_producer(self, node: _Node, mod: nn.Module, value: Any, tagged: list[_Ref]) -> None:
        """A Linear/Conv2d: it consumes the group it reads (if any) and produces a new one."""
        where = _describe(node, self.modules)
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise ModelError(f"{where} is a grouped convolution (groups={mod.groups}); "
                             "supported: " + SUPPORTED)
        if node.target in self.weight_modules:
            raise ModelError(f"{where} is called more than once (shared weights); "
                             "feature merging needs every Linear/Conv2d to be used once")
        self.weight_modules[node.target] = mod
        self.in_gid[node.target] = None
        if tagged:
            tag = self.tags[tagged[0].name]
            cols = _consumer_cols(mod, tag, self.sizes[tag.gid], where)
            self.consumers_of[tag.gid].append(Consumer(node.target, cols))
            self.in_gid[node.target] = tag.gid
        tag = self.new_group(node.target, value)
        self.out_gid[node.target] = tag.gid
        self.tags[node.name] = tag

    def visit_feature_op(self, node: _Node, mod: nn.Module | None, value: torch.Tensor,
                         tagged: list[_Ref]) -> None:
        """A feature-wise operation: carry (or tie) the group of its input to its output."""
        src = self.tags[tagged[0].name]
        where = _describe(node, self.modules)
        kind = _feature_op(node, mod, self.onnx)
        if kind == "batchnorm":
            tag = self.through_batchnorm(node, src, tagged, where)
        elif kind == "elementwise":
            tag = src
        elif kind == "shape":
            tag = self.through_shape(node, mod, src, tagged, where)
        elif kind == "pool":
            ch = _feature_channels(src, where)
            shape = value.shape
            fmap = ch.view(1, -1, 1, 1).expand(shape).clone()
            pmap = torch.arange(math.prod(shape[2:])).view(1, 1, *shape[2:]).expand(shape).clone()
            tag = _Tag(src.gid, fmap, pmap)
        elif kind == "add":
            tag = self.through_add(node, tagged, where)
        else:
            raise ModelError(f"unsupported operation on features: {where}; supported: " + SUPPORTED)
        self.tags[node.name] = tag
        if tag.fmap.shape != value.shape:
            raise ModelError(f"{where}: internal shape tracking failed")

    def through_batchnorm(self, node: _Node, src: _Tag, tagged: list[_Ref], where: str) -> _Tag:
        """A BatchNorm directly after the producer whose output it alone reads: folded into that producer."""
        prev = self.by_name[tagged[0].name]
        prev_mod = self.modules.get(prev.target) if prev.op == "call_module" else None
        if not isinstance(prev_mod, _PRODUCERS) or prev.users != 1:
            raise ModelError(
                f"{where} must directly follow a Linear/Conv2d whose output it alone reads (it follows "
                f"graph node {prev.name!r}); BatchNorm elsewhere cannot be merged feature-wise"
            )
        self.batchnorm[prev.target] = node.target
        return src

    def through_shape(self, node: _Node, mod: nn.Module | None, src: _Tag, tagged: list[_Ref],
                      where: str) -> _Tag:
        """A shape operation: applied to the feature maps exactly as to the values."""
        if len(tagged) != 1:
            raise ModelError(f"{where} combines several feature tensors; supported: " + SUPPORTED)
        if mod is not None and type(mod).__name__ == "Reshape":
            if len(mod.shape) != 1:
                raise ModelError(f"{where} reshapes features to a fixed shape {mod.shape}; only a flatten "
                                 "to (N, -1) can follow merged widths")
            self.reshapes.append(node.target)
        name = tagged[0].name
        fm = self.apply(node, _map(node.args, _swap(self.tags, self.env, name, "fmap")),
                        _map(node.kwargs, _swap(self.tags, self.env, name, "fmap")))
        pm = self.apply(node, _map(node.args, _swap(self.tags, self.env, name, "pmap")),
                        _map(node.kwargs, _swap(self.tags, self.env, name, "pmap")))
        return _Tag(src.gid, fm, pm)

    def through_add(self, node: _Node, tagged: list[_Ref], where: str) -> _Tag:
        """A residual ``a + b`` of two feature tensors whose features line up: ties their groups."""
        tensors = [a for a in _refs(node.args) if isinstance(self.env[a.name], torch.Tensor)]
        if len(tagged) != 2 or len(tensors) != 2:
            raise ModelError(f"{where} adds features to something that is not features of the same width "
                             "(only a residual a + b of two feature tensors is supported)")
        a, b = self.tags[tagged[0].name], self.tags[tagged[1].name]
        if not (torch.equal(a.fmap, b.fmap) and torch.equal(a.pmap, b.pmap)):
            raise ModelError(f"{where} adds two feature tensors whose features do not line up")
        self.ties.union(a.gid, b.gid)
        return _Tag(self.ties.find(a.gid), a.fmap, a.pmap)

    def groups(self) -> tuple[dict[str, Group], dict[int, str]]:
        """Resolve ties: one :class:`Group` per union-find root, named after its first producer; also the
        root id -> group name."""
        groups: dict[str, Group] = {}
        root_name: dict[int, str] = {}
        for gid in sorted(self.producers_of):
            root = self.ties.find(gid)
            if root not in root_name:
                root_name[root] = self.producers_of[gid][0]
                groups[root_name[root]] = Group(root_name[root], self.sizes[gid])
            g = groups[root_name[root]]
            if gid != root:
                g.producers.extend(self.producers_of[gid])
            else:
                g.producers[:0] = self.producers_of[gid]
            g.consumers.extend(self.consumers_of[gid])
            if gid in self.frozen:
                g.frozen, g.frozen_reason = True, self.frozen[gid]
        for g in groups.values():
            g.producers = sorted(set(g.producers), key=list(self.weight_modules).index)
        return groups, root_name

    def analysis(self) -> Analysis:
        """The :class:`Analysis` of the finished run."""
        groups, root_name = self.groups()
        find = self.ties.find
        return Analysis(
            groups=groups,
            order=list(groups),
            modules=self.weight_modules,
            out_group={m: root_name[find(g)] for m, g in self.out_gid.items()},
            in_group={m: (None if g is None else root_name[find(g)]) for m, g in self.in_gid.items()},
            batchnorm=self.batchnorm,
            reshapes=self.reshapes,
            output_shape=self.output_shape,
        )


def analyse(model: nn.Module, example: torch.Tensor) -> Analysis:
    """Find the feature groups of ``model`` by running it once on ``example`` (batch 1) with feature maps.

    Raises:
        ModelError: the model cannot be traced, or an operator touches features in a way merging cannot
            follow (the message names the module or operator and lists what is supported).
    """
    try:
        return _Propagation(model, example).run().analysis()
    except (RuntimeError, IndexError, TypeError) as err:  # an operator applied to features it cannot take
        raise ModelError(f"cannot follow the model's features through its graph: {str(err).splitlines()[0]}. "
                         f"Supported: {SUPPORTED}") from err
