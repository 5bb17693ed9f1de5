"""Progress bars on long work (``tqdm.auto``: a widget in notebooks, a line in terminals).

Example:
    >>> sum(1 for _ in progress(range(3), verbose=False, desc="demo"))
    3
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], verbose: bool, desc: str, **kwargs: Any) -> Iterator[T]:
    """Iterate ``items`` with a progress bar labelled ``desc`` (hidden when ``verbose`` is false); the total
    is ``len(items)`` where the iterable has one."""
    from tqdm.auto import tqdm

    try:
        total = len(items)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return tqdm(items, total=total, disable=not verbose, desc=desc, leave=False, **kwargs)
