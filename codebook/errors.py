"""Exception hierarchy of ``codebook``.

Example:
    >>> from codebook.errors import CodebookError, UnknownHookError
    >>> from probe.core.errors import NeurospecError
    >>> issubclass(CodebookError, NeurospecError) and issubclass(UnknownHookError, CodebookError)
    True
"""

from __future__ import annotations

from probe.core.errors import InvalidParameterError, NeurospecError

__all__ = [
    "CheckpointMismatchError",
    "CodeIdError",
    "CodebookConfigError",
    "CodebookError",
    "NonFiniteActivationError",
    "SiteShapeError",
    "UnknownHookError",
]


class CodebookError(NeurospecError):
    """Base class of ``codebook`` errors."""


class CodebookConfigError(CodebookError, InvalidParameterError):
    """A codebook setting is outside its allowed values (e.g. ``k`` larger than the number of codes)."""


class UnknownHookError(CodebookError, KeyError):
    """A hook-point name does not exist on the model (the message lists the closest names)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SiteShapeError(CodebookError, ValueError):
    """The activation at a hook point does not have the width the codebook config says (``d_model``)."""


class CodeIdError(CodebookError, IndexError):
    """A code id is outside ``[0, n_codes)`` (or a head index outside ``[0, n_groups)``)."""


class CheckpointMismatchError(CodebookError, ValueError):
    """A saved codebook or checkpoint was made for another model or codebook shape."""


class NonFiniteActivationError(CodebookError, FloatingPointError):
    """Training met NaN/inf activations or loss; the last good checkpoint is kept."""
