"""Exception hierarchy of ``probe`` (and the base class shared by the whole toolkit).

Every error raised on purpose by neurospec derives from :class:`NeurospecError`, so a caller (and the
``neurospec`` command line) can catch them all with one ``except``. Messages say what was wrong and how
to fix it.

Example:
    >>> from probe.errors import NeurospecError, DataNotFoundError
    >>> issubclass(DataNotFoundError, NeurospecError)
    True
"""

from __future__ import annotations

__all__ = [
    "CorruptDataError",
    "DataError",
    "DataNotFoundError",
    "InputShapeError",
    "InvalidParameterError",
    "ModelError",
    "NeurospecError",
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
