"""VNN-COMP 2021 ``mnistfc`` (or ``--category marabou-cifar10``) with the competition's timeouts (mnistfc: 120 s
for 256x2, 300 s otherwise; marabou-cifar10: 300 s), scaled by ``--timeout-scale``.

Per network and solver: instances solved (sat + unsat), median / max time of the solved ones, answers
that contradict the tool consensus (results/consensus.csv; must be 0), and instances not run yet.
Resumable and streaming: per-instance rows go to benchmarks/results/mnistfc_<solver>_<network>.csv after
every instance (one file per network, so networks can run in parallel processes), and the summary JSON /
RESULTS.md is rewritten after every instance, so a partial run counts. Rerunning skips finished rows;
``--rerun`` drops the selected networks' rows first.

Run: .venv/bin/python benchmarks/vnncomp_mnistfc.py --solver cbc [--networks 256x2] [--timeout-scale 1] [--rerun]
     [--reverse --part b]   (a second process working from the other end, into its own CSV)
     [--shard I/N]          (process I of N side by side, e.g. one per core of a larger machine)
     .venv/bin/python benchmarks/vnncomp_mnistfc.py --category marabou-cifar10 --solver highs [--timeout-scale 0.2]
     .venv/bin/python benchmarks/vnncomp_mnistfc.py --solver highs --networks 256x2 --marabou --timeout-scale 0.25
                            (Marabou on every instance right after neurospec, same timeout; rows in
                            mnistfc_marabou_<network>.csv; a side-by-side table with the ratios)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_result

from probe.core.paths import data_root
from verify.cli import read_results, result_row, run_instance, write_results
from verify.solvers import solver_versions

TARGET_SOLVED = {"mnist-net_256x2.onnx": 30, "mnist-net_256x4.onnx": 22, "mnist-net_256x6.onnx": 18}
#: The benchmark category (``--category``): ``mnistfc`` or ``marabou-cifar10``; its default networks.
CATEGORY = ["mnistfc"]
NETWORKS = {"mnistfc": ["256x2", "256x4", "256x6"], "marabou-cifar10": ["small", "medium", "large"]}


def _consensus_rows(root: Path) -> list[dict[str, str]]:
    """The category's rows of the 2021 tool-consensus table."""
    with (root / "vnncomp2021/results/consensus.csv").open(newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["category"] == CATEGORY[0]]


def consensus(root: Path) -> dict[tuple[str, str], str]:
    out = {}
    for row in _consensus_rows(root):
        c = row["consensus"]
        out[(row["onnx"], row["vnnlib"])] = "unsat" if c.startswith("holds") else (
            "sat" if c.startswith("violated") else "unknown")
    return out


def abcrown_solved(root: Path) -> dict[str, int]:
    """Per network of the category: instances alpha-beta-CROWN answered holds/violated in VNN-COMP 2021."""
    out: dict[str, int] = {}
    for row in _consensus_rows(root):
        out[row["onnx"]] = out.get(row["onnx"], 0) + (row["a-b-CROWN_result"] in ("holds", "violated"))
    return out


def _csv(solver: str, net: str, part: str = "") -> Path:
    return RESULTS / f"{CATEGORY[0]}_{solver}_{net}{'_' + part if part else ''}.csv"


def _notes(solver: str) -> Path:
    """Notes kept with the per-instance CSVs (``--note``), e.g. where a network's rows were run."""
    return RESULTS / f"{CATEGORY[0]}_{solver}_notes.txt"  # not .json: report.py renders every results/*.json


def _rows(solver: str, net: str) -> list[dict[str, str]]:
    """Every finished row of ``net``, from its CSV and the CSVs of parallel parts (first row per instance)."""
    out, seen = [], set()
    for path in [_csv(solver, net), *sorted(RESULTS.glob(f"{CATEGORY[0]}_{solver}_{net}_*.csv"))]:
        for row in read_results(path):
            if (row["onnx"], row["vnnlib"]) not in seen:
                seen.add((row["onnx"], row["vnnlib"]))
                out.append(row)
    return out


def summarise(solver: str, instances: list[list[str]], truth: dict, command: str) -> None:
    """Rewrite the summary JSON (and RESULTS.md) from every network's per-instance CSV."""
    table = []
    abc = abcrown_solved(data_root())
    for net in sorted({onnx for onnx, _, _ in instances}):
        short = net.removeprefix("mnist-net_").removeprefix("cifar10_").removesuffix(".onnx")
        mine = _rows(solver, short)
        if not mine:
            continue
        solved = [r for r in mine if r["result"] in ("sat", "unsat")]
        # only a consensus of sat/unsat can be contradicted; some instances have no consensus row at all
        wrong = [r for r in solved if truth.get((r["onnx"], r["vnnlib"]), "unknown") not in (r["result"], "unknown")]
        no_consensus = [r for r in solved if (r["onnx"], r["vnnlib"]) not in truth]
        times = [float(r["seconds"]) for r in solved]
        table.append({
            "network": net, "solver": solver, "instances run": len(mine),
            "not run": sum(onnx == net for onnx, _, _ in instances) - len(mine),
            "solved": len(solved), "unsat": sum(r["result"] == "unsat" for r in solved),
            "sat": sum(r["result"] == "sat" for r in solved),
            "target solved": TARGET_SOLVED.get(net, "-"),
            "a-b-CROWN solved (2021)": abc.get(net, "-"),
            "wrong vs consensus": len(wrong),
            "solved without consensus row": len(no_consensus),
            "median s (solved)": f"{statistics.median(times):.2f}" if times else "-",
            "max s (solved)": f"{max(times):.2f}" if times else "-",
        })
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    extra = _notes(solver).read_text().splitlines() if _notes(solver).exists() else []
    write_result(f"vnncomp_{CATEGORY[0].replace('-', '_')}_{solver}", command, {
        "title": f"VNN-COMP 2021 {CATEGORY[0]}, solver {solver}",
        "notes": [f"Solver versions: {solver_versions()}; timeouts x{TIMEOUT_SCALE[0]} of the competition's; "
                  "time includes loading the network and reading the property. Per-instance rows: "
                  f"benchmarks/results/{CATEGORY[0]}_{solver}_<network>.csv.",
                  f"Timings from a 2-core machine (load average {load} when this summary was written; "
                  "two benchmark processes ran side by side, one per core): a busier machine is slower, "
                  "and some timeouts may be instances an idle one would solve.", *extra],
        "tables": ([{"columns": list(table[0]), "rows": table}] if table else []) + _side_by_side(solver, instances),
    })


def _side_by_side(solver: str, instances: list[list[str]]) -> list[dict]:
    """neurospec and Marabou on the instances both ran (same timeout): solved counts, median times of the
    solved ones, and their ratios."""
    rows = []
    for net in sorted({onnx for onnx, _, _ in instances}):
        short = net.removeprefix("mnist-net_").removeprefix("cifar10_").removesuffix(".onnx")
        theirs = {(r["onnx"], r["vnnlib"]): r for r in _rows("marabou", short)}
        ours = {(r["onnx"], r["vnnlib"]): r for r in _rows(solver, short) if (r["onnx"], r["vnnlib"]) in theirs}
        if not ours:
            continue
        both = [k for k in ours if ours[k]["timeout"] == theirs[k]["timeout"]]
        if not both:  # Marabou ran these instances at another timeout (e.g. 30 s beside a 300 s table)
            continue

        def solved(rows: dict, keys=both) -> list[float]:
            return [float(rows[k]["seconds"]) for k in keys if rows[k]["result"] in ("sat", "unsat")]

        a, b = solved(ours), solved(theirs)
        med_a = statistics.median(a) if a else float("nan")
        med_b = statistics.median(b) if b else float("nan")
        rows.append({"network": net, "instances": len(both), "timeout s": ours[both[0]]["timeout"] if both else "-",
                     "neurospec solved": len(a), "Marabou solved": len(b),
                     "solved ratio": f"{len(a) / len(b):.1f}" if b else ("inf" if a else "-"),
                     "neurospec median s": f"{med_a:.2f}", "Marabou median s": f"{med_b:.2f}",
                     "median time ratio (Marabou / neurospec)": f"{med_b / med_a:.1f}" if a and b else "-",
                     "Marabou wrong vs neurospec": sum(1 for k in both if {ours[k]["result"], theirs[k]["result"]}
                                                       == {"sat", "unsat"})})
    return [{"caption": "Side by side with Marabou (same instances, same timeout, one tool after the other)",
             "columns": list(rows[0]), "rows": rows}] if rows else []


TIMEOUT_SCALE = [1.0]


def _run_marabou(onnx_path: Path, vnnlib_path: Path, limit: float, cache: dict):
    """Marabou on one instance (the network from neurospec's cache, the same property reader)."""
    from verify.marabou import verify_marabou
    from verify.network import ReluNetwork
    from verify.result import VerificationResult
    from verify.vnnlib import read_vnnlib

    t0 = time.perf_counter()
    key = str(Path(onnx_path).resolve())
    net = cache.get(key) or cache.setdefault(key, ReluNetwork.from_onnx(onnx_path))
    spec = read_vnnlib(vnnlib_path, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    try:
        res = verify_marabou(net, spec, timeout=max(limit - (time.perf_counter() - t0), 0.5))
    except MemoryError:  # e.g. under `prlimit --as`: Marabou took 22 GB on cifar10_large before its time limit
        res = VerificationResult("error", message="Marabou ran out of memory", solver="marabou")
        res.timings["total"] = time.perf_counter() - t0
    res.timings["load"] = time.perf_counter() - t0 - res.timings.get("total", 0.0)
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--solver", default="cbc")
    parser.add_argument("--category", default="mnistfc", choices=sorted(NETWORKS))
    parser.add_argument("--networks", nargs="+", default=None, help="default: all of the category's")
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--rerun", action="store_true", help="drop the selected networks' rows first")
    parser.add_argument("--summary-only", action="store_true", help="rewrite the summary from the CSVs, run nothing")
    parser.add_argument("--reverse", action="store_true", help="run the instances in reverse order")
    parser.add_argument("--part", default="", help="write to mnistfc_<solver>_<network>_<part>.csv (a second "
                        "process on the same network, e.g. with --reverse; instances done by either are skipped)")
    parser.add_argument("--shard", default="", help="I/N: run only the selected instances whose position is I "
                        "modulo N, into part s<I> (N processes side by side, one per core)")
    parser.add_argument("--marabou", action="store_true", help="also run Marabou on each instance, same timeout")
    parser.add_argument("--note", action="append", default=[],
                        help="a note kept with this solver's results and shown in the summary (repeatable); "
                        "--note '' clears them")
    args = parser.parse_args()
    CATEGORY[0] = args.category
    args.networks = args.networks or NETWORKS[args.category]
    # a run side by side with Marabou keeps its own rows and notes (its timeouts may differ from the main table's)
    key = args.solver + ("-with-marabou" if args.marabou else "")
    if args.note:
        kept = _notes(key).read_text().splitlines() if _notes(key).exists() else []
        kept = [] if args.note == [""] else [*kept, *(n.replace("\n", " ") for n in args.note)]
        _notes(key).write_text("".join(line + "\n" for line in kept))
    if args.shard:
        shard, shards = (int(v) for v in args.shard.split("/"))
        args.part = args.part or f"s{shard}"
    TIMEOUT_SCALE[0] = args.timeout_scale
    command = "python benchmarks/vnncomp_mnistfc.py " + " ".join(sys.argv[1:])
    summary = RESULTS / f"vnncomp_{args.category.replace('-', '_')}_{key}.json"
    if args.summary_only and summary.exists():  # a rewritten summary keeps the command that made its rows
        command = json.loads(summary.read_text()).get("command", command)
    root = data_root()
    bench = root / "vnncomp2021" / args.category
    truth = consensus(root)
    cache: dict = {}
    with (bench / f"{args.category}_instances.csv").open(newline="") as fh:
        # the instance lists name ./nets/X.onnx and ./specs/Y.vnnlib; the files lie flat in the folder
        instances = [[Path(r[0]).name, Path(r[1]).name, r[2]] for r in csv.reader(fh) if r]
    for net in args.networks:
        for path in [_csv(key, net), *RESULTS.glob(f"{args.category}_{key}_{net}_*.csv")]:
            if args.rerun and path.exists():
                path.unlink()
    selected = [r for r in instances if any(f"_{n}." in r[0] for n in args.networks)]
    if args.shard:
        selected = selected[shard::shards]
    for onnx_name, vnnlib_name, timeout in (reversed(selected) if args.reverse else selected):
        net = next(n for n in args.networks if f"_{n}." in onnx_name)
        if args.summary_only:
            continue
        limit = float(timeout) * args.timeout_scale
        expected = truth.get((onnx_name, vnnlib_name), "?")
        if (onnx_name, vnnlib_name) not in {(r["onnx"], r["vnnlib"]) for r in _rows(key, net)}:
            res = run_instance(bench / onnx_name, bench / vnnlib_name, limit, solver=args.solver, cache=cache)
            rows = [*read_results(_csv(key, net, args.part)),
                    result_row(onnx_name, vnnlib_name, limit, res, args.solver)]
            write_results(_csv(key, net, args.part), rows)
            print(f"{onnx_name} {vnnlib_name}: {res.vnncomp} in {float(rows[-1]['seconds']):.2f}s by "
                  f"{res.method or '-'} (consensus {expected})", flush=True)
        elif not args.marabou or (onnx_name, vnnlib_name) in {(r["onnx"], r["vnnlib"])
                                                                for r in _rows("marabou", net)}:
            continue
        if args.marabou and (onnx_name, vnnlib_name) not in {(r["onnx"], r["vnnlib"]) for r in _rows("marabou", net)}:
            res = _run_marabou(bench / onnx_name, bench / vnnlib_name, limit, cache)
            rows = [*read_results(_csv("marabou", net, args.part)),
                    result_row(onnx_name, vnnlib_name, limit, res, "marabou")]
            write_results(_csv("marabou", net, args.part), rows)
            print(f"  Marabou: {res.vnncomp} in {float(rows[-1]['seconds']):.2f}s (consensus {expected})", flush=True)
        try:  # another process (another network) may be rewriting the same summary right now
            summarise(key, instances, truth, command)
        except (OSError, ValueError) as err:
            print(f"summary not written this time: {err}", flush=True)
    summarise(key, instances, truth, command)


if __name__ == "__main__":
    main()
