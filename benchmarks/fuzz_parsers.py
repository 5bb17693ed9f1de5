"""Fuzzing the VNN-LIB and ONNX parsers on mutated real VNN-COMP 2021 files, with a larger budget than CI.

Runs the cases of ``tests/unit/verify/test_fuzz_parsers.py`` (same mutations, same seeds, derandomized) and
records the outcome classes: ``parsed`` / ``loaded`` / ``extracted`` answers, the typed
``NeurospecError`` subclasses raised, and -- which must stay at zero -- untyped exceptions and hangs, each
with its first message. With ``--keep DIR`` the first file of every untyped outcome is copied there.

Run: .venv/bin/python benchmarks/fuzz_parsers.py [--vnnlib 2000] [--onnx 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "unit" / "verify" / "test_fuzz_parsers.py"


def _load_cases() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_cases", CASES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _where(err: BaseException) -> str:
    """``file:line (function)`` of the innermost frame of the toolkit (or of the test cases) that raised."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    f = (ours or frames)[-1]
    name = str(Path(f.filename).relative_to(ROOT)) if f.filename.startswith(str(ROOT)) else f.filename
    return f"{name}:{f.lineno} ({f.name})"


def _run(cases: Any, name: str, budget: int, case: Any, keep: Path | None, workdir: Path) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    untyped: dict[str, str] = {}
    start = time.perf_counter()

    @settings(cases.FUZZ, max_examples=budget)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        try:
            counts[case(data.draw, workdir)] += 1
        except (Exception, cases.Hang) as err:  # an untyped exception or a hang: what this script looks for
            key = f"UNTYPED {type(err).__name__} at {_where(err)}"
            counts[key] += 1
            if key not in untyped:
                untyped[key] = f"{err}"[:300]
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    for f in workdir.glob("fuzz.*"):
                        shutil.copy(f, keep / f"{name}_{len(untyped)}{''.join(f.suffixes)}")

    run()
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    print(f"{name}: {total} cases in {seconds:.1f} s: {dict(counts.most_common())}")
    for key, message in untyped.items():
        print(f"  {key}: {message}")
    return {"cases": total, "seconds": round(seconds, 1), "outcomes": dict(counts.most_common()),
            "untyped": untyped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vnnlib", type=int, default=2000, help="cases for read_vnnlib")
    parser.add_argument("--onnx", type=int, default=2000, help="cases for the ONNX import (half byte-level)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the first file of each untyped outcome")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args()
    cases = _load_cases()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.vnnlib:
            results["vnnlib"] = _run(cases, "vnnlib", args.vnnlib, cases.vnnlib_case, args.keep, work)
        if args.onnx:
            half = args.onnx // 2
            for kind, budget, structured in (("onnx_bytes", half, False),
                                             ("onnx_structure", args.onnx - half, True)):
                def case(draw: Any, w: Path, structured: bool = structured) -> str:
                    return cases.onnx_case(draw, w, structured, cases.EXTRACTED_ALL)

                results[kind] = _run(cases, kind, budget, case, args.keep, work)
    if not args.no_write:
        command = ("python benchmarks/fuzz_parsers.py " + " ".join(sys.argv[1:])).strip()
        rows = [{"parser": kind, "cases": r["cases"], "seconds": r["seconds"],
                 "untyped or hangs": sum(v for k, v in r["outcomes"].items() if k.startswith("UNTYPED")),
                 "outcomes": ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())}
                for kind, r in results.items()]
        payload = {
            "benchmark": "fuzz_parsers", "command": command, "machine": machine(),
            "title": "Parser fuzzing (mutated VNN-COMP 2021 files)",
            "notes": [f"seeds: {len(cases.VNNLIB_SEEDS)} VNN-LIB properties and {len(cases.ONNX_SEEDS)} "
                      "ONNX networks of mnistfc and marabou-cifar10; derandomized hypothesis, 1-3 mutations "
                      "per case",
                      f"every case bounded by {cases.CASE_SECONDS} s of wall clock; an answer or a "
                      "NeurospecError is a pass, anything else is counted as UNTYPED"],
            "tables": [{"caption": "Outcome classes", "columns": list(rows[0]) if rows else [],
                        "rows": rows}],
            "seeds": {"vnnlib": [f"{b}/{n}" for b, n, _ in cases.VNNLIB_SEEDS],
                      "onnx": [f"{b}/{n}" for b, n in cases.ONNX_SEEDS]},
            "results": results,
            "mutations_applied": {k: dict(v.most_common()) for k, v in cases.MUTATIONS.items()},
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "fuzz_parsers.json"
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path} (run benchmarks/report.py to refresh RESULTS.md)")

if __name__ == "__main__":
    main()
