"""FFN layers of torch and TransformerLens models: discovery, weights and hooks (private helpers of probe.moe).

An FFN site is ``h = act(W_in x + b_in)``, ``y = W_out h + b_out``, or, gated (SwiGLU/GeGLU, as in LLaMA,
SmolLM2, Gemma), ``h = act(W_gate x + b_gate) * (W_up x + b_up)``. Its pre-activation ``z`` (the gate's, for
gated sites) and its neuron activations ``h`` (the input of the output projection) are observed and ``h`` is
replaced through forward hooks. For a gated site ``w_in``/``b_in`` are the gate's weights and ``w_up``/``b_up``
the up projection's; the experts partition the d_ff neurons of ``h`` either way.

* TransformerLens (``TransformerBridge``) models: ``blocks.L.mlp.hook_pre`` (z; the gate's output when
  ``cfg.gated_mlp``) and ``blocks.L.mlp.hook_post`` (h); the site is named ``blocks.L.mlp``; weights come from
  the MLP bridge's ``in``/``out`` (and ``gate``) linear bridges (HF ``Conv1D`` weights, stored transposed, are
  recognised).
* torch models: every activation module (``nn.ReLU``, ``nn.GELU``, ``nn.SiLU``) that sits between two
  ``nn.Linear`` modules in an ``nn.Sequential`` (a Linear-act-Linear block); the site is named by the
  activation module's qualified name (as ``probe.nap`` names ReLU layers) and one forward hook sees z and h.
  Gated blocks: a module with ``nn.Linear`` children ``gate_proj``/``up_proj``/``down_proj`` (Hugging Face
  LLaMA-style, e.g. ``LlamaMLP``) or ``w1``/``w3``/``w2`` and an activation child (``act_fn``, ``act`` or
  ``activation``: torch's or Hugging Face's activation modules), computing
  ``down(act(gate(x)) * up(x))``; the site is named by the block's qualified name, z is the output of the
  gate projection and h the input of the down projection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from probe.core.errors import ModelError

#: activation functions whose experts can be scored by positive post-activation mass (they are ~0 or
#: slightly negative for negative pre-activations).
SUPPORTED_ACTS = ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu")

_TORCH_ACTS: dict[type, str] = {nn.ReLU: "relu", nn.SiLU: "silu"}
#: Hugging Face's activation modules (transformers.activations), by class name.
_HF_ACTS: dict[str, str] = {"SiLUActivation": "silu", "GELUActivation": "gelu", "NewGELUActivation": "gelu_new",
                            "GELUTanh": "gelu_pytorch_tanh", "PytorchGELUTanh": "gelu_pytorch_tanh",
                            "FastGELUActivation": "gelu_fast", "ReLUActivation": "relu"}
#: (gate, up, down) child names of gated MLP blocks in plain torch models.
_GATED_NAMES = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"))
_GATED_ACT_NAMES = ("act_fn", "act", "activation", "activation_fn")
_OTHER_TORCH_ACTS = (nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.Softplus, nn.Hardtanh, nn.Mish,
                     nn.Hardswish, nn.SELU, nn.CELU, nn.PReLU, nn.Softsign, nn.Tanhshrink, nn.Identity)


class UnsupportedActivationError(ModelError):
    """The FFN's activation function cannot be split into experts by this method (the message names it)."""


Hook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]


@dataclass
class FFNSite:
    """One FFN layer: its name, activation, sizes, weights and the modules whose hooks see z and h."""

    name: str
    act: str
    w_in: torch.Tensor  # (d_ff, d_in)
    b_in: torch.Tensor  # (d_ff,)
    w_out: torch.Tensor  # (d_out, d_ff)
    b_out: torch.Tensor  # (d_out,)
    pre_module: nn.Module
    post_module: nn.Module
    in_module: nn.Module | None = None  # a module whose forward *input* is the FFN input x (torch: Linear in)
    in_is_output: bool = False  # TL: x is the *output* of ``in_module`` (mlp.hook_in)
    handles: list[Any] = field(default_factory=list, repr=False)
    #: gated sites: the up projection (d_ff, d_in) and its bias; ``w_in``/``b_in`` are the gate's
    w_up: torch.Tensor | None = None
    b_up: torch.Tensor | None = None
    #: h is the forward *input* of ``post_module`` (torch gated blocks: the down projection)
    post_is_input: bool = False

    @property
    def d_ff(self) -> int:
        return int(self.w_in.shape[0])

    @property
    def gated(self) -> bool:
        """Whether the site is gated: ``h = act(gate) * up``."""
        return self.w_up is not None

    @property
    def act_label(self) -> str:
        """The activation as reported: ``"silu"``, or ``"gated silu"`` for a gated site."""
        return f"gated {self.act}" if self.gated else self.act

    def mass(self, h: torch.Tensor) -> torch.Tensor:
        """Each neuron's activation mass: ``max(h, 0)`` (ReLU/GELU/SiLU: the small negative outputs carry
        none), or ``|h|`` for a gated site, whose sign comes from the up projection and is as large either way.
        """
        return h.abs() if self.gated else h.clamp_min(0)

    def fires(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Bool firing states: ``h > 0``, or for a gated site the open gate ``z > 0`` (the same test, since
        ``act(z) > 0`` iff ``z > 0`` for the supported activations)."""
        return z > 0 if self.gated else h > 0

    def keys(self) -> torch.Tensor:
        """One row per neuron for weight-based partitions: ``w_in``, or for a gated site the gate and up rows
        side by side, each L2-normalised (d_ff, 2 d_in), so both projections count equally."""
        if self.w_up is None:
            return self.w_in
        unit = [w.float() / w.float().norm(dim=1, keepdim=True).clamp_min(1e-12) for w in (self.w_in, self.w_up)]
        return torch.cat(unit, dim=1)

    @property
    def separate_pre(self) -> bool:
        return self.pre_module is not self.post_module

    def check_supported(self) -> None:
        if self.act not in SUPPORTED_ACTS:
            raise UnsupportedActivationError(
                f"FFN layer {self.name!r} uses activation {self.act_label!r}, which probe.moe cannot split into experts: "
                f"experts are scored by their positive post-activation mass, which needs an activation that is "
                f"(about) zero for negative inputs; supported: {list(SUPPORTED_ACTS)}. Choose other layers=..."
            )

    def hook(self, fn: Hook) -> list[Any]:
        """Call ``fn(z, h)`` on every forward pass; a tensor it returns replaces h. Returns the hook handles."""
        slot: dict[str, torch.Tensor] = {}

        def pre(_m: nn.Module, _inputs: tuple[Any, ...], out: torch.Tensor) -> None:
            slot["z"] = out

        def pre_input(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            # an in-place activation overwrites its input: keep a copy of z then
            slot["z"] = inputs[0].clone() if getattr(module, "inplace", False) else inputs[0]

        def post(_m: nn.Module, _inputs: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
            z = slot.pop("z", None)
            if z is None:
                raise ModelError(f"{self.name}: the activation ran without its pre-activation hook")
            return fn(z, out)

        def post_input(_m: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
            new = post(_m, inputs, inputs[0])
            return None if new is None else (new, *inputs[1:])

        if self.post_is_input:
            return [self.pre_module.register_forward_hook(pre), self.post_module.register_forward_pre_hook(post_input)]
        if not self.separate_pre:
            return [self.post_module.register_forward_pre_hook(pre_input), self.post_module.register_forward_hook(post)]
        return [self.pre_module.register_forward_hook(pre), self.post_module.register_forward_hook(post)]


def _gated_gap(model: nn.Module, name: str) -> str:
    """For a gated TransformerLens model (``cfg.gated_mlp``): what layer ``name`` lacks to be read as a gated
    FFN (the gate projection, the up projection, or a hook), as a sentence; ``""`` otherwise."""
    if not getattr(model.cfg, "gated_mlp", False) or not name.startswith("blocks."):
        return ""
    try:
        block = model.blocks[int(name.split(".")[1])]
    except (ValueError, IndexError, TypeError):
        return ""
    subs = dict(getattr(block, "mlp", nn.Module()).named_children())
    lacks = [what for what, ok in (("the gate projection (mlp.gate)", "gate" in subs),
                                   ("the up projection (mlp.in)", bool(subs.get("in") or subs.get("fc_in"))),
                                   (f"the hook {name}.hook_pre (the gate's output)", f"{name}.hook_pre" in model.hook_dict),
                                   (f"the hook {name}.hook_post", f"{name}.hook_post" in model.hook_dict)) if not ok]
    return f"; {name} is a gated MLP without {', '.join(lacks)}" if lacks else ""


def is_transformerlens(model: nn.Module) -> bool:
    return hasattr(model, "cfg") and hasattr(model, "hook_dict") and hasattr(model, "blocks")


def _linear_weight(module: nn.Module, d_ff: int, into_ff: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight as (out, in), bias) of a Linear / LinearBridge / HF Conv1D, oriented by ``d_ff``."""
    inner = getattr(module, "original_component", module)
    weight = inner.weight.detach()
    bias = getattr(inner, "bias", None)
    if type(inner).__name__ == "Conv1D":  # HF GPT-2 style: weight is (in, out)
        weight = weight.T
    elif weight.ndim == 2 and ((into_ff and weight.shape[0] != d_ff) or (not into_ff and weight.shape[1] != d_ff)):
        weight = weight.T
    out_dim = weight.shape[0]
    b = bias.detach() if bias is not None else torch.zeros(out_dim, dtype=weight.dtype, device=weight.device)
    return weight, b


def _tl_sites(model: nn.Module) -> dict[str, FFNSite]:
    cfg = model.cfg
    act = str(getattr(cfg, "act_fn", None))
    gated = bool(getattr(cfg, "gated_mlp", False))
    sites: dict[str, FFNSite] = {}
    for i, block in enumerate(model.blocks):
        mlp = getattr(block, "mlp", None)
        name = f"blocks.{i}.mlp"
        if mlp is None or f"{name}.hook_pre" not in model.hook_dict or f"{name}.hook_post" not in model.hook_dict:
            continue
        subs = dict(mlp.named_children())
        lin_in = subs.get("in") or subs.get("fc_in") or subs.get("c_fc")
        lin_out = subs.get("out") or subs.get("fc_out") or subs.get("c_proj")
        lin_gate = subs.get("gate") if gated else None
        if lin_in is None or lin_out is None or (gated and lin_gate is None):
            continue
        d_ff = int(cfg.d_mlp)
        w_in, b_in = _linear_weight(lin_in, d_ff, into_ff=True)
        w_out, b_out = _linear_weight(lin_out, d_ff, into_ff=False)
        w_up = b_up = None
        if lin_gate is not None:  # hook_pre is the gate's output; "in" is the up projection (hook_pre_linear)
            w_up, b_up = w_in, b_in
            w_in, b_in = _linear_weight(lin_gate, d_ff, into_ff=True)
        sites[name] = FFNSite(name, act, w_in, b_in, w_out, b_out, model.hook_dict[f"{name}.hook_pre"],
                              model.hook_dict[f"{name}.hook_post"], in_module=model.hook_dict.get(f"{name}.hook_in"),
                              in_is_output=True, w_up=w_up, b_up=b_up)
    return sites


def _torch_act_name(module: nn.Module) -> str | None:
    if type(module) in _TORCH_ACTS:
        return _TORCH_ACTS[type(module)]
    if isinstance(module, nn.GELU):
        return "gelu_new" if getattr(module, "approximate", "none") == "tanh" else "gelu"
    if isinstance(module, _OTHER_TORCH_ACTS):
        return type(module).__name__.lower()
    return None


def _gated_act_name(act: Any) -> str:
    """The activation of a gated block: a torch or Hugging Face activation module, or ``F.silu``-style
    function; anything else is named by its type (and refused by :meth:`FFNSite.check_supported`)."""
    if isinstance(act, nn.Module):
        return _torch_act_name(act) or _HF_ACTS.get(type(act).__name__) or type(act).__name__
    fn_name = getattr(act, "__name__", type(act).__name__)
    return {"silu": "silu", "relu": "relu", "gelu": "gelu"}.get(fn_name, fn_name)


def _gated_torch_site(prefix: str, module: nn.Module) -> FFNSite | None:
    children = dict(module.named_children())
    for gate_name, up_name, down_name in _GATED_NAMES:
        gate, up, down = (children.get(n) for n in (gate_name, up_name, down_name))
        if not all(isinstance(m, nn.Linear) for m in (gate, up, down)):
            continue
        act = next((getattr(module, a) for a in _GATED_ACT_NAMES if callable(getattr(module, a, None))), None)
        if act is None or gate.out_features != up.out_features or down.in_features != gate.out_features:
            return None
        zeros = torch.zeros(gate.out_features)
        return FFNSite(prefix, _gated_act_name(act), gate.weight.detach(),
                       gate.bias.detach() if gate.bias is not None else zeros, down.weight.detach(),
                       down.bias.detach() if down.bias is not None else torch.zeros(down.out_features),
                       gate, down, in_module=gate, w_up=up.weight.detach(),
                       b_up=up.bias.detach() if up.bias is not None else zeros.clone(), post_is_input=True)
    return None


def _torch_sites(model: nn.Module) -> dict[str, FFNSite]:
    sites: dict[str, FFNSite] = {}
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            gated = _gated_torch_site(prefix, seq)
            if gated is not None:
                sites[gated.name] = gated
            continue
        children = list(seq.named_children())
        for j in range(1, len(children) - 1):
            (_, before), (cname, act_mod), (_, after) = children[j - 1], children[j], children[j + 1]
            act = _torch_act_name(act_mod)
            if act is None or not (isinstance(before, nn.Linear) and isinstance(after, nn.Linear)):
                continue
            name = f"{prefix}.{cname}" if prefix else cname
            b_in = before.bias.detach() if before.bias is not None else torch.zeros(before.out_features)
            b_out = after.bias.detach() if after.bias is not None else torch.zeros(after.out_features)
            sites[name] = FFNSite(name, act, before.weight.detach(), b_in, after.weight.detach(), b_out,
                                  act_mod, act_mod, in_module=before)
    return sites


def find_ffns(model: nn.Module) -> dict[str, FFNSite]:
    """All FFN sites of ``model`` (supported activation or not), in model order."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module or a TransformerLens model, got {type(model).__name__}")
    return _tl_sites(model) if is_transformerlens(model) else _torch_sites(model)


def _normalise_name(model: nn.Module, layer: Any, names: list[str]) -> str:
    tl = is_transformerlens(model)
    if isinstance(layer, bool) or not isinstance(layer, (int, str)):
        raise ModelError(f"layers must hold ints or str names; got {layer!r} ({type(layer).__name__})")
    if isinstance(layer, int):
        if tl:
            return f"blocks.{layer}.mlp"
        if 0 <= layer < len(names):
            return names[layer]
        raise ModelError(f"layer index {layer} is out of range: the model has {len(names)} FFN layers {names}")
    for suffix in (".hook_pre", ".hook_post", ".hook_in", ".hook_out"):
        if tl and layer.endswith(suffix):
            return layer[: -len(suffix)]
    return layer


def select_sites(model: nn.Module, layers: Sequence[Any] | None) -> list[FFNSite]:
    """The FFN sites named by ``layers`` (``None``: every FFN layer).

    Raises:
        ModelError: no FFN at a given name (the message lists the FFN layers), or the model has none.
        UnsupportedActivationError: a selected layer's activation cannot be handled.
    """
    sites = find_ffns(model)
    names = list(sites)
    what = ("blocks.L.mlp (or the int L; hook names blocks.L.mlp.hook_pre/hook_post are accepted)"
            if is_transformerlens(model) else "the name of the activation module of a Linear-act-Linear block "
            "inside an nn.Sequential, or of a gated block with gate_proj/up_proj/down_proj or w1/w3/w2 Linears "
            "and an act_fn")
    if not names:
        raise ModelError(f"{type(model).__name__} has no FFN layer: probe.moe looks for {what}")
    if layers is None:
        chosen = names
    else:
        if isinstance(layers, (str, int)):
            layers = [layers]
        chosen = [_normalise_name(model, layer, names) for layer in layers]
        missing = [c for c in chosen if c not in sites]
        if missing:
            why = "".join(_gated_gap(model, c) for c in missing) if is_transformerlens(model) else ""
            raise ModelError(f"no FFN layer at {missing}; this model's FFN layers are {names} (layers are named by "
                             f"{what}){why}")
        if not chosen:
            raise ModelError(f"layers=[] selects nothing; choose among {names} or pass None for all")
        if len(set(chosen)) != len(chosen):
            raise ModelError(f"layers {chosen} name a layer twice")
    out = [sites[c] for c in chosen]
    for site in out:
        site.check_supported()
    return out
