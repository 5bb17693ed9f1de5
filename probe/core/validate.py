"""Argument checks shared by the public functions: each raises :class:`~probe.core.errors.InvalidParameterError`
naming the parameter, what it accepts and what it got.

Example:
    >>> check_choice("rule", "exact", ("exact", "paper"))
    'exact'
    >>> check_int("n_experts", 4, low=1)
    4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from probe.core.errors import InvalidParameterError

__all__ = ["check_choice", "check_int"]


def check_choice(param: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed`` (strings), else :class:`InvalidParameterError`."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidParameterError(f"{param} must be one of {list(allowed)}; got {value!r}")
    return value


def check_int(param: str, value: Any, low: int, high: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[low, high]``; ``hint`` ends the message."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        rng = f">= {low}" if high is None else f"in {low}..{high}"
        raise InvalidParameterError(f"{param} must be an int {rng}; got {value!r}{hint}")
    return int(value)
