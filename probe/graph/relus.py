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
    ...     rec.start()
    ...     _ = sites.module(torch.zeros(4, 2))
    >>> rec.states["1"].shape
    torch.Size([4, 3])
    >>> rec.states["1"].dtype
    torch.float32
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from probe.core.errors import ModelError

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
    0.0) of one forward pass, flattened per sample to (batch, neurons), in :attr:`states`. The ReLU modules
    are restored on exit.

    Call :meth:`start` before each forward pass. A consumer may set :attr:`on_state` to a callable
    ``(layer name, states)`` that runs as soon as a layer's states exist, while they are still in the CPU
    cache (NAP mining counts there).

    Args:
        sites: from :func:`find_relus`.
        check_finite: raise :class:`ModelError` if a pre-activation is NaN or infinite.
    """

    def __init__(self, sites: ReluSites, check_finite: bool = True) -> None:
        self.sites = sites
        self.check_finite = check_finite
        self.states: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.on_state: Callable[[str, torch.Tensor], None] | None = None
        self._patched: list[nn.Module] = []

    def _wrap(self, name: str, module: nn.Module):
        relu_forward = module.forward  # bound nn.ReLU.forward (honours inplace=True)

        def forward(pre: torch.Tensor) -> torch.Tensor:
            self._record(name, pre)
            return relu_forward(pre)

        return forward

    def _record(self, name: str, pre: torch.Tensor) -> None:
        if name in self.states:
            raise ModelError(
                f"ReLU module {name!r} runs more than once per forward pass; give each ReLU layer its own "
                "nn.ReLU module so its neurons can be told apart"
            )
        if self.check_finite and not bool(torch.isfinite(pre).all()):
            raise ModelError(
                f"non-finite (NaN or inf) pre-activations at ReLU {name!r}; check the inputs "
                "(NaN pixels?) and the model weights"
            )
        self.shapes[name] = tuple(pre.shape[1:])
        flat = pre.reshape(pre.shape[0], -1)
        # 1.0 where pre > 0, else 0.0 (exactly 0 is inactive), written straight into a float tensor ready for
        # counting matmuls: several times faster on CPU than (pre > 0).float() or torch.heaviside.
        state = torch.gt(flat, 0, out=torch.empty(flat.shape, dtype=torch.float32, device=flat.device))
        self.states[name] = state
        if self.on_state is not None:
            self.on_state(name, state)

    def start(self) -> None:
        """Prepare for a forward pass (forget the previous pass's states)."""
        self.states = {}

    def __enter__(self) -> ReluRecorder:
        # The ReLU modules' forward is wrapped (an instance attribute shadowing nn.ReLU.forward) rather than
        # hooked: module hooks force PyTorch's slow call path, which costs more than the recording itself.
        # The pre-activation is read before the ReLU runs, so in-place ReLUs are recorded correctly.
        try:
            for site in self.sites.sites:
                if "forward" in vars(site.module):
                    raise ModelError(f"ReLU {site.name!r} is already being recorded (or its forward is patched)")
                site.module.forward = self._wrap(site.name, site.module)
                self._patched.append(site.module)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Restore the ReLU modules' own forward."""
        for module in self._patched:
            vars(module).pop("forward", None)
        self._patched.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
