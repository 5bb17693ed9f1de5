"""VNN-COMP 2021 ``mnistfc`` with the competition's timeouts (120 s for 256x2, 300 s otherwise).

Per network and solver: instances solved (sat + unsat), median / max time of the solved ones, and answers
that contradict the tool consensus (results/consensus.csv; must be 0). Resumable: per-instance rows go to
benchmarks/results/mnistfc_<solver>.csv after every instance; rerunning skips finished rows.

Run: .venv/bin/python benchmarks/vnncomp_mnistfc.py --solver cbc [--networks 256x2] [--timeout-scale 1]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_result

from probe._paths import data_root
from verify.cli import read_results, result_row, run_instance, write_results
from verify.solvers import solver_versions

TARGET_SOLVED = {"mnist-net_256x2.onnx": 30, "mnist-net_256x4.onnx": 22, "mnist-net_256x6.onnx": 18}


def consensus(root: Path) -> dict[tuple[str, str], str]:
    out = {}
    with (root / "vnncomp2021/results/consensus.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["category"] == "mnistfc":
                c = row["consensus"]
                out[(row["onnx"], row["vnnlib"])] = "unsat" if c.startswith("holds") else (
                    "sat" if c.startswith("violated") else "unknown")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--solver", default="cbc")
    parser.add_argument("--networks", nargs="+", default=["256x2", "256x4", "256x6"])
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    args = parser.parse_args()
    root = data_root()
    bench = root / "vnncomp2021/mnistfc"
    truth = consensus(root)
    out_csv = RESULTS / f"mnistfc_{args.solver}.csv"
    rows = read_results(out_csv)
    done = {(r["onnx"], r["vnnlib"]) for r in rows}
    cache: dict = {}
    with (bench / "mnistfc_instances.csv").open(newline="") as fh:
        instances = [r for r in csv.reader(fh) if r]
    for onnx_name, vnnlib_name, timeout in instances:
        if not any(f"_{n}." in onnx_name for n in args.networks) or (onnx_name, vnnlib_name) in done:
            continue
        limit = float(timeout) * args.timeout_scale
        res = run_instance(bench / onnx_name, bench / vnnlib_name, limit, solver=args.solver, cache=cache)
        rows.append(result_row(onnx_name, vnnlib_name, limit, res, args.solver))
        write_results(out_csv, rows)
        seconds = float(rows[-1]["seconds"])
        expected = truth.get((onnx_name, vnnlib_name), "?")
        print(f"{onnx_name} {vnnlib_name}: {res.vnncomp} in {seconds:.2f}s by {res.method or '-'} "
              f"(consensus {expected})", flush=True)

    table = []
    for net in sorted({r["onnx"] for r in rows}):
        mine = [r for r in rows if r["onnx"] == net]
        solved = [r for r in mine if r["result"] in ("sat", "unsat")]
        wrong = [r for r in solved if truth.get((r["onnx"], r["vnnlib"])) not in (r["result"], "unknown")]
        times = [float(r["seconds"]) for r in solved]
        table.append({
            "network": net, "solver": args.solver, "instances run": len(mine),
            "solved": len(solved), "unsat": sum(r["result"] == "unsat" for r in solved),
            "sat": sum(r["result"] == "sat" for r in solved),
            "target solved": TARGET_SOLVED.get(net, "-"),
            "wrong vs consensus": len(wrong),
            "median s (solved)": f"{statistics.median(times):.2f}" if times else "-",
            "max s (solved)": f"{max(times):.2f}" if times else "-",
        })
    write_result(f"vnncomp_mnistfc_{args.solver}", "python benchmarks/vnncomp_mnistfc.py " + " ".join(sys.argv[1:]), {
        "title": f"VNN-COMP 2021 mnistfc, solver {args.solver}",
        "notes": [f"Solver versions: {solver_versions()}; timeouts x{args.timeout_scale} of the competition's; "
                  "time includes loading the network and reading the property. Per-instance rows: "
                  f"benchmarks/results/mnistfc_{args.solver}.csv."],
        "tables": [{"columns": list(table[0]), "rows": table}] if table else [],
    })


if __name__ == "__main__":
    main()
