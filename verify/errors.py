"""Exception hierarchy of ``verify`` (ONNX import errors come from :mod:`probe.core.errors` and are
re-exported here, since ``verify`` users meet them first).

Example:
    >>> from verify.errors import SpecError
    >>> from probe.core.errors import NeurospecError
    >>> issubclass(SpecError, NeurospecError)
    True
"""

from __future__ import annotations

from probe.core.errors import (
    InputShapeError,
    NeurospecError,
    OnnxError,
    OnnxFileNotFoundError,
    UnsupportedOperatorError,
)

__all__ = [
    "InputShapeError",
    "NetworkError",
    "OnnxError",
    "OnnxFileNotFoundError",
    "ResourceLimitError",
    "SolverError",
    "SpecError",
    "UnsupportedOperatorError",
    "VerifyError",
    "VnnlibError",
]


class VerifyError(NeurospecError):
    """Base class of ``verify`` errors."""


class SpecError(VerifyError, ValueError):
    """A property is malformed: empty input box, wrong sizes, NaN bounds, bad label."""


class VnnlibError(SpecError):
    """A VNN-LIB file cannot be parsed; the message carries the file, line and column."""


class NetworkError(VerifyError, ValueError):
    """A model cannot be turned into a ReluNetwork (unsupported layer, non-ReLU activation, NaN weights,
    or a spec whose sizes do not match it)."""


class SolverError(VerifyError, RuntimeError):
    """A requested MILP solver is unknown or not installed."""


class ResourceLimitError(VerifyError, MemoryError):
    """The problem does not fit the memory cap (e.g. one batch of branch and bound domains of a network this
    large); raised before any work starts."""
