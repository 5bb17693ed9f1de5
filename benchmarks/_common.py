"""Shared helpers of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Where result files go: benchmarks/results, or $NEUROSPEC_RESULTS (a run on another machine, e.g. a GPU
#: machine whose files are copied back).
RESULTS = Path(os.environ.get("NEUROSPEC_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> dict[str, Any]:
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    # a copy of the tree on another machine names the commit it was copied from (its .git may be stale)
    commit = os.environ.get("NEUROSPEC_COMMIT") or commit
    gpu = {}
    if torch.cuda.is_available():
        gpu = {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **gpu,
    }


def write_result(name: str, command: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "command": command, "machine": machine(), **payload},
                               indent=2) + "\n")
    from report import render

    render()
    return path
