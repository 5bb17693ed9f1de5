"""``neurospec verify-batch`` stopped by SIGTERM in a real process, on a real VNN-COMP network: the rows it
finished stay on disk, it exits with 143 and one line saying how to resume, and the same command resumes
without redoing them. Needs the data root (../shared/data), like tests/integration."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.cli import main
from verify.batch import results_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
#: 256x6 instances no phase settles in 2 s (each row takes its whole time limit: a slow batch)
PROPS = ["prop_3_0.05", "prop_5_0.05", "prop_7_0.05", "prop_9_0.05"]


def test_sigterm_keeps_finished_rows_and_the_same_command_resumes(data_root, tmp_path, capsys):
    bench = data_root / "vnncomp2021" / "mnistfc"
    instances = tmp_path / "instances.csv"
    instances.write_text("".join(f"mnist-net_256x6.onnx,{p}.vnnlib,2\n" for p in PROPS))
    out = tmp_path / "results.csv"
    args = ["verify-batch", str(instances), "--root", str(bench), "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from probe.cli import main; sys.exit(main())",
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not results_file(out).rows():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no row written in 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("interrupted by SIGTERM: ") and "run the same command again to resume" in lines[0]
    first = results_file(out).rows()
    assert 1 <= len(first) < len(PROPS), first
    assert f"{len(first)} of the {len(PROPS)} selected are in {out}" in lines[0]
    assert [r["vnnlib"] for r in first] == [f"{p}.vnnlib" for p in PROPS[: len(first)]]

    capsys.readouterr()
    assert main(args) == 0  # the same command: resumes
    rows = results_file(out).rows()
    assert rows[: len(first)] == first  # finished rows were not redone (same seconds, same everything)
    assert [r["vnnlib"] for r in rows] == [f"{p}.vnnlib" for p in PROPS]
    assert all(r["result"] in ("timeout", "unknown", "sat", "unsat") for r in rows), rows
