"""The pieces of ``neurospec verify-batch`` that are not command line: the instances CSV, the results CSV.

An instances CSV has VNN-COMP's rows ``onnx,vnnlib,timeout`` (paths relative to a root folder; ``#``
starts a comment line). :func:`read_instances` checks every row (three fields, a positive finite timeout)
before anything runs. The results CSV has the columns :data:`FIELDS`, one row per ``(onnx, vnnlib)``;
:func:`results_file` opens it as a :class:`~probe.core.resultsfile.ResultsFile`, whose ``append`` any
number of processes (or a Ray driver) can call at once.

Example:
    >>> import tempfile, pathlib
    >>> from verify.result import VerificationResult
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "instances.csv").write_text("net.onnx,prop.vnnlib,60\\n")
    >>> [i.timeout for i in read_instances(folder / "instances.csv")]
    [60.0]
    >>> results = results_file(folder / "results.csv")
    >>> results.append(result_row("net.onnx", "prop.vnnlib", 60, VerificationResult("timeout"), "cbc"))
    False
    >>> [r["result"] for r in results.rows()]
    ['timeout']
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from probe.core.resultsfile import ResultsFile
from verify.errors import SpecError

__all__ = ["FIELDS", "KEY", "Instance", "Mismatch", "missing_files", "read_instances", "result_row",
           "results_file", "settings_mismatch"]

#: The columns of a results CSV (``message``: why a row is ``error``/``unknown``, or other notes).
FIELDS = ["onnx", "vnnlib", "timeout", "result", "seconds", "method", "solver", "message"]
#: The columns that identify a row.
KEY = ("onnx", "vnnlib")


@dataclass(frozen=True)
class Instance:
    """One row of an instances CSV: paths as written there, the timeout in seconds, the line it is on."""

    onnx: str
    vnnlib: str
    timeout: float
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx, self.vnnlib)


def _positive_seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def read_instances(path: str | os.PathLike[str]) -> list[Instance]:
    """Every instance of a VNN-COMP instances CSV, each row checked (an empty file gives ``[]``).

    Raises:
        SpecError: the file is missing or unreadable, or a row (named by line) does not have an onnx path,
            a vnnlib path and a positive, finite timeout.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"instances file {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    out = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                where = f"{path}:{reader.line_num}"
                if len(row) < 3 or not row[0].strip() or not row[1].strip():
                    raise SpecError(f"{where}: expected 'onnx,vnnlib,timeout', got {row!r}")
                seconds = _positive_seconds(row[2])
                if seconds is None:
                    raise SpecError(f"{where}: the timeout {row[2]!r} is not a positive number of seconds; "
                                    "write e.g. 120 there (nothing was run)")
                out.append(Instance(row[0].strip(), row[1].strip(), seconds, reader.line_num))
    except (UnicodeDecodeError, csv.Error) as err:
        raise SpecError(f"instances file {str(path)!r} is not a CSV of onnx,vnnlib,timeout rows: {err}") from err
    return out


def results_file(path: str | os.PathLike[str],
                 fix: str = "pass another results file, or move this one away") -> ResultsFile:
    """The results CSV at ``path`` (columns :data:`FIELDS`, key :data:`KEY`)."""
    return ResultsFile(path, FIELDS, KEY, what="verify-batch results CSV", fix=fix)


def result_row(onnx_rel: str, vnnlib_rel: str, limit: float, res, solver: str) -> dict[str, str]:
    """One row of a results CSV (columns :data:`FIELDS`); seconds include loading the network."""
    seconds = res.timings.get("total", 0.0) + res.timings.get("load", 0.0)
    return {"onnx": onnx_rel, "vnnlib": vnnlib_rel, "timeout": f"{limit:g}", "result": res.vnncomp,
            "seconds": f"{seconds:.3f}", "method": res.method, "solver": solver, "message": res.message}


def missing_files(instance: Instance, root: str | os.PathLike[str]) -> str:
    """Why ``instance`` cannot run because a file is missing (``""`` if both files exist)."""
    root = Path(root)
    gone = [f"{kind} file {str(root / rel)!r} does not exist" for kind, rel in
            (("ONNX", instance.onnx), ("VNN-LIB", instance.vnnlib)) if not (root / rel).is_file()]
    return "; ".join(gone)


@dataclass
class Mismatch:
    """Rows of a results CSV made with other settings than a run's: ``rows`` in all, of which
    ``solvers`` (solver name -> rows) used another solver and ``timeouts`` had another time limit."""

    rows: int = 0
    solvers: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0

    def __bool__(self) -> bool:
        return self.rows > 0

    def describe(self) -> str:
        parts = [f"solver {name}: {n}" for name, n in sorted(self.solvers.items())]
        if self.timeouts:
            parts.append(f"another time limit (--timeout-scale or the instances CSV): {self.timeouts}")
        return "; ".join(parts)


def settings_mismatch(rows: list[dict[str, str]], instances: list[Instance], solver: str,
                      timeout_scale: float) -> Mismatch:
    """Which ``rows`` were made with another solver, or (for instances listed in ``instances``) another time
    limit than ``timeout * timeout_scale``."""
    limits = {i.key: i.timeout * timeout_scale for i in instances}
    out = Mismatch()
    solvers: Counter[str] = Counter()
    for row in rows:
        other_solver = row.get("solver", "") != solver
        want = limits.get((row["onnx"], row["vnnlib"]))
        try:
            other_limit = want is not None and not math.isclose(float(row.get("timeout", "")), want, rel_tol=1e-5)
        except ValueError:
            other_limit = True
        if other_solver:
            solvers[row.get("solver", "") or "(none)"] += 1
        out.timeouts += other_limit
        out.rows += other_solver or other_limit
    out.solvers = dict(solvers)
    return out
