"""Artifacts: safetensors + JSON, written atomically, with one version stamp (no pickle for our own formats).

Every JSON artifact the toolkit writes starts with the same two keys::

    {"format": "neurospec.<kind>", "neurospec_format_version": 1, ...}

:func:`stamp` makes them, :func:`check_stamp` checks them when reading (files written before the stamp was
unified, ``"format": "neurospec.<kind>/1"``, still load), and :func:`read_json` reads a stamped file with
typed errors. Results with a folder of files (``save(dir) -> Path``) use fixed file names inside the folder.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> _ = write_json(path, {**stamp("example"), "answer": 42})
    >>> read_json(path, kind="example")["answer"]
    42
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from probe.core.errors import CorruptDataError, DataNotFoundError

__all__ = [
    "FORMAT_VERSION",
    "atomic_write_bytes",
    "check_stamp",
    "read_json",
    "read_metadata",
    "read_tensors",
    "stamp",
    "write_json",
    "write_tensors",
]

#: The version of every artifact format this neurospec writes; files with a larger number are refused.
FORMAT_VERSION = 1


def stamp(kind: str) -> dict[str, Any]:
    """The two keys that open an artifact of ``kind`` (e.g. ``"nap"``, ``"complexity"``)."""
    return {"format": f"neurospec.{kind}", "neurospec_format_version": FORMAT_VERSION}


def check_stamp(obj: Any, kind: str, path: str | os.PathLike[str] | None = None, what: str | None = None) -> None:
    """Raise :class:`CorruptDataError` unless ``obj`` is an artifact of ``kind`` in a version this neurospec
    reads. ``what`` names the artifact in messages (default ``"neurospec <kind> file"``)."""
    what = what or f"neurospec {kind} file"
    where = f"{str(path)!r}: " if path is not None else ""
    want = f"neurospec.{kind}"
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == f"{want}/1":  # the stamp of files written before the unified scheme
        return
    if fmt != want:
        raise CorruptDataError(f"{where}not a {what} (format {fmt!r}, expected {want!r})")
    version = obj.get("neurospec_format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptDataError(f"{where}{what} without a valid format version ({version!r})")
    if version > FORMAT_VERSION:
        raise CorruptDataError(f"{where}{what} has format version {version}, newer than the version "
                               f"{FORMAT_VERSION} this neurospec reads: upgrade neurospec to read it")


def read_json(path: str | os.PathLike[str], kind: str | None = None, what: str | None = None) -> dict[str, Any]:
    """Read a JSON artifact; with ``kind``, also :func:`check_stamp` it.

    Raises:
        DataNotFoundError: the file does not exist.
        CorruptDataError: it is not valid JSON, not an object, or not an artifact of ``kind``.
    """
    path = Path(path)
    label = what or (f"neurospec {kind} file" if kind else "JSON file")
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataNotFoundError(f"{label} {str(path)!r} does not exist") from err
    except IsADirectoryError as err:
        raise DataNotFoundError(f"{str(path)!r} is a folder; pass the {label} itself") from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptDataError(f"{label} {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{label} {str(path)!r} does not hold a JSON object")
    if kind is not None:
        check_stamp(obj, kind, path, what)
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old or the complete new file. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # an existing file keeps its permissions; a new one gets what the umask allows, as open() would give
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: dict[str, Any]) -> Path:
    """Atomically write ``obj`` as indented JSON, with ``neurospec_format_version`` (the stamp's keys first)."""
    payload = {"neurospec_format_version": FORMAT_VERSION, **obj}
    if "format" in payload:
        payload = {"format": payload.pop("format"), **payload}
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def write_tensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Atomically write tensors (and optional string metadata) as one safetensors file."""
    from safetensors.torch import save

    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, blob)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors.

    Raises:
        DataNotFoundError: the file does not exist.
        CorruptDataError: the file is truncated or not a safetensors file.
    """
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise DataNotFoundError(f"tensor file {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) for damaged files
        raise CorruptDataError(f"tensor file {str(path)!r} is damaged or not a safetensors file ({err}); "
                               "write it again with the command or call that made it") from err
