"""What kind of result a file or folder holds, for ``neurospec report`` (no result is loaded here).

Kinds are read from the file: a JSON artifact's ``format`` stamp (``"neurospec.<kind>"`` with
``neurospec_format_version``; older files ``"neurospec.<kind>/1"``, or codebook's ``"kind"`` key), a
``verify-batch`` results CSV by its header, and a folder by the file it holds (``report.json``,
``moe_report.json``, ``result.json``).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
    >>> _ = p.write_text("onnx,vnnlib,timeout,result,seconds,method,solver,message\\n")
    >>> detect_kind(p)[0]
    'verify-batch'
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from probe.core.artifacts import FORMAT_VERSION, check_stamp
from probe.core.errors import CorruptDataError, DataNotFoundError

__all__ = ["FOLDER_FILES", "KINDS", "detect_kind"]

#: The kinds ``neurospec report`` renders, and what each is.
KINDS: dict[str, str] = {
    "nap": "NAPs (probe.nap.NAPSet.save)",
    "complexity": "feature-complexity report (ComplexityReport.save: report.json)",
    "complexity-sweep": "feature-complexity sweep (SweepResult.save)",
    "moe": "emergent mixture-of-experts report (MoEReport.save: moe_report.json)",
    "verification_result": "one verification result (VerificationResult.save: result.json)",
    "verify-batch": "verify-batch results CSV (neurospec verify-batch --out)",
    "codebook-search": "codebook label search (LabelSearchResult.save)",
    "codebook-steering": "codebook FSM steering (SteeringResult.save)",
}
#: The file that marks each kind of result folder.
FOLDER_FILES = {"report.json": "complexity", "moe_report.json": "moe", "result.json": "verification_result"}
_BATCH_COLUMNS = {"onnx", "vnnlib", "result"}


def _supported() -> str:
    return "; ".join(f"{k}: {v}" for k, v in KINDS.items())


def _unknown(path: Path, why: str) -> CorruptDataError:
    return CorruptDataError(f"{str(path)!r}: {why}; neurospec report renders these kinds: {_supported()}")


def _csv_kind(path: Path, text: str) -> str | None:
    first = text.splitlines()[0] if text.strip() else ""
    try:
        header = next(csv.reader(io.StringIO(first)))
    except (csv.Error, StopIteration):
        return None
    return "verify-batch" if _BATCH_COLUMNS <= {h.strip() for h in header} else None


def _json_kind(path: Path, obj: object) -> str:
    if not isinstance(obj, dict):
        raise _unknown(path, "the JSON holds no object, so it is no neurospec result")
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith("neurospec."):
        name = fmt[len("neurospec."):]
        kind, _, version = name.partition("/")
        if version:
            if not version.isdigit():
                raise _unknown(path, f"the format stamp {fmt!r} has no version number")
            if int(version) > FORMAT_VERSION:
                raise CorruptDataError(f"{str(path)!r}: a neurospec {kind} file of format version {version}, newer "
                                       f"than the version {FORMAT_VERSION} this neurospec reads: upgrade neurospec "
                                       "to read it")
        if kind not in KINDS:
            raise _unknown(path, f"a neurospec {kind!r} file (format {fmt!r}) has no report")
        check_stamp(obj, kind, path)  # a newer neurospec_format_version is refused here
        return kind
    kind = obj.get("kind")  # codebook's files written before the format stamp
    if isinstance(kind, str) and kind in KINDS:
        version = obj.get("neurospec_format_version", 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise CorruptDataError(f"{str(path)!r}: a neurospec {kind} file of format version {version}, newer "
                                   f"than the version {FORMAT_VERSION} this neurospec reads: upgrade neurospec")
        return kind
    raise _unknown(path, f"no neurospec format stamp (format {fmt!r})")


def detect_kind(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """The kind of result at ``path`` and the file that told it.

    Args:
        path: a result file (JSON artifact, results CSV) or a result folder.

    Returns:
        ``(kind, file)``: ``kind`` is a key of :data:`KINDS`; ``file`` is ``path`` or, for a folder, the file
        inside it that marks the kind.

    Raises:
        DataNotFoundError: ``path`` does not exist.
        CorruptDataError: not a result neurospec can render (the message names the file and the supported
            kinds), or written by a newer neurospec (a format version above this one's).

    Example:
        >>> detect_kind("runs/naps.json")  # doctest: +SKIP
        ('nap', PosixPath('runs/naps.json'))
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"result {str(path)!r} does not exist; pass a result file or folder "
                                f"(kinds: {', '.join(KINDS)})")
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return detect_kind(path / name)
        raise _unknown(path, f"the folder holds none of {', '.join(FOLDER_FILES)}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataNotFoundError(f"cannot read the result {str(path)!r}: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _unknown(path, "it is not text (neither a JSON result nor a results CSV)") from err
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise _unknown(path, f"it is not valid JSON ({err})") from err
        return _json_kind(path, obj), path
    kind = _csv_kind(path, text)
    if kind is None:
        raise _unknown(path, "it is neither a JSON result nor a results CSV with the columns onnx,vnnlib,result")
    return kind, path
