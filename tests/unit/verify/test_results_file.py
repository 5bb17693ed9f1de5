"""probe.core.resultsfile.ResultsFile, the writer of verify-batch's results CSV: validation of existing files,
merge by key, and appends from several processes at once losing or duplicating nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probe.core.errors import CorruptDataError, InvalidParameterError, OutputPathError
from probe.core.paths import check_output
from probe.core.resultsfile import ResultsFile
from verify.batch import FIELDS, results_file

ROOT = Path(__file__).resolve().parents[3]


def _row(i: int, writer: str = "a", result: str = "unsat") -> dict[str, str]:
    return {"onnx": f"net_{writer}.onnx", "vnnlib": f"prop_{i}.vnnlib", "timeout": "60", "result": result,
            "seconds": "0.100", "method": "bounds", "solver": "cbc", "message": ""}


def test_append_replaces_by_key_and_keeps_format(tmp_path):
    path = tmp_path / "results.csv"
    rf = results_file(path)
    assert rf.rows() == [] and not path.exists()
    assert rf.append(_row(0)) is False
    assert rf.append(_row(1)) is False
    assert rf.append(_row(0, result="sat")) is True  # same key: replaced in place, not duplicated
    assert [(r["vnnlib"], r["result"]) for r in rf.rows()] == [("prop_0.vnnlib", "sat"), ("prop_1.vnnlib", "unsat")]
    text = path.read_bytes().decode()
    assert text.startswith(",".join(FIELDS) + "\r\n")  # the format write_results always wrote
    assert rf.ensure() is False and path.read_bytes().decode() == text


def test_extra_columns_are_kept_and_optional_columns_may_be_missing(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("name,result,mine\na,sat,keep me\n")
    rf = ResultsFile(path, fields=["name", "result", "notes"], key=["name"], required=["name", "result"])
    assert rf.rows() == [{"name": "a", "result": "sat", "mine": "keep me", "notes": ""}]
    rf.append({"name": "a", "result": "unsat", "notes": "again"})
    rf.append({"name": "b", "result": "sat"})
    assert rf.rows() == [{"name": "a", "result": "unsat", "mine": "keep me", "notes": "again"},
                         {"name": "b", "result": "sat", "mine": "", "notes": ""}]
    with pytest.raises(InvalidParameterError, match="unknown_col"):
        rf.append({"name": "c", "unknown_col": "x"})
    with pytest.raises(InvalidParameterError, match="key"):
        rf.append({"result": "sat"})


@pytest.mark.parametrize("content, why", [
    (b'{"results": []}\n', "first line is '{\"results\": \\[\\]}'"),
    (b"onnx,vnnlib,answer\na.onnx,p.vnnlib,sat\n", "lacks the column\\(s\\) timeout, result"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
])
def test_a_file_that_is_not_a_results_csv_is_refused_untouched(tmp_path, content, why):
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    rf = results_file(path)
    for call in (rf.rows, rf.check, lambda: rf.append(_row(0))):
        with pytest.raises(CorruptDataError, match=why) as err:
            call()
        assert str(path) in str(err.value) and "move this one away" in str(err.value)
    assert path.read_bytes() == content


def test_a_short_row_is_named_by_line(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(",".join(FIELDS) + "\na.onnx,p.vnnlib,60,sat,0.1,attack,cbc,\nb.onnx,q.vnnlib\n")
    with pytest.raises(CorruptDataError, match=r"results.csv:3: 2 values"):
        results_file(path).rows()


def test_output_path_checks(tmp_path, monkeypatch):
    with pytest.raises(OutputPathError, match="is an existing folder"):
        check_output(tmp_path)
    nested = tmp_path / "new" / "folder" / "results.csv"
    assert check_output(nested) == nested and not nested.parent.exists()  # nothing is created
    assert list(tmp_path.iterdir()) == []  # the write check left nothing behind

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("probe.core.paths.tempfile.mkstemp", denied)
    with pytest.raises(OutputPathError, match="is not writable \\(Permission denied\\)"):
        results_file(tmp_path / "results.csv").check()


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from verify.batch import results_file
    path, writer, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    rf = results_file(path)
    for i in range(n):
        rf.append({"onnx": f"net_{writer}.onnx", "vnnlib": f"prop_{i}.vnnlib", "timeout": "60",
                   "result": "unsat", "seconds": "0.1", "method": "bounds", "solver": "cbc", "message": ""})
""")


def test_two_processes_appending_at_once_lose_and_duplicate_nothing(tmp_path):
    path, go, n = tmp_path / "results.csv", tmp_path / "go", 60
    results_file(path).append(_row(0, writer="before"))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), w, str(n), str(go)], cwd=ROOT)
             for w in ("a", "b")]
    time.sleep(1.0)  # both import and wait for the start signal, then write interleaved
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    keys = [(r["onnx"], r["vnnlib"]) for r in results_file(path).rows()]
    expected = {("net_before.onnx", "prop_0.vnnlib")} | {
        (f"net_{w}.onnx", f"prop_{i}.vnnlib") for w in ("a", "b") for i in range(n)}
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
