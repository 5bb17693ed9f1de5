"""A keyed CSV results file that several processes can add rows to at once (resumable batch runs).

:class:`ResultsFile` holds one row per key (e.g. the columns ``("onnx", "vnnlib")``). :meth:`~ResultsFile.append`
adds a row, or replaces the row with the same key, as soon as a unit of work finishes:

1. it takes an exclusive ``fcntl.flock`` on a sidecar lock file (``.<name>.lock`` in the same folder,
   left in place: removing it would race with a process waiting for it),
2. re-reads the file, so rows other processes wrote meanwhile are kept,
3. merges the row and replaces the file atomically (temporary file, fsync, ``os.replace``).

Readers (:meth:`~ResultsFile.rows`) need no lock: they see the old or the new file, never half of one. So any
number of processes on one machine can append to one file without losing or duplicating a row; on a shared
file system this holds where ``flock`` works across machines (local disks, NFSv4; not every network file
system). A Ray cluster: let the tasks return rows and let the driver (or each of several drivers) call
``append`` as results arrive; do not append from workers on other machines unless their ``flock`` is
shared. In the main thread SIGINT and SIGTERM are held back while the file is being replaced, so a run
that is interrupted keeps every row it finished.

An existing file is checked before anything is written: it must be a CSV whose header names every required
column (:class:`~probe.core.errors.CorruptDataError` otherwise, and the file is left untouched). Columns
the file has beyond :attr:`ResultsFile.fields` are kept; required columns it lacks are an error, optional
ones (fields that are not required, e.g. columns added in a later version) read as ``""``.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
    >>> rf = ResultsFile(path, fields=["name", "result"], key=["name"])
    >>> rf.append({"name": "a", "result": "sat"})
    False
    >>> rf.append({"name": "a", "result": "unsat"})  # same key: replaces the row, returns True
    True
    >>> rf.rows()
    [{'name': 'a', 'result': 'unsat'}]
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from probe.core.artifacts import atomic_write_bytes
from probe.core.errors import CorruptDataError, InvalidParameterError, OutputPathError
from probe.core.paths import check_output

__all__ = ["ResultsFile"]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (main thread, POSIX) until the block ends; they are delivered right after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class ResultsFile:
    """A CSV file of result rows, one per key, safe to append to from several processes.

    Args:
        path: the CSV file (need not exist yet).
        fields: the columns, in the order a new file gets them.
        key: the columns that identify a row.
        required: the columns an existing file must have (default: all of ``fields``); the others read as
            ``""`` when missing, so adding a column at the end keeps old files readable.
        what: how messages name the file (e.g. ``"verify-batch results CSV"``).
        fix: what messages tell the user to do when an existing file is not such a CSV.
    """

    def __init__(self, path: str | os.PathLike[str], fields: Sequence[str], key: Sequence[str], *,
                 required: Sequence[str] | None = None, what: str = "results CSV",
                 fix: str = "choose another file, or move this one away") -> None:
        self.path = Path(path)
        self.fields = tuple(fields)
        self.key = tuple(key)
        self.required = tuple(fields if required is None else required)
        self.what = what
        self.fix = fix
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise InvalidParameterError(f"fields must be distinct column names; got {list(fields)!r}")
        if not self.key or not set(self.key) <= set(self.required) or not set(self.required) <= set(self.fields):
            raise InvalidParameterError(f"key {list(key)!r} must be among the required columns, and those "
                                        f"among fields {list(fields)!r}")

    def __repr__(self) -> str:
        return f"ResultsFile({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        """The sidecar lock file (``.<name>.lock`` next to the results file)."""
        return self.path.with_name(f".{self.path.name}.lock")

    def key_of(self, row: Mapping[str, str]) -> tuple[str, ...]:
        """The key of ``row``."""
        return tuple(row[k] for k in self.key)

    # --- reading -------------------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, str]]:
        """Every row, in file order (``[]`` when the file does not exist or is empty).

        Raises:
            CorruptDataError: the file exists but is not such a results CSV (nothing is changed).
            OutputPathError: the path is a folder.
        """
        return self._read()[1]

    def by_key(self) -> dict[tuple[str, ...], dict[str, str]]:
        """The rows by key (the first row of a key, should a hand-edited file repeat one)."""
        out: dict[tuple[str, ...], dict[str, str]] = {}
        for row in self.rows():
            out.setdefault(self.key_of(row), row)
        return out

    def check(self) -> None:
        """Check, before any work, that the file can be written and, if it exists, that it is such a results
        CSV. Changes nothing (a temporary file is created and removed in its folder)."""
        check_output(self.path)
        self._read()

    def _read(self) -> tuple[list[str] | None, list[dict[str, str]]]:
        path = self.path
        if path.is_dir():
            raise OutputPathError(f"the {self.what} {str(path)!r} is an existing folder; pass a file name")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, []
        except OSError as err:
            raise CorruptDataError(f"cannot read the {self.what} {str(path)!r}: {err}") from err
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise self._not_ours("it is not UTF-8 text") from err
        if not text.strip():
            return None, []
        first = text.splitlines()[0]
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
            missing = [f for f in self.required if f not in header]
            if len(missing) == len(self.required):
                raise self._not_ours(f"its first line is {first[:80]!r}")
            if missing:
                raise self._not_ours(f"its header lacks the column(s) {', '.join(missing)}")
            if len(set(header)) != len(header):
                raise self._not_ours("its header repeats a column")
            rows = []
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise CorruptDataError(
                        f"{path}:{reader.line_num}: {len(record)} values, but the header of this "
                        f"{self.what} has {len(header)} columns; fix or remove that line (or {self.fix})")
                row = dict(zip(header, record, strict=True))
                for f in self.fields:
                    row.setdefault(f, "")
                rows.append(row)
        except csv.Error as err:
            raise self._not_ours(f"it is not valid CSV (line {reader.line_num}: {err})") from err
        return header, rows

    def _not_ours(self, why: str) -> CorruptDataError:
        return CorruptDataError(f"{str(self.path)!r} exists but is not a {self.what}: {why} (expected a header "
                                f"with the columns {','.join(self.required)}); {self.fix}. "
                                "The file was left unchanged.")

    # --- writing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive ``flock`` on the sidecar lock file for the block."""
        import fcntl  # POSIX only; imported here so that reading works everywhere

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OutputPathError(f"cannot create the lock file {str(self.lock_path)!r} of the {self.what} "
                                  f"({err.strerror or err}); choose a file in a folder you can write to") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _normalise(self, row: Mapping[str, object]) -> dict[str, str]:
        unknown = [k for k in row if k not in self.fields]
        if unknown:
            raise InvalidParameterError(f"row has columns {unknown!r} that the {self.what} does not have "
                                        f"(its columns: {list(self.fields)!r})")
        absent = [k for k in self.key if row.get(k) in (None, "")]
        if absent:
            raise InvalidParameterError(f"row lacks its key column(s) {absent!r}: {dict(row)!r}")
        return {f: "" if row.get(f) is None else str(row.get(f)) for f in self.fields}

    def _write(self, header: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(header), restval="")
        writer.writeheader()
        writer.writerows(rows)
        try:
            atomic_write_bytes(self.path, buf.getvalue().encode())
        except OSError as err:
            raise OutputPathError(f"cannot write the {self.what} {str(self.path)!r}: {err.strerror or err}") from err

    def _header(self, existing: list[str] | None, rows: Sequence[Mapping[str, str]] = ()) -> list[str]:
        header = list(existing or self.fields)
        header += [f for f in self.fields if f not in header]
        for row in rows:
            header += [k for k in row if k not in header]
        return header

    def append(self, row: Mapping[str, object]) -> bool:
        """Add ``row`` (values become strings; missing columns ``""``), or replace the row with the same key
        in place. Locked re-read, merge and atomic replace: safe while other processes append too.
        Returns True if a row was replaced."""
        new = self._normalise(row)
        key = self.key_of(new)
        with self._locked(), _signals_held():
            header, rows = self._read()
            replaced = False
            for i, old in enumerate(rows):
                if self.key_of(old) == key:
                    rows[i] = {**old, **new}  # keeps the values of columns beyond ``fields``
                    replaced = True
                    break
            if not replaced:
                rows.append(new)
            self._write(self._header(header), rows)
        return replaced

    def ensure(self) -> bool:
        """Create the file with the header only, unless it already exists with content. Returns True if
        it was created."""
        with self._locked(), _signals_held():
            header, _ = self._read()
            if header is not None:
                return False
            self._write(self._header(None), [])
            return True

    def write(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Replace the whole file with ``rows`` (locked, atomic). Columns beyond ``fields`` that the rows
        carry are kept; the key columns must be set."""
        with self._locked(), _signals_held():
            header, _ = self._read()
            extra = [{k: v for k, v in r.items() if k not in self.fields} for r in rows]
            clean = [{**self._normalise({k: v for k, v in r.items() if k in self.fields}),
                      **{k: "" if v is None else str(v) for k, v in e.items()}} for r, e in zip(rows, extra, strict=True)]
            self._write(self._header(header, clean), clean)
