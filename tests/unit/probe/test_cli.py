"""The command line: errors are one line on stderr, no stack trace, non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from probe.cli import main


def test_unknown_reference_model(capsys):
    assert main(["train", "resnet50"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown reference model 'resnet50'")
    assert "Traceback" not in err


def test_data_check_missing_root(capsys, tmp_path):
    assert main(["data", "check", "--root", str(tmp_path / "nope")]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "nope" in out


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["nap"])
    assert info.value.code == 2


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "probe.cli", "nap", "stats", str(tmp_path / "x.json"),
                           "--data", "mnist"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_nap_mine_requires_a_model():
    with pytest.raises(SystemExit):
        main(["nap", "mine", "--data", "mnist", "--out", "x.json"])
