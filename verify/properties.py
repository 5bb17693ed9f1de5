"""Properties to verify, all as one :class:`Spec` type.

A :class:`Spec` says: for every input ``x`` with ``lower <= x <= upper`` (element-wise, on the network's
flattened input) that also follows the fixed ReLU states in ``relu_states`` (if any), the output ``y`` lies
*outside* every clause of ``unsafe``, where a clause ``(A, b)`` is the polytope ``A @ y <= b``. The property
is *verified* (VNN-COMP: ``unsat``) when no such input exists, *falsified* (``sat``) when one does.

This is the VNN-LIB reading: the ``assert`` on outputs of a VNN-LIB file describes the unsafe region.

Example:
    >>> import numpy as np
    >>> spec = robustness(np.full(4, 0.5), eps=0.1, label=1, num_classes=3)
    >>> len(spec.unsafe)        # one clause per competitor class: y_1 - y_j <= 0
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from verify.errors import SpecError

__all__ = ["Spec", "nap_ambiguity_spec", "nap_robustness_spec", "robustness"]


@dataclass
class Spec:
    """An input box, optional fixed ReLU states, and an unsafe output region (a union of polytopes).

    Attributes:
        lower, upper: float64 arrays (n_inputs,), the input box (``lower <= upper``).
        unsafe: list of clauses ``(A, b)`` with ``A`` (rows, n_outputs) and ``b`` (rows,): the output region
            ``A @ y <= b``; a clause with zero rows is the whole output space.
        relu_states: optional per ReLU layer index, ``(active, inactive)`` boolean masks over that layer's
            neurons (in the recorded, flattened order): inputs must keep those neurons on (pre-activation
            >= 0) / off (pre-activation <= 0). Used by NAP properties.
        name: a label for reports.
    """

    lower: np.ndarray
    upper: np.ndarray
    unsafe: list[tuple[np.ndarray, np.ndarray]]
    relu_states: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        if self.lower.shape != self.upper.shape:
            raise SpecError(f"lower and upper bounds differ in size: {self.lower.size} vs {self.upper.size}")
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()):
            raise SpecError("the input box has NaN or infinite bounds; give finite lower/upper bounds")
        bad = np.nonzero(self.lower > self.upper)[0]
        if bad.size:
            i = int(bad[0])
            raise SpecError(
                f"empty input box: lower > upper at {bad.size} input(s), first X_{i}: "
                f"{self.lower[i]!r} > {self.upper[i]!r}"
            )
        clauses = []
        for k, (a, b) in enumerate(self.unsafe):
            a = np.atleast_2d(np.asarray(a, dtype=np.float64))
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if a.shape[0] != b.shape[0] and not (a.size == 0 and b.size == 0):
                raise SpecError(f"unsafe clause {k}: A has {a.shape[0]} rows but b has {b.shape[0]} entries")
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                raise SpecError(f"unsafe clause {k} has NaN or infinite coefficients")
            clauses.append((a, b))
        if not clauses:
            raise SpecError("the unsafe region is empty (no clause): there is nothing to verify")
        self.unsafe = clauses

    @property
    def n_inputs(self) -> int:
        return int(self.lower.size)

    @property
    def n_outputs(self) -> int | None:
        for a, _ in self.unsafe:
            if a.size:
                return int(a.shape[1])
        return None

    def violated_by(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether output ``y`` lies in some unsafe clause (``A @ y <= b + tol``)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return any(a.size == 0 or bool(np.all(a @ y <= b + tol)) for a, b in self.unsafe)

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        """Whether input ``x`` lies in the box."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))


def _competitor_clauses(label: int, num_classes: int, targets: Sequence[int] | None = None):
    if not 0 <= label < num_classes:
        raise SpecError(f"label must be in 0..{num_classes - 1}, got {label}")
    clauses = []
    for j in targets if targets is not None else range(num_classes):
        if j == label:
            continue
        a = np.zeros((1, num_classes))
        a[0, label], a[0, j] = 1.0, -1.0  # y_label - y_j <= 0: class j scores at least as high
        clauses.append((a, np.zeros(1)))
    return clauses


def robustness(x: np.ndarray, eps: float, label: int, num_classes: int, domain: tuple[float, float] = (0.0, 1.0),
               targets: Sequence[int] | None = None) -> Spec:
    """L-inf local robustness: every input within ``eps`` of ``x`` (clipped to ``domain``) is classified
    ``label`` (a tie with another class counts as a violation).

    Args:
        x: the centre (any shape; flattened in C order, as the network's input).
        eps: radius (>= 0).
        label: the class that must win.
        num_classes: number of outputs.
        domain: the valid input range, e.g. (0, 1) for pixels.
        targets: only these competitor classes (default: all others).
    """
    if not eps >= 0:
        raise SpecError(f"eps must be >= 0, got {eps!r}")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    lower = np.clip(x - eps, domain[0], domain[1])
    upper = np.clip(x + eps, domain[0], domain[1])
    return Spec(lower, upper, _competitor_clauses(label, num_classes, targets), name=f"robustness eps={eps}",
                meta={"label": label, "eps": eps})


def nap_robustness_spec(lower: np.ndarray, upper: np.ndarray, states: dict[int, tuple[np.ndarray, np.ndarray]],
                        label: int, num_classes: int, targets: Sequence[int] | None = None) -> Spec:
    """Every input in the box that follows the fixed ReLU states (NAP_label) is classified ``label``."""
    return Spec(lower, upper, _competitor_clauses(label, num_classes, targets), relu_states=states,
                name=f"NAP robustness class {label}", meta={"label": label})


def nap_ambiguity_spec(lower: np.ndarray, upper: np.ndarray,
                       states: dict[int, tuple[np.ndarray, np.ndarray]], classes: tuple[int, int]) -> Spec:
    """No input in the box follows both NAPs (``states`` is their union): unsafe = any output at all."""
    return Spec(lower, upper, [(np.zeros((0, 0)), np.zeros(0))], relu_states=states,
                name=f"NAP non-ambiguity {classes[0]} vs {classes[1]}", meta={"classes": list(classes)})
