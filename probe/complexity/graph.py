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


def analyse(model: nn.Module, example: torch.Tensor) -> Analysis:
    """Find the feature groups of ``model`` by running it once on ``example`` (batch 1) with feature maps.

    Raises:
        ModelError: the model cannot be traced, or an operator touches features in a way merging cannot
            follow (the message names the module or operator and lists what is supported).
    """
    modules = dict(model.named_modules())
    onnx = is_onnx_module(model)
    nodes = _plan_nodes(model) if onnx else _fx_nodes(model)
    by_name = {n.name: n for n in nodes}
    ties = _Ties()
    env: dict[str, Any] = {}
    tags: dict[str, _Tag] = {}
    producers_of: dict[int, list[str]] = {}
    consumers_of: dict[int, list[Consumer]] = {}
    sizes: dict[int, int] = {}
    frozen: dict[int, str] = {}
    weight_modules: dict[str, nn.Module] = {}
    out_gid: dict[str, int] = {}
    in_gid: dict[str, int | None] = {}
    batchnorm: dict[str, str] = {}
    reshapes: list[str] = []
    output_shape: tuple[int, ...] = ()

    def new_group(module: str, value: torch.Tensor) -> _Tag:
        gid = ties.new()
        producers_of[gid] = [module]
        consumers_of[gid] = []
        sizes[gid] = int(value.shape[1])
        shape = value.shape
        idx = torch.arange(shape[1]).view(1, -1, *([1] * (value.dim() - 2)))
        fmap = idx.expand(shape).clone()
        spatial = math.prod(shape[2:])
        pmap = torch.arange(spatial).view(1, 1, *shape[2:]).expand(shape).clone() if value.dim() > 2 else \
            torch.zeros(shape, dtype=torch.long)
        return _Tag(gid, fmap, pmap)

    def channel_of_feature(tag: _Tag, where: str) -> torch.Tensor:
        """For a (1, C, ...) tensor whose channels are features: the feature id of every channel."""
        f = tag.fmap
        if f.dim() < 2:
            raise ModelError(f"{where} needs a (N, C, ...) feature tensor, got shape {tuple(f.shape)}")
        flat = f.reshape(f.shape[0], f.shape[1], -1)
        if not torch.equal(flat, flat[..., :1].expand_as(flat)):
            raise ModelError(f"{where} reads a tensor whose channels are not whole features (its input was "
                             "reshaped across the channel axis); supported: " + SUPPORTED)
        return flat[0, :, 0]

    def run_node(node: _Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        obj, *rest = args
        return getattr(obj, node.target)(*rest, **kwargs)

    for node in nodes:
        if node.op == "placeholder":
            env[node.name] = example
            continue
        if node.op == "get_attr":
            value: Any = model
            for part in str(node.target).split("."):
                value = getattr(value, part)
            env[node.name] = value
            continue
        if node.op == "output":
            out_refs = _refs(node.args)
            result = env[out_refs[0].name] if out_refs else None
            if isinstance(result, torch.Tensor):
                output_shape = tuple(result.shape[1:])
            for r in out_refs:
                if r.name in tags:
                    frozen.setdefault(tags[r.name].gid, "its features are a model output")
            continue
        args = _map(node.args, lambda r: env[r.name])
        kwargs = _map(node.kwargs, lambda r: env[r.name])
        tagged = [r for r in _refs((node.args, node.kwargs)) if r.name in tags]
        try:
            value = run_node(node, args, kwargs)
        except Exception as err:
            raise ModelError(
                f"running {_describe(node, modules)} on a batch-1 example of shape {tuple(example.shape)} "
                f"failed ({type(err).__name__}: {err}); check input_shape or the model's hard-coded sizes"
            ) from err
        env[node.name] = value
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, _PRODUCERS):
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise ModelError(f"{_describe(node, modules)} is a grouped convolution (groups={mod.groups}); "
                                 "supported: " + SUPPORTED)
            if node.target in weight_modules:
                raise ModelError(f"{_describe(node, modules)} is called more than once (shared weights); "
                                 "feature merging needs every Linear/Conv2d to be used once")
            weight_modules[node.target] = mod
            in_gid[node.target] = None
            if tagged:
                tag = tags[tagged[0].name]
                where = _describe(node, modules)
                if isinstance(mod, nn.Linear):
                    if tag.fmap.dim() != 2:
                        raise ModelError(f"{where} reads features of shape {tuple(tag.fmap.shape[1:])}; only "
                                         "(N, features) inputs to nn.Linear are supported (flatten first)")
                    fm, pm = tag.fmap[0], tag.pmap[0]
                    n = sizes[tag.gid]
                    cols = []
                    for f in range(n):
                        idx = torch.nonzero(fm == f).flatten()
                        cols.append(idx[torch.argsort(pm[idx])])
                    widths = {len(c) for c in cols}
                    if len(widths) != 1 or 0 in widths:
                        raise ModelError(f"{where}: the features feeding it do not map to equal-size column "
                                         "blocks; supported: " + SUPPORTED)
                    cols_t = torch.stack(cols)
                else:
                    ch = channel_of_feature(tag, where)
                    if not torch.equal(torch.sort(ch).values, torch.arange(sizes[tag.gid])):
                        raise ModelError(f"{where}: its input channels are not a permutation of the features "
                                         "feeding it; supported: " + SUPPORTED)
                    cols_t = torch.argsort(ch).view(-1, 1)
                consumers_of[tag.gid].append(Consumer(node.target, cols_t))
                in_gid[node.target] = tag.gid
            tag = new_group(node.target, value)
            out_gid[node.target] = tag.gid
            tags[node.name] = tag
            continue
        if not tagged or not isinstance(value, torch.Tensor):
            continue  # nothing here carries features (input normalisation, x.shape[0], ...): no constraint
        src = tags[tagged[0].name]
        where = _describe(node, modules)
        if isinstance(mod, _BATCHNORMS):
            prev = by_name[tagged[0].name]
            prev_mod = modules.get(prev.target) if prev.op == "call_module" else None
            if not isinstance(prev_mod, _PRODUCERS) or prev.users != 1:
                raise ModelError(
                    f"{where} must directly follow a Linear/Conv2d whose output it alone reads (it follows "
                    f"graph node {prev.name!r}); BatchNorm elsewhere cannot be merged feature-wise"
                )
            batchnorm[prev.target] = node.target
            tags[node.name] = src
        elif isinstance(mod, _ELEMENTWISE_MODULES) or (node.op == "call_function" and node.target in
                                                       _ELEMENTWISE_FUNCS) or (
                node.op == "call_method" and node.target in _ELEMENTWISE_METHODS):
            tags[node.name] = src
        elif isinstance(mod, nn.Flatten) or (node.op == "call_function" and node.target in _SHAPE_FUNCS) or (
                node.op == "call_method" and node.target in _SHAPE_METHODS) or (
                mod is not None and type(mod).__name__ in ("Permute", "Reshape") and is_onnx_module(model)):
            if len(tagged) != 1:
                raise ModelError(f"{where} combines several feature tensors; supported: " + SUPPORTED)
            if mod is not None and type(mod).__name__ == "Reshape":
                if len(mod.shape) != 1:
                    raise ModelError(f"{where} reshapes features to a fixed shape {mod.shape}; only a flatten "
                                     "to (N, -1) can follow merged widths")
                reshapes.append(node.target)

            fm = run_node(node, _map(node.args, _swap(tags, env, tagged[0].name, "fmap")),
                          _map(node.kwargs, _swap(tags, env, tagged[0].name, "fmap")))
            pm = run_node(node, _map(node.args, _swap(tags, env, tagged[0].name, "pmap")),
                          _map(node.kwargs, _swap(tags, env, tagged[0].name, "pmap")))
            tags[node.name] = _Tag(src.gid, fm, pm)
        elif isinstance(mod, _POOL_MODULES) or (node.op == "call_function" and node.target in _POOL_FUNCS):
            ch = channel_of_feature(src, where)
            shape = value.shape
            fmap = ch.view(1, -1, 1, 1).expand(shape).clone()
            pmap = torch.arange(math.prod(shape[2:])).view(1, 1, *shape[2:]).expand(shape).clone()
            tags[node.name] = _Tag(src.gid, fmap, pmap)
        elif (node.op == "call_function" and node.target in _ADD_FUNCS) or (
                node.op == "call_method" and node.target == "add") or (
                mod is not None and type(mod).__name__ == "TensorBinary" and getattr(mod, "op", "") == "Add"):
            tensors = [a for a in _refs(node.args) if isinstance(env[a.name], torch.Tensor)]
            if len(tagged) != 2 or len(tensors) != 2:
                raise ModelError(f"{where} adds features to something that is not features of the same width "
                                 "(only a residual a + b of two feature tensors is supported)")
            a, b = tags[tagged[0].name], tags[tagged[1].name]
            if not (torch.equal(a.fmap, b.fmap) and torch.equal(a.pmap, b.pmap)):
                raise ModelError(f"{where} adds two feature tensors whose features do not line up")
            ties.union(a.gid, b.gid)
            tags[node.name] = _Tag(ties.find(a.gid), a.fmap, a.pmap)
        else:
            raise ModelError(f"unsupported operation on features: {where}; supported: " + SUPPORTED)
        if isinstance(value, torch.Tensor) and node.name in tags and tags[node.name].fmap.shape != value.shape:
            raise ModelError(f"{where}: internal shape tracking failed")

    # Resolve ties: one Group per union-find root, named after its first producer.
    groups: dict[str, Group] = {}
    root_name: dict[int, str] = {}
    for gid in sorted(producers_of):
        root = ties.find(gid)
        if root not in root_name:
            root_name[root] = producers_of[gid][0]
            groups[root_name[root]] = Group(root_name[root], sizes[gid])
        g = groups[root_name[root]]
        if gid != root:
            g.producers.extend(producers_of[gid])
        else:
            g.producers[:0] = producers_of[gid]
        g.consumers.extend(consumers_of[gid])
        if gid in frozen:
            g.frozen, g.frozen_reason = True, frozen[gid]
    for g in groups.values():
        g.producers = sorted(set(g.producers), key=list(weight_modules).index)
    return Analysis(
        groups=groups,
        order=list(groups),
        modules=weight_modules,
        out_group={m: root_name[ties.find(g)] for m, g in out_gid.items()},
        in_group={m: (None if g is None else root_name[ties.find(g)]) for m, g in in_gid.items()},
        batchnorm=batchnorm,
        reshapes=reshapes,
        output_shape=output_shape,
    )
