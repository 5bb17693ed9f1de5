"""Writing merged weights back into an ordinary, narrower ``nn.Module`` (private helper of
:mod:`probe.complexity`), and counting parameters and FLOPs."""

from __future__ import annotations

import copy

import torch
from torch import nn

from probe.complexity.graph import Analysis, analyse
from probe.complexity.merge import Merger
from probe.core.errors import ModelError


def _set_param(mod: nn.Module, name: str, value: torch.Tensor | None, like: torch.Tensor | None) -> None:
    if value is None or like is None:
        return
    setattr(mod, name, nn.Parameter(value.to(like.dtype), requires_grad=like.requires_grad))


def resize_module(mod: nn.Module, out: int, nin: int) -> None:
    """Give a Linear/Conv2d ``out`` outputs and ``nin`` inputs (zero weights), keeping everything else."""
    w = mod.weight
    if isinstance(mod, nn.Linear):
        _set_param(mod, "weight", torch.zeros(out, nin), w)
        mod.in_features, mod.out_features = nin, out
    else:
        _set_param(mod, "weight", torch.zeros(out, nin, *w.shape[2:]), w)
        mod.in_channels, mod.out_channels = nin, out
    if mod.bias is not None:
        _set_param(mod, "bias", torch.zeros(out), mod.bias)


def resize_batchnorm(bn: nn.Module, n: int) -> None:
    """Give a BatchNorm ``n`` features (identity statistics)."""
    if bn.weight is not None:
        _set_param(bn, "weight", torch.ones(n), bn.weight)
        _set_param(bn, "bias", torch.zeros(n), bn.bias)
    if bn.running_mean is not None:
        bn.running_mean = torch.zeros(n, dtype=bn.running_mean.dtype)
        bn.running_var = torch.ones(n, dtype=bn.running_var.dtype)
    bn.num_features = n


def resize_like(model: nn.Module, state: dict[str, torch.Tensor], reshapes: list[str]) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv2d/BatchNorm modules take the shapes stored in ``state``."""
    merged = copy.deepcopy(model).cpu().eval()
    for name, mod in merged.named_modules():
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        shape = state[key].shape
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and tuple(mod.weight.shape) != tuple(shape):
            resize_module(mod, shape[0], shape[1])
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and mod.num_features != shape[0]:
            resize_batchnorm(mod, shape[0])
    mods = dict(merged.named_modules())
    for r in reshapes:
        mods[r].shape = (-1,)
    try:
        merged.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"the saved merged weights do not fit this model ({err}); pass the model that was "
                         "measured") from err
    return merged


def build_merged(model: nn.Module, analysis: Analysis, merger: Merger, example: torch.Tensor) -> nn.Module:
    """The merged model: a deep copy of ``model`` with narrower Linear/Conv2d/BatchNorm modules."""
    merged = copy.deepcopy(model).cpu().eval()
    mods = dict(merged.named_modules())
    width = {g: (merger.size(g) if g in merger.count else grp.size) for g, grp in analysis.groups.items()}
    for m in analysis.modules:
        mod, w = mods[m], merger.W[m]
        ig = analysis.in_group[m]
        if ig is None:
            nin = mod.weight.shape[1]
        else:
            nin = width[ig] * (w.shape[2] if isinstance(mod, nn.Linear) else 1)
        resize_module(mod, width[analysis.out_group[m]], nin)
        if m in analysis.batchnorm:
            resize_batchnorm(mods[analysis.batchnorm[m]], width[analysis.out_group[m]])
    for r in analysis.reshapes:
        mods[r].shape = (-1,)
    after = analyse(merged, example)  # where each merged feature's columns now live
    for m in analysis.modules:
        mod = mods[m]
        w, b, bn = merger.module_tensors(m)
        out = w.shape[0]
        ig = after.in_group[m]
        if ig is None:
            real = w.reshape(mod.weight.shape)
        else:
            cols = next(c.cols for c in after.groups[ig].consumers if c.module == m)
            if isinstance(mod, nn.Linear):
                real = torch.zeros(out, mod.in_features, dtype=w.dtype)
                real[:, cols.reshape(-1)] = w.reshape(out, -1)
            else:
                real = torch.zeros(out, mod.in_channels, w.shape[2], dtype=w.dtype)
                real[:, cols[:, 0], :] = w
                real = real.reshape(mod.weight.shape)
        _set_param(mod, "weight", real, mod.weight)
        bn_mod = mods[analysis.batchnorm[m]] if m in analysis.batchnorm else None
        if bn is not None and bn_mod is not None:  # paper rule: BatchNorm kept, with merged statistics
            _set_param(mod, "bias", b, mod.bias)
            _set_param(bn_mod, "weight", bn.gamma, bn_mod.weight)
            _set_param(bn_mod, "bias", bn.beta, bn_mod.bias)
            bn_mod.running_mean = bn.mean.to(bn_mod.running_mean.dtype)
            bn_mod.running_var = bn.var.to(bn_mod.running_var.dtype)
        elif bn_mod is not None:
            # exact rule: the BatchNorm was folded into (W, b); it becomes the identity (plus the bias when
            # the Linear/Conv2d has none). var = 1 - eps makes sqrt(var + eps) exactly 1.
            dtype = bn_mod.running_var.dtype
            bn_mod.running_mean = torch.zeros(out, dtype=dtype)
            bn_mod.running_var = torch.full((out,), 1.0 - bn_mod.eps, dtype=dtype)
            if bn_mod.weight is None or bn_mod.bias is None:
                raise ModelError(f"BatchNorm {analysis.batchnorm[m]!r} has affine=False; the exact rule folds "
                                 "BatchNorm and needs affine=True (or use rule='paper')")
            _set_param(bn_mod, "weight", torch.ones(out), bn_mod.weight)
            if mod.bias is not None:
                _set_param(mod, "bias", b, mod.bias)
                _set_param(bn_mod, "bias", torch.zeros(out), bn_mod.bias)
            else:
                _set_param(bn_mod, "bias", b, bn_mod.bias)
        else:
            _set_param(mod, "bias", b, mod.bias)
    return merged


def check_output_shape(expected: tuple[int, ...], merged: nn.Module, example: torch.Tensor) -> None:
    """Raise if ``merged`` does not map ``example`` to per-sample shape ``expected`` (must never happen)."""
    try:
        with torch.no_grad():
            got = tuple(merged(example).shape[1:])
    except Exception as err:
        raise ModelError(f"the merged model fails on an example input ({type(err).__name__}: {err}); this is a "
                         "bug in probe.complexity, please report it with the model") from err
    if got != tuple(expected):
        raise ModelError(f"the merged model's output shape {got} differs from the original's {tuple(expected)}; "
                         "this is a bug in probe.complexity, please report it with the model")


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (batch 1): 2 x multiply-accumulates of Linear and Conv2d."""
    total = 0

    def hook(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features
        else:
            total += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.weight[0, 0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)
