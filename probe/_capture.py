"""Find the ReLUs of a torch model and record their activation states batch by batch.

ReLUs are found as ``nn.ReLU`` modules, or as ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` calls, which
are turned into ``nn.ReLU`` modules of a ``torch.fx`` trace of the model (sharing its parameters). The
pre-activation of a ReLU is its input: forward *pre*-hooks read it before an in-place ReLU overwrites it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> sites = find_relus(net)
    >>> [s.name for s in sites.sites]
    ['1']
    >>> with ReluRecorder(sites) as rec:
    ...     _ = sites.module(torch.zeros(4, 2))
    >>> rec.states["1"].shape
    torch.Size([4, 3])
    >>> rec.states["1"].dtype
    torch.float32
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from probe.errors import ModelError

__all__ = ["ReluRecorder", "ReluSite", "ReluSites", "find_relus"]

logger = logging.getLogger(__name__)

_FUNCTIONAL_RELUS = (F.relu, torch.relu, torch.relu_, F.relu_)


@dataclass(frozen=True)
class ReluSite:
    """One ReLU: its qualified module name in ``ReluSites.module`` and the module itself."""

    name: str
    module: nn.Module


@dataclass
class ReluSites:
    """The ReLUs of a model, in execution (or registration) order.

    Attributes:
        module: the module to run: the model itself, or its fx trace with functional ReLUs made modules.
        sites: the ReLUs.
        traced: whether ``module`` is an fx trace of the original model.
    """

    module: nn.Module
    sites: list[ReluSite]
    traced: bool = False

    def select(self, layers: list[str] | None) -> ReluSites:
        """Keep only the named ReLUs (``None``: all). Unknown names raise :class:`ModelError`."""
        if layers is None:
            return self
        names = [s.name for s in self.sites]
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ModelError(f"layers {unknown} are not ReLUs of this model; its ReLU layers are {names}")
        if not layers:
            raise ModelError(f"layers=[] selects nothing; choose among {names} or pass None for all")
        keep = set(layers)
        return ReluSites(self.module, [s for s in self.sites if s.name in keep], self.traced)


def _trace_functional(model: nn.Module) -> nn.Module | None:
    """fx-trace ``model`` and turn functional ReLU calls into ``nn.ReLU`` modules; ``None`` if it has none."""
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for untraceable code
        logger.debug("torch.fx could not trace %s: %s", type(model).__name__, err)
        return None
    count = 0
    for node in list(gm.graph.nodes):
        is_fn = node.op == "call_function" and node.target in _FUNCTIONAL_RELUS
        is_method = node.op == "call_method" and node.target in ("relu", "relu_")
        if not (is_fn or is_method):
            continue
        name = f"fx_relu_{count}"
        count += 1
        gm.add_submodule(name, nn.ReLU())
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, args=(node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    if count == 0:
        return None
    gm.graph.lint()
    gm.recompile()
    return gm


def find_relus(model: nn.Module) -> ReluSites:
    """Find the ReLUs of ``model``.

    Args:
        model: any ``nn.Module``. ReLUs must be ``nn.ReLU`` modules or ``F.relu``/``torch.relu`` calls in
            code that ``torch.fx`` can trace (no data-dependent control flow).

    Returns:
        The ReLU sites and the module to run.

    Raises:
        ModelError: no ReLU was found (the message says what is supported).
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    module_relus = [ReluSite(n, m) for n, m in model.named_modules() if type(m) is nn.ReLU]
    traced = _trace_functional(model)
    if traced is not None:
        sites = [ReluSite(n, m) for n, m in traced.named_modules() if type(m) is nn.ReLU]
        order = {node.target: i for i, node in enumerate(traced.graph.nodes) if node.op == "call_module"}
        sites.sort(key=lambda s: order.get(s.name, len(order)))
        return ReluSites(traced, sites, traced=True)
    if not module_relus:
        raise ModelError(
            f"{type(model).__name__} has no ReLU: neurospec records nn.ReLU modules and F.relu/torch.relu calls "
            "(found by torch.fx tracing). Other activations (GELU, LeakyReLU, ReLU6, ...) have no on/off "
            "pattern in the NAP sense; if your model calls F.relu inside untraceable code, use nn.ReLU modules."
        )
    return ReluSites(model, module_relus)


class ReluRecorder:
    """Context manager recording, per ReLU, the activation state (1.0 where the pre-activation is > 0, else
    0.0) of the last forward pass, flattened per sample to (batch, neurons). Hooks are removed on exit.

    Args:
        sites: from :func:`find_relus`.
        check_finite: raise :class:`ModelError` if a pre-activation is NaN or infinite.
    """

    def __init__(self, sites: ReluSites, check_finite: bool = True) -> None:
        self.sites = sites
        self.check_finite = check_finite
        self.states: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def pre_hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            pre = args[0]
            if self.check_finite and not bool(torch.isfinite(pre).all()):
                raise ModelError(
                    f"non-finite (NaN or inf) pre-activations at ReLU {name!r}; check the inputs "
                    "(NaN pixels?) and the model weights"
                )
            self.shapes[name] = tuple(pre.shape[1:])
            # 1.0 where pre > 0, else 0.0 (exactly 0 is inactive), written straight into a float tensor ready
            # for counting matmuls: ~10x faster on CPU than (pre > 0).float() or torch.heaviside.
            flat = pre.reshape(pre.shape[0], -1)
            out = torch.empty(flat.shape, dtype=torch.float32, device=flat.device)
            self.states[name] = torch.gt(flat, 0, out=out)

        return pre_hook

    def __enter__(self) -> ReluRecorder:
        try:
            for site in self.sites.sites:
                self._handles.append(site.module.register_forward_pre_hook(self._hook(site.name)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
