"""Where data and cached artifacts live.

The data root is, in order: an explicit argument, the ``NEUROSPEC_DATA`` environment variable, then
``../shared/data`` relative to the current directory or to the repository (when it exists).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from probe.core.errors import DataNotFoundError, OutputPathError

_REPO = Path(__file__).resolve().parents[2]  # probe/core/paths.py -> the repository

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
    """Folder for cached artifacts (trained reference models, TokFSM models trained here): the argument, else
    ``$NEUROSPEC_CACHE``, else ``$XDG_CACHE_HOME/neurospec``, else ``~/.cache/neurospec``. Every entry point
    (Python API, the ``neurospec`` command, ``run.sh``, the tests) uses this one default. Created on demand.

    Example:
        >>> cache_dir("/tmp/neurospec-cache-example").name
        'neurospec-cache-example'
    """
    if cache is not None:
        path = Path(cache).expanduser()
    elif os.environ.get("NEUROSPEC_CACHE"):
        path = Path(os.environ["NEUROSPEC_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "neurospec"
    else:
        path = Path.home() / ".cache" / "neurospec"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_output(path: str | os.PathLike[str], folder: bool = False) -> Path:
    """Check, before any computation, that an output can be written at ``path``; nothing is created.

    Args:
        path: the output file, or with ``folder=True`` the output folder (it may exist, as a folder).
        folder: whether the output is a folder of files.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OutputPathError: ``path`` is an existing folder where a file is wanted (or an existing file where a
            folder is wanted), or its nearest existing folder cannot be written (read-only, not a folder).

    Example:
        >>> check_output("/tmp/neurospec-example/out.json").name
        'out.json'
    """
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"output folder {str(path)!r} is an existing file; pass a folder path (new or existing)")
    if not folder and path.is_dir():
        raise OutputPathError(f"output file {str(path)!r} is an existing folder; pass a file path, e.g. "
                              f"{str(path / 'out.json')!r}")
    base = path if folder else path.parent
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise OutputPathError(f"cannot write {str(path)!r}: {str(base)!r} is a file, not a folder")
    try:
        fd, probe_file = tempfile.mkstemp(prefix=".neurospec-write-check-", dir=base)
    except OSError as err:
        raise OutputPathError(f"cannot write {str(path)!r}: the folder {str(base)!r} is not writable "
                              f"({err.strerror}); choose another output path") from err
    os.close(fd)
    os.unlink(probe_file)
    return path
