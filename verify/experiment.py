"""The NAP paper's experiments end to end: ``nap_study(model, "mnist", out)`` (command line:
``neurospec experiment nap``).

"Towards Reliable Neural Specifications" (Geng, Le et al., ICML 2023) mines a neural activation pattern (NAP)
per class, measures how many test inputs follow it (coverage) and how many of those belong to the class
(precision), proves over the *whole* input domain that every input following NAP_c is classified c (NAP
robustness, one query per (class, competitor)) and that no input follows two NAPs (non-ambiguity), and shows
that adding an image's NAP to a local robustness property proves larger radii. :func:`nap_study` runs all of
it on any ReLU network the toolkit loads (VNN-COMP ONNX networks, the reference models, a torch model):

1. mine the class NAPs on the training set once (:func:`probe.nap.mine`) and re-threshold them for every
   delta (:meth:`probe.nap.NAPSet.with_delta`); convolutional ReLUs count per channel x position;
2. coverage and precision on the test set for every delta (:meth:`probe.nap.NAPSet.sweep`);
3. per delta, NAP robustness of every class against every competitor and non-ambiguity of every pair
   (:func:`verify.verify` on :func:`verify.properties.nap_robustness_spec` / ``nap_ambiguity_spec``, the
   queries of one class sharing one :class:`verify.bounds.BoxBounds`, exactly as
   :func:`verify.nap_robustness` does); classes without a counted training sample are reported as empty.
   Before a query goes to the verifier, a test image that follows the NAP(s) and violates the property
   (NAP precision below 1 often means one exists) answers it ``falsified`` (method ``"data"``), once it
   re-checks exactly like the verifier's own counterexamples; the test images that follow the NAP are also
   the starts of the verifier's local search (``verify(..., starts=...)``): PGD that keeps the NAP's states
   (method ``"attack"``), then activation-pattern LPs (method ``"patterns"``), which falsify most queries
   the MILP cannot settle in the time limit;
4. NAP-augmented robustness: for ``images`` test images (correctly classified, following their class's
   NAP), the largest L-inf radius proven with and without the NAP as fixed ReLU states (doubling from
   ``eps_start``, then ``refine`` bisection steps; every step is one :func:`verify.verify` call, except a
   step with the NAP at an eps already proven without it, which is ``verified`` with method ``"implied"``:
   the NAP only removes inputs, so the radius with the NAP is never below the radius without it);
5. optionally (``marabou=True``) every NAP robustness query again through Marabou
   (:func:`verify.marabou.verify_marabou`), right after neurospec's, with the same timeout;
6. one results folder: ``study.json`` (every query: kind, class/pair, delta, status, time, counterexample),
   ``summary.md`` (paper-style tables), ``figures/*.png`` and ``report.html``.

Resuming: every finished query is appended to ``queries.jsonl`` in the folder the moment it finishes (one
``write`` of one line on an ``O_APPEND`` descriptor, then ``fsync``, with SIGINT/SIGTERM held back), and the
mined NAPs are saved as ``naps.json`` (mining itself checkpoints to ``naps.partial.safetensors``). Running
the same call (or command) again skips every finished query; settings that change what a query means
(model, data, training limit, solver, timeout, radius search) must be the same, while more deltas, classes,
images or ``marabou=True`` add queries. One study runs per folder at a time (a lock file).

Example:
    >>> from verify.experiment import nap_study
    >>> study = nap_study("mnist-256x4", "mnist", "runs/nap_256x4", deltas=[0.99], images=5,
    ...                   timeout=30)                                        # doctest: +SKIP
    >>> print(study.robustness_table())                                      # doctest: +SKIP
    >>> study.paths["report"]                                                # doctest: +SKIP
    PosixPath('runs/nap_256x4/report.html')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probe.core.artifacts import atomic_write_bytes, check_stamp, read_json, stamp, write_json
from probe.core.errors import (
    CorruptDataError,
    DataError,
    InputShapeError,
    InvalidParameterError,
    ModelError,
    NeurospecError,
    OutputPathError,
)
from probe.core.paths import check_output
from probe.core.progress import progress
from probe.core.table import Table, format_cell
from probe.core.validate import check_int
from probe.data import ImageDataset
from probe.nap import NAPSet, NAPStats, check_delta
from verify.api import VerifyOptions, nap_states
from verify.api import verify as verify_property
from verify.errors import SpecError
from verify.network import ReluNetwork
from verify.properties import Spec, nap_ambiguity_spec, nap_robustness_spec, robustness
from verify.result import VerificationResult

__all__ = ["PRESETS", "NAPStudy", "StudyPreset", "nap_study"]

logger = logging.getLogger(__name__)

_KIND = "nap-study"
_LOG_KIND = "nap-study-queries"
_MANIFEST_KIND = "nap-study-settings"
_ENGINE = "neurospec"
_MARABOU = "marabou"
_DECIDED = ("verified", "falsified")


@dataclass(frozen=True)
class StudyPreset:
    """The settings ``--dataset NAME`` stands for (each can still be overridden).

    Attributes:
        dataset: the data set's name (``probe.data.load``).
        deltas: the NAP thresholds studied.
        train_limit: mine on the first ``train_limit`` training images (``None``: all).
        only_correct: count only correctly predicted training samples.
        timeout: seconds per verification query.
        images: test images of the NAP-augmented robustness study.
        eps_start, eps_max: the radius search doubles from ``eps_start`` up to ``eps_max``.
    """

    dataset: str
    deltas: tuple[float, ...] = (1.0, 0.99, 0.95)
    train_limit: int | None = 50_000
    only_correct: bool = True
    timeout: float = 30.0
    images: int = 100
    eps_start: float = 1 / 255
    eps_max: float = 1.0


#: Test images of the competing class ``j`` that a NAP robustness query ``(c, j)`` adds to the starts of its
#: state-keeping PGD (besides the images that follow NAP ``c``).
COMPETITOR_STARTS = 256

#: ``mnist``: the paper's settings (first 50,000 training images, correctly predicted samples only, deltas
#: 1.0/0.99/0.95, the 10,000 test images for coverage and precision). ``cifar10``: the same on CIFAR-10 (all
#: 50,000 training images); a radius search that starts at 0.5/255 (CIFAR-10 radii are smaller).
PRESETS: dict[str, StudyPreset] = {
    "mnist": StudyPreset("mnist"),
    "cifar10": StudyPreset("cifar10", eps_start=0.5 / 255),
}


# ------------------------------------------------------------------------------------------------ the result


@dataclass
class NAPStudy:
    """What :func:`nap_study` found (also read back from a results folder by :meth:`load`).

    Attributes:
        out: the results folder.
        settings: the study's settings (model, data, deltas, timeout, solver, ...).
        naps: the mined NAPs (at the first delta; ``naps.with_delta(d)`` for the others).
        stats: coverage and precision on the test set, one :class:`probe.nap.NAPStats` per delta.
        queries: every query, as a dict: ``id``, ``kind`` (``robustness``, ``ambiguity``, ``radius``),
            ``engine`` (``neurospec``/``marabou``), ``delta``, ``class``/``competitor`` or ``pair`` or
            ``image``/``nap``/``eps``, ``status``, ``method``, ``seconds``, ``message``, ``counterexample``
            (``{"x": [...], "y": [...]}`` or ``None``).
        radii: per test image and mode (with / without its NAP): the largest proven radius.
        empty_classes: classes without a counted training sample (no NAP, no query).
        wall_seconds: the run's wall time (this run only, when it resumed).
        paths: the files written (``study``, ``summary``, ``report``, ``naps``, ``queries``, figures).

    Example:
        >>> study = NAPStudy.load("runs/nap_256x4")                        # doctest: +SKIP
        >>> print(study.robustness_table()); print(study.radius_table())  # doctest: +SKIP
    """

    out: Path
    settings: dict[str, Any]
    naps: NAPSet
    stats: list[NAPStats]
    queries: list[dict[str, Any]]
    radii: list[dict[str, Any]] = field(default_factory=list)
    empty_classes: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for q in self.queries:
            counts[q["status"]] = counts.get(q["status"], 0) + 1
        return (f"NAPStudy(out={str(self.out)!r}, deltas={self.settings.get('deltas')}, "
                f"queries={len(self.queries)} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), "
                f"radii={len(self.radii)}, empty_classes={self.empty_classes})")

    # ---- selections ----------------------------------------------------------------------------------------

    def select(self, kind: str, engine: str = _ENGINE, delta: float | None = None) -> list[dict[str, Any]]:
        """The queries of ``kind`` answered by ``engine`` (and at ``delta``, when given).

        Example:
            >>> len(study.select("robustness", delta=0.99))                  # doctest: +SKIP
            90
        """
        return [q for q in self.queries if q["kind"] == kind and q["engine"] == engine
                and (delta is None or q.get("delta") == delta)]

    # ---- tables --------------------------------------------------------------------------------------------

    def coverage_table(self) -> Table:
        """Per delta and class: counted training samples, NAP size, test coverage and precision.

        Example:
            >>> print(study.coverage_table())                                # doctest: +SKIP
        """
        rows = []
        for st in self.stats:
            sizes = self.naps.with_delta(st.delta).sizes()
            for c in range(self.naps.num_classes):
                rows.append({"delta": st.delta, "class": c, "train samples": int(self.naps.n_samples[c]),
                             "NAP active": sizes["active"][c], "NAP inactive": sizes["inactive"][c],
                             "test inputs": st.n_class[c], "coverage": st.coverage[c],
                             "precision": st.precision[c]})
        return Table(rows, title=f"NAP coverage and precision on the test set ({self.naps.num_neurons()} neurons)")

    def coverage_summary(self) -> Table:
        """Per delta: mean coverage and precision over the classes, mean NAP size (the paper's table).

        Example:
            >>> print(study.coverage_summary())                              # doctest: +SKIP
        """
        rows = []
        n = self.naps.num_neurons()
        for st in self.stats:
            total = self.naps.with_delta(st.delta).sizes()["total"]
            valid = [t for c, t in enumerate(total) if c not in self.empty_classes]
            rows.append({"delta": st.delta, "mean coverage": st.mean_coverage(),
                         "mean precision": st.mean_precision(),
                         "mean NAP size": sum(valid) / len(valid) if valid else float("nan"),
                         "neurons": n})
        return Table(rows, title="NAPs per delta (means over the classes)")

    def robustness_table(self, engine: str = _ENGINE) -> Table:
        """Per delta and class: NAP robustness queries (one per competitor) by outcome, and query times.

        Example:
            >>> print(study.robustness_table())                              # doctest: +SKIP
        """
        rows = []
        classes = sorted(set(self.settings["classes"]) | {q["class"] for q in self.select("robustness", engine)})
        for delta in self._deltas():
            for c in classes:
                if c in self.empty_classes:
                    rows.append({"delta": delta, "class": c, "queries": 0, "verified": 0, "falsified": 0,
                                 "timeout": 0, "other": 0, "median s": float("nan"), "max s": float("nan"),
                                 "class robust": "empty NAP (no counted training sample)"})
                    continue
                qs = [q for q in self.select("robustness", engine, delta) if q["class"] == c]
                if not qs:
                    continue
                rows.append({"delta": delta, "class": c, **_counts(qs),
                             "class robust": "yes" if all(q["status"] == "verified" for q in qs)
                             and len(qs) == self.naps.num_classes - 1 else "no"})
        return Table(rows, title=f"NAP robustness over the whole input domain ({engine}; one query per competitor, "
                                 f"timeout {self.settings['timeout']} s)")

    def robustness_summary(self) -> Table:
        """Per delta and engine: queries, how many were decided, verified, falsified, median and max time.

        Example:
            >>> print(study.robustness_summary())                            # doctest: +SKIP
        """
        rows = []
        for engine in self._engines():
            for delta in self._deltas():
                qs = self.select("robustness", engine, delta)
                if qs:
                    c = _counts(qs)
                    rows.append({"engine": engine, "delta": delta, **c,
                                 "decided": c["verified"] + c["falsified"],
                                 "falsified by data": sum(q["method"] == "data" for q in qs),
                                 "robust classes": sum(
                                     1 for k in {q["class"] for q in qs} if k not in self.empty_classes
                                     and len([q for q in qs if q["class"] == k]) == self.naps.num_classes - 1
                                     and all(q["status"] == "verified" for q in qs if q["class"] == k))})
        return Table(rows, title="NAP robustness per delta")

    def ambiguity_table(self) -> Table:
        """Per delta: pairs, non-ambiguous by a conflicting neuron (no solver), by the verifier, ambiguous
        (an input follows both NAPs), undecided.

        Example:
            >>> print(study.ambiguity_table())                               # doctest: +SKIP
        """
        rows = []
        for delta in self._deltas():
            qs = self.select("ambiguity", _ENGINE, delta)
            if not qs:
                continue
            rows.append({"delta": delta, "pairs": len(qs),
                         "disjoint (conflict)": sum(q["method"] == "nap-conflict" for q in qs),
                         "non-ambiguous (verified)": sum(q["status"] == "verified" and q["method"] != "nap-conflict"
                                                         for q in qs),
                         "ambiguous (falsified)": sum(q["status"] == "falsified" for q in qs),
                         "undecided": sum(q["status"] not in _DECIDED for q in qs),
                         "median s": _median([q["seconds"] for q in qs])})
        return Table(rows, title="NAP non-ambiguity (no input follows two NAPs)")

    def marabou_table(self) -> Table:
        """Per delta: the same NAP robustness queries by neurospec and by Marabou, side by side: solved
        counts and their ratio, median time of the solved ones and their ratio, disagreements.

        Example:
            >>> print(study.marabou_table())                                 # doctest: +SKIP
        """
        rows = []
        for delta in self._deltas():
            ours = {q["id"]: q for q in self.select("robustness", _ENGINE, delta)}
            theirs = {q["id"]: q for q in self.select("robustness", _MARABOU, delta)}
            common = [k for k in theirs if _twin(k) in ours]
            if not common:
                continue
            a = [ours[_twin(k)] for k in common]
            b = [theirs[k] for k in common]
            sa = [q for q in a if q["status"] in _DECIDED]
            sb = [q for q in b if q["status"] in _DECIDED]
            ta, tb = _median([q["seconds"] for q in sa]), _median([q["seconds"] for q in sb])
            rows.append({"delta": delta, "queries": len(common),
                         "neurospec solved": len(sa), "Marabou solved": len(sb),
                         "solved ratio (neurospec / Marabou)": len(sa) / len(sb) if sb else float("nan"),
                         "neurospec median s": ta, "Marabou median s": tb,
                         "time ratio (Marabou / neurospec)": tb / ta if ta and ta == ta and tb == tb else float("nan"),
                         "disagreements": sum(1 for x, y in zip(a, b, strict=True)
                                              if x["status"] in _DECIDED and y["status"] in _DECIDED
                                              and x["status"] != y["status"])})
        return Table(rows, title="NAP robustness, neurospec vs Marabou on the same queries (same timeout)")

    def radius_table(self) -> Table:
        """Per test image: the largest L-inf radius proven without and with the image's class NAP.

        Example:
            >>> print(study.radius_table())                                  # doctest: +SKIP
        """
        by_image: dict[int, dict[str, Any]] = {}
        for r in self.radii:
            row = by_image.setdefault(r["image"], {"image": r["image"], "label": r["label"]})
            key = "with NAP" if r["nap"] else "without NAP"
            row[key] = r["radius"]
            row[f"{key}: next eps"] = r["unproven_status"]
        rows = []
        for row in by_image.values():
            plain, with_nap = row.get("without NAP", float("nan")), row.get("with NAP", float("nan"))
            row["gain"] = with_nap / plain if plain and plain == plain and with_nap == with_nap else float("nan")
            rows.append(row)
        cols = ["image", "label", "without NAP", "with NAP", "gain", "without NAP: next eps", "with NAP: next eps"]
        return Table(rows, columns=cols,
                     title=f"NAP-augmented robustness: largest proven L-inf radius (NAP delta "
                           f"{self.settings.get('radius_delta')})")

    def radius_summary(self) -> dict[str, Any]:
        """Mean proven radius with and without the NAP over the images with both, and how many images.

        Example:
            >>> study.radius_summary()["mean with NAP"]                      # doctest: +SKIP
        """
        table = self.radius_table()
        both = [r for r in table if "with NAP" in r and "without NAP" in r]
        plain = [r["without NAP"] for r in both]
        nap = [r["with NAP"] for r in both]
        return {"images": len(both), "mean without NAP": _mean(plain), "mean with NAP": _mean(nap),
                "median without NAP": _median(plain), "median with NAP": _median(nap),
                "images with a larger radius with NAP": sum(1 for a, b in zip(plain, nap, strict=True) if b > a)}

    def _deltas(self) -> list[float]:
        """The deltas of this run, then those of queries an earlier run of the same folder finished."""
        extra = sorted({q["delta"] for q in self.queries if q["kind"] != "radius"} - set(self.settings["deltas"]),
                       reverse=True)
        return [*self.settings["deltas"], *extra]

    def _engines(self) -> list[str]:
        return [e for e in (_ENGINE, _MARABOU) if any(q["engine"] == e for q in self.queries)]

    # ---- text ----------------------------------------------------------------------------------------------

    def summary(self) -> str:
        """The study as Markdown (what ``summary.md`` holds): settings, then one table per experiment.

        Example:
            >>> print(study.summary())                                       # doctest: +SKIP
        """
        s = self.settings
        lines = [f"# NAP study: {s['model']} on {s['dataset']}", "",
                 f"neurospec {s.get('neurospec_version', '')}; mined on {s['train_samples']} training images "
                 f"({'correctly predicted only' if s['only_correct'] else 'all samples'}), coverage and precision on "
                 f"{s['test_samples']} test images; deltas {s['deltas']}; solver {s['solver']}, timeout "
                 f"{s['timeout']} s per query; network {s['network']}.", ""]
        if self.empty_classes:
            lines += [f"Empty classes (no counted training sample, no NAP, not verified): {self.empty_classes}", ""]
        sections = [("NAPs: coverage and precision (test set)", self.coverage_summary()),
                    ("NAP robustness per delta", self.robustness_summary()),
                    ("NAP robustness per class", self.robustness_table())]
        if self.select("ambiguity"):
            sections.append(("NAP non-ambiguity", self.ambiguity_table()))
        if self.select("robustness", _MARABOU):
            sections.append(("neurospec vs Marabou", self.marabou_table()))
        if self.radii:
            sections.append(("NAP-augmented robustness", self.radius_table()))
        for title, table in sections:
            lines += [f"## {title}", "", _markdown(table), ""]
        if self.radii:
            rs = self.radius_summary()
            lines += [f"Mean proven radius over {rs['images']} images: {_fmt(rs['mean without NAP'])} without, "
                      f"{_fmt(rs['mean with NAP'])} with the NAP ({rs['images with a larger radius with NAP']} images "
                      "gain).", ""]
        lines += ["Per class coverage and precision: `study.json` (`stats`); every query: `study.json` (`queries`).", ""]
        return "\n".join(lines)

    # ---- persistence ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (the content of ``study.json``)."""
        return {**stamp(_KIND), "settings": self.settings, "empty_classes": self.empty_classes,
                "wall_seconds": self.wall_seconds,
                "nap_sizes": {str(d): self.naps.with_delta(d).sizes() for d in self.settings["deltas"]},
                "stats": [st.to_dict() for st in self.stats],
                "summary": {"coverage": list(self.coverage_summary()), "robustness": list(self.robustness_summary()),
                            "ambiguity": list(self.ambiguity_table()), "marabou": list(self.marabou_table()),
                            "radius": self.radius_summary() if self.radii else None},
                "radii": self.radii, "queries": self.queries}

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> NAPStudy:
        """Read a results folder written by :func:`nap_study` (``study.json`` and ``naps.json``).

        Raises:
            DataNotFoundError: a file is missing.
            CorruptDataError: a file is not what it should be (or of a newer format version).

        Example:
            >>> NAPStudy.load("runs/nap_256x4").radius_summary()              # doctest: +SKIP
        """
        folder = Path(folder)
        obj = read_json(folder / "study.json", kind=_KIND, what="NAP study file")
        naps = NAPSet.load(folder / "naps.json")
        try:
            stats = [NAPStats(s["delta"], s["n_class"], s["n_follow"], s["n_follow_and_class"]) for s in obj["stats"]]
            return cls(folder, obj["settings"], naps, stats, obj["queries"], obj.get("radii", []),
                       obj.get("empty_classes", []), obj.get("wall_seconds", 0.0), _paths(folder))
        except (KeyError, TypeError) as err:
            raise CorruptDataError(f"{str(folder / 'study.json')!r} is not a valid NAP study ({err})") from err


# ------------------------------------------------------------------------------------------------ helpers


def _fmt(v: Any) -> str:
    return format_cell(float(v) if isinstance(v, (int, float)) else v, 4)


def _median(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def _mean(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def _counts(qs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    st = [q["status"] for q in qs]
    return {"queries": len(qs), "verified": st.count("verified"), "falsified": st.count("falsified"),
            "timeout": st.count("timeout"), "other": len(st) - st.count("verified") - st.count("falsified")
            - st.count("timeout"), "median s": _median([q["seconds"] for q in qs]),
            "max s": max((q["seconds"] for q in qs), default=float("nan"))}


def _twin(query_id: str) -> str:
    """The neurospec query of a Marabou query id (same kind, delta, class, competitor)."""
    return query_id.replace(f"{_MARABOU}:", f"{_ENGINE}:", 1)


def _markdown(table: Table) -> str:
    """A :class:`Table` as a Markdown pipe table (title in bold above it)."""
    cols = table.columns
    out = [f"**{table.title}**", ""] if table.title else []
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join("---" for _ in cols) + "|")
    for row in table:
        out.append("| " + " | ".join(format_cell(row.get(c, ""), table.digits) for c in cols) + " |")
    return "\n".join(out)


def _paths(out: Path) -> dict[str, Path]:
    return {"study": out / "study.json", "summary": out / "summary.md", "report": out / "report.html",
            "naps": out / "naps.json", "queries": out / "queries.jsonl", "settings": out / "settings.json",
            "figures": out / "figures"}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (main thread, POSIX) while a record is written; delivered right after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _QueryLog:
    """``queries.jsonl``: a stamp line, then one JSON object per finished query, appended as it finishes.

    Each record is one ``os.write`` of a whole line on an ``O_APPEND`` descriptor followed by ``fsync``, with
    SIGINT/SIGTERM held back, so an interruption keeps every finished query. A last line cut short by a
    crash (power loss) is dropped when the log is opened again (the file is rewritten atomically without
    it); any other damage is a :class:`CorruptDataError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._read()
        else:
            self._append(stamp(_LOG_KIND))

    def _read(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        keep: list[bytes] = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                if n >= len(lines) - 2:  # the last line, cut short: drop it
                    logger.warning("%s: dropping a last line that was cut short", self.path)
                    atomic_write_bytes(self.path, b"".join(k + b"\n" for k in keep))
                    break
                raise CorruptDataError(f"{str(self.path)!r} line {n + 1} is not JSON ({err}); move the file "
                                       "away to run the queries again") from err
            if not keep:
                check_stamp(obj, _LOG_KIND, self.path, "NAP study query log")
            elif isinstance(obj, dict) and "id" in obj:
                self.records[obj["id"]] = obj
            keep.append(line)
        if not keep:
            self._append(stamp(_LOG_KIND))

    def _append(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, default=_json_default) + "\n").encode()
        with _signals_held():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def __contains__(self, query_id: str) -> bool:
        return query_id in self.records

    def add(self, record: dict[str, Any]) -> None:
        self._append(record)
        self.records[record["id"]] = json.loads(json.dumps(record, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """One study per folder at a time: an exclusive, non-blocking ``flock`` on ``.nap-study.lock``."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out / ".nap-study.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise OutputPathError(f"cannot create a lock file in {str(out)!r} ({err.strerror}); choose another "
                              "output folder") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise OutputPathError(f"another NAP study is running in {str(out)!r}; wait for it or choose another "
                                  "output folder") from err
        yield
    finally:
        os.close(fd)


def _result_record(res: VerificationResult, **fields: Any) -> dict[str, Any]:
    cex = None
    if res.counterexample is not None:
        cex = {"x": res.counterexample.x.tolist(), "y": np.asarray(res.counterexample.y).tolist()}
    return {**fields, "status": res.status, "method": res.method, "seconds": round(res.timings.get("total", 0.0), 4),
            "message": res.message, "solver": res.solver, "counterexample": cex}


# ------------------------------------------------------------------------------------------------ set-up


def _load_model(model: Any, root: Any, verbose: bool) -> tuple[nn.Module, str, Path | None]:
    """``(module, description, onnx path)`` of a torch module, an ONNX file or a zoo name."""
    from probe.graph.onnx import OnnxModule, load_onnx

    if isinstance(model, nn.Module):
        path = getattr(model, "source_path", None) if isinstance(model, OnnxModule) else None
        return model, (str(path) if path else type(model).__name__), path
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text.endswith(".onnx") or Path(text).is_file():
            module = load_onnx(text)
            return module, str(Path(text).resolve()), module.source_path
        from probe import zoo

        module = zoo.load(text, root=root, verbose=verbose)
        return module, text, getattr(module, "source_path", None) if isinstance(module, OnnxModule) else None
    raise ModelError(f"model must be a torch module, an ONNX file or a model name ({', '.join(PRESETS)} "
                     f"networks, e.g. 'mnist-256x4'); got {type(model).__name__}")


def _flat(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Images ``(N, C, H, W)`` as the network's flattened inputs (ONNX layouts such as NHWC adapted)."""
    adapt = getattr(model, "adapt_input", None)
    if callable(adapt):
        x = adapt(x)
    return x.detach().cpu().double().reshape(len(x), -1).numpy()


def _network(model: nn.Module, onnx_path: Path | None, shape: tuple[int, ...]) -> ReluNetwork:
    if onnx_path is not None:
        return ReluNetwork.from_onnx(onnx_path)
    input_shape = getattr(model, "input_shape", None) or shape
    return ReluNetwork.from_torch(model, tuple(input_shape))


def _fingerprint(net: ReluNetwork) -> str:
    h = hashlib.sha256()
    for w, b in zip(net.weights, net.biases, strict=True):
        h.update(np.ascontiguousarray(w).tobytes())
        h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()[:16]


def _check_fit(model: nn.Module, net: ReluNetwork | None, train: ImageDataset, test: ImageDataset) -> None:
    """The data set's images fit the model (shape, number of classes), before anything long runs; with
    ``net``, also the extracted network's input size."""
    if tuple(train.shape) != tuple(test.shape):
        raise InputShapeError(f"training images {train.shape} and test images {test.shape} differ in shape")
    x, _ = train.tensors(range(min(2, len(train))))
    try:
        flat = _flat(model, x)
        with torch.no_grad():
            out = model(x)
    except NeurospecError as err:
        raise InputShapeError(f"the {train.name} images {train.shape} do not fit the network: {err}") from err
    except (RuntimeError, ValueError) as err:
        raise InputShapeError(f"the network cannot take the {train.name} images of shape {train.shape}: "
                              f"{str(err).splitlines()[0]}; pick the data set the network was trained on") from err
    if out.ndim != 2 or out.shape[-1] != train.num_classes:
        raise InputShapeError(f"the network has outputs of shape {tuple(out.shape[1:])} but {train.name} has "
                              f"{train.num_classes} classes")
    if net is not None and (flat.shape[1] != net.n_inputs or net.n_outputs != train.num_classes):
        raise InputShapeError(f"the {train.name} images have {flat.shape[1]} values {train.shape}, the network "
                              f"takes {net.n_inputs} {net.input_shape} and has {net.n_outputs} outputs")


def _check_naps(naps: NAPSet, net: ReluNetwork) -> None:
    """The NAPs were mined on this network's ReLU layers (names and sizes) and classes."""
    try:
        naps.check_model(list(net.relu_names), n_outputs=net.n_outputs)
        nap_states(net, naps, [])
    except (ModelError, SpecError) as err:
        raise ModelError(f"the NAPs do not match the network's ReLU layers: {err}") from err


def _deltas(deltas: Sequence[float]) -> list[float]:
    if isinstance(deltas, (str, bytes)) or not isinstance(deltas, Sequence) or not deltas:
        raise InvalidParameterError(f"deltas must be a non-empty list of numbers in (0.5, 1]; got {deltas!r}")
    out: list[float] = []
    for d in deltas:
        if isinstance(d, bool) or not isinstance(d, (int, float)):
            raise InvalidParameterError(f"deltas must be numbers in (0.5, 1]; got {d!r}")
        check_delta(d)
        if float(d) in out:
            raise InvalidParameterError(f"delta {d} is given twice in {list(deltas)}")
        out.append(float(d))
    return out


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise InvalidParameterError(f"{name} must be a positive number; got {value!r}")
    return float(value)


def _datasets(dataset: Any, root: Any) -> tuple[str, ImageDataset, ImageDataset]:
    if isinstance(dataset, str):
        if dataset not in PRESETS:
            raise InvalidParameterError(f"dataset must be one of {sorted(PRESETS)} (or a (train, test) pair of "
                                        f"ImageDatasets); got {dataset!r}")
        from probe import data

        return dataset, data.load(dataset, "train", root=root), data.load(dataset, "test", root=root)
    if (isinstance(dataset, tuple) and len(dataset) == 2
            and all(isinstance(d, ImageDataset) for d in dataset)):
        return dataset[0].name, dataset[0], dataset[1]
    raise InvalidParameterError(f"dataset must be one of {sorted(PRESETS)} or a (train, test) pair of "
                                f"probe.data.ImageDataset; got {type(dataset).__name__}")


def _manifest(out: Path, settings: dict[str, Any]) -> None:
    """Write the settings that fix what a query means; on a resumed run, refuse others."""
    fixed = {k: settings[k] for k in ("fingerprint", "dataset", "train_samples", "test_samples", "only_correct",
                                      "solver", "timeout", "eps_start", "eps_max", "refine", "radius_delta")}
    path = out / "settings.json"
    if path.exists():
        old = read_json(path, kind=_MANIFEST_KIND, what="NAP study settings file")
        diff = {k: (old.get(k), v) for k, v in fixed.items() if old.get(k) != v}
        if diff:
            what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise InvalidParameterError(f"{str(out)!r} holds a NAP study with other settings ({what}); run with the "
                                        "same settings to resume it, or choose another output folder")
        return
    write_json(path, {**stamp(_MANIFEST_KIND), **fixed})


# ------------------------------------------------------------------------------------------------ the study


def nap_study(
    model: nn.Module | str | os.PathLike[str],
    dataset: str | tuple[ImageDataset, ImageDataset] = "mnist",
    out: str | os.PathLike[str] = "nap_study",
    *,
    deltas: Sequence[float] | None = None,
    train_limit: int | None = -1,
    test_limit: int | None = None,
    only_correct: bool | None = None,
    timeout: float | None = None,
    images: int | None = None,
    solver: str = "highs",
    marabou: bool = False,
    classes: Sequence[int] | None = None,
    ambiguity: bool = True,
    data_counterexamples: bool = True,
    radius_delta: float | None = None,
    eps_start: float | None = None,
    eps_max: float | None = None,
    refine: int = 3,
    naps: NAPSet | str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
    verbose: bool = True,
) -> NAPStudy:
    """Run the NAP paper's experiments on ``model`` and write one results folder (see the module docstring).

    Args:
        model: a torch module with ReLUs, an ONNX file, or a model name (``probe.zoo.load``: ``"mnist-256x4"``,
            ``"cifar10-small"``, ``"mnist-mlp"``, ...).
        dataset: ``"mnist"`` or ``"cifar10"`` (the :data:`PRESETS`: the data set from the data root, and the
            defaults below), or a ``(train, test)`` pair of :class:`probe.data.ImageDataset`.
        out: the results folder (created; an existing study there is resumed).
        deltas: NAP thresholds in (0.5, 1] (default: the preset's, 1.0 0.99 0.95).
        train_limit: mine on the first N training images (default: the preset's 50,000; ``None``: all).
        test_limit: coverage, precision and radius images from the first N test images (``None``: all).
        only_correct: count only correctly predicted training samples (default: the preset's, True).
        timeout: seconds per query (default: the preset's, 30), for neurospec and Marabou alike.
        images: test images of the NAP-augmented robustness study (default: the preset's, 100; 0: none).
        solver: ``"highs"`` (default) or ``"cbc"``.
        marabou: also run every NAP robustness query through Marabou (needs ``maraboupy``).
        classes: the classes studied (default: all); competitors are always every other class.
        ambiguity: run the non-ambiguity queries.
        data_counterexamples: before a query goes to the verifier, look for a test image that follows the
            NAP(s) and violates the property (NAP precision below 1 often means one exists); one that
            re-checks answers the query ``falsified`` with method ``"data"`` in milliseconds; and give the
            images that follow the NAP to the verifier as starts of its local search (PGD that keeps the NAP,
            then activation-pattern LPs). Marabou's
            queries always go to Marabou.
        radius_delta: the NAP delta of the NAP-augmented robustness study (default 0.99 when studied, else
            the first delta).
        eps_start, eps_max: the radius search doubles eps from ``eps_start`` (default 1/255; CIFAR-10 0.5/255)
            while it is proven, up to ``eps_max`` (default 1.0), then bisects ``refine`` times.
        refine: bisection steps after the doubling.
        naps: NAPs mined before (a :class:`NAPSet` or a NAP file) instead of mining here; they must match the
            network's ReLU layers.
        root: the data root (data sets, VNN-COMP networks).
        batch_size: batch size of mining and statistics.
        verbose: progress bars.

    Returns:
        The :class:`NAPStudy` (also written to ``out``: ``study.json``, ``summary.md``, ``report.html``,
        ``figures/``, ``naps.json``, ``queries.jsonl``).

    Raises:
        OutputPathError: ``out`` cannot be written, or another study runs there (checked before anything runs).
        InvalidParameterError: bad deltas, timeout, images, limits, classes or dataset; a resumed folder with
            other settings.
        SolverError: unknown solver, or ``marabou=True`` without ``maraboupy``.
        ModelError / InputShapeError: the network has no ReLU or cannot be encoded, the data set's images do not
            fit it, or given NAPs were mined on other ReLU layers.
        DataError: the data set is missing, or no studied class has a counted training sample.

    Example:
        >>> study = nap_study("mnist-256x2", "mnist", "runs/nap", train_limit=2000, classes=[0, 1], images=2,
        ...                   timeout=10)                                    # doctest: +SKIP
        >>> study.robustness_summary()[0]["decided"]                         # doctest: +SKIP
        18
    """
    t_start = time.perf_counter()
    # ---- every argument is checked before anything is loaded or computed
    out = check_output(out, folder=True)
    name = dataset if isinstance(dataset, str) else None
    preset = PRESETS.get(name or "", StudyPreset(name or "custom", train_limit=None))
    deltas = _deltas(preset.deltas if deltas is None else deltas)
    train_limit = preset.train_limit if train_limit == -1 else train_limit
    if train_limit is not None:
        check_int("train_limit", train_limit, 1)
    if test_limit is not None:
        check_int("test_limit", test_limit, 1)
    only_correct = preset.only_correct if only_correct is None else bool(only_correct)
    timeout = _positive("timeout", preset.timeout if timeout is None else timeout)
    VerifyOptions(solver=solver, timeout=timeout)  # checks the solver and the timeout
    images = check_int("images", preset.images if images is None else images, 0)
    eps_start = _positive("eps_start", preset.eps_start if eps_start is None else eps_start)
    eps_max = _positive("eps_max", preset.eps_max if eps_max is None else eps_max)
    if eps_start > eps_max:
        raise InvalidParameterError(f"eps_start ({eps_start}) must not exceed eps_max ({eps_max})")
    refine = check_int("refine", refine, 0, 20)
    batch_size = check_int("batch_size", batch_size, 1)
    if radius_delta is None:
        radius_delta = 0.99 if 0.99 in deltas else deltas[0]
    elif float(radius_delta) not in deltas:
        raise InvalidParameterError(f"radius_delta must be one of the deltas {deltas}; got {radius_delta!r}")
    radius_delta = float(radius_delta)
    if marabou:
        from verify.marabou import check_marabou

        check_marabou()
    if isinstance(naps, (str, os.PathLike)):
        naps = NAPSet.load(naps)
    elif naps is not None and not isinstance(naps, NAPSet):
        raise InvalidParameterError(f"naps must be a probe.nap.NAPSet or a NAP file; got {type(naps).__name__}")
    dataset_name, train, test = _datasets(dataset, root)

    # ---- model, network, data: each checked against the others (nothing is written yet)
    module, description, onnx_path = _load_model(model, root, verbose)
    module.eval()
    if train_limit is not None:
        train = train.subset(min(train_limit, len(train)))
    if test_limit is not None:
        test = test.subset(min(test_limit, len(test)))
    _check_fit(module, None, train, test)
    net = _network(module, onnx_path, train.shape)
    _check_fit(module, net, train, test)
    n_classes = net.n_outputs
    classes = list(range(n_classes)) if classes is None else [check_int("class", c, 0, n_classes - 1)
                                                               for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise InvalidParameterError(f"classes must be distinct class indices; got {classes!r}")
    if naps is not None:
        _check_naps(naps, net)
    settings: dict[str, Any] = {
        "model": description, "network": repr(net), "fingerprint": _fingerprint(net), "dataset": dataset_name,
        "train_samples": len(train), "test_samples": len(test), "only_correct": only_correct,
        "deltas": deltas, "classes": classes, "timeout": timeout, "solver": solver, "marabou": bool(marabou),
        "ambiguity": bool(ambiguity), "data_counterexamples": bool(data_counterexamples), "images": images, "radius_delta": radius_delta, "eps_start": eps_start,
        "eps_max": eps_max, "refine": refine, "input_domain": [0.0, 1.0]}

    with _folder_lock(out):
        _manifest(out, settings)
        paths = _paths(out)
        run = _Run(module, net, train, test, out, settings, batch_size, verbose, paths)
        run.mine(naps)
        run.coverage()
        log = _QueryLog(paths["queries"])
        run.verify_all(log)
        study = NAPStudy(out, {**settings, **_versions(marabou)}, run.naps, run.stats, _ordered(log),
                         _radii(log, run.radius_images), list(run.empty), paths=paths)
        study.wall_seconds = time.perf_counter() - t_start
        _write(study, run)
    logger.info("NAP study written to %s in %.1f s", out, study.wall_seconds)
    return study


def _versions(marabou: bool) -> dict[str, Any]:
    from probe import __version__
    from verify.solvers import solver_versions

    out: dict[str, Any] = {"neurospec_version": __version__, "solver_versions": solver_versions()}
    if marabou:
        from verify.marabou import marabou_version

        out["marabou_version"] = marabou_version()
    return out


def _ordered(log: _QueryLog) -> list[dict[str, Any]]:
    order = {"robustness": 0, "ambiguity": 1, "radius": 2}
    return sorted(log.records.values(), key=lambda q: (order.get(q["kind"], 9), q["engine"] != _ENGINE,
                                                       -(q.get("delta") or 0), q.get("class", -1),
                                                       q.get("competitor", -1), q.get("pair", []),
                                                       q.get("image", -1), q.get("nap", False), q.get("eps", 0)))


class _Run:
    """The state of one study run: the model, the network, the data, the NAPs and the work units."""

    def __init__(self, module: nn.Module, net: ReluNetwork, train: ImageDataset, test: ImageDataset, out: Path,
                 settings: dict[str, Any], batch_size: int, verbose: bool, paths: dict[str, Path]) -> None:
        self.module, self.net, self.train, self.test, self.out = module, net, train, test, out
        self.settings, self.batch_size, self.verbose, self.paths = settings, batch_size, verbose, paths
        self.lo, self.hi = np.zeros(net.n_inputs), np.ones(net.n_inputs)
        self.naps: NAPSet
        self.stats: list[NAPStats] = []
        self.empty: list[int] = []
        self.radius_images: list[dict[str, Any]] = []
        self.radius_skipped: dict[str, int] = {"misclassified": 0, "not following": 0}
        self._bounds: tuple[Any, Any] | None = None  # ((delta, class), BoxBounds) of the current class
        self._follow_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        # ((delta, class), the test images that follow its NAP) of the current class: the pattern-search starts
        self._starts_cache: tuple[Any, np.ndarray | None] = (None, None)

    # ---- 1. mining -----------------------------------------------------------------------------------------

    def mine(self, given: NAPSet | None) -> None:
        from probe import data
        from probe.nap import mine

        path = self.paths["naps"]
        if given is not None:
            self.naps = given
            given.save(path)
        elif path.exists():
            self.naps = NAPSet.load(path)
            _check_naps(self.naps, self.net)
            logger.info("reusing the NAPs mined before: %s", path)
        else:
            partial = self.out / "naps.partial.safetensors"
            loader = data.make_loader(self.train, batch_size=self.batch_size)
            self.naps = mine(self.module, loader, delta=self.settings["deltas"][0],
                             only_correct=self.settings["only_correct"], verbose=self.verbose,
                             class_names=list(self.train.classes), checkpoint=partial)
            self.naps.source = {"model": self.settings["model"], "data": self.settings["dataset"], "split": "train",
                                "limit": self.settings["train_samples"]}
            self.naps.save(path)
            partial.unlink(missing_ok=True)
        self.empty = [c for c in self.settings["classes"] if c in self.naps.empty_classes]
        if len(self.empty) == len(self.settings["classes"]):
            raise DataError(f"no studied class has a {'correctly predicted ' if self.settings['only_correct'] else ''}"
                            f"training sample (classes {self.settings['classes']}): there is no NAP to verify; check "
                            "that the network and the data set belong together, or pass only_correct=False")
        for c in self.empty:
            logger.warning("class %d has no counted training sample: its NAP is empty and is not verified", c)

    # ---- 2. coverage and precision -------------------------------------------------------------------------

    def coverage(self) -> None:
        from probe import data

        path = self.out / "coverage.json"
        deltas = self.settings["deltas"]
        if path.exists():
            obj = read_json(path, kind="nap-study-coverage", what="NAP study coverage file")
            got = {s["delta"]: NAPStats(s["delta"], s["n_class"], s["n_follow"], s["n_follow_and_class"])
                   for s in obj["stats"]}
            if all(d in got for d in deltas):
                self.stats = [got[d] for d in deltas]
                return
        loader = data.make_loader(self.test, batch_size=self.batch_size)
        self.stats = self.naps.sweep(self.module, loader, deltas, verbose=self.verbose)
        write_json(path, {**stamp("nap-study-coverage"), "stats": [s.to_dict() for s in self.stats]})

    # ---- 3-5. the queries ----------------------------------------------------------------------------------

    def verify_all(self, log: _QueryLog) -> None:
        s = self.settings
        units: list[tuple[Any, ...]] = []
        valid = [c for c in s["classes"] if c not in self.empty]
        for delta in s["deltas"]:
            for c in valid:
                for j in range(self.net.n_outputs):
                    if j != c:
                        units.append(("robustness", delta, c, j))
            if s["ambiguity"]:
                units += [("ambiguity", delta, (i, j)) for i in valid for j in valid if i < j]
        self.radius_images = self._radius_images() if s["images"] else []
        units += [("radius", img, nap) for img in self.radius_images for nap in (False, True)]
        todo = [u for u in units if not self._finished(u, log)]
        logger.info("NAP study: %d work units, %d finished before, %d to run", len(units), len(units) - len(todo),
                    len(todo))
        for unit in progress(todo, self.verbose, "NAP study"):
            if unit[0] == "robustness":
                self._robustness(log, *unit[1:])
            elif unit[0] == "ambiguity":
                self._ambiguity(log, *unit[1:])
            else:
                self._radius(log, *unit[1:])

    def _finished(self, unit: tuple[Any, ...], log: _QueryLog) -> bool:
        if unit[0] == "robustness":
            ids = [_rid(_ENGINE, *unit[1:])]
            if self.settings["marabou"]:
                ids.append(_rid(_MARABOU, *unit[1:]))
            return all(i in log for i in ids)
        if unit[0] == "ambiguity":
            return _aid(*unit[1:]) in log
        return False  # radius searches replay their finished steps from the log

    def _states(self, delta: float, classes: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return nap_states(self.net, self.naps.with_delta(delta), list(classes))

    def _shared_bounds(self, delta: float, c: int, states: dict) -> tuple[Any, float]:
        """The class's BoxBounds (CROWN once per class, LP tightening reused), and its set-up seconds."""
        from verify.bounds import BoxBounds

        if self._bounds is not None and self._bounds[0] == (delta, c):
            return self._bounds[1], 0.0
        t0 = time.perf_counter()
        shared = BoxBounds(self.net, self.lo, self.hi, states)
        self._bounds = ((delta, c), shared)
        return shared, time.perf_counter() - t0

    def _robustness(self, log: _QueryLog, delta: float, c: int, j: int) -> None:
        states = self._states(delta, [c])
        spec = nap_robustness_spec(self.lo, self.hi, states, c, self.net.n_outputs, targets=[j])
        base = {"kind": "robustness", "delta": delta, "class": c, "competitor": j,
                "timeout": self.settings["timeout"]}
        rid = _rid(_ENGINE, delta, c, j)
        if rid not in log:
            res = self._from_data(spec, delta, [c], lambda y: y[:, j] >= y[:, c], lambda y: y[:, j] - y[:, c])
            setup = 0.0
            if res is None:
                shared, setup = self._shared_bounds(delta, c, states)
                res = verify_property(self.net, spec, solver=self.settings["solver"],
                                      timeout=self.settings["timeout"], bounds=shared,
                                      starts=self._robustness_starts(delta, c, j))
            log.add(_result_record(res, id=rid, engine=_ENGINE, **base, shared_bounds_seconds=round(setup, 4)))
        mid = _rid(_MARABOU, delta, c, j)
        if self.settings["marabou"] and mid not in log:
            from verify.marabou import verify_marabou

            res = verify_marabou(self.net, spec, timeout=self.settings["timeout"])
            log.add(_result_record(res, id=mid, engine=_MARABOU, **base))

    def _ambiguity(self, log: _QueryLog, delta: float, pair: tuple[int, int]) -> None:
        i, j = pair
        naps = self.naps.with_delta(delta)
        base = {"id": _aid(delta, pair), "kind": "ambiguity", "engine": _ENGINE, "delta": delta, "pair": [i, j],
                "timeout": self.settings["timeout"]}
        if bool(naps.disjoint_pairs()[i, j]):
            res = VerificationResult("verified", "nap-conflict", solver=self.settings["solver"], timings={"total": 0.0},
                                     message="a neuron is active in one NAP and inactive in the other")
        else:
            spec = nap_ambiguity_spec(self.lo, self.hi, self._states(delta, [i, j]), (i, j))
            res = self._from_data(spec, delta, [i, j], lambda y: np.ones(len(y), bool), lambda y: np.zeros(len(y)))
            if res is None:
                res = verify_property(self.net, spec, solver=self.settings["solver"],
                                      timeout=self.settings["timeout"], starts=self._starts(delta, [i, j]))
        log.add(_result_record(res, **base))

    def _followers(self, delta: float) -> tuple[np.ndarray, np.ndarray]:
        """Per test image: which NAPs (at ``delta``) it follows ``(N, classes)`` and the network's float64
        outputs ``(N, classes)``; computed once per delta."""
        if delta not in self._follow_cache:
            naps = self.naps.with_delta(delta)
            follows, outputs = [], []
            for start in range(0, len(self.test), self.batch_size):
                x, _ = self.test.tensors(range(start, min(start + self.batch_size, len(self.test))))
                follows.append(naps.follows(self.module, x).numpy())
                outputs.append(self.net.forward(_flat(self.module, x)))
            self._follow_cache = {delta: (np.concatenate(follows), np.concatenate(outputs))}
        return self._follow_cache[delta]

    def _starts(self, delta: float, classes: Sequence[int]) -> np.ndarray | None:
        """The test images that follow the NAP of any of ``classes`` at ``delta``, flattened: the starts of the
        state-keeping PGD and the activation-pattern search (:func:`verify.attack.state_attack`,
        :func:`verify.attack.pattern_search`) of a robustness query of class ``c`` (``[c]``) or of a
        non-ambiguity query of a pair (``[i, j]``: an image of one NAP, moved until it follows both); ``None``
        when ``data_counterexamples`` is off or no image follows them."""
        if not self.settings["data_counterexamples"]:
            return None
        key = (delta, tuple(classes))
        if self._starts_cache[0] != key:  # the class's competitor queries come one after another
            follows, _ = self._followers(delta)
            idx = np.flatnonzero(np.any(follows[:, list(classes)], axis=1))
            x = _flat(self.module, self.test.tensors([int(i) for i in idx])[0]) if idx.size else None
            self._starts_cache = (key, x)
        return self._starts_cache[1]

    def _robustness_starts(self, delta: float, c: int, j: int) -> np.ndarray | None:
        """The starts of NAP robustness query ``(c, j)``: the test images that follow NAP ``c``
        (:meth:`_starts`) and up to :data:`COMPETITOR_STARTS` test images of class ``j``, which already lie in
        the property and must be moved into the NAP (on cifar10_small at delta 0.95, class 8 vs 9 fell only to
        such starts); ``None`` when ``data_counterexamples`` is off."""
        own = self._starts(delta, [c])
        if not self.settings["data_counterexamples"]:
            return own
        idx = torch.nonzero(self.test.targets == j).reshape(-1)[:COMPETITOR_STARTS].tolist()
        if not idx:
            return own
        theirs = _flat(self.module, self.test.tensors(idx)[0])
        return theirs if own is None else np.concatenate([own, theirs])

    def _from_data(self, spec: Spec, delta: float, classes: Sequence[int], violates: Any,
                   margin: Any) -> VerificationResult | None:
        """A counterexample among the test images, before any solver runs: an image that follows the NAPs
        of ``classes`` and whose output violates the property (``violates(outputs)``; the deepest
        violation by ``margin(outputs)`` first), re-checked like every counterexample of :func:`verify.verify`
        (float64 network, torch, onnxruntime; states followed strictly). ``None`` when no image does."""
        from verify.api import confirm_counterexample

        if not self.settings["data_counterexamples"]:
            return None
        t0 = time.perf_counter()
        follows, outputs = self._followers(delta)
        hit = np.all(follows[:, list(classes)], axis=1) & violates(outputs)
        for i in np.flatnonzero(hit)[np.argsort(-margin(outputs)[hit], kind="stable")][:5]:
            x = _flat(self.module, self.test.tensors([int(i)])[0])[0]
            cex = confirm_counterexample(self.net, spec, x)
            if cex is not None:
                return VerificationResult("falsified", "data", cex, solver=self.settings["solver"],
                                          timings={"total": time.perf_counter() - t0},
                                          message=f"test image {int(i)} follows the NAP(s) of {list(classes)} and "
                                                  "violates the property")
        return None

    # ---- 4. NAP-augmented robustness -----------------------------------------------------------------------

    def _radius_images(self) -> list[dict[str, Any]]:
        """The first ``images`` test images of the studied classes that the network classifies correctly and
        that follow their class's NAP at ``radius_delta``."""
        s = self.settings
        naps = self.naps.with_delta(s["radius_delta"])
        wanted = set(c for c in s["classes"] if c not in self.empty)
        chosen: list[dict[str, Any]] = []
        self.radius_skipped = {"misclassified": 0, "not following": 0}
        for start in range(0, len(self.test), self.batch_size):
            idx = range(start, min(start + self.batch_size, len(self.test)))
            x, y = self.test.tensors(idx)
            flat = _flat(self.module, x)
            pred = self.net.forward(flat).argmax(1)
            follows = naps.follows(self.module, x).numpy()
            for n, i in enumerate(idx):
                label = int(y[n])
                if label not in wanted:
                    continue
                if pred[n] != label:
                    self.radius_skipped["misclassified"] += 1
                    continue
                if not follows[n, label]:
                    self.radius_skipped["not following"] += 1
                    continue
                chosen.append({"image": i, "label": label, "x": flat[n]})
                if len(chosen) == s["images"]:
                    return chosen
        if len(chosen) < s["images"]:
            logger.warning("only %d test images are correctly classified and follow their NAP (asked for %d)",
                           len(chosen), s["images"])
        return chosen

    def _radius(self, log: _QueryLog, img: dict[str, Any], with_nap: bool) -> None:
        """Doubling, then bisection, on eps; every step is a query (replayed from the log when it ran)."""
        s = self.settings
        states = self._states(s["radius_delta"], [img["label"]]) if with_nap else None

        def proven(eps: float) -> bool:
            qid = _radius_id(with_nap, s["radius_delta"], img["image"], eps)
            if qid not in log:
                spec = robustness(img["x"], eps, img["label"], self.net.n_outputs)
                plain = log.records.get(_radius_id(False, s["radius_delta"], img["image"], eps))
                if states is not None and plain is not None and plain["status"] == "verified":
                    # the NAP only removes inputs: robust at eps without it means robust at eps with it
                    res = VerificationResult("verified", "implied", solver=s["solver"], timings={"total": 0.0},
                                             message="proven at this eps without the NAP")
                else:
                    if states is not None:
                        spec = Spec(spec.lower, spec.upper, spec.unsafe, relu_states=states,
                                    name=f"NAP-augmented robustness eps={eps}", meta=dict(spec.meta))
                    res = verify_property(self.net, spec, solver=s["solver"], timeout=s["timeout"])
                log.add(_result_record(res, id=qid, kind="radius", engine=_ENGINE, delta=s["radius_delta"] if with_nap
                                       else None, image=img["image"], label=img["label"], nap=with_nap, eps=eps,
                                       timeout=s["timeout"]))
            return log.records[qid]["status"] == "verified"

        _search(proven, s["eps_start"], s["eps_max"], s["refine"])


def _search(proven: Any, eps_start: float, eps_max: float, refine: int) -> tuple[float, float | None]:
    """The radius search: ``(largest proven eps, smallest unproven eps or None)``. Doubling from
    ``eps_start`` while proven (up to ``eps_max``), then ``refine`` bisection steps in the bracket."""
    good, bad = 0.0, None
    eps = eps_start
    while True:
        if proven(eps):
            good = eps
            if eps >= eps_max:
                return good, None
            eps = min(2 * eps, eps_max)
        else:
            bad = eps
            break
    for _ in range(refine):
        mid = (good + bad) / 2
        if proven(mid):
            good = mid
        else:
            bad = mid
    return good, bad


def _rid(engine: str, delta: float, c: int, j: int) -> str:
    return f"robustness:{engine}:{delta!r}:{c}:{j}"


def _aid(delta: float, pair: tuple[int, int]) -> str:
    return f"ambiguity:{_ENGINE}:{delta!r}:{pair[0]}:{pair[1]}"


def _radius_id(with_nap: bool, delta: float, image: int, eps: float) -> str:
    return f"radius:{_ENGINE}:{'nap' if with_nap else 'plain'}:{delta!r}:{image}:{eps!r}"


def _radii(log: _QueryLog, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The radius of every (image, mode) from its logged steps (the search replayed on the log)."""
    out = []
    for img in images:
        for with_nap in (False, True):
            steps = [q for q in log.records.values() if q["kind"] == "radius" and q["image"] == img["image"]
                     and q["nap"] == with_nap]
            if not steps:
                continue
            by_eps = {q["eps"]: q for q in steps}
            verified = [e for e, q in by_eps.items() if q["status"] == "verified"]
            unproven = [e for e, q in by_eps.items() if q["status"] != "verified"]
            radius = max(verified, default=0.0)
            nxt = min((e for e in unproven if e > radius), default=None)
            out.append({"image": img["image"], "label": img["label"], "nap": with_nap, "radius": radius,
                        "unproven_eps": nxt, "unproven_status": by_eps[nxt]["status"] if nxt is not None else "none",
                        "steps": len(steps), "seconds": round(sum(q["seconds"] for q in steps), 3)})
    return out


# ------------------------------------------------------------------------------------------------ writing


def _display_shape(net: ReluNetwork) -> tuple[int, ...] | None:
    from probe.report import image_shape

    shape = tuple(net.input_shape)
    if len(shape) == 3 and (shape[0] in (1, 3) or shape[-1] in (1, 3)):
        return shape
    return image_shape(net.n_inputs)


def _write(study: NAPStudy, run: _Run) -> None:
    """study.json, summary.md, figures/*.png and report.html."""
    import matplotlib.pyplot as plt

    from probe.report import facts, figure, image, image_grid, paragraph, render_page, table, write_html

    paths = study.paths
    write_json(paths["study"], study.to_dict())
    atomic_write_bytes(paths["summary"], study.summary().encode())
    figs = paths["figures"]
    figs.mkdir(exist_ok=True)
    sections: list[tuple[str, Any]] = []
    s = study.settings

    def keep(fig: Any, name: str, alt: str, caption: str | None = None) -> Any:
        fig.savefig(figs / name, dpi=100, bbox_inches="tight")
        return figure(fig, alt, caption=caption)

    sections.append(("Summary", [facts({
        "model": s["model"], "network": s["network"], "data": s["dataset"],
        "training images (mined)": s["train_samples"], "test images": s["test_samples"],
        "samples counted": "correctly predicted only" if s["only_correct"] else "all",
        "deltas": ", ".join(str(d) for d in s["deltas"]), "solver": s["solver"], "timeout per query (s)": s["timeout"],
        "empty classes": ", ".join(map(str, study.empty_classes)) or "none",
        "wall time of this run (s)": round(study.wall_seconds, 1)})]))
    parts = [table(list(study.coverage_summary())), table(list(study.coverage_table()), caption="per class")]
    parts.append(keep(study.naps.plot("delta", stats=study.stats), "coverage_per_delta.png",
                      "coverage, precision and NAP size per delta"))
    for d in s["deltas"]:
        parts.append(keep(study.naps.with_delta(d).plot("heatmap"), f"nap_heatmap_delta{d}.png",
                          f"NAP heatmap at delta {d}", caption=f"NAPs at delta {d}"))
    sections.append(("NAPs", parts))
    parts = [table(list(study.robustness_summary())), table(list(study.robustness_table()), caption="per class")]
    parts.append(keep(_share_plot(study), "verified_share.png", "verified share per delta"))
    sections.append(("NAP robustness", parts))
    if study.select("ambiguity"):
        sections.append(("Non-ambiguity", [table(list(study.ambiguity_table()))]))
    if study.select("robustness", _MARABOU):
        sections.append(("neurospec vs Marabou", [table(list(study.marabou_table())),
                                                  table(list(study.robustness_table(_MARABOU)),
                                                        caption="Marabou per class")]))
    if study.radii:
        rs = study.radius_summary()
        sections.append(("NAP-augmented robustness", [
            facts(rs), table(list(study.radius_table())),
            keep(_radius_plot(study), "radius.png", "proven radius with and without the NAP")]))
    cex = [q for q in study.queries if q["counterexample"] is not None and q["kind"] != "radius"][:12]
    if cex:
        shape = _display_shape(run.net)
        groups = []
        for q in cex:
            x = np.asarray(q["counterexample"]["x"])
            what = (f"NAP {q['class']} scored as {q['competitor']}" if q["kind"] == "robustness"
                    else f"follows NAPs {q['pair'][0]} and {q['pair'][1]}")
            img = image(x, what, caption=f"delta {q['delta']}, {q['engine']}", shape=shape) if shape else \
                paragraph("not an image")
            groups.append((what, [img]))
        sections.append(("Counterexamples", [image_grid(groups, note="inputs of the whole domain [0, 1] that "
                                                                      "follow a NAP and break its property")]))
        if shape:
            fig, axes = plt.subplots(1, len(cex), figsize=(1.6 * len(cex), 1.9), squeeze=False)
            for ax, q in zip(axes[0], cex, strict=True):
                arr = np.asarray(q["counterexample"]["x"]).reshape(shape)
                if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
                    arr = np.moveaxis(arr, 0, -1)
                ax.imshow(arr.squeeze(), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{q['kind'][:3]} {q.get('class', q.get('pair'))}", fontsize=7)
                ax.axis("off")
            fig.savefig(figs / "counterexamples.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
    rows = [{k: v for k, v in q.items() if k != "counterexample"} | {"counterexample": "yes" if q["counterexample"]
                                                                      else ""} for q in study.queries]
    sections.append(("Every query", [table(rows, main=True, cap_hint="every query is in study.json")]))
    write_html(paths["report"], render_page(f"NAP study: {s['model']} on {s['dataset']}", sections,
                                            subtitle="neural activation patterns: mined, measured, verified"))


def _share_plot(study: NAPStudy) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    deltas = study.settings["deltas"]
    xs = np.arange(len(deltas))
    engines = study._engines() or [_ENGINE]
    width = 0.8 / (2 * len(engines))
    for e, engine in enumerate(engines):
        for k, (status, colour) in enumerate((("verified", "tab:green"), ("falsified", "tab:red"))):
            share = []
            for d in deltas:
                qs = study.select("robustness", engine, d)
                share.append(sum(q["status"] == status for q in qs) / len(qs) if qs else 0.0)
            ax.bar(xs + (2 * e + k - len(engines) + 0.5) * width, share, width, color=colour,
                   alpha=1.0 if engine == _ENGINE else 0.5, label=f"{status} ({engine})")
    ax.set_xticks(xs, [str(d) for d in deltas])
    ax.set_xlabel("delta")
    ax.set_ylabel("share of NAP robustness queries")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _radius_plot(study: NAPStudy) -> Any:
    import matplotlib.pyplot as plt

    rows = list(study.radius_table())
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(rows) + 2), 3.5))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r.get("without NAP", 0) for r in rows], 0.4, label="without NAP")
    ax.bar(xs + 0.2, [r.get("with NAP", 0) for r in rows], 0.4, label="with NAP")
    ax.set_xticks(xs, [str(r["image"]) for r in rows], fontsize=7)
    ax.set_xlabel("test image")
    ax.set_ylabel("largest proven L-inf radius")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
