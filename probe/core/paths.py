"""Where data and cached artifacts live.

The data root is, in order: an explicit argument, the ``NEUROSPEC_DATA`` environment variable, then
``../shared/data`` relative to the current directory or to the repository (when it exists).
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.core.errors import DataNotFoundError

_REPO = Path(__file__).resolve().parent.parent

EXPECTED_LAYOUT = (
    "<root>/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (torchvision's MNIST layout), "
    "<root>/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (CIFAR-10 python version), "
    "<root>/eran/{mnist,cifar10}_test.csv, <root>/vnncomp2021/{mnistfc,marabou-cifar10}/*.onnx"
)


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data root.

    Args:
        root: an explicit folder; ``None`` means ``$NEUROSPEC_DATA``, else ``../shared/data``.

    Returns:
        The existing folder.

    Raises:
        DataNotFoundError: the folder does not exist (the message names it and the expected layout).

    Example:
        >>> data_root().is_dir()  # doctest: +SKIP
        True
    """
    if root is not None:
        path, source = Path(root).expanduser(), "the root argument"
    elif os.environ.get("NEUROSPEC_DATA"):
        path, source = Path(os.environ["NEUROSPEC_DATA"]).expanduser(), "$NEUROSPEC_DATA"
    else:
        candidates = [Path.cwd() / ".." / "shared" / "data", _REPO.parent / "shared" / "data"]
        for cand in candidates:
            if cand.is_dir():
                return cand.resolve()
        raise DataNotFoundError(
            "no data root given: pass root=..., set NEUROSPEC_DATA, or place the data in ../shared/data. "
            f"Expected layout: {EXPECTED_LAYOUT}"
        )
    if not path.is_dir():
        raise DataNotFoundError(
            f"data root {str(path)!r} (from {source}) does not exist or is not a folder. "
            f"Expected layout: {EXPECTED_LAYOUT}"
        )
    return path.resolve()


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Folder for cached artifacts (trained reference models): argument, ``$NEUROSPEC_CACHE``, else
    ``~/.cache/neurospec``. Created on demand."""
    if cache is not None:
        path = Path(cache).expanduser()
    elif os.environ.get("NEUROSPEC_CACHE"):
        path = Path(os.environ["NEUROSPEC_CACHE"]).expanduser()
    else:
        path = Path.home() / ".cache" / "neurospec"
    path.mkdir(parents=True, exist_ok=True)
    return path
