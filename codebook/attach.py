"""Put codebooks at TransformerLens hook points: :func:`attach`, :func:`detach`, :func:`attached`.

A codebook at site ``S`` (any hook name of ``model.hook_dict``, aliases included, e.g. ``blocks.0.attn.hook_z``,
``blocks.0.hook_attn_out``, ``blocks.0.hook_mlp_out``, ``blocks.0.hook_resid_post``) is a *permanent* forward
hook on that hook point that returns the quantised activation. Being permanent, it survives
``model.reset_hooks()`` and the exit of ``model.hooks(...)``; it acts in every ordinary forward pass,
``run_with_cache`` and generation. User hooks added later at ``S`` run after it, so they see (and cache) the
quantised activation.

The layers live in a :class:`Codebooks` module registered on the model as ``model.codebooks`` (so
``model.to(...)``, ``model.parameters()`` and ``model.state_dict()`` include them), and each layer's code-id
hook point is registered in the model's hook registry as ``"S.codebook.hook_codes"``: it can be used with
``model.hooks``, ``run_with_cache`` and ``add_hook`` like any other hook name.

4-d sites ``[batch, pos, heads, d_head]`` get one codebook per head (``config.grouped``), computed for all
heads with one batched matmul.

Example:
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from codebook import CodebookConfig, attach, detach
    >>> model = TransformerBridge.boot_native({"n_layers": 1, "d_model": 16, "n_heads": 2, "d_head": 8,
    ...     "d_mlp": 32, "d_vocab": 11, "n_ctx": 8, "act_fn": "gelu", "seed": 0})   # doctest: +SKIP
    >>> cbs = attach(model, ["blocks.0.attn.hook_z"], CodebookConfig(n_codes=64))   # doctest: +SKIP
    >>> _, cache = model.run_with_cache(tokens)                                      # doctest: +SKIP
    >>> cache["blocks.0.attn.hook_z.codebook.hook_codes"].shape   # [batch, pos, heads, k]  # doctest: +SKIP
    >>> detach(model)                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from codebook.errors import CodebookConfigError, NonFiniteActivationError, SiteShapeError, UnknownHookError
from codebook.layer import CodebookConfig, CodebookLayer
from probe.core.errors import ModelError

__all__ = ["ATTR", "CODES_HOOK_SUFFIX", "Codebooks", "attach", "attached", "codes_hook_name", "detach",
           "get_codebooks", "site_names"]

logger = logging.getLogger(__name__)

ATTR = "codebooks"
CODES_HOOK_SUFFIX = ".codebook.hook_codes"


def codes_hook_name(site: str) -> str:
    """The hook name under which the code ids of the codebook at ``site`` are exposed."""
    return site + CODES_HOOK_SUFFIX


def _key(site: str) -> str:
    return site.replace(".", "__")


def site_names(model: nn.Module, kinds: Sequence[str] = ("attn_z", "mlp_out"),
               layers: Iterable[int] | None = None) -> list[str]:
    """Standard site names for every (or the given) layer.

    Args:
        model: a TransformerLens model (its ``cfg.n_layers`` is used).
        kinds: any of ``"attn_z"`` (per head, ``blocks.L.attn.hook_z``), ``"attn_out"``, ``"mlp_out"``,
            ``"resid_post"``.
        layers: layer indices (default: all).

    Returns:
        Hook names, layer by layer.

    Raises:
        CodebookConfigError: an unknown kind.

    Example:
        >>> site_names(model, ["attn_z"], layers=[0])   # doctest: +SKIP
        ['blocks.0.attn.hook_z']
    """
    patterns = {"attn_z": "blocks.{}.attn.hook_z", "attn_out": "blocks.{}.hook_attn_out",
                "mlp_out": "blocks.{}.hook_mlp_out", "resid_post": "blocks.{}.hook_resid_post"}
    bad = [k for k in kinds if k not in patterns]
    if bad:
        raise CodebookConfigError(f"site kinds must be among {sorted(patterns)}; got {bad}")
    n_layers = int(model.cfg.n_layers)
    layers = range(n_layers) if layers is None else list(layers)
    return [patterns[k].format(layer) for layer in layers for k in kinds]


def _hook_point(model: nn.Module, site: str):
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(hook_dict, Mapping):
        raise ModelError(f"model {type(model).__name__} has no hook_dict: codebooks need a TransformerLens model "
                         "(TransformerBridge or HookedTransformer)")
    if not isinstance(site, str) or site not in hook_dict:
        close = difflib.get_close_matches(str(site), list(hook_dict), n=5, cutoff=0.6)
        raise UnknownHookError(
            f"unknown hook name {site!r}: it is not in model.hook_dict. Closest names: {close or 'none'}. "
            "Use a name from model.hook_dict, e.g. 'blocks.0.attn.hook_z', 'blocks.0.hook_mlp_out'.")
    return hook_dict[site]


def _register_hook_point(model: nn.Module, name: str, hp: Any) -> None:
    hp.name = name
    registry = getattr(model, "_hook_registry", None)
    if isinstance(registry, dict):  # TransformerBridge
        registry[name] = hp
    else:  # HookedRootModule: plain dicts built at setup()
        model.hook_dict[name] = hp
        if isinstance(getattr(model, "mod_dict", None), dict):
            model.mod_dict[name] = hp


def _unregister_hook_point(model: nn.Module, name: str) -> None:
    registry = getattr(model, "_hook_registry", None)
    if isinstance(registry, dict):
        registry.pop(name, None)
    else:
        for attr in ("hook_dict", "mod_dict"):
            d = getattr(model, attr, None)
            if isinstance(d, dict):
                d.pop(name, None)


def _probe_shapes(model: nn.Module, sites: Sequence[str], example_input: Any) -> dict[str, torch.Size]:
    shapes: dict[str, torch.Size] = {}
    points = {site: _hook_point(model, site) for site in sites}
    handles = []
    try:
        for site, hp in points.items():
            handles.append((hp, hp.add_hook(lambda act, hook, s=site: shapes.__setitem__(s, act.shape))))
        if example_input is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            example_input = torch.zeros(1, 2, dtype=torch.long, device=device)
        with torch.no_grad():
            model(example_input)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ModelError(f"could not run the model on its example input to read the site shapes ({err}); "
                         "pass example_input=... (a batch the model accepts)") from err
    finally:
        for hp, handle in handles:
            handle.hook.remove()
            if handle in hp.fwd_hooks:
                hp.fwd_hooks.remove(handle)
    missing = [s for s in sites if s not in shapes]
    if missing:
        raise ModelError(f"hook points {missing} did not fire in a forward pass; a codebook there would never act")
    return shapes


class Codebooks(nn.Module):
    """The codebook layers attached to one model, keyed by site name (see the module docstring).

    Use ``cbs[site]`` for a layer, ``cbs.sites`` for the names, :meth:`loss` for the summed codebook loss of
    the latest forward, :meth:`detach` to remove them.

    Example:
        >>> cbs = attach(model, site_names(model, ["mlp_out"]), CodebookConfig(n_codes=64))  # doctest: +SKIP
        >>> loss = task_loss + cbs.loss()                                                       # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        self.sites: list[str] = []
        self.flatten_heads: dict[str, bool] = {}
        self._model_ref: list[nn.Module] = []  # a list so that nn.Module does not register the model
        self._handles: dict[str, tuple[Any, Any]] = {}

    def __getitem__(self, site: str) -> CodebookLayer:
        if site not in self.sites:
            raise UnknownHookError(f"no codebook at {site!r}; codebooks are at {self.sites}")
        return self.layers[_key(site)]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.sites))

    def __len__(self) -> int:
        return len(self.sites)

    def items(self) -> list[tuple[str, CodebookLayer]]:
        """``(site, layer)`` pairs in attach order."""
        return [(s, self[s]) for s in self.sites]

    @property
    def model(self) -> nn.Module | None:
        """The model these codebooks are attached to (``None`` once detached)."""
        return self._model_ref[0] if self._model_ref else None

    def codebook_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of all codebooks."""
        return list(self.parameters())

    def loss(self) -> torch.Tensor:
        """Sum of the layers' codebook losses from the latest forward pass (a 0-d tensor)."""
        losses = [layer.last_loss for _, layer in self.items() if layer.last_loss is not None]
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).sum()

    def set_enabled(self, enabled: bool) -> None:
        """Switch all codebooks on (quantise) or off (pass the activation through unchanged)."""
        for _, layer in self.items():
            layer.enabled = bool(enabled)

    def reset_usage(self) -> None:
        """Zero every layer's usage counts."""
        for _, layer in self.items():
            layer.reset_usage()

    def replace_dead_codes(self, generator: torch.Generator | None = None,
                           optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
        """:meth:`CodebookLayer.replace_dead_codes` on every layer; returns replaced counts (device tensors)."""
        return {s: layer.replace_dead_codes(generator, optimizer) for s, layer in self.items()}

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteActivationError` naming the codebooks whose latest training input had NaN/inf
        values (a host synchronisation per codebook; call it only when a problem was seen)."""
        bad = [s for s, layer in self.items() if not layer.input_is_finite()]
        if bad:
            raise NonFiniteActivationError(f"NaN or inf activations reached the codebooks at {bad}")

    def _hook_fn(self, site: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        layer = self[site]
        flatten = self.flatten_heads[site]

        def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
            if flatten:
                return layer(act.reshape(*act.shape[:-2], -1)).view(act.shape)
            return layer(act)

        hook.__name__ = f"codebook[{site}]"
        return hook

    def detach(self) -> None:
        """Remove the codebook hooks and hook points from the model (the layers stay usable objects)."""
        model = self.model
        for site, (hp, handle) in list(self._handles.items()):
            handle.hook.remove()
            if handle in hp.fwd_hooks:
                hp.fwd_hooks.remove(handle)
            if model is not None:
                _unregister_hook_point(model, codes_hook_name(site))
        self._handles.clear()
        if model is not None and ATTR in model._modules and model._modules[ATTR] is self:
            del model._modules[ATTR]
        self._model_ref.clear()


def get_codebooks(model: nn.Module) -> Codebooks | None:
    """The :class:`Codebooks` attached to ``model``, or ``None``."""
    cbs = model._modules.get(ATTR) if hasattr(model, "_modules") else None
    return cbs if isinstance(cbs, Codebooks) else None


def _resolve_configs(sites: Sequence[str], config: CodebookConfig | Mapping[str, CodebookConfig] | None
                     ) -> dict[str, CodebookConfig]:
    if config is None or isinstance(config, CodebookConfig):
        cfg = config if config is not None else CodebookConfig()
        return {s: cfg for s in sites}
    if isinstance(config, Mapping):
        missing = [s for s in sites if s not in config]
        if missing:
            raise CodebookConfigError(f"config is a mapping but has no entry for sites {missing}")
        for s in sites:
            if not isinstance(config[s], CodebookConfig):
                raise CodebookConfigError(f"config[{s!r}] must be a CodebookConfig; got {type(config[s]).__name__}")
        return {s: config[s] for s in sites}
    raise CodebookConfigError(f"config must be a CodebookConfig or a mapping site -> CodebookConfig; "
                              f"got {type(config).__name__}")


def attach(model: nn.Module, sites: str | Sequence[str],
           config: CodebookConfig | Mapping[str, CodebookConfig] | None = None, *,
           example_input: Any = None, seed: int = 0) -> Codebooks:
    """Attach codebooks at hook points of a TransformerLens model.

    Args:
        model: a ``TransformerBridge`` (e.g. from ``boot_native``) or another model with ``hook_dict``.
        sites: hook names (aliases allowed), e.g. ``["blocks.0.attn.hook_z", "blocks.0.hook_mlp_out"]``.
        config: one :class:`CodebookConfig` for all sites, or a mapping site -> config.
        example_input: an input the model accepts, used once to read the site shapes (default: 2 zero tokens).
        seed: seed of the (random, pre-k-means) initial codes.

    Returns:
        The :class:`Codebooks` (also available as ``model.codebooks``).

    Raises:
        UnknownHookError: a site is not a hook name of the model.
        SiteShapeError: ``config.d_model`` differs from the width of the activation at the site.
        CodebookConfigError: a bad config, duplicate sites, or codebooks already attached.
        ModelError: the model has no hooks, or a site does not fire in a forward pass.

    Example:
        >>> cbs = attach(model, ["blocks.0.hook_mlp_out"], CodebookConfig(n_codes=128, k=1))  # doctest: +SKIP
    """
    sites = [sites] if isinstance(sites, str) else list(sites)
    if not sites:
        raise CodebookConfigError("sites must name at least one hook point; got an empty list")
    if len(set(sites)) != len(sites):
        raise CodebookConfigError(f"sites must be distinct; got {sites}")
    if get_codebooks(model) is not None:
        raise CodebookConfigError("the model already has codebooks attached; call detach(model) first")
    configs = _resolve_configs(sites, config)
    points = {s: _hook_point(model, s) for s in sites}  # unknown names fail here, before any change
    shapes = _probe_shapes(model, sites, example_input)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    cbs = Codebooks()
    for i, site in enumerate(sites):
        cfg, shape = configs[site], shapes[site]
        per_head = len(shape) == 4
        grouped = per_head and cfg.grouped
        n_groups, d = (shape[-2], shape[-1]) if grouped else (1, math.prod(shape[-2:]) if per_head else shape[-1])
        if cfg.d_model is not None and cfg.d_model != d:
            what = "d_head (per-head codebooks)" if grouped else "activation width"
            raise SiteShapeError(
                f"CodebookConfig.d_model={cfg.d_model} but the {what} at {site!r} is {d} "
                f"(activation shape {tuple(shape)}). Set d_model={d} or d_model=None for this site.")
        layer = CodebookLayer(int(d), cfg, n_groups=int(n_groups), seed=seed + i, grouped_input=grouped)
        cbs.layers[_key(site)] = layer.to(device=device, dtype=dtype)
        cbs.sites.append(site)
        cbs.flatten_heads[site] = per_head and not grouped
    model.add_module(ATTR, cbs)
    cbs._model_ref.append(model)
    for site in sites:
        hp = points[site]
        handle = hp.add_hook(cbs._hook_fn(site), is_permanent=True)
        cbs._handles[site] = (hp, handle)
        _register_hook_point(model, codes_hook_name(site), cbs[site].hook_codes)
    logger.info("attached %d codebooks: %s", len(sites), sites)
    return cbs


def detach(model: nn.Module) -> None:
    """Remove the codebooks attached to ``model`` (no-op when there are none).

    Example:
        >>> detach(model)   # doctest: +SKIP
    """
    cbs = get_codebooks(model)
    if cbs is not None:
        cbs.detach()


@contextmanager
def attached(model: nn.Module, sites: str | Sequence[str],
             config: CodebookConfig | Mapping[str, CodebookConfig] | None = None, **kwargs: Any
             ) -> Iterator[Codebooks]:
    """Context manager: :func:`attach` on entry, :func:`detach` on exit (also on error).

    Example:
        >>> with attached(model, ["blocks.0.hook_mlp_out"]) as cbs:   # doctest: +SKIP
        ...     logits = model(tokens)
    """
    cbs = attach(model, sites, config, **kwargs)
    try:
        yield cbs
    finally:
        cbs.detach()
