"""Feature complexity by iterative feature merging (IFM), after Chen, Zhou, Yan, "Going Beyond Neural Network
Feature Similarity: The Network Feature Complexity and Its Interpretation Using Category Theory", ICLR 2024.

Per feature group (a layer's channels or units, found automatically, see below), features that compute
(nearly) the same function are merged until none are left; the number of features that remain is that
layer's *feature complexity*. The procedure (the paper's):

* distance of two features of a group = squared Euclidean distance of their concatenated incoming weights
  (every producer's row and bias, BatchNorm folded in) and outgoing weights (every consumer's columns);
* in rounds, each group merges its closest pair while ``d_min <= beta * d_max`` (both recomputed after every
  merge), one merge per group per round, until a round merges nothing; ``max_ratio`` caps the share of a
  group's features that may be merged away; ties go to the lowest ``(i, j)``; zero distances (exact
  duplicates, all-zero features) always merge.

Two merge rules:

``"exact"`` (default)
    BatchNorm is folded into its Linear/Conv2d first; a merge *averages* the producers' rows (count-weighted:
    the merged feature is the centroid of its originals) and *sums* the consumers' columns. Exactly duplicated
    features then compute the same value, so the merged model computes the same function (up to float
    rounding), BatchNorm included. In the merged model each folded BatchNorm is an identity (plus the bias
    when the convolution has none).
``"paper"``
    As published: *sum* the producers' rows (bias and BatchNorm weight, bias, running mean and running
    variance included) and take the count-weighted *average* of the consumers' columns. Exact for duplicates
    without BatchNorm (ReLU is positively homogeneous); with BatchNorm the summed variance mis-scales the
    normalised value by sqrt(k) for k merged duplicates.

Automatic grouping (``torch.fx``, or the plan of an ONNX-loaded :class:`probe.graph.onnx.OnnxModule`) follows
Linear, Conv2d, BatchNorm right after them, ReLU, Flatten/reshape/permute, pooling and residual ``a + b``
(which ties two groups into one); a Flatten after a convolution ties each channel to its block of ``H * W``
columns of the next Linear. Anything else that touches features raises :class:`~probe.core.errors.ModelError`
naming the module or operator. Groups whose features are a model output are never merged, so the merged
model's output shape is always the original's (checked).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from probe import complexity
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> with torch.no_grad():  # units 4..7 copy units 0..3; each copy carries half the outgoing weight
    ...     net[0].weight[4:] = net[0].weight[:4]; net[0].bias[4:] = net[0].bias[:4]
    ...     net[2].weight[:, :4] /= 2; net[2].weight[:, 4:] = net[2].weight[:, :4]
    >>> report = complexity.measure(net, beta=1e-6, rule="exact")
    >>> report.complexity
    {'0': 4}
    >>> x = torch.randn(5, 4)
    >>> bool(torch.allclose(report.merged_model(x), net(x), atol=1e-6))
    True
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probe.complexity.build import build_merged, check_output_shape, count_flops, count_params, resize_like
from probe.complexity.graph import Analysis, analyse, is_onnx_module
from probe.complexity.merge import RULES, Merger
from probe.core.artifacts import check_stamp, read_json, read_tensors, stamp, write_json, write_tensors
from probe.core.errors import DataError, InvalidParameterError, ModelError
from probe.core.table import Table

__all__ = ["RULES", "ComplexityReport", "GroupComplexity", "SweepPoint", "SweepResult", "measure", "sweep"]

logger = logging.getLogger(__name__)

_KIND = "complexity"
_SWEEP_KIND = "complexity-sweep"
_REPORT_JSON = "report.json"
_MODEL_FILE = "merged_model.safetensors"
_DATASET_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------


def _check_beta(beta: Any, name: str = "beta") -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(float(beta)) or not (
            0.0 < float(beta) < 1.0):
        raise InvalidParameterError(
            f"{name} must be a number in the open interval (0, 1) (features merge while d_min <= beta * d_max; "
            f"small values merge only near-duplicates), got {beta!r}"
        )
    return float(beta)


def _check_max_ratio(max_ratio: Any) -> float:
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, numbers.Real) or not math.isfinite(
            float(max_ratio)) or not (0.0 < float(max_ratio) <= 1.0):
        raise InvalidParameterError(
            "max_ratio must be a number in (0, 1] (the largest share of a layer's features that may be merged "
            f"away; 1 means no cap), got {max_ratio!r}"
        )
    return float(max_ratio)


def _check_rule(rule: Any) -> str:
    if rule not in RULES:
        raise InvalidParameterError(f"rule must be one of {list(RULES)} ('exact': function-preserving for "
                                    f"duplicates, 'paper': as published), got {rule!r}")
    return str(rule)


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise ModelError("the model has NaN or inf parameters; check how it was trained or loaded")
    return model


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise InvalidParameterError(f"input_shape must be the per-sample shape as positive ints, e.g. "
                                        f"(1, 28, 28), got {input_shape!r}")
        return shape
    if is_onnx_module(model):
        return tuple(model.input_shape)
    info = getattr(model, "reference_info", None)
    if isinstance(info, dict) and info.get("settings", {}).get("dataset") in _DATASET_SHAPES:
        return _DATASET_SHAPES[info["settings"]["dataset"]]
    weights = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if weights and all(isinstance(m, nn.Linear) for m in weights):
        return (weights[0].in_features,)
    raise InvalidParameterError("input_shape is needed for this model (the per-sample input shape, e.g. "
                                "input_shape=(3, 32, 32)); it can only be guessed for MLPs, reference models "
                                "and ONNX networks")


def _example(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return torch.zeros(1, *shape, dtype=dtype)


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------


@dataclass
class GroupComplexity:
    """One feature group (layer) and what merging left of it.

    Attributes:
        name: the group's name (its first producer's module name).
        producers: Linear/Conv2d modules whose outputs are these features (several when a residual add ties
            groups together).
        consumers: Linear/Conv2d modules that read these features.
        width: features before merging.
        complexity: features after merging (the feature complexity).
        clusters: for every remaining feature, the original feature indices merged into it.
    """

    name: str
    producers: list[str]
    consumers: list[str]
    width: int
    complexity: int
    clusters: list[list[int]]

    @property
    def merged_groups(self) -> list[list[int]]:
        """Only the clusters of two or more original features."""
        return [c for c in self.clusters if len(c) > 1]


@dataclass
class ComplexityReport:
    """Result of :func:`measure`.

    Attributes:
        beta: the merge threshold (merge while ``d_min <= beta * d_max``).
        rule: ``"exact"`` or ``"paper"``.
        max_ratio: the cap on the share of each group's features merged away.
        groups: one :class:`GroupComplexity` per mergeable group, in execution order.
        frozen: groups that were never merged (their features are a model output), with their width.
        params_before: parameters of the original model.
        params_after: parameters of the merged model.
        flops_before: FLOPs of one forward pass (2 x multiply-accumulates of Linear/Conv2d), original.
        flops_after: same for the merged model.
        rounds: merge rounds run.
        seconds: wall time of the merging (graph analysis and model building included).
        input_shape: the per-sample input shape used to trace the model.
        reshapes: ONNX Reshape modules rewritten to ``(N, -1)`` (needed to rebuild the merged model).
        merged_model: the merged, narrower model (an ordinary ``nn.Module``, eval mode); ``None`` after
            :meth:`load` without a model.
    """

    beta: float
    rule: str
    max_ratio: float
    groups: list[GroupComplexity]
    frozen: dict[str, int]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    rounds: int
    seconds: float
    input_shape: tuple[int, ...]
    reshapes: list[str] = field(default_factory=list)
    merged_model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def complexity(self) -> dict[str, int]:
        """Feature complexity per group: ``{group name: features left}``."""
        return {g.name: g.complexity for g in self.groups}

    @property
    def widths(self) -> dict[str, int]:
        """Features per group before merging."""
        return {g.name: g.width for g in self.groups}

    @property
    def params_removed(self) -> float:
        """Share of the parameters removed by merging."""
        return 1.0 - self.params_after / max(self.params_before, 1)

    @property
    def flops_removed(self) -> float:
        """Share of the FLOPs removed by merging."""
        return 1.0 - self.flops_after / max(self.flops_before, 1)

    def table(self) -> Table:
        """Per group: width before merging and feature complexity after (prints as a table)."""
        rows = [{"layer": g.name, "width": g.width, "complexity": g.complexity} for g in self.groups]
        return Table(rows, title=f"feature complexity at beta={self.beta:g} (rule {self.rule})")

    def __repr__(self) -> str:
        return (f"ComplexityReport(beta={self.beta:g}, rule={self.rule!r}, complexity={self.complexity}, "
                f"params {self.params_before} -> {self.params_after}, FLOPs {self.flops_before} -> "
                f"{self.flops_after}, {self.seconds:.2f} s)")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (without the merged model's weights)."""
        out = {k: v for k, v in asdict(self).items() if k != "merged_model"}
        out["input_shape"] = list(self.input_shape)
        return {**stamp(_KIND), **out}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ComplexityReport:
        """Inverse of :meth:`to_dict`."""
        check_stamp(obj, _KIND, what="feature-complexity report")
        try:
            groups = [GroupComplexity(**g) for g in obj["groups"]]
            return cls(beta=float(obj["beta"]), rule=obj["rule"], max_ratio=float(obj["max_ratio"]), groups=groups,
                       frozen=dict(obj["frozen"]), params_before=int(obj["params_before"]),
                       params_after=int(obj["params_after"]), flops_before=int(obj["flops_before"]),
                       flops_after=int(obj["flops_after"]), rounds=int(obj["rounds"]),
                       seconds=float(obj["seconds"]), input_shape=tuple(obj["input_shape"]),
                       reshapes=list(obj.get("reshapes", [])))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"corrupt feature-complexity report: {err}") from err

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``report.json`` (version-stamped) and, when present, ``merged_model.safetensors``.

        Returns:
            The folder.

        Example:
            >>> report.save("ifm-mnist-mlp")  # doctest: +SKIP
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.merged_model is not None:
            write_tensors(folder / _MODEL_FILE, self.merged_model.state_dict())
        write_json(folder / _REPORT_JSON, self.to_dict())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], model: nn.Module | None = None) -> ComplexityReport:
        """Read a folder written by :meth:`save`.

        Args:
            folder: the folder.
            model: the original model that was measured; when given, the merged model is rebuilt from it
                and the saved weights (otherwise ``merged_model`` is ``None``).

        Raises:
            DataError: the folder or its files are missing or not a report.
            ModelError: the saved weights do not fit ``model``.

        Example:
            >>> report = ComplexityReport.load("ifm-mnist-mlp", model)  # doctest: +SKIP
        """
        path = Path(folder) / _REPORT_JSON
        try:
            obj = read_json(path, what="feature-complexity report")
        except DataError as err:
            raise type(err)(f"cannot read a feature-complexity report from {path}: {err}") from err
        report = cls.from_dict(obj)
        weights = Path(folder) / _MODEL_FILE
        if model is not None:
            if not weights.exists():
                raise DataError(f"{weights} is missing; the report was saved without its merged model")
            report.merged_model = resize_like(model, read_tensors(weights), report.reshapes)
        return report

    def plot(self, ax: Any = None) -> Any:
        """Bar chart of width and feature complexity per layer. Returns the matplotlib figure."""
        from probe.complexity.plot import plot_layers

        return plot_layers(self, ax=ax)

    def to_html(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write a self-contained HTML report (opens from disk): width and feature complexity per layer, the
        bar chart, parameters and FLOPs before and after, and the merged clusters. Returns the path.

        Example:
            >>> complexity.measure(model, beta=0.1).to_html("complexity.html")  # doctest: +SKIP
        """
        from probe.core.paths import check_output
        from probe.report import complexity_html

        check_output(path)
        return complexity_html(self, path, title=title)


@dataclass
class SweepPoint:
    """One beta of a :func:`sweep`: accuracy, size and feature complexity of the merged model."""

    beta: float
    accuracy: float
    params: int
    flops: int
    complexity: dict[str, int]
    seconds: float


@dataclass
class SweepResult:
    """Result of :func:`sweep`.

    Attributes:
        rule: the merge rule.
        max_ratio: the cap.
        baseline_accuracy: accuracy of the original model on the same loader.
        params_before: parameters of the original.
        flops_before: FLOPs of the original.
        widths: features per group before merging.
        points: one :class:`SweepPoint` per beta, in the order given.
        n_samples: samples in the evaluation loader.
    """

    rule: str
    max_ratio: float
    baseline_accuracy: float
    params_before: int
    flops_before: int
    widths: dict[str, int]
    points: list[SweepPoint]
    n_samples: int

    def best_within(self, max_drop: float) -> SweepPoint | None:
        """The point with the fewest parameters whose accuracy is at most ``max_drop`` below the baseline."""
        ok = [p for p in self.points if p.accuracy >= self.baseline_accuracy - max_drop - 1e-12]
        return min(ok, key=lambda p: (p.params, -p.accuracy)) if ok else None

    def table(self) -> Table:
        """Per beta: accuracy, kept share of parameters and FLOPs, and seconds (prints as a table)."""
        rows = [{"beta": p.beta, "accuracy": p.accuracy, "params kept": p.params / max(self.params_before, 1),
                 "FLOPs kept": p.flops / max(self.flops_before, 1), "seconds": p.seconds} for p in self.points]
        return Table(rows, title=f"complexity sweep (original accuracy {self.baseline_accuracy:.4f}, "
                                 f"{self.n_samples} samples)")

    def __repr__(self) -> str:
        return (f"SweepResult(rule={self.rule!r}, betas={[p.beta for p in self.points]}, "
                f"baseline accuracy={self.baseline_accuracy:.4f}, samples={self.n_samples})")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {**stamp(_SWEEP_KIND), **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the sweep as version-stamped JSON."""
        path = Path(path)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepResult:
        """Read a file written by :meth:`save`.

        Raises:
            DataError: missing or not a sweep file.
        """
        try:
            obj = read_json(path, what="complexity sweep")
        except DataError as err:
            raise type(err)(f"cannot read a complexity sweep from {path}: {err}") from err
        check_stamp(obj, _SWEEP_KIND, path, what="complexity sweep")
        try:
            points = [SweepPoint(**p) for p in obj["points"]]
            return cls(rule=obj["rule"], max_ratio=float(obj["max_ratio"]),
                       baseline_accuracy=float(obj["baseline_accuracy"]), params_before=int(obj["params_before"]),
                       flops_before=int(obj["flops_before"]), widths=dict(obj["widths"]), points=points,
                       n_samples=int(obj["n_samples"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"corrupt complexity sweep {path}: {err}") from err

    def plot(self, ax: Any = None) -> Any:
        """Accuracy versus share of parameters kept, one point per beta. Returns the matplotlib figure."""
        from probe.complexity.plot import plot_sweep

        return plot_sweep(self, ax=ax)

    def to_html(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write a self-contained HTML report (opens from disk): accuracy, parameters and FLOPs kept and the
        feature complexity of every layer per beta, and the accuracy-versus-size plot. Returns the path.

        Example:
            >>> complexity.sweep(model, [0.05, 0.1], test_loader).to_html("sweep.html")  # doctest: +SKIP
        """
        from probe.core.paths import check_output
        from probe.report import sweep_html

        check_output(path)
        return sweep_html(self, path, title=title)


# --------------------------------------------------------------------------------------------------------
# The procedure
# --------------------------------------------------------------------------------------------------------


def _prepare(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[nn.Module, Analysis, torch.Tensor,
                                                                             tuple[int, ...]]:
    model = _check_model(model)
    shape = _input_shape(model, input_shape)
    cpu = model if all(p.device.type == "cpu" for p in model.parameters()) else _cpu_copy(model)
    was_training = cpu.training
    cpu.eval()
    try:
        example = _example(cpu, shape)
        with torch.no_grad():
            analysis = analyse(cpu, example)
    finally:
        cpu.train(was_training)
    if not any(not g.frozen for g in analysis.groups.values()):
        raise ModelError("the model has no mergeable feature group (no Linear/Conv2d whose outputs feed another "
                         "Linear/Conv2d)")
    return cpu, analysis, example, shape


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def _run(model: nn.Module, analysis: Analysis, example: torch.Tensor, shape: tuple[int, ...], beta: float,
         rule: str, max_ratio: float, device: str | torch.device, verbose: bool) -> ComplexityReport:
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # The merge loop is thousands of small (n x n) tensor ops; intra-op threads only add overhead to them
    # (two threads measured ~100x slower than one on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        merger, rounds = _merge_loop(model, analysis, beta, rule, max_ratio, verbose)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        merged = build_merged(model, analysis, merger, example)
    return _finish(model, analysis, merger, merged, example, shape, beta, rule, max_ratio, rounds, t0, device)


def _merge_loop(model: nn.Module, analysis: Analysis, beta: float, rule: str, max_ratio: float,
                verbose: bool) -> tuple[Merger, int]:
    """The paper's rounds: each group merges its closest pair while d_min <= beta * d_max."""
    from tqdm.auto import tqdm

    merger = Merger(model, analysis, rule)
    limit = {g: min(math.floor(max_ratio * merger.size(g) + 1e-9), merger.size(g) - 1) for g in merger.mergeable}
    removed = dict.fromkeys(merger.mergeable, 0)
    rounds = 0
    bar = tqdm(total=sum(limit.values()), disable=not verbose, desc=f"merge features (beta={beta})", leave=False)
    while True:
        merged_any = False
        for g in merger.mergeable:
            if removed[g] >= limit[g] or merger.size(g) < 2:
                continue
            i, j, d_min, d_max = merger.closest(g)
            if d_min <= beta * d_max:
                merger.merge(g, i, j)
                removed[g] += 1
                merged_any = True
                bar.update(1)
        if not merged_any:
            break
        rounds += 1
    bar.close()
    return merger, rounds


def _finish(model: nn.Module, analysis: Analysis, merger: Merger, merged: nn.Module, example: torch.Tensor,
            shape: tuple[int, ...], beta: float, rule: str, max_ratio: float, rounds: int, t0: float,
            device: str | torch.device) -> ComplexityReport:
    with torch.no_grad():
        check_output_shape(analysis.output_shape, merged, example)
        flops_before, flops_after = count_flops(model, example), count_flops(merged, example)
    groups = []
    for g in merger.mergeable:
        grp = analysis.groups[g]
        groups.append(GroupComplexity(name=g, producers=list(grp.producers),
                                      consumers=[c.module for c in grp.consumers], width=grp.size,
                                      complexity=merger.size(g), clusters=merger.members[g]))
    report = ComplexityReport(
        beta=beta, rule=rule, max_ratio=max_ratio, groups=groups,
        frozen={g: grp.size for g, grp in analysis.groups.items() if grp.frozen},
        params_before=count_params(model), params_after=count_params(merged),
        flops_before=flops_before, flops_after=flops_after, rounds=rounds,
        seconds=time.perf_counter() - t0, input_shape=shape, reshapes=list(analysis.reshapes),
        merged_model=merged.to(device).eval(),
    )
    logger.info("IFM beta=%g rule=%s: complexity %s, params %d -> %d in %.2f s", beta, rule, report.complexity,
                report.params_before, report.params_after, report.seconds)
    return report


def measure(
    model: nn.Module,
    beta: float = 0.1,
    *,
    rule: str = "exact",
    max_ratio: float = 1.0,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = False,
) -> ComplexityReport:
    """Feature complexity of every layer of ``model`` by iterative feature merging.

    Args:
        model: an ``nn.Module`` traceable by ``torch.fx`` (or an ONNX-loaded ``OnnxModule``) built from the
            supported layers (see the module docstring). It is not modified.
        beta: merge threshold in (0, 1): a group merges its closest pair while ``d_min <= beta * d_max``.
        rule: ``"exact"`` (function-preserving for duplicates, BatchNorm folded) or ``"paper"`` (as published).
        max_ratio: largest share of a group's features that may be merged away, in (0, 1] (1: no cap).
        input_shape: per-sample input shape used to trace the model; guessed for MLPs, reference models
            (``model.reference_info``) and ONNX networks.
        device: where the returned merged model is put (merging itself runs on CPU, in float64).
        verbose: show a progress bar.

    Returns:
        A :class:`ComplexityReport` with per-group complexity, the merged groups, the merged ``nn.Module``
        and parameters/FLOPs before and after.

    Raises:
        InvalidParameterError: beta outside (0, 1), max_ratio outside (0, 1], unknown rule, bad input_shape,
            model not an ``nn.Module``.
        ModelError: an unsupported layer or topology (named in the message), NaN weights, or (never expected)
            a merged model whose output shape differs from the original's.

    Example:
        >>> from probe.zoo import train_reference
        >>> report = measure(train_reference("mnist-mlp"), beta=0.2)  # doctest: +SKIP
        >>> report.complexity, report.params_removed  # doctest: +SKIP
    """
    beta = _check_beta(beta)
    rule = _check_rule(rule)
    max_ratio = _check_max_ratio(max_ratio)
    cpu, analysis, example, shape = _prepare(model, input_shape)
    return _run(cpu, analysis, example, shape, beta, rule, max_ratio, device, verbose)


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Iterable[Any], device: str | torch.device) -> tuple[float, int]:
    correct = total = 0
    model.eval()
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)):
            raise DataError("eval_loader must yield (inputs, labels) batches, e.g. probe.data.make_loader(dataset)")
        x, y = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    if total == 0:
        raise DataError("eval_loader yielded no samples; pass a loader over a non-empty data set")
    return correct / total, total


def sweep(
    model: nn.Module,
    betas: Sequence[float],
    eval_loader: Iterable[Any],
    *,
    rule: str = "exact",
    max_ratio: float = 1.0,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
) -> SweepResult:
    """Merge at every beta and measure accuracy, parameters, FLOPs and feature complexity (no fine-tuning).

    Args:
        model: as for :func:`measure`.
        betas: merge thresholds, each in (0, 1).
        eval_loader: yields ``(inputs, labels)`` batches, e.g. ``probe.data.make_loader(dataset)``.
        rule: ``"exact"`` or ``"paper"``.
        max_ratio: as for :func:`measure`.
        input_shape: as for :func:`measure`.
        device: where the accuracy is evaluated.
        verbose: show progress bars.
        checkpoint: a JSON file that receives the sweep so far after every beta (atomically). When it exists
            at the start and was made with the same rule, max_ratio and model widths, its betas are not
            measured again, so an interrupted sweep (Ctrl-C, SIGTERM) resumes. Delete it to start over.

    Returns:
        A :class:`SweepResult` (baseline accuracy and one :class:`SweepPoint` per beta).

    Raises:
        InvalidParameterError: as for :func:`measure`, or an empty ``betas``.
        ModelError: as for :func:`measure`.
        DataError: the loader yields no samples or no labels.

    Example:
        >>> res = sweep(model, [0.05, 0.1, 0.2], test_loader)  # doctest: +SKIP
        >>> res.best_within(0.01)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) == 0:
        raise InvalidParameterError(f"betas must be a non-empty sequence of numbers in (0, 1), got {betas!r}")
    betas = [_check_beta(b, "each beta") for b in betas]
    rule = _check_rule(rule)
    max_ratio = _check_max_ratio(max_ratio)
    cpu, analysis, example, shape = _prepare(model, input_shape)
    widths = {g: analysis.groups[g].size for g in analysis.order if not analysis.groups[g].frozen}
    done = _resume_sweep(checkpoint, rule, max_ratio, widths)
    if done is not None:
        baseline, n = done.baseline_accuracy, done.n_samples
    else:
        baseline, n = _accuracy(_cpu_copy(cpu).to(device), eval_loader, device)
    result = SweepResult(rule=rule, max_ratio=max_ratio, baseline_accuracy=baseline,
                         params_before=count_params(cpu), flops_before=count_flops(cpu, example),
                         widths=widths, points=[], n_samples=n)
    measured = {p.beta: p for p in done.points} if done is not None else {}
    for beta in tqdm(betas, disable=not verbose, desc="beta sweep"):
        if beta in measured:
            result.points.append(measured[beta])
            continue
        rep = _run(cpu, analysis, example, shape, beta, rule, max_ratio, device, False)
        acc, _ = _accuracy(rep.merged_model, eval_loader, device)
        result.points.append(SweepPoint(beta=beta, accuracy=acc, params=rep.params_after, flops=rep.flops_after,
                                        complexity=rep.complexity, seconds=rep.seconds))
        logger.info("beta=%g: accuracy %.4f (baseline %.4f), params %d/%d", beta, acc, baseline,
                    rep.params_after, rep.params_before)
        if checkpoint is not None:
            now = {q.beta for q in result.points}
            kept = [q for q in (done.points if done is not None else []) if q.beta not in now]
            SweepResult(**{**result.__dict__, "points": [*kept, *result.points]}).save(checkpoint)
    return result


def _resume_sweep(checkpoint: str | os.PathLike[str] | None, rule: str, max_ratio: float,
                  widths: dict[str, int]) -> SweepResult | None:
    """The sweep saved in ``checkpoint`` when it exists and matches the run's settings, else ``None``."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    done = SweepResult.load(checkpoint)
    if (done.rule, done.max_ratio, done.widths) != (rule, max_ratio, widths):
        raise DataError(f"the sweep checkpoint {str(checkpoint)!r} was made with other settings (rule "
                        f"{done.rule!r}, max_ratio {done.max_ratio}, widths {done.widths}); delete it to start over")
    logger.info("resuming the sweep: %d betas already measured in %s", len(done.points), checkpoint)
    return done
