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

Example:
    >>> r = VerificationResult("verified", method="bounds")
    >>> r.vnncomp
    'unsat'
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["STATUSES", "Counterexample", "VerificationResult"]

STATUSES = ("verified", "falsified", "timeout", "unknown", "error")
_VNNCOMP = {"verified": "unsat", "falsified": "sat", "timeout": "timeout", "unknown": "unknown", "error": "error"}


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
        method: what decided it: ``"attack"``, ``"bounds"``, ``"bab"``, ``"milp"``, ``"nap-conflict"`` or ``""``.
        counterexample: for ``falsified`` only.
        message: human-readable detail (why unknown/error, which clause, ...).
        timings: seconds per phase (``"build"``, ``"attack"``, ``"bounds"``, ``"milp"``, ``"total"``).
        stats: solver and encoding statistics (binaries, constraints, unstable neurons, solver statuses).
        solver: the MILP solver used.
    """

    status: str
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
    def vnncomp(self) -> str:
        """``unsat`` / ``sat`` / ``timeout`` / ``unknown`` / ``error``."""
        return _VNNCOMP[self.status]

    def vnncomp_text(self) -> str:
        """The body of a VNN-COMP result file."""
        if self.counterexample is not None:
            return "sat\n" + self.counterexample.vnncomp_text() + "\n"
        return self.vnncomp + "\n"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.counterexample is not None:
            out["counterexample"] = {k: (None if v is None else np.asarray(v).tolist())
                                     for k, v in asdict(self.counterexample).items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=float)
