"""ReLU networks as explicit chains of affine layers, extracted exactly from torch models or ONNX files.

A :class:`ReluNetwork` is ``y = W_L relu(... relu(W_0 x + b_0) ...) + b_L`` in float64 numpy: a ReLU after
every affine layer but the last. It is what the bound computations (:mod:`verify.bounds`) and the MILP
encoding work on. :meth:`ReluNetwork.from_torch` extracts it from any torch model whose ReLUs are
``nn.ReLU`` modules or traceable ``F.relu`` calls (found by :func:`probe.graph.relus.find_relus`, so the ReLU
layer names are the ones NAP mining uses) and whose parts between ReLUs are affine (linear and
convolutional layers, batch norm in eval mode, average pooling, flattening, reshaping, input normalisation,
...): each such part is measured in float64 on the unit vectors, then checked to really be affine.

Example:
    >>> import numpy as np
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> net = ReluNetwork.from_torch(model, (2,))
    >>> net.relu_names, net.relu_sizes, net.n_outputs
    (['1'], [3], 1)
    >>> x = np.array([[0.5, -1.0]])
    >>> bool(np.allclose(net.forward(x), net.run_source(x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probe.core.errors import ModelError
from probe.graph.relus import ReluRecorder, ReluSites, find_relus
from verify.errors import NetworkError

__all__ = ["ReluNetwork"]

logger = logging.getLogger(__name__)

#: Unit vectors fed per forward pass when a segment is measured (bounds memory on wide layers).
CHUNK = 1024
#: A segment is affine when ``|f(z) - (W z + b)| <= AFFINE_RTOL * (1 + |f(z)|)`` on random points.
AFFINE_RTOL = 1e-6
#: The extracted network must match the float32 source within this relative difference.
SOURCE_RTOL = 1e-4
_N_CHECK = 4

_MAX_POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)
_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.GELU,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.Hardtanh,  # includes ReLU6
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.Mish,
    nn.GLU,
    nn.Softplus,
    nn.Softsign,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Tanhshrink,
    nn.Threshold,
    nn.Softmax,
    nn.Softmax2d,
    nn.LogSoftmax,
    nn.Softmin,
    nn.MultiheadAttention,
)
_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


class _Stop(Exception):
    """Raised inside a ReLU to end a forward pass once its pre-activation is recorded."""


def _rejection(name: str, module: nn.Module) -> str | None:
    """Why ``module`` cannot be in a ReluNetwork, or ``None`` when it may be (affinity is checked later)."""
    kind = type(module).__name__
    if isinstance(module, _MAX_POOLS):
        why = "max-pooling (and LP-pooling) is not affine; use average pooling or strided convolutions"
    elif isinstance(module, _ACTIVATIONS):
        why = f"{kind} is a non-ReLU activation; only ReLU has the on/off states the MILP encoding needs"
    elif isinstance(module, _NORMS):
        why = f"{kind} normalises by statistics of each input, which is not affine"
    elif isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
        why = f"{kind} without running statistics normalises by statistics of each input, which is not affine"
    elif isinstance(module, nn.RNNBase):
        why = f"{kind} is a recurrent layer"
    else:
        return None
    return f"module {name!r} ({kind}) is not supported: {why}"


def _as_shape(input_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, int | np.integer) else tuple(input_shape)
    if not shape or not all(isinstance(d, int | np.integer) and int(d) > 0 for d in shape):
        raise NetworkError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _check_finite_tensors(model: nn.Module) -> None:
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in items:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise NetworkError(
                    f"{kind} {name!r} of {type(model).__name__} has {bad} NaN or infinite value(s)"
                )


class _Extractor:
    """Runs the float64 copy of a model with ReLU forwards overridden, one segment at a time."""

    def __init__(
        self,
        module: nn.Module,
        relus: list[nn.Module],
        names: list[str],
        shapes: list[tuple[int, ...]],
        input_shape: tuple[int, ...],
    ) -> None:
        self.module = module
        self.relus = relus
        self.names = names
        self.shapes = shapes
        self.input_shape = input_shape

    def where(self, k: int) -> str:
        start = "the input" if k == 0 else f"ReLU {self.names[k - 1]!r}"
        end = "the output" if k == len(self.relus) else f"ReLU {self.names[k]!r}"
        return f"between {start} and {end}"

    def run(self, k: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Segment k's output, flattened per sample, for model input ``x`` and ReLU k-1's output ``z``."""
        captured: list[torch.Tensor] = []
        patched: list[nn.Module] = []
        try:
            if k > 0:
                assert z is not None
                given = z.reshape(z.shape[0], *self.shapes[k - 1])
                src = self.relus[k - 1]
                src.forward = lambda pre: given  # type: ignore[method-assign]
                patched.append(src)
            if k < len(self.relus):

                def stop(pre: torch.Tensor) -> torch.Tensor:
                    captured.append(pre.detach().reshape(pre.shape[0], -1).clone())
                    raise _Stop

                dst = self.relus[k]
                dst.forward = stop  # type: ignore[method-assign]
                patched.append(dst)
            try:
                out = self.module(x)
            except _Stop:
                return captured[0]
            except Exception as err:
                raise NetworkError(
                    f"running the model in float64 failed while measuring the part {self.where(k)}: "
                    f"{type(err).__name__}: {err}"
                ) from err
        finally:
            for module in patched:
                vars(module).pop("forward", None)
        if k < len(self.relus):
            raise NetworkError(
                f"ReLU {self.names[k]!r} did not run when the part {self.where(k)} was measured"
            )
        if not isinstance(out, torch.Tensor):
            raise NetworkError(f"the model must return one tensor, got {type(out).__name__}")
        return out.detach().reshape(out.shape[0], -1)

    def segment(self, k: int, n_in: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Measure segment ``k`` as ``(W, b)`` and check that it is affine."""
        dtype = torch.float64

        def f(z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
            if k == 0:
                return self.run(0, z.reshape(z.shape[0], *self.input_shape), None)
            if x is None:
                x = torch.zeros((z.shape[0], *self.input_shape), dtype=dtype)
            return self.run(k, x, z)

        bias = f(torch.zeros((1, n_in), dtype=dtype))[0]
        weight = torch.empty((bias.numel(), n_in), dtype=dtype)
        for start in range(0, n_in, CHUNK):
            stop = min(start + CHUNK, n_in)
            basis = torch.zeros((stop - start, n_in), dtype=dtype)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            weight[:, start:stop] = (f(basis) - bias).T
        # Affinity check on random points; for k > 0 the model input is random too, so a path that skips
        # the ReLU (a residual connection) makes the measured map input-dependent and fails the check.
        z = torch.randn((_N_CHECK, n_in), generator=gen, dtype=dtype)
        x = torch.randn((_N_CHECK, *self.input_shape), generator=gen, dtype=dtype)
        got = f(z, x)
        err = (got - (z @ weight.T + bias)).abs()
        bad = err > AFFINE_RTOL * (1.0 + got.abs())
        if bool(bad.any()) or not bool(torch.isfinite(got).all()):
            raise NetworkError(
                f"the part of the model {self.where(k)} is not affine (e.g. max-pooling, a non-ReLU "
                "activation such as GELU or sigmoid, or a residual connection that skips a ReLU): its output "
                f"differs from the measured affine map by up to {float(err.max()):.3g}"
            )
        return weight.numpy(), bias.numpy()


class ReluNetwork:
    """A chain of affine layers with a ReLU after every layer but the last, in float64.

    ``z_k = W_k a_{k-1} + b_k`` with ``a_{-1} = x`` (the flattened input) and ``a_k = relu(z_k)`` for the
    ReLU layers ``k < L``; the output is ``z_L``. Build it with :meth:`from_torch` or :meth:`from_onnx`, or
    directly from weights (e.g. for tests).

    Args:
        weights: ``W_0 ... W_L``, each ``(out, in)``; converted to contiguous float64 arrays.
        biases: ``b_0 ... b_L``, each ``(out,)``.
        input_shape: per-sample input shape of the source (``x`` is its C-order flattening); default
            ``(n_inputs,)``.
        relu_names: names of the ReLU layers; default ``relu_0, relu_1, ...``.
        source: the torch module the weights come from (float32, eval mode), or ``None``.
        source_path: the ONNX file the weights come from, or ``None``.

    Attributes:
        weights: list of ``(out, in)`` float64 arrays.
        biases: list of ``(out,)`` float64 arrays.
        input_shape: per-sample shape the source takes (for ONNX, the file's own layout, e.g. ``(784, 1)``
            or ``(32, 32, 3)``).
        relu_names: the ReLU layer names, in execution order (for torch models, the names
            :func:`probe.graph.relus.find_relus` gives them, so ``NAPSet.layers`` map onto ReLU indices).
        source: the torch module (a float32, eval-mode copy of the model given to :meth:`from_torch`); a
            network built from weights alone gets its weights as a float32 ``nn.Sequential`` (so its
            counterexamples are re-checked in float32 and the attack has a model to run).
        source_path: the ONNX file, or ``None``.

    Raises:
        NetworkError: the shapes do not chain, a value is NaN or infinite, or the names do not fit.

    Example:
        >>> import numpy as np
        >>> net = ReluNetwork([np.eye(2), np.ones((1, 2))], [np.zeros(2), np.zeros(1)])
        >>> net.forward(np.array([1.0, -2.0])).tolist()
        [1.0]
    """

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        *,
        input_shape: Sequence[int] | None = None,
        relu_names: Sequence[str] | None = None,
        source: nn.Module | None = None,
        source_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if len(weights) != len(biases) or not weights:
            raise NetworkError(
                f"need one bias per weight matrix and at least one layer, got {len(weights)} weights and "
                f"{len(biases)} biases"
            )
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
            w = np.ascontiguousarray(np.asarray(w, dtype=np.float64))
            b = np.ascontiguousarray(np.asarray(b, dtype=np.float64)).reshape(-1)
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise NetworkError(
                    f"layer {k}: weight {w.shape} and bias {b.shape} do not fit (out, in), (out,)"
                )
            if k and w.shape[1] != self.weights[-1].shape[0]:
                raise NetworkError(
                    f"layer {k} takes {w.shape[1]} inputs but layer {k - 1} has "
                    f"{self.weights[-1].shape[0]} outputs"
                )
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise NetworkError(f"layer {k} has NaN or infinite weights or biases")
            self.weights.append(w)
            self.biases.append(b)
        n_in = self.weights[0].shape[1]
        self.input_shape: tuple[int, ...] = (n_in,) if input_shape is None else _as_shape(input_shape)
        if math.prod(self.input_shape) != n_in:
            raise NetworkError(f"input_shape {self.input_shape} does not have {n_in} values")
        n_relus = len(self.weights) - 1
        names = [f"relu_{i}" for i in range(n_relus)] if relu_names is None else [str(n) for n in relu_names]
        if len(names) != n_relus or len(set(names)) != n_relus:
            raise NetworkError(f"need {n_relus} distinct ReLU layer names, got {names}")
        self.relu_names: list[str] = names
        self.source = source if source is not None else _weights_module(self.weights, self.biases)
        self.source_path: Path | None = None if source_path is None else Path(source_path)

    # ---- sizes ---------------------------------------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        """Number of (flattened) inputs."""
        return int(self.weights[0].shape[1])

    @property
    def n_outputs(self) -> int:
        """Number of (flattened) outputs."""
        return int(self.weights[-1].shape[0])

    @property
    def relu_sizes(self) -> list[int]:
        """Neurons per ReLU layer."""
        return [int(w.shape[0]) for w in self.weights[:-1]]

    @property
    def nnz(self) -> list[int]:
        """Non-zero entries of each weight matrix (convolutions are sparse once made dense)."""
        return [int(np.count_nonzero(w)) for w in self.weights]

    def __repr__(self) -> str:
        sizes = "-".join(str(n) for n in [self.n_inputs, *self.relu_sizes, self.n_outputs])
        dense = sum(w.size for w in self.weights)
        src = f", source_path={str(self.source_path)!r}" if self.source_path is not None else ""
        return f"ReluNetwork({sizes}, input_shape={self.input_shape}, nnz={sum(self.nnz)}/{dense}{src})"

    # ---- running -------------------------------------------------------------------------------------------

    def _inputs(self, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, bool]:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        arr = np.asarray(x, dtype=np.float64)
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.n_inputs:
            raise NetworkError(
                f"inputs must have shape (n, {self.n_inputs}) or ({self.n_inputs},) (flattened "
                f"{self.input_shape}), got {np.shape(x)}"
            )
        return arr, single

    def pre_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Pre-activations of every ReLU layer.

        Args:
            x: inputs ``(n, n_inputs)`` or one input ``(n_inputs,)``.

        Returns:
            One float64 array per ReLU layer, ``(n, relu_sizes[k])`` (``(relu_sizes[k],)`` for one input).

        Raises:
            NetworkError: ``x`` has the wrong shape.

        Example:
            >>> import numpy as np
            >>> net = ReluNetwork([np.eye(2), np.ones((1, 2))], [np.zeros(2), np.zeros(1)])
            >>> net.pre_activations(np.array([1.0, -2.0]))[0].tolist()
            [1.0, -2.0]
        """
        a, single = self._inputs(x)
        pres = []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            z = a @ w.T + b
            pres.append(z[0] if single else z)
            a = np.maximum(z, 0.0)
        return pres

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the network in float64.

        Args:
            x: inputs ``(n, n_inputs)`` or one input ``(n_inputs,)`` (C-order flattening of
                ``input_shape``).

        Returns:
            Outputs ``(n, n_outputs)`` (``(n_outputs,)`` for one input), float64.

        Raises:
            NetworkError: ``x`` has the wrong shape.

        Example:
            >>> import numpy as np
            >>> net = ReluNetwork([np.eye(2), np.ones((1, 2))], [np.zeros(2), np.zeros(1)])
            >>> net.forward(np.zeros((3, 2))).shape
            (3, 1)
        """
        a, single = self._inputs(x)
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            a = np.maximum(a @ w.T + b, 0.0)
        y = a @ self.weights[-1].T + self.biases[-1]
        return y[0] if single else y

    __call__ = forward

    def run_source(self, x: np.ndarray) -> np.ndarray:
        """Run the source torch module in float32 (e.g. to confirm a counterexample).

        Args:
            x: inputs ``(n, n_inputs)`` or ``(n_inputs,)``, reshaped to ``(n, *input_shape)``.

        Returns:
            Outputs ``(n, n_outputs)`` (``(n_outputs,)`` for one input), float32.

        Raises:
            NetworkError: ``x`` has the wrong shape.

        Example:
            >>> y = net.run_source(x)  # doctest: +SKIP
        """
        a, single = self._inputs(x)
        inp = torch.from_numpy(a.astype(np.float32)).reshape(a.shape[0], *self.input_shape)
        with torch.no_grad():
            out = self.source(inp)
        y = out.detach().cpu().float().reshape(a.shape[0], -1).numpy()
        return y[0] if single else y

    def run_onnx(self, x: np.ndarray) -> np.ndarray | None:
        """Run the source ONNX file with onnxruntime (:func:`probe.graph.onnx.run_reference`).

        Args:
            x: inputs ``(n, n_inputs)`` or ``(n_inputs,)``, reshaped to ``(n, *input_shape)``.

        Returns:
            Outputs ``(n, n_outputs)`` (``(n_outputs,)`` for one input), float32; ``None`` when the network
            does not come from an ONNX file.

        Raises:
            NetworkError: ``x`` has the wrong shape.

        Example:
            >>> y = ReluNetwork.from_onnx("mnist-net_256x2.onnx").run_onnx(x)  # doctest: +SKIP
        """
        if self.source_path is None:
            return None
        from probe.graph.onnx import run_reference

        a, single = self._inputs(x)
        out = run_reference(self.source_path, a.astype(np.float32).reshape(a.shape[0], *self.input_shape))
        y = np.asarray(out).reshape(a.shape[0], -1)
        return y[0] if single else y

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, model: nn.Module, input_shape: int | Sequence[int]) -> ReluNetwork:
        """Extract the affine layers between the ReLUs of a torch model, exactly, in float64.

        Segment ``k`` (the map from ReLU ``k-1``'s output, or the flattened input, to ReLU ``k``'s
        pre-activation, or the model output) is measured on a deep float64 eval-mode copy by overriding
        ReLU ``k-1`` to return ``[0, e_1, ..., e_n]``: ``b = f(0)``, ``W[:, i] = f(e_i) - b``. Each segment is
        then checked to be affine on random points (with a random model input too, which exposes
        connections that skip a ReLU), and the whole network is checked against the float32 model.
        Batch norm (eval), dropout (eval), average pooling, flattening and affine input normalisation are
        folded automatically.

        Args:
            model: a torch module whose ReLUs are ``nn.ReLU`` modules or traceable ``F.relu`` calls, each
                running once per forward pass. It is not modified.
            input_shape: the per-sample input shape the model takes, e.g. ``(1, 28, 28)``.

        Returns:
            The network; ``relu_names`` are the names :func:`probe.graph.relus.find_relus` gives the ReLUs, in
            execution order; ``source`` is a float32 eval-mode copy of ``model``.

        Raises:
            NetworkError: a parameter or buffer is NaN/inf (named); a module is known not to be affine
                (max-pooling, GELU, sigmoid, tanh, LeakyReLU, ReLU6, ELU, softmax, LayerNorm, ...: named with
                its type); the model has no ReLU; a ReLU module runs more than once per pass; a part between
                two ReLUs is not affine (e.g. a residual connection around a ReLU); the model fails in
                float64; or the extracted network disagrees with the model.

        Example:
            >>> from torch import nn
            >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
            >>> net = ReluNetwork.from_torch(model, (1, 2, 2))
            >>> net.n_inputs, net.relu_names
            (4, ['2'])
        """
        if not isinstance(model, nn.Module):
            raise NetworkError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        shape = _as_shape(input_shape)
        _check_finite_tensors(model)
        for name, module in model.named_modules():
            why = _rejection(name or "<model>", module)
            if why is not None:
                raise NetworkError(why)
        work = copy.deepcopy(model).cpu().double().eval()
        try:
            sites = find_relus(work)
        except ModelError as err:
            raise NetworkError(str(err)) from err
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            order, shapes = _probe(sites, shape)
            by_name = {s.name: s.module for s in sites.sites}
            unused = [s.name for s in sites.sites if s.name not in shapes]
            if unused:
                logger.warning(
                    "ReLU modules %s never run in a forward pass; they are not part of the network", unused
                )
            if not order:
                raise NetworkError(f"no ReLU of {type(model).__name__} runs in a forward pass")
            relus = [by_name[n] for n in order]
            relu_shapes = [shapes[n] for n in order]
            extractor = _Extractor(sites.module, relus, order, relu_shapes, shape)
            sizes = [math.prod(shape)] + [math.prod(s) for s in relu_shapes]
            weights, biases = [], []
            for k in range(len(relus) + 1):
                w, b = extractor.segment(k, sizes[k], gen)
                weights.append(w)
                biases.append(b)
        source = copy.deepcopy(model).cpu().float().eval()
        net = cls(weights, biases, input_shape=shape, relu_names=order, source=source)
        _check_against_source(net, gen)
        logger.info("extracted %r from %s", net, type(model).__name__)
        return net

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str] | Any) -> ReluNetwork:
        """Load an ONNX network (:func:`probe.graph.onnx.load_onnx`, ``input_layout="exact"``) and extract it.

        Args:
            path: an ``.onnx`` file (or an ``onnx.ModelProto``, then ``source_path`` is ``None``).

        Returns:
            The network; ``input_shape`` is the file's own per-sample layout (``(784, 1)`` for the mnistfc
            networks, ``(32, 32, 3)`` for the marabou CIFAR-10 ones), ``relu_names`` are ``relu_0, ...``.

        Raises:
            OnnxFileNotFoundError: the file does not exist.
            OnnxError: the file cannot be imported (see :func:`probe.graph.onnx.load_onnx`).
            NetworkError: as :meth:`from_torch`.

        Example:
            >>> net = ReluNetwork.from_onnx("mnist-net_256x2.onnx")  # doctest: +SKIP
            >>> net.input_shape, net.relu_sizes  # doctest: +SKIP
            ((784, 1), [256, 256])
        """
        from probe.graph.onnx import load_onnx

        module = load_onnx(path, input_layout="exact")
        net = cls.from_torch(module, module.input_shape)
        net.source_path = module.source_path
        return net


def _probe(sites: ReluSites, shape: tuple[int, ...]) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Run once to get the ReLUs' execution order and per-sample shapes (and reject reused ReLU modules)."""
    x = torch.zeros((2, *shape), dtype=torch.float64)
    try:
        with ReluRecorder(sites, check_finite=False) as rec:
            rec.start()
            sites.module(x)
    except ModelError as err:
        raise NetworkError(str(err)) from err
    except Exception as err:
        raise NetworkError(
            f"the model fails in float64 on inputs of shape {(2, *shape)}: {type(err).__name__}: {err}"
        ) from err
    return list(rec.states), dict(rec.shapes)


def _weights_module(weights: list[np.ndarray], biases: list[np.ndarray]) -> nn.Module:
    """The layers as a float32, eval-mode torch module (flatten, then linear and ReLU layers)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        lin = torch.nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0])  # no random init to overwrite
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        layers.append(lin)
        if k < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval().requires_grad_(False)


def _check_against_source(net: ReluNetwork, gen: torch.Generator) -> None:
    x = torch.rand((_N_CHECK, net.n_inputs), generator=gen, dtype=torch.float64).numpy()
    ours = net.forward(x)
    try:
        ref = net.run_source(x).astype(np.float64)
    except Exception as err:
        raise NetworkError(f"the model fails in float32: {type(err).__name__}: {err}") from err
    if ref.shape != ours.shape:
        raise NetworkError(
            f"the model's output has {ref.shape[1:]} values, the extracted network {ours.shape[1:]}"
        )
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max()) / scale
    if not err <= SOURCE_RTOL:
        raise NetworkError(
            f"the extracted network disagrees with the model: max relative difference {err:.3g} > "
            f"{SOURCE_RTOL} on random inputs (does the model behave differently in float64 or per sample?)"
        )
