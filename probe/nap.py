"""Neural activation patterns (NAPs), as defined in "Towards Reliable Neural Specifications"
(Geng, Le, Xu, Wang, Gurfinkel, Si; ICML 2023).

A neuron is *active* iff its pre-activation is strictly positive (exactly 0 is inactive). For class c
with n_c counted samples, a neuron active in a_j of them is in NAP_c's ``active`` set iff
``a_j >= delta * n_c`` and in its ``inactive`` set iff ``a_j <= (1 - delta) * n_c``; both comparisons are
exact in integers (``delta`` is taken as the decimal it is written as, e.g. 0.99 = 99/100). Other neurons
are unconstrained. Counting is streamed: memory is O(classes x neurons), whatever the data size.

Example:
    >>> from probe import data, nap
    >>> from probe.zoo import train_reference
    >>> model = train_reference("mnist-mlp")                                   # doctest: +SKIP
    >>> naps = nap.mine(model, data.make_loader(data.load_mnist("train")), delta=0.99)  # doctest: +SKIP
    >>> naps.sizes()                                                           # doctest: +SKIP
    >>> stats = naps.evaluate(model, data.make_loader(data.load_mnist("test")))  # doctest: +SKIP
    >>> stats.coverage, stats.precision                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probe.core.artifacts import (
    atomic_write_bytes,
    check_stamp,
    read_json,
    read_metadata,
    read_tensors,
    stamp,
    write_tensors,
)
from probe.core.device import resolve_device
from probe.core.errors import DataError, InputShapeError, InvalidParameterError, ModelError, NeurospecError
from probe.core.progress import progress
from probe.core.table import Table
from probe.graph.relus import ReluRecorder, ReluSites, find_relus

__all__ = ["NAPSet", "NAPStats", "check_delta", "mine"]

logger = logging.getLogger(__name__)

_KIND = "nap"


def check_delta(delta: float) -> Fraction:
    """``delta`` as an exact fraction, checked: a number in (0.5, 1] (raises :class:`InvalidParameterError`).

    Example:
        >>> check_delta(0.99)
        Fraction(99, 100)
    """
    return _delta_fraction(delta)


def _delta_fraction(delta: float) -> Fraction:
    try:
        frac = Fraction(str(delta)) if not isinstance(delta, Fraction) else delta
    except (ValueError, TypeError) as err:
        raise InvalidParameterError(f"delta must be a number in (0.5, 1], got {delta!r}") from err
    if not (Fraction(1, 2) < frac <= 1):
        raise InvalidParameterError(
            f"delta must be in (0.5, 1] (1 gives the most refined NAP; 0.99 the paper's default), got {delta!r}"
        )
    return frac




def _inputs_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor):
        x, y = batch[0], batch[1]
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"labels must be a 1-D integer tensor with one label per input; got dtype {y.dtype}, "
                f"shape {tuple(y.shape)} for {len(x)} inputs"
            )
        return x, y
    raise DataError(
        "the loader must yield (inputs, labels) pairs, e.g. probe.data.make_loader(dataset); "
        f"got a batch of type {type(batch).__name__}"
    )




class _Runner:
    """Runs a model with a ReLU recorder; restores training mode afterwards."""

    def __init__(self, model: nn.Module, layers: Sequence[str] | None, device: str | torch.device | None) -> None:
        self.model = model
        self.sites: ReluSites = find_relus(model).select(None if layers is None else list(layers))
        self.device = resolve_device(model, device)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def _forward(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        """Run the model; on the first batch, a shape error becomes an :class:`InputShapeError` naming the
        input shape (the usual cause: a data set that does not match the model)."""
        if not first:
            return self.sites.module(x)
        try:
            return self.sites.module(x)
        except (RuntimeError, ValueError) as err:
            if isinstance(err, NeurospecError):
                raise
            raise InputShapeError(
                f"the model cannot take the loader's inputs of shape {tuple(x.shape[1:])} (batch of {len(x)}): "
                f"{str(err).splitlines()[0]}. Check that the data set matches the model (e.g. MNIST, 1x28x28, "
                "for an MNIST network)") from err

    def batches(self, loader: Iterable[Any], verbose: bool, desc: str,
                prepare: Callable[[torch.Tensor], None] | None = None,
                on_state: Callable[[str, torch.Tensor], None] | None = None, skip: int = 0):
        """Yield ``(logits, labels, recorder)`` per non-empty batch, in eval mode and without gradients.

        Finiteness is checked on the outputs only (NaN/inf propagate through affine layers and ReLU, and
        the parameters are checked once); when an output is not finite, the inputs are checked and the batch
        is re-run with per-layer checks that name the layer. ``prepare(labels)`` runs before each forward
        pass and ``on_state(layer, states)`` during it (see :class:`ReluRecorder`). The first ``skip`` batches
        of the loader are passed over without running the model (a resumed run); ``self.consumed`` counts the
        loader's batches taken so far.
        """
        self.consumed = 0
        was_training = self.model.training
        self.model.eval()
        try:
            if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                raise ModelError("the model has NaN or inf parameters; check how it was trained or loaded")
            with torch.no_grad(), ReluRecorder(self.sites, check_finite=False) as rec:
                rec.on_state = on_state
                seen = 0
                for batch in progress(loader, verbose, desc):
                    self.consumed += 1
                    if self.consumed <= skip:
                        seen += 1
                        continue
                    x, y = _inputs_and_labels(batch)
                    if len(x) == 0:
                        continue
                    if x.device != self.device:
                        x = x.to(self.device)
                    if y.device != self.device:
                        y = y.to(self.device)
                    if prepare is not None:
                        prepare(y)
                    rec.start()
                    out = self._forward(x, first=self.consumed == skip + 1)
                    missing = [s.name for s in self.sites.sites if s.name not in rec.states]
                    if missing:
                        raise ModelError(f"ReLU layers {missing} did not run in the forward pass; "
                                         "pass layers= to leave them out")
                    if not bool(torch.isfinite(out).all()):
                        if not bool(torch.isfinite(x).all()):
                            raise DataError(f"inputs contain NaN or inf (batch starting at sample {seen})")
                        rec.start()
                        rec.on_state = None
                        rec.check_finite = True
                        self.sites.module(x)  # raises, naming the first layer with non-finite values
                        raise ModelError(f"non-finite (NaN or inf) outputs for the batch starting at sample {seen}")
                    self.shapes.update(rec.shapes)
                    seen += len(x)
                    yield out, y, rec
                if seen == 0:
                    raise DataError("the loader yielded no samples; pass a loader over a non-empty data set")
        finally:
            self.model.train(was_training)


@dataclass
class NAPStats:
    """Coverage and precision of a :class:`NAPSet` on a labelled data set.

    Attributes:
        delta: the NAPs' delta.
        n_class: per class, the number of inputs labelled c.
        n_follow: per class, the number of inputs (any label) that follow NAP_c.
        n_follow_and_class: per class, inputs labelled c that follow NAP_c.
        coverage: per class, share of class-c inputs that follow NAP_c (the paper's "recall"); NaN when the
            data set has no class-c input.
        precision: per class, share of inputs following NAP_c that are labelled c; NaN when none follows.
    """

    delta: float
    n_class: list[int]
    n_follow: list[int]
    n_follow_and_class: list[int]
    coverage: list[float] = field(init=False)
    precision: list[float] = field(init=False)

    def __post_init__(self) -> None:
        nan = float("nan")
        self.coverage = [a / n if n else nan for a, n in zip(self.n_follow_and_class, self.n_class, strict=True)]
        self.precision = [a / n if n else nan for a, n in zip(self.n_follow_and_class, self.n_follow, strict=True)]

    @staticmethod
    def _nanmean(values: list[float]) -> float:
        vals = [v for v in values if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else float("nan")

    def mean_coverage(self) -> float:
        """Coverage averaged over the classes present in the data."""
        return self._nanmean(self.coverage)

    def mean_precision(self) -> float:
        """Precision averaged over the classes whose NAP some input follows."""
        return self._nanmean(self.precision)

    def table(self) -> Table:
        """Per class: inputs of the class, inputs following its NAP, coverage and precision (prints as a table)."""
        rows = [{"class": c, "inputs": self.n_class[c], "following": self.n_follow[c],
                 "coverage": self.coverage[c], "precision": self.precision[c]} for c in range(len(self.n_class))]
        return Table(rows, title=f"NAP statistics at delta={self.delta}")

    def __repr__(self) -> str:
        return (f"NAPStats(delta={self.delta}, classes={len(self.n_class)}, inputs={sum(self.n_class)}, "
                f"mean coverage={self.mean_coverage():.4f}, mean precision={self.mean_precision():.4f})")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    def to_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "n_class": self.n_class, "n_follow": self.n_follow,
                "n_follow_and_class": self.n_follow_and_class, "coverage": self.coverage,
                "precision": self.precision}


@dataclass
class NAPSet:
    """NAPs of every class, derived from per-neuron activation counts (so ``delta`` can change freely).

    Attributes:
        delta: threshold in (0.5, 1].
        layers: ReLU layer names (module names as in ``model.named_modules()``, ``fx_relu_<i>`` for traced
            functional ReLUs).
        shapes: per layer, the per-sample shape of the pre-activation (conv maps: (C, H, W)).
        counts: per layer, an int64 tensor (classes, neurons): how many counted class-c samples activated
            the neuron.
        n_samples: int64 tensor (classes,): counted samples per class.
        only_correct: whether only correctly predicted samples were counted.
        class_names: optional names of the classes.
        source: optional description of the mined model and data (e.g. ``{"onnx": path, "data": "mnist"}``),
            used by ``neurospec nap stats`` to find the model again.
        model_relus: the names of every ReLU layer of the mined model (mined or not), recorded by :func:`mine`;
            statistics and verification refuse a model whose ReLU layers differ.
    """

    delta: float
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    counts: dict[str, torch.Tensor]
    n_samples: torch.Tensor
    only_correct: bool = True
    class_names: list[str] | None = None
    source: dict[str, Any] | None = None
    model_relus: list[str] | None = None

    def __post_init__(self) -> None:
        frac = _delta_fraction(self.delta)
        num, den = frac.numerator, frac.denominator
        n = self.n_samples.to(torch.int64).view(-1, 1)
        has = n > 0
        self.active: dict[str, torch.Tensor] = {}
        self.inactive: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            a = self.counts[layer].to(torch.int64)
            self.active[layer] = (a * den >= num * n) & has
            self.inactive[layer] = (a * den <= (den - num) * n) & has

    # ----------------------------------------------------------------- basic views
    @property
    def num_classes(self) -> int:
        return int(self.n_samples.numel())

    @property
    def empty_classes(self) -> list[int]:
        """Classes with no counted sample: their NAP constrains nothing and is reported as empty."""
        return [c for c in range(self.num_classes) if int(self.n_samples[c]) == 0]

    def with_delta(self, delta: float) -> NAPSet:
        """The NAPs for another ``delta``, re-thresholded from the stored counts (no model run)."""
        return NAPSet(float(delta), list(self.layers), dict(self.shapes), self.counts, self.n_samples,
                      self.only_correct, self.class_names, self.source, self.model_relus)

    def sizes(self) -> dict[str, list[int]]:
        """Per class: number of constrained neurons (``total``), ``active`` and ``inactive`` ones."""
        act = [sum(int(self.active[layer][c].sum()) for layer in self.layers) for c in range(self.num_classes)]
        ina = [sum(int(self.inactive[layer][c].sum()) for layer in self.layers) for c in range(self.num_classes)]
        return {"active": act, "inactive": ina, "total": [a + b for a, b in zip(act, ina, strict=True)]}

    def table(self) -> Table:
        """Per class: counted samples and the NAP's active, inactive and total sizes (prints as a table)."""
        sizes = self.sizes()
        names = self.class_names or [str(c) for c in range(self.num_classes)]
        rows = [{"class": names[c], "samples": int(self.n_samples[c]), "active": sizes["active"][c],
                 "inactive": sizes["inactive"][c], "total": sizes["total"][c]} for c in range(self.num_classes)]
        return Table(rows, title=f"NAPs at delta={self.delta} over {self.num_neurons()} neurons")

    def __repr__(self) -> str:
        sizes = self.sizes()["total"]
        mean = sum(sizes) / len(sizes) if sizes else 0.0
        return (f"NAPSet(delta={self.delta}, classes={self.num_classes}, layers={self.layers}, "
                f"neurons={self.num_neurons()}, samples={int(self.n_samples.sum())}, mean NAP size={mean:.1f})")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    def num_neurons(self) -> int:
        return sum(int(self.counts[layer].shape[1]) for layer in self.layers)

    def mask(self, cls: int, layer: str) -> torch.Tensor:
        """Per-neuron code of NAP_cls at ``layer`` in its natural shape: +1 active, -1 inactive, 0 free."""
        code = self.active[layer][cls].to(torch.int8) - self.inactive[layer][cls].to(torch.int8)
        return code.view(self.shapes[layer])

    # ----------------------------------------------------------------- following
    def _violations(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for layer in self.layers:
            s = states[layer].to(torch.float32)
            act = self.active[layer].to(device=s.device, dtype=torch.float32)
            ina = self.inactive[layer].to(device=s.device, dtype=torch.float32)
            # active-set neurons that are off + inactive-set neurons that are on
            v = (1.0 - s) @ act.T + s @ ina.T
            total = v if total is None else total + v
        assert total is not None
        return total

    def follows_states(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        """(batch, classes) bool from recorded activation states (keys: layer names)."""
        missing = [layer for layer in self.layers if layer not in states]
        if missing:
            raise ModelError(f"activation states are missing for layers {missing}")
        follows = self._violations(states) == 0
        if self.empty_classes:
            follows[:, self.empty_classes] = False
        return follows

    def follows(self, model: nn.Module, x: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
        """Whether each input of the batch ``x`` follows each class's NAP: bool tensor (batch, classes).

        Args:
            model: the model the NAPs were mined from.
            x: a batch of inputs.
            device: where to run (default: the model's device).
        """
        runner = self._runner(model, device)
        dummy = torch.zeros(len(x), dtype=torch.long)
        for _, _, rec in runner.batches([(x, dummy)], verbose=False, desc="follows"):
            return self.follows_states(rec.states).cpu()
        raise DataError("x is an empty batch")  # pragma: no cover - batches() raises first

    def check_model(self, relu_names: Sequence[str], shapes: dict[str, tuple[int, ...]] | None = None,
                    n_outputs: int | None = None) -> None:
        """Refuse a model other than the mined one: its ReLU layer names (all of them, when the NAPs record
        them), the per-sample shapes of the mined layers and the number of outputs must match.

        Raises:
            ModelError: the message names what differs and the recorded source of the NAPs.
        """
        mined_on = f" (the NAPs were mined on {self.source})" if self.source else ""
        names = list(relu_names)
        if self.model_relus is not None and names != list(self.model_relus):
            raise ModelError(f"these NAPs were mined on a model with ReLU layers {list(self.model_relus)}, but this "
                             f"model has {names}{mined_on}; pass the mined model")
        missing = [layer for layer in self.layers if layer not in names]
        if missing:
            raise ModelError(f"the model has no ReLU layers {missing} (it has {names}); is it the mined model?"
                             f"{mined_on}")
        for layer, shape in (shapes or {}).items():
            if layer in self.shapes and tuple(shape) != tuple(self.shapes[layer]):
                raise ModelError(f"ReLU layer {layer!r} has shape {tuple(shape)} in this model but "
                                 f"{tuple(self.shapes[layer])} in the NAPs{mined_on}; pass the mined model")
        if n_outputs is not None and n_outputs != self.num_classes:
            raise ModelError(f"the model has {n_outputs} outputs but the NAPs have {self.num_classes} classes"
                             f"{mined_on}; pass the mined model")

    def _runner(self, model: nn.Module, device: str | torch.device | None) -> _Runner:
        runner = _Runner(model, None, device)
        names = [s.name for s in runner.sites.sites]
        self.check_model(names)
        runner.sites = runner.sites.select(self.layers)
        return runner

    # ----------------------------------------------------------------- statistics
    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: str | torch.device | None = None,
                 verbose: bool = True) -> NAPStats:
        """Coverage and precision on a labelled data set (one pass over ``loader``)."""
        return self.sweep(model, loader, [self.delta], device=device, verbose=verbose)[0]

    def sweep(self, model: nn.Module, loader: Iterable[Any], deltas: Sequence[float],
              device: str | torch.device | None = None, verbose: bool = True) -> list[NAPStats]:
        """Coverage and precision for several deltas in one pass over ``loader`` (NAPs re-thresholded from
        the stored counts).

        Example:
            >>> stats = naps.sweep(model, test_loader, [1.0, 0.99, 0.95])  # doctest: +SKIP
        """
        variants = [self.with_delta(d) for d in deltas]
        runner = self._runner(model, device)
        c = self.num_classes
        n_class = torch.zeros(c, dtype=torch.int64)
        n_follow = torch.zeros(len(variants), c, dtype=torch.int64)
        n_both = torch.zeros(len(variants), c, dtype=torch.int64)
        for out, y, rec in runner.batches(loader, verbose, "NAP stats"):
            if not n_class.any():
                self.check_model([s.name for s in runner.sites.sites], rec.shapes, out.shape[-1])
            y = y.cpu()
            _check_labels(y, c)
            onehot = torch.nn.functional.one_hot(y, c).bool()
            n_class += onehot.sum(0)
            for i, v in enumerate(variants):
                f = v.follows_states(rec.states).cpu()
                n_follow[i] += f.sum(0)
                n_both[i] += (f & onehot).sum(0)
        return [NAPStats(v.delta, n_class.tolist(), n_follow[i].tolist(), n_both[i].tolist())
                for i, v in enumerate(variants)]

    def disjoint_pairs(self) -> torch.Tensor:
        """(classes, classes) bool: True where NAP_i and NAP_j are provably disjoint — some neuron is active
        in one and inactive in the other, so no input can follow both (the cheap non-ambiguity check; a
        False entry is *not* a proof of ambiguity, ``verify`` decides those)."""
        c = self.num_classes
        out = torch.zeros(c, c, dtype=torch.bool)
        for layer in self.layers:
            a, i = self.active[layer].to(torch.float32), self.inactive[layer].to(torch.float32)
            out |= (a @ i.T + i @ a.T) > 0
        return out

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            layers.append({
                "name": layer,
                "shape": list(self.shapes[layer]),
                "counts": self.counts[layer].tolist(),
                # Derived, for readers that want the sets without re-thresholding:
                "active": [torch.nonzero(r).flatten().tolist() for r in self.active[layer]],
                "inactive": [torch.nonzero(r).flatten().tolist() for r in self.inactive[layer]],
            })
        return {**stamp(_KIND), "delta": self.delta, "only_correct": self.only_correct,
                "class_names": self.class_names, "source": self.source, "model_relus": self.model_relus,
                "n_samples": self.n_samples.tolist(),
                "layers": layers}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the NAPs (counts, and the derived active/inactive index lists) as JSON, atomically."""
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_dict()).encode())
        return path

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> NAPSet:
        check_stamp(obj, _KIND, what="neurospec NAP file")
        try:
            layers = [entry["name"] for entry in obj["layers"]]
            naps = cls(
                delta=float(obj["delta"]),
                layers=layers,
                shapes={e["name"]: tuple(e["shape"]) for e in obj["layers"]},
                counts={e["name"]: torch.tensor(e["counts"], dtype=torch.int64) for e in obj["layers"]},
                n_samples=torch.tensor(obj["n_samples"], dtype=torch.int64),
                only_correct=bool(obj.get("only_correct", True)),
                class_names=obj.get("class_names"),
                source=obj.get("source"),
                model_relus=obj.get("model_relus"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"corrupt NAP file: {err}") from err
        return naps

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NAPSet:
        """Read a file written by :meth:`save`.

        Raises:
            DataError: missing, unreadable or not a NAP file.
        """
        return cls.from_dict(read_json(path, what="NAP file"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NAPSet):
            return NotImplemented
        return (self.delta == other.delta and self.layers == other.layers and self.shapes == other.shapes
                and torch.equal(self.n_samples, other.n_samples)
                and all(torch.equal(self.counts[k], other.counts[k]) for k in self.layers)
                and self.only_correct == other.only_correct and self.class_names == other.class_names)

    def plot(self, kind: str = "heatmap", **kwargs: Any):
        """Matplotlib views: ``"heatmap"`` (NAP per class and layer: +1 active, -1 inactive, 0 free) or
        ``"delta"`` (needs ``stats=naps.sweep(...)``: coverage and NAP size versus delta). Returns the figure."""
        from probe import plotting

        if kind == "heatmap":
            return plotting.nap_heatmap(self, **kwargs)
        if kind == "delta":
            return plotting.nap_delta_curves(self, **kwargs)
        raise InvalidParameterError(f"kind must be 'heatmap' or 'delta', got {kind!r}")

    def to_html(self, path: str | os.PathLike[str], stats: NAPStats | Sequence[NAPStats] | None = None, *,
                title: str | None = None) -> Path:
        """Write a self-contained HTML report (opens from disk): NAP sizes per class, the heatmap, and with
        ``stats`` (from :meth:`evaluate` or :meth:`sweep`) coverage and precision per class and per delta.

        Returns:
            The path written.

        Raises:
            OutputPathError: ``path`` cannot be written (checked before rendering).

        Example:
            >>> naps.to_html("naps.html", stats=naps.sweep(model, test_loader, [1.0, 0.99, 0.95]))  # doctest: +SKIP
        """
        from probe.core.paths import check_output
        from probe.report import nap_html

        check_output(path)
        return nap_html(self, path, stats, title=title)


def _check_labels(y: torch.Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels must be in 0..{num_classes - 1} (the model has {num_classes} outputs); "
            f"got labels in {int(y.min())}..{int(y.max())}"
        )


def _save_checkpoint(path: str | os.PathLike[str], order: list[str], only_correct: bool,
                     total: dict[str, torch.Tensor], n_samples: torch.Tensor, batches: int,
                     shapes: dict[str, tuple[int, ...]]) -> None:
    tensors = {f"total.{name}": total[name] for name in order} | {"n_samples": n_samples}
    write_tensors(path, tensors, {"format": "neurospec.nap-checkpoint", "batches": str(batches),
                                  "layers": json.dumps(order), "only_correct": str(only_correct),
                                  "shapes": json.dumps({k: list(v) for k, v in shapes.items()})})


def _resume(path: str | os.PathLike[str], order: list[str], only_correct: bool,
            total: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> tuple[int, torch.Tensor]:
    """Load a mining checkpoint into ``total`` and ``shapes``; returns ``(batches counted, n_samples)``."""
    meta = read_metadata(path)
    if meta.get("format") != "neurospec.nap-checkpoint":
        raise DataError(f"{str(path)!r} is not a NAP mining checkpoint; delete it or pass another checkpoint")
    if json.loads(meta["layers"]) != order or meta["only_correct"] != str(only_correct):
        raise DataError(f"the checkpoint {str(path)!r} belongs to another mining run (layers "
                        f"{json.loads(meta['layers'])}, only_correct={meta['only_correct']}); delete it to start over")
    tensors = read_tensors(path)
    for name in order:
        total[name] = tensors[f"total.{name}"].to(torch.int64)
    shapes.update({k: tuple(v) for k, v in json.loads(meta["shapes"]).items()})
    return int(meta["batches"]), tensors["n_samples"].to(torch.int64)


def mine(
    model: nn.Module,
    loader: Iterable[Any],
    delta: float = 0.99,
    layers: Sequence[str] | None = None,
    only_correct: bool = True,
    device: str | torch.device | None = None,
    verbose: bool = True,
    class_names: list[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: float = 10.0,
) -> NAPSet:
    """Mine the NAP of every class.

    Args:
        model: a classifier (logits as output) with ReLUs (``nn.ReLU`` modules or traceable ``F.relu`` calls);
            ONNX networks from :func:`probe.graph.onnx.load_onnx` work as they are.
        loader: yields ``(inputs, labels)`` batches, e.g. ``probe.data.make_loader(dataset)``.
        delta: threshold in (0.5, 1]; 1 gives the most refined NAP.
        layers: ReLU layer names to record (default: every ReLU).
        only_correct: count only correctly predicted inputs (the paper's setting).
        device: where to run (default: the model's device); inputs are moved there.
        verbose: tqdm progress bar.
        class_names: optional names stored with the result.
        checkpoint: a file for the counts so far (safetensors), written atomically every ``checkpoint_every``
            seconds at a batch boundary. When it exists at the start, mining resumes after the batches it
            counted (the loader must yield the same batches in the same order, as ``make_loader`` without
            shuffling does); an interrupted run (Ctrl-C, SIGTERM) loses at most ``checkpoint_every`` seconds.
            It is left in place: delete it once the result is saved.
        checkpoint_every: seconds between checkpoints.

    Returns:
        The :class:`NAPSet`; classes without a counted sample are listed in ``empty_classes``.

    Raises:
        ModelError: no ReLU, unknown layer, model/device mismatch, NaN/inf pre-activations.
        DataError: empty loader, batches without labels, labels out of range, NaN/inf inputs.
        InvalidParameterError: delta outside (0.5, 1].

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(64, 2)
        >>> y = net(x).argmax(1)
        >>> naps = mine(net, [(x, y)], delta=1.0, verbose=False)
        >>> naps.num_classes, naps.layers
        (2, ['1'])
    """
    _delta_fraction(delta)
    runner = _Runner(model, layers, device)
    order = [s.name for s in runner.sites.sites]
    # Counting happens in two parts. During the forward pass, right after a layer's states exist (still in
    # the CPU cache), one index_add_ adds them to the row of each sample's *label*. After the pass, the few
    # misclassified samples are added to `wrong`, which is subtracted at the end when only correct samples
    # count. Float32 sums of 0/1 are exact below 2**24 and are flushed to int64 long before that.
    acc: dict[str, torch.Tensor] = {}
    wrong: dict[str, torch.Tensor] = {}
    total: dict[str, torch.Tensor] = {}
    ctx: dict[str, Any] = {"classes": 0, "labels": None}

    def prepare(y: torch.Tensor) -> None:
        if ctx["classes"]:
            _check_labels(y, ctx["classes"])
            ctx["labels"] = y

    def on_state(name: str, s: torch.Tensor) -> None:
        if ctx["labels"] is not None:
            acc[name].index_add_(0, ctx["labels"], s)

    def flush() -> None:
        for name in acc:
            total[name] += (acc[name] - wrong[name]).cpu().to(torch.int64)
            acc[name].zero_()
            wrong[name].zero_()

    n_samples: torch.Tensor | None = None
    skip = 0
    if checkpoint is not None and Path(checkpoint).exists():
        skip, n_samples = _resume(checkpoint, order, only_correct, total, runner.shapes)
        num_classes = ctx["classes"] = len(n_samples)
        for name in order:
            acc[name] = torch.zeros(total[name].shape, dtype=torch.float32, device=runner.device)
            wrong[name] = torch.zeros_like(acc[name])
        logger.info("resuming NAP mining after %d batches from %s", skip, checkpoint)
    pending = 0
    last_save = time.monotonic()
    for out, y, rec in runner.batches(loader, verbose, "mine NAPs", prepare=prepare, on_state=on_state,
                                      skip=skip):
        if out.ndim != 2:
            raise ModelError(f"the model must output logits of shape (batch, classes); got {tuple(out.shape)}")
        if n_samples is None:  # first batch: counted after the pass, once the number of classes is known
            num_classes = out.shape[1]
            _check_labels(y, num_classes)
            n_samples = torch.zeros(num_classes, dtype=torch.int64)
            for name, s in rec.states.items():
                acc[name] = torch.zeros((num_classes, s.shape[1]), dtype=torch.float32, device=s.device)
                acc[name].index_add_(0, y, s)
                wrong[name] = torch.zeros_like(acc[name])
                total[name] = torch.zeros(acc[name].shape, dtype=torch.int64)
            ctx["classes"] = num_classes
        n_samples += torch.bincount(y, minlength=num_classes).cpu()
        if only_correct:
            mis = torch.nonzero(out.argmax(1) != y).flatten()
            if len(mis):
                ym = y[mis]
                n_samples -= torch.bincount(ym, minlength=num_classes).cpu()
                for name, s in rec.states.items():
                    wrong[name].index_add_(0, ym, s[mis])
        pending += len(y)
        if pending >= 2**23:
            flush()
            pending = 0
        if checkpoint is not None and time.monotonic() - last_save >= checkpoint_every:
            flush()
            pending = 0
            _save_checkpoint(checkpoint, order, only_correct, total, n_samples, runner.consumed, runner.shapes)
            last_save = time.monotonic()
    flush()
    counts = total
    assert n_samples is not None
    naps = NAPSet(float(delta), order, {k: runner.shapes[k] for k in order}, {k: counts[k] for k in order},
                  n_samples, only_correct, class_names, model_relus=[site.name for site in find_relus(model).sites])
    for c in naps.empty_classes:
        logger.warning("class %d has no %s sample: its NAP is empty", c,
                       "correctly predicted" if only_correct else "")
    return naps

