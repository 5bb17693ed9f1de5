"""``neurospec verify-batch`` (and ``verify``) on bad input, resumes and interruptions. Verification itself is
replaced by a fake ``run_instance`` here; tests/integration/test_verify_real.py and
test_verify_batch_signals.py run real networks."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

import verify.cli
from probe.cli import main
from verify.batch import FIELDS, results_file
from verify.result import VerificationResult


@pytest.fixture
def bench(tmp_path):
    """A folder with a (fake) network, five properties and an instances CSV of them."""
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "net.onnx").write_bytes(b"")
    for i in range(5):
        (folder / f"prop_{i}.vnnlib").write_text("")
    (folder / "instances.csv").write_text("".join(f"net.onnx,prop_{i}.vnnlib,60\n" for i in range(5)))
    return folder


@pytest.fixture
def calls(monkeypatch):
    """Replace run_instance: records its calls; ``calls.status`` (vnnlib name -> status) sets answers,
    ``calls.hook`` (called with the vnnlib name) can raise or send signals."""

    class Calls(list):
        def __init__(self) -> None:
            super().__init__()
            self.status: dict[str, str] = {}
            self.hook = None

    log = Calls()

    def fake(onnx, vnnlib, timeout, solver="cbc", cache=None):
        name = Path(vnnlib).name
        log.append((name, timeout, solver))
        if log.hook is not None:
            log.hook(name)
        return VerificationResult(log.status.get(name, "verified"), method="bounds", solver=solver,
                                  timings={"total": 0.01})

    monkeypatch.setattr(verify.cli, "run_instance", fake)
    return log


def _batch(bench, out, *extra):
    return main(["verify-batch", str(bench / "instances.csv"), "--out", str(out), "--quiet", *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# 1. --out that is not a results CSV ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"onnx": "net.onnx", "result": "sat"}\n',
                                     b"onnx,vnnlib,answer,seconds\nnet.onnx,prop_0.vnnlib,sat,1.0\n"])
def test_out_that_is_not_a_results_csv_is_refused_before_running(bench, tmp_path, calls, capsys, content):
    out = tmp_path / "other.json"
    out.write_bytes(content)
    assert _batch(bench, out) == 1
    line = _one_error_line(capsys)
    assert str(out) in line and "is not a verify-batch results CSV" in line
    assert "pass another --out, or move that file away" in line and "left unchanged" in line
    assert calls == [] and out.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "other.json"]  # no lock or temp file


# 2. several runs on one --out ------------------------------------------------------------------------------


def test_rows_written_by_another_run_meanwhile_are_kept_and_not_redone(bench, tmp_path, calls):
    out = tmp_path / "results.csv"
    other = results_file(out)

    def another_run_finishes_prop_3(name):
        if name == "prop_1.vnnlib":
            other.append({"onnx": "net.onnx", "vnnlib": "prop_3.vnnlib", "timeout": "60", "result": "sat",
                          "seconds": "1.000", "method": "attack", "solver": "cbc", "message": "other run"})

    calls.hook = another_run_finishes_prop_3
    assert _batch(bench, out) == 0
    assert [c[0] for c in calls] == ["prop_0.vnnlib", "prop_1.vnnlib", "prop_2.vnnlib", "prop_4.vnnlib"]
    rows = results_file(out).rows()
    assert sorted(r["vnnlib"] for r in rows) == [f"prop_{i}.vnnlib" for i in range(5)]
    assert next(r for r in rows if r["vnnlib"] == "prop_3.vnnlib")["message"] == "other run"


def test_disjoint_filters_on_one_out_keep_every_row(bench, tmp_path, calls):
    (bench / "other.onnx").write_bytes(b"")
    with (bench / "instances.csv").open("a") as fh:
        fh.write("other.onnx,prop_0.vnnlib,30\n")
    out = tmp_path / "results.csv"
    assert _batch(bench, out, "--filter", "other") == 0
    assert _batch(bench, out, "--filter", "net") == 0
    assert _batch(bench, out) == 0  # all done: nothing runs again
    keys = [(r["onnx"], r["vnnlib"]) for r in results_file(out).rows()]
    assert len(calls) == 6 and len(keys) == len(set(keys)) == 6


# 3. timeouts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_verify_timeout_must_be_positive(bench, calls, capsys, value):
    assert main(["verify", "--onnx", str(bench / "net.onnx"), "--vnnlib", str(bench / "prop_0.vnnlib"),
                 "--timeout", value]) == 1
    assert "--timeout must be a positive number of seconds" in _one_error_line(capsys)
    assert calls == []


@pytest.mark.parametrize("value", ["-3", "abc", "0", "inf", ""])
def test_instances_timeout_must_be_positive_and_is_named_by_line(bench, tmp_path, calls, capsys, value):
    (bench / "instances.csv").write_text(f"# comment\nnet.onnx,prop_0.vnnlib,60\nnet.onnx,prop_1.vnnlib,{value}\n")
    out = tmp_path / "results.csv"
    assert _batch(bench, out) == 1
    line = _one_error_line(capsys)
    assert f"instances.csv:3: the timeout {value!r} is not a positive number of seconds" in line
    assert calls == [] and not out.exists()


def test_timeout_scale_must_be_positive(bench, tmp_path, calls, capsys):
    assert _batch(bench, tmp_path / "results.csv", "--timeout-scale", "0") == 1
    assert "--timeout-scale must be a positive number" in _one_error_line(capsys)
    assert calls == []


# 4. a missing file on one row -------------------------------------------------------------------------------


def test_a_missing_file_makes_an_error_row_and_the_batch_goes_on(bench, tmp_path, calls, capsys):
    (bench / "prop_2.vnnlib").unlink()
    with (bench / "instances.csv").open("a") as fh:
        fh.write("gone.onnx,prop_0.vnnlib,60\n")
    out = tmp_path / "results.csv"
    assert _batch(bench, out) == 0
    rows = {(r["onnx"], r["vnnlib"]): r for r in results_file(out).rows()}
    assert len(rows) == 6 and len(calls) == 4
    bad = rows[("net.onnx", "prop_2.vnnlib")]
    assert bad["result"] == "error" and "VNN-LIB file" in bad["message"] and "prop_2.vnnlib" in bad["message"]
    assert "does not exist" in bad["message"]
    assert "ONNX file" in rows[("gone.onnx", "prop_0.vnnlib")]["message"]
    assert "error 2" in capsys.readouterr().out
    (bench / "prop_2.vnnlib").write_text("")  # fixed: --redo-errors runs it again, in place
    assert _batch(bench, out, "--redo-errors") == 0
    assert [c[0] for c in calls[4:]] == ["prop_2.vnnlib"]
    rows = results_file(out).rows()
    assert len(rows) == 6 and rows[2]["vnnlib"] == "prop_2.vnnlib" and rows[2]["result"] == "unsat"


# 5. an empty instances CSV -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "# nothing yet\n\n"])
def test_empty_instances_csv_writes_a_header_only_results_file(bench, tmp_path, calls, capsys, content):
    (bench / "instances.csv").write_text(content)
    out = tmp_path / "results.csv"
    assert _batch(bench, out) == 0
    assert out.read_text().splitlines() == [",".join(FIELDS)]
    said = capsys.readouterr().out
    assert "no instances in" in said and "with the header only" in said


# 6. resuming with other settings; --redo-timeouts -----------------------------------------------------------


def test_resume_with_other_solver_or_scale_says_so(bench, tmp_path, calls, capsys, caplog):
    out = tmp_path / "results.csv"
    assert _batch(bench, out, "--limit", "2") == 0
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="verify.cli"):
        assert _batch(bench, out, "--solver", "highs", "--limit", "3") == 0
    said = capsys.readouterr().out
    assert "warning: 2 of the 2 rows already in" in said and "solver cbc: 2" in said
    assert any("solver cbc: 2" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert [c[2] for c in calls] == ["cbc", "cbc", "highs"]  # kept, not re-run
    assert _batch(bench, out, "--timeout-scale", "0.5") == 0
    said = capsys.readouterr().out
    assert "warning: 3 of the 3 rows" in said and "solver highs: 1" in said
    assert "another time limit (--timeout-scale or the instances CSV): 3" in said
    assert [c[1] for c in calls[3:]] == [30.0, 30.0]
    capsys.readouterr()
    assert _batch(bench, out, "--timeout-scale", "0.5", "--limit", "5") == 0
    assert "warning: 3 of the 5 rows" in capsys.readouterr().out


def test_redo_timeouts_reruns_only_timeouts_in_place(bench, tmp_path, calls):
    out = tmp_path / "results.csv"
    calls.status = {"prop_1.vnnlib": "timeout", "prop_3.vnnlib": "timeout"}
    assert _batch(bench, out) == 0
    assert _batch(bench, out) == 0 and len(calls) == 5  # plain resume: timeouts are kept
    calls.status = {}
    assert _batch(bench, out, "--redo-timeouts") == 0
    assert [c[0] for c in calls[5:]] == ["prop_1.vnnlib", "prop_3.vnnlib"]
    rows = results_file(out).rows()
    assert [r["vnnlib"] for r in rows] == [f"prop_{i}.vnnlib" for i in range(5)]
    assert {r["result"] for r in rows} == {"unsat"}


# 7. --out that cannot be written --------------------------------------------------------------------------


def test_out_that_is_a_folder_is_refused(bench, tmp_path, calls, capsys):
    assert _batch(bench, tmp_path) == 1
    assert "is an existing folder" in _one_error_line(capsys)
    assert main(["verify", "--onnx", str(bench / "net.onnx"), "--vnnlib", str(bench / "prop_0.vnnlib"),
                 "--timeout", "5", "--out", str(tmp_path)]) == 1
    assert "is an existing folder" in _one_error_line(capsys)
    assert calls == []


def test_out_in_a_folder_that_cannot_be_written_is_refused(bench, tmp_path, calls, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("probe.core.paths.tempfile.mkstemp", denied)
    assert _batch(bench, tmp_path / "ro" / "results.csv") == 1
    line = _one_error_line(capsys)
    assert "results.csv" in line and "is not writable (Permission denied)" in line
    assert calls == []


def test_out_in_a_read_only_folder_is_refused(bench, tmp_path, calls, capsys):
    # /proc refuses new files even to root (CI runs as root, which writes into chmod-0555 folders).
    assert _batch(bench, Path("/proc/neurospec-no-such-folder/results.csv")) == 1
    assert "not writable" in _one_error_line(capsys) and calls == []


# 8. SIGINT / SIGTERM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_keeps_finished_rows_and_says_how_to_resume(bench, tmp_path, calls, capsys, sig, code):
    out = tmp_path / "results.csv"

    def signal_on_third(name):
        if name == "prop_2.vnnlib":
            os.kill(os.getpid(), sig)

    calls.hook = signal_on_third
    before = signal.getsignal(sig)
    assert _batch(bench, out) == code
    assert signal.getsignal(sig) is before  # the handlers are restored
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"interrupted by {sig.name}: 2 instance(s) finished in this run, 2 of the 5 selected are in" in err[0]
    assert "run the same command again to resume" in err[0]
    first = results_file(out).rows()
    assert [r["vnnlib"] for r in first] == ["prop_0.vnnlib", "prop_1.vnnlib"]
    calls.hook = None
    assert _batch(bench, out) == 0
    assert [c[0] for c in calls[3:]] == ["prop_2.vnnlib", "prop_3.vnnlib", "prop_4.vnnlib"]
    rows = results_file(out).rows()
    assert rows[:2] == first and len(rows) == 5


def test_a_signal_while_a_row_is_written_waits_for_the_row(bench, tmp_path, calls, capsys, monkeypatch):
    out = tmp_path / "results.csv"
    real_append = type(results_file(out)).append

    def append_then_signal(self, row):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the row is on disk
        return real_append(self, row)

    monkeypatch.setattr(type(results_file(out)), "append", append_then_signal)
    assert _batch(bench, out) == 143
    assert [r["vnnlib"] for r in results_file(out).rows()] == ["prop_0.vnnlib"]
    assert "1 instance(s) finished" in capsys.readouterr().err
