"""Exception hierarchy of ``verify``.

Example:
    >>> from verify.errors import UnsupportedOperatorError
    >>> from probe.errors import NeurospecError
    >>> issubclass(UnsupportedOperatorError, NeurospecError)
    True
"""

from __future__ import annotations

from probe.errors import InputShapeError, NeurospecError

__all__ = [
    "InputShapeError",
    "NetworkError",
    "OnnxError",
    "OnnxFileNotFoundError",
    "SolverError",
    "SpecError",
    "UnsupportedOperatorError",
    "VerifyError",
    "VnnlibError",
]


class VerifyError(NeurospecError):
    """Base class of ``verify`` errors."""


class OnnxError(VerifyError, ValueError):
    """An ONNX file is missing, corrupt or not a network neurospec can import."""


class UnsupportedOperatorError(OnnxError):
    """An ONNX node uses an operator (or an attribute of it) that neurospec does not import."""


class OnnxFileNotFoundError(OnnxError, FileNotFoundError):
    """An ONNX file does not exist."""


class SpecError(VerifyError, ValueError):
    """A property is malformed: empty input box, wrong sizes, NaN bounds, bad label."""


class VnnlibError(SpecError):
    """A VNN-LIB file cannot be parsed; the message carries the file, line and column."""


class NetworkError(VerifyError, ValueError):
    """A model cannot be turned into a ReluNetwork (unsupported layer, non-ReLU activation, NaN weights,
    or a spec whose sizes do not match it)."""


class SolverError(VerifyError, RuntimeError):
    """A requested MILP solver is unknown or not installed."""
