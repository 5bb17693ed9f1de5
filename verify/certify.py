"""Certified robust accuracy of a classifier on a test set: ``verify.certify(model, dataset, eps=[...])``.

For every image (the first ``limit`` of the test set) and every L-inf radius ``eps``:

- **clean**: the (float32) model classifies the image correctly;
- **pgd**: PGD (:func:`verify.attack.pgd_attack`, random starts then a wider stage) finds no re-checked
  counterexample in the eps-box: PGD accuracy is an *upper bound* on the robust accuracy;
- **verified**: :func:`verify.verify` proves ``verify.properties.robustness(x, eps, label, num_classes)``
  (bounds, alpha-CROWN, MILP, branch and bound; ``timeout`` seconds per image and eps, the attack included):
  verified accuracy is a *lower bound*.

An image the model gets wrong counts as neither; a counterexample found at one eps is one at every larger eps
too (its box contains the smaller one), so those are not searched again. Every counterexample is re-checked on
the extracted network, the source model and (for ONNX) onnxruntime, as :func:`verify.verify` does.

Each image is one task (:func:`probe.core.cluster.run_tasks`: here in order, or on Ray with ``workers`` /
``address``); its rows (one per eps) are written to ``out`` as soon as it finishes (a CSV with one row per
model, data set, image and eps; :class:`probe.core.resultsfile.ResultsFile`, safe with several runs on one
file), and a run that is started again skips the rows already there. The summary is a
:class:`probe.core.table.Table` with one row per eps.

Example:
    >>> from verify import certify
    >>> report = certify("mnist-net_256x2.onnx", "mnist", eps=[0.02, 0.05], limit=100, timeout=30,
    ...                  out="certify.csv", workers=2)                                 # doctest: +SKIP
    >>> print(report)                                                                  # doctest: +SKIP
    certified robust accuracy: mnist-net_256x2.onnx on mnist (test), first 100 images
     eps  images   clean     pgd  verified  falsified  timeout  other  seconds
    ----  ------  ------  ------  --------  ---------  -------  -----  -------
    ...
    >>> report.summary[0]["verified"]                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probe.core.cluster import TaskFailure, check_reachable, check_workers, import_ray, run_tasks, session
from probe.core.errors import InputShapeError, InvalidParameterError, ModelError, NeurospecError
from probe.core.paths import check_output
from probe.core.resultsfile import ResultsFile
from probe.core.table import Table
from verify.api import VerifyOptions, confirm_counterexample, verify
from verify.attack import pgd_attack
from verify.errors import SolverError
from verify.network import ReluNetwork
from verify.properties import robustness

__all__ = ["FIELDS", "KEY", "CertifyReport", "ImageJob", "certify", "certify_image", "check_eps", "check_seconds", "load_network",
           "network_input", "results_file"]

logger = logging.getLogger(__name__)

#: The columns of a certify results CSV. ``clean``/``pgd`` are 1 or 0 (``pgd``: no counterexample found by
#: PGD); ``result`` is a verification status or ``misclassified``; ``seconds`` include the attack.
FIELDS = ["model", "data", "index", "eps", "label", "predicted", "clean", "pgd", "result", "method", "seconds",
          "timeout", "solver", "message"]
#: The columns that identify a row.
KEY = ("model", "data", "index", "eps")


def results_file(path: str | os.PathLike[str]) -> ResultsFile:
    """The certify results CSV at ``path`` (columns :data:`FIELDS`, key :data:`KEY`)."""
    return ResultsFile(path, FIELDS, KEY, what="certify results CSV",
                       fix="pass another --out, or move that file away")


@dataclass(frozen=True)
class ImageJob:
    """One image as a task: its index in the test set, the network input (flattened, float64, in the
    network's own layout), its label and the radii still to do (ascending)."""

    index: int
    x: np.ndarray
    label: int
    eps: tuple[float, ...]


@dataclass(frozen=True)
class _Settings:
    """What every image task shares besides the network."""

    model: str
    data: str
    timeout: float
    solver: str
    restarts: int
    steps: int
    seed: int


@dataclass
class CertifyReport:
    """The outcome of :func:`certify`.

    Attributes:
        summary: one row per eps: ``images``, ``clean``/``pgd``/``verified`` accuracy (fractions of
            ``images``), counts of ``falsified``, ``timeout`` and ``other`` (unknown, error) results, and the
            mean ``seconds`` per image.
        records: the per-image rows (columns :data:`FIELDS`) of the selected images and radii, by eps
            then image.
        out: the results CSV, if any.
        title: the summary's title.
    """

    summary: Table
    records: list[dict[str, str]] = field(default_factory=list)
    out: Path | None = None
    title: str = ""

    def __str__(self) -> str:
        return str(self.summary)

    def __repr__(self) -> str:
        return str(self.summary)

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()


def _eps_text(eps: float) -> str:
    return f"{eps:g}"


def check_eps(eps: float | Sequence[float]) -> tuple[float, ...]:
    """The radii of ``eps`` (one or several positive, finite numbers), sorted and without repeats.

    Raises:
        InvalidParameterError: no radius, or one that is not positive and finite.

    Example:
        >>> check_eps([0.05, 0.02, 0.05])
        (0.02, 0.05)
    """
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise InvalidParameterError("eps must name at least one radius, e.g. eps=[0.02, 0.05]")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
                math.isfinite(float(v)) and float(v) > 0):
            raise InvalidParameterError(f"every eps must be a positive, finite number (an L-inf radius on pixels "
                                        f"in [0, 1]); got {v!r}")
        out.append(float(v))
    return tuple(sorted(set(out)))


def check_seconds(param: str, value: float) -> float:
    """``value`` as float seconds, refused unless positive and finite (``param`` names it in the message).

    Example:
        >>> check_seconds("timeout", 30)
        30.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InvalidParameterError(f"{param} must be a positive number of seconds; got {value!r}")
    return float(value)


def network_input(image: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """An image ``(C, H, W)`` as the flattened input of a network whose per-sample input is ``input_shape``:
    the same shape (flattened in C order), HWC (the marabou CIFAR-10 networks), or a flat vector
    (e.g. ``(784, 1)``).

    Raises:
        InputShapeError: none of these fits (the message names both shapes).

    Example:
        >>> network_input(np.zeros((3, 2, 2)), (2, 2, 3)).shape
        (12,)
    """
    x = np.asarray(image, dtype=np.float64)
    shape = tuple(int(d) for d in input_shape)
    if x.shape == shape:
        return x.reshape(-1)
    if x.ndim == 3 and shape == (x.shape[1], x.shape[2], x.shape[0]):
        return x.transpose(1, 2, 0).reshape(-1)
    if sum(d != 1 for d in shape) <= 1 and x.size == math.prod(shape):
        return x.reshape(-1)
    raise InputShapeError(f"the data set's images have shape {x.shape} but the network takes inputs of shape "
                          f"{shape}; pass the data set the network was trained on (e.g. --data mnist for an "
                          "MNIST network)")


def load_network(onnx: str | os.PathLike[str] | None = None, model: str | None = None,
                 input_shape: Sequence[int] | None = None,
                 root: str | os.PathLike[str] | None = None) -> tuple[ReluNetwork, str]:
    """The network to certify and the name its rows carry: an ONNX file, or a model of :mod:`probe.zoo` by
    name (VNN-COMP networks are read as ONNX; reference models are trained once and cached).

    Raises:
        InvalidParameterError: neither or both of ``onnx`` and ``model``.
        OnnxFileNotFoundError, OnnxError, NetworkError, ModelError: the model cannot be loaded or is not a
            ReLU network.

    Example:
        >>> net, name = load_network(model="mnist-256x2")   # doctest: +SKIP
        >>> name                                            # doctest: +SKIP
        'mnist-256x2'
    """
    from probe.core.paths import data_root
    from probe.zoo import VNNCOMP_NETWORKS, names
    from probe.zoo import load as load_model

    if (onnx is None) == (model is None):
        raise InvalidParameterError("pass exactly one of --onnx FILE and --model NAME")
    if onnx is not None:
        path = Path(onnx).expanduser().resolve()
        return ReluNetwork.from_onnx(path), str(onnx)
    if model in VNNCOMP_NETWORKS:
        return ReluNetwork.from_onnx(data_root(root) / VNNCOMP_NETWORKS[model]), str(model)
    if model not in names() or model.startswith("tokfsm"):
        raise ModelError(f"unknown image classifier {model!r}; choose one of "
                         f"{[n for n in names() if not n.startswith('tokfsm')]}, or pass --onnx FILE")
    if input_shape is None:
        raise InvalidParameterError("a torch model needs input_shape (the data set's image shape)")
    return ReluNetwork.from_torch(load_model(model, root=root), input_shape), str(model)


def _row(settings: _Settings, job: ImageJob, eps: float, predicted: int, pgd: bool, result: str, method: str = "",
         seconds: float = 0.0, message: str = "") -> dict[str, str]:
    return {"model": settings.model, "data": settings.data, "index": str(job.index), "eps": _eps_text(eps),
            "label": str(job.label), "predicted": str(predicted), "clean": str(int(predicted == job.label)),
            "pgd": str(int(pgd)), "result": result, "method": method, "seconds": f"{seconds:.3f}",
            "timeout": f"{settings.timeout:g}", "solver": settings.solver, "message": message}


def certify_image(job: ImageJob, network: ReluNetwork, settings: _Settings) -> list[dict[str, str]]:
    """Clean, PGD and verified robustness of one image at each of ``job.eps`` (a task of :func:`certify`):
    one results row per eps. An error that belongs to this image (a :class:`NeurospecError`) becomes an
    ``error`` row; an unusable solver raises.

    Example:
        >>> rows = certify_image(ImageJob(0, x, 7, (0.02,)), net, settings)  # doctest: +SKIP
    """
    y = np.asarray(network.run_source(job.x), dtype=np.float64).reshape(-1)
    predicted = int(np.argmax(y))
    rows = []
    falsified_at: float | None = None
    for eps in sorted(job.eps):
        t0 = time.perf_counter()
        if predicted != job.label:
            rows.append(_row(settings, job, eps, predicted, False, "misclassified",
                             message=f"the model predicts {predicted}"))
            continue
        if falsified_at is not None:
            rows.append(_row(settings, job, eps, predicted, False, "falsified", f"eps {_eps_text(falsified_at)}",
                             message=f"the counterexample at eps {_eps_text(falsified_at)} lies in this box too"))
            continue
        try:
            spec = robustness(job.x, eps, job.label, network.n_outputs)
            deadline = t0 + settings.timeout
            candidate = pgd_attack(network, spec, restarts=settings.restarts, steps=settings.steps,
                                   seed=settings.seed, deadline=deadline)
            cex = None if candidate is None else confirm_counterexample(network, spec, candidate)
            if cex is not None:
                falsified_at = eps
                rows.append(_row(settings, job, eps, predicted, False, "falsified", "pgd",
                                 time.perf_counter() - t0))
                continue
            left = deadline - time.perf_counter()
            if left <= 0.05:
                rows.append(_row(settings, job, eps, predicted, True, "timeout", seconds=time.perf_counter() - t0,
                                 message="the attack took the whole time limit"))
                continue
            res = verify(network, spec, options=VerifyOptions(solver=settings.solver, timeout=left, attack=False,
                                                              seed=settings.seed))
            if res.status == "falsified":
                falsified_at = eps
            rows.append(_row(settings, job, eps, predicted, True, res.status, res.method,
                             time.perf_counter() - t0, res.message))
        except SolverError:
            raise
        except NeurospecError as err:
            rows.append(_row(settings, job, eps, predicted, True, "error", seconds=time.perf_counter() - t0,
                             message=f"{type(err).__name__}: {err}"))
    return rows


def _failure_rows(settings: _Settings, job: ImageJob, failure: TaskFailure) -> list[dict[str, str]]:
    status = "timeout" if failure.kind == "timeout" else "error"
    return [{**_row(settings, job, eps, -1, False, status, message=f"the task {failure.message}"),
             "predicted": "", "clean": "", "pgd": ""} for eps in job.eps]


def _dataset(dataset: Any, root: str | os.PathLike[str] | None) -> tuple[Any, str]:
    from probe.data import load

    if isinstance(dataset, str):
        if dataset not in ("mnist", "cifar10", "digits", "eran-mnist", "eran-cifar10"):
            raise InvalidParameterError(f"data must be mnist or cifar10 (or digits, eran-mnist, eran-cifar10); "
                                        f"got {dataset!r}")
        return load(dataset, "test", root=root), dataset
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise InvalidParameterError(f"dataset must be a data set name or a probe.data.ImageDataset; got "
                                    f"{type(dataset).__name__}")
    if getattr(dataset, "normalize", False):
        raise InvalidParameterError("certify needs pixels in [0, 1] (eps is measured on them): load the data set "
                                    "with normalize=False and put the normalisation into the model")
    return dataset, str(getattr(dataset, "name", type(dataset).__name__))


def _summary(rows: list[dict[str, str]], eps: tuple[float, ...], title: str) -> Table:
    out = []
    for e in eps:
        at = [r for r in rows if r["eps"] == _eps_text(e)]
        n = len(at)

        def share(pred: Any, rows_at: list[dict[str, str]] = at, total: int = n) -> float:
            return sum(1 for r in rows_at if pred(r)) / total if total else float("nan")

        seconds = [float(r["seconds"]) for r in at if r["seconds"]]
        out.append({
            "eps": e, "images": n,
            "clean": share(lambda r: r["clean"] == "1"),
            "pgd": share(lambda r: r["pgd"] == "1"),
            "verified": share(lambda r: r["result"] == "verified"),
            "falsified": sum(r["result"] == "falsified" for r in at),
            "timeout": sum(r["result"] == "timeout" for r in at),
            "other": sum(r["result"] in ("unknown", "error") for r in at),
            "seconds": float(np.mean(seconds)) if seconds else float("nan"),
        })
    return Table(out, columns=["eps", "images", "clean", "pgd", "verified", "falsified", "timeout", "other",
                               "seconds"], title=title)


def certify(model: ReluNetwork | Any, dataset: Any, eps: float | Sequence[float], *, limit: int | None = None,
            timeout: float = 60.0, solver: str = "cbc", out: str | os.PathLike[str] | None = None,
            workers: int | None = None, address: str | None = None, redo_timeouts: bool = False,
            input_shape: Sequence[int] | None = None, model_name: str | None = None,
            root: str | os.PathLike[str] | None = None, pgd_restarts: int = 32, pgd_steps: int = 50, seed: int = 0,
            verbose: bool = True) -> CertifyReport:
    """Certified robust accuracy of ``model`` on the first ``limit`` images of ``dataset`` at each ``eps``.

    Args:
        model: a :class:`~verify.network.ReluNetwork`, a torch ``nn.Module`` (its ReLU network is extracted;
            inputs of shape ``input_shape``, default the images' shape), or the path of an ONNX file.
        dataset: ``"mnist"`` or ``"cifar10"`` (their test split, from the data root), or a
            :class:`probe.data.ImageDataset` with pixels in [0, 1] (``normalize=False``).
        eps: one or more L-inf radii (> 0) on those pixels.
        limit: only the first ``limit`` images (default: all).
        timeout: seconds per image and eps (attack and verification together, > 0).
        solver: ``"cbc"`` or ``"highs"``.
        out: a results CSV: rows are written as images finish, rows already there are kept and skipped (rerun
            the same call to resume; ``redo_timeouts`` runs timed-out rows again). ``None``: in memory only.
        workers, address: run the images in parallel on Ray (:func:`probe.core.cluster.connect`): ``address``
            joins a cluster (``ray start --head``), else a local one with ``workers`` CPUs is started;
            ``workers`` 1 or ``None`` and no address: one process, no Ray.
        redo_timeouts: run rows whose result is ``timeout`` again.
        input_shape: the input shape of a torch ``model``.
        model_name: the name rows carry in the ``model`` column (default: the file name or the class name).
        root: the data root (for data set names).
        pgd_restarts, pgd_steps, seed: the attack's settings (:func:`verify.attack.pgd_attack`).
        verbose: progress bar.

    Returns:
        A :class:`CertifyReport` (its ``summary`` prints as a table).

    Raises:
        InvalidParameterError: a bad ``eps``, ``timeout``, ``limit``, ``workers`` or data set.
        OutputPathError / CorruptDataError: ``out`` cannot be written, or is not a certify results CSV.
        InputShapeError: the images do not fit the network's input, or the labels its outputs.
        SolverError: unknown or missing solver. RayNotInstalledError / ClusterError: Ray cannot be used.
        Everything is checked before the first image runs.

    Example:
        >>> report = certify(net, "mnist", eps=[0.02, 0.05], limit=20, timeout=10)      # doctest: +SKIP
        >>> [round(r["verified"], 2) for r in report.summary]                           # doctest: +SKIP
        [0.9, 0.45]
    """
    import torch

    # ---- everything is checked before the first image runs ----
    eps_values = check_eps(eps)
    timeout = check_seconds("timeout", timeout)
    VerifyOptions(solver=solver, timeout=timeout)  # checks the solver
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidParameterError(f"limit must be a number of images >= 1; got {limit!r}")
    for name, value in (("pgd_restarts", pgd_restarts), ("pgd_steps", pgd_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be an int >= 1; got {value!r}")
    if check_workers(workers) not in (None, 1) or address is not None:
        import_ray()
        if address is not None:
            check_reachable(address)
    results = None
    if out is not None:
        check_output(out)
        results = results_file(out)
        results.check()
    data, data_name = _dataset(dataset, root)
    n_images = len(data) if limit is None else min(limit, len(data))
    if n_images == 0:
        raise InvalidParameterError("the data set has no images")
    first_image = np.asarray(data[0][0], dtype=np.float64)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser().resolve()
        network, name = ReluNetwork.from_onnx(path), str(model)
    elif isinstance(model, ReluNetwork):
        network = model
        name = str(model.source_path) if model.source_path is not None else "ReluNetwork"
    elif isinstance(model, torch.nn.Module):
        network = ReluNetwork.from_torch(model, tuple(input_shape or first_image.shape))
        name = type(model).__name__
    else:
        raise InvalidParameterError(f"model must be a ReluNetwork, a torch nn.Module or an ONNX path; got "
                                    f"{type(model).__name__}")
    name = model_name or name
    network_input(first_image, network.input_shape)  # the images fit the network
    classes = getattr(data, "num_classes", None) or len(getattr(data, "classes", ()) or ())
    if classes and classes != network.n_outputs:
        raise InputShapeError(f"the data set has {classes} classes but the network has {network.n_outputs} "
                              "outputs; pass the data set the network was trained on")
    settings = _Settings(name, data_name, timeout, solver, pgd_restarts, pgd_steps, seed)

    # ---- what is left to do ----
    done: dict[tuple[str, ...], dict[str, str]] = results.by_key() if results is not None else {}
    redo = {"timeout"} if redo_timeouts else set()
    jobs = []
    for i in range(n_images):
        todo = tuple(e for e in eps_values
                     if (row := done.get((name, data_name, str(i), _eps_text(e)))) is None or row["result"] in redo)
        if todo:
            x, label = data[i]
            jobs.append(ImageJob(i, network_input(np.asarray(x), network.input_shape), int(label), todo))
    if results is not None:
        results.ensure()
    logger.info("certify %s on %s: %d images, eps %s, %d image(s) to run", name, data_name, n_images,
                list(eps_values), len(jobs))

    # ---- run ----
    kept: list[dict[str, str]] = []

    def write(job: ImageJob, rows: list[dict[str, str]]) -> None:
        for row in rows:
            if results is not None:
                results.append(row)
            kept.append(row)

    with session(address, workers) as cluster:
        run_tasks(certify_image, jobs, args=(network, settings), cluster=cluster, on_result=write,
                  on_failure=lambda job, failure: write(job, _failure_rows(settings, job, failure)),
                  timeout_per_task=2 * timeout * len(eps_values) + 60, desc="certify", verbose=verbose)

    # ---- report ----
    wanted = {(str(i), _eps_text(e)) for i in range(n_images) for e in eps_values}
    rows = results.rows() if results is not None else kept
    rows = [r for r in rows if r["model"] == name and r["data"] == data_name and (r["index"], r["eps"]) in wanted]
    rows.sort(key=lambda r: (float(r["eps"]), int(r["index"])))
    title = f"certified robust accuracy: {name} on {data_name}, first {n_images} images"
    return CertifyReport(_summary(rows, eps_values, title), rows, None if out is None else Path(out), title)
