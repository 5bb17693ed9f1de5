"""The toolkit's exception hierarchy: the base class and the errors of the foundation (data, models, graphs).

Every error raised on purpose by neurospec derives from :class:`NeurospecError`, so a caller (and the
``neurospec`` command line) can catch them all with one ``except``. Messages say what was wrong and how
to fix it.

Example:
    >>> from probe.core.errors import NeurospecError, DataNotFoundError
    >>> issubclass(DataNotFoundError, NeurospecError)
    True
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ClusterUnreachableError",
    "CorruptDataError",
    "DataError",
    "DataNotFoundError",
    "InputShapeError",
    "InvalidParameterError",
    "ModelError",
    "NeurospecError",
    "OnnxError",
    "OnnxFileNotFoundError",
    "OutputPathError",
    "RayNotInstalledError",
    "TaskFailedError",
    "UnsupportedOperatorError",
]


class NeurospecError(Exception):
    """Base class of every error that neurospec raises on purpose."""


class InvalidParameterError(NeurospecError, ValueError):
    """A parameter has a value outside its allowed set (the message names the parameter, the allowed
    values and what was received)."""


class DataError(NeurospecError):
    """A data set could not be found or read."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data root or a data file is missing."""


class CorruptDataError(DataError, ValueError):
    """A data file exists but its content is not what the standard format says."""


class ModelError(NeurospecError, ValueError):
    """A model is unsuitable for the requested analysis (e.g. no ReLU, unknown reference name)."""


class InputShapeError(ModelError):
    """An input's shape does not match what the model expects."""


class OnnxError(ModelError):
    """An ONNX file is missing, corrupt or not a network neurospec can import."""


class UnsupportedOperatorError(OnnxError):
    """An ONNX node uses an operator (or an attribute of it) that neurospec does not import."""


class OnnxFileNotFoundError(OnnxError, FileNotFoundError):
    """An ONNX file does not exist."""


class OutputPathError(NeurospecError, OSError):
    """An output path cannot be written (read-only folder, a folder where a file is wanted, or the reverse).
    Raised before any computation starts, so no work is lost."""


class ClusterError(NeurospecError, RuntimeError):
    """A Ray cluster cannot be started, joined or used (see :mod:`probe.core.cluster`)."""


class ClusterUnreachableError(ClusterError, ConnectionError):
    """The address of a Ray cluster does not answer (nothing listens there, or it is not a Ray head)."""


class RayNotInstalledError(ClusterError, ImportError):
    """Parallel work on Ray was asked for, but the ``ray`` package cannot be imported."""


class TaskFailedError(ClusterError):
    """A parallel task could not finish: its worker process died more often than the retries allow, or it
    ran past its time limit (when the caller did not ask to record such failures instead)."""
