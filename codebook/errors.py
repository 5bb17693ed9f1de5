"""Exception hierarchy of ``codebook``.

Example:
    >>> from codebook.errors import CodebookError
    >>> from probe.errors import NeurospecError
    >>> issubclass(CodebookError, NeurospecError)
    True
"""

from __future__ import annotations

from probe.errors import NeurospecError

__all__ = ["CodebookError"]


class CodebookError(NeurospecError):
    """Base class of ``codebook`` errors."""
