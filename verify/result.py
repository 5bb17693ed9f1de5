"""The outcome of one verification: a closed vocabulary of statuses, a validated counterexample, timings.

Statuses and their VNN-COMP strings:

============ ========= =====================================================================
status       VNN-COMP  meaning
============ ========= =====================================================================
verified     unsat     proven: no input in the domain violates the property
falsified    sat       a counterexample exists; ``counterexample`` holds it, re-checked on the network
timeout      timeout   the time limit ran out first (never an answer)
unknown      unknown   finished without an answer (e.g. a candidate failed the re-check)
error        error     something went wrong; see ``message``
============ ========= =====================================================================

Results are saved as ``result.json`` in a folder and read back (counterexample included):

Example:
    >>> r = VerificationResult("verified", method="bounds")
    >>> r.vnncomp
    'unsat'
    >>> r.status == "verified"
    True
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> r.save(folder).name
    'result.json'
    >>> VerificationResult.load(folder).method
    'bounds'
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from probe.core.artifacts import read_json, stamp, write_json
from probe.core.errors import CorruptDataError, DataError, DataNotFoundError

__all__ = ["RESULT_FILE", "STATUSES", "Counterexample", "Status", "VerificationResult", "VnncompStatus"]

#: The status of a :class:`VerificationResult` (plain strings: ``result.status == "verified"`` works).
Status = Literal["verified", "falsified", "timeout", "unknown", "error"]
#: The VNN-COMP string of a status (:attr:`VerificationResult.vnncomp`).
VnncompStatus = Literal["unsat", "sat", "timeout", "unknown", "error"]

STATUSES: tuple[Status, ...] = get_args(Status)
_VNNCOMP: dict[Status, VnncompStatus] = {"verified": "unsat", "falsified": "sat", "timeout": "timeout",
                                         "unknown": "unknown", "error": "error"}
#: The file :meth:`VerificationResult.save` writes into its folder.
RESULT_FILE = "result.json"
_KIND = "verification_result"
_WHAT = "verification result"
_FIX = "point to a folder written by VerificationResult.save(folder), or verify again and save the result"


@dataclass
class Counterexample:
    """An input that violates the property, with the outputs it produced on every run that checked it.

    Attributes:
        x: the input (flattened, float64).
        y: the output of the extracted float64 network.
        y_source: the output of the source model (torch, float32).
        y_onnx: the output of the ONNX reference runtime, when the network came from ONNX.
    """

    x: np.ndarray
    y: np.ndarray
    y_source: np.ndarray
    y_onnx: np.ndarray | None = None

    def vnncomp_text(self) -> str:
        """``((X_0 v) ... (Y_0 v) ...)`` as in VNN-COMP result files (Y from the reference runtime if any)."""
        y = self.y_onnx if self.y_onnx is not None else self.y_source
        items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x)]
        items += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(np.asarray(y).reshape(-1))]
        return "(" + "\n ".join(items) + ")"


@dataclass
class VerificationResult:
    """One call, one result.

    Attributes:
        status: one of :data:`STATUSES`.
        method: what decided it: ``"attack"``, ``"bounds"``, ``"patterns"``, ``"bab"``, ``"milp"``,
            ``"nap-conflict"`` or ``""``.
        counterexample: for ``falsified`` only.
        message: human-readable detail (why unknown/error, which clause, ...).
        timings: seconds per phase (``"build"``, ``"attack"``, ``"bounds"``, ``"milp"``, ``"total"``).
        stats: solver and encoding statistics (binaries, constraints, unstable neurons, solver statuses).
        solver: the MILP solver used.
    """

    status: Status
    method: str = ""
    counterexample: Counterexample | None = None
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    solver: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if (self.status == "falsified") != (self.counterexample is not None):
            raise ValueError("a falsified result needs a counterexample, and only a falsified one has one")

    @property
    def vnncomp(self) -> VnncompStatus:
        """``unsat`` / ``sat`` / ``timeout`` / ``unknown`` / ``error``."""
        return _VNNCOMP[self.status]

    def vnncomp_text(self) -> str:
        """The body of a VNN-COMP result file."""
        if self.counterexample is not None:
            return "sat\n" + self.counterexample.vnncomp_text() + "\n"
        return self.vnncomp + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Every field; the counterexample's arrays as lists."""
        out = asdict(self)
        if self.counterexample is not None:
            out["counterexample"] = {k: (None if v is None else np.asarray(v).tolist())
                                     for k, v in asdict(self.counterexample).items()}
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), default=float)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``result.json`` (version-stamped, atomically) into ``directory`` (created if needed).

        Every field is kept: arrays become lists, numpy numbers plain numbers, tuples lists.

        Example:
            >>> import tempfile
            >>> VerificationResult("timeout", message="limit").save(tempfile.mkdtemp()).name
            'result.json'

        Returns:
            The path of the written file.
        """
        return write_json(Path(directory) / RESULT_FILE, {**stamp(_KIND), **_plain(self.to_dict())})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> VerificationResult:
        """Read the ``result.json`` that :meth:`save` wrote into ``directory``.

        Example:
            >>> import tempfile
            >>> folder = VerificationResult("unknown", message="re-check failed").save(tempfile.mkdtemp()).parent
            >>> VerificationResult.load(folder).message
            're-check failed'

        Raises:
            DataNotFoundError: ``directory`` holds no ``result.json``.
            CorruptDataError: the file is not valid JSON, not a verification result (or of a newer format
                version), or its fields are invalid.
        """
        if Path(directory).is_file():
            raise DataNotFoundError(f"{str(directory)!r} is a file; pass the folder that holds {RESULT_FILE} "
                                    f"(the folder VerificationResult.save(folder) wrote)")
        path = Path(directory) / RESULT_FILE
        try:
            obj = read_json(path, kind=_KIND, what=_WHAT)
        except DataError as err:
            raise type(err)(f"cannot load a verification result from {str(directory)!r}: {err}; {_FIX}") from err
        try:
            cex = obj.get("counterexample")
            return cls(status=obj["status"], method=obj.get("method", ""),
                       counterexample=None if cex is None else _counterexample(cex), message=obj.get("message", ""),
                       timings=dict(obj.get("timings", {})), stats=dict(obj.get("stats", {})),
                       solver=obj.get("solver", ""))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise CorruptDataError(f"{str(path)!r} is not a valid {_WHAT} ({type(err).__name__}: {err}); "
                                   f"{_FIX}") from err


def _counterexample(obj: dict[str, Any]) -> Counterexample:
    def arr(v: Any) -> np.ndarray:
        return np.asarray(v, dtype=np.float64)

    y_onnx = obj.get("y_onnx")
    return Counterexample(x=arr(obj["x"]), y=arr(obj["y"]), y_source=arr(obj["y_source"]),
                          y_onnx=None if y_onnx is None else arr(y_onnx))


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and numbers, tuples and non-string keys turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
