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
    "OnnxError",
    "OnnxFileNotFoundError",
    "UnsupportedOperatorError",
    "VerifyError",
]


class VerifyError(NeurospecError):
    """Base class of ``verify`` errors."""


class OnnxError(VerifyError, ValueError):
    """An ONNX file is missing, corrupt or not a network neurospec can import."""


class UnsupportedOperatorError(OnnxError):
    """An ONNX node uses an operator (or an attribute of it) that neurospec does not import."""


class OnnxFileNotFoundError(OnnxError, FileNotFoundError):
    """An ONNX file does not exist."""
