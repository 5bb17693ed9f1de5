"""The bound engine and branch and bound on CUDA beside the CPU (issue 17), in one run on a GPU machine.

Two parts, each row written as soon as it is measured (a run cut short keeps what it measured):

1. **Throughput**: for the lowest-bound clause of each case of ``bab_throughput.CASES`` (mnistfc 256x6 and
   256x4 properties and the marabou-cifar10 ``unsat`` instance), the same root bounds (BoxBounds: CROWN +
   alpha-CROWN) go to :func:`verify.bab.bab_clause` on the CPU (one torch thread, as the verifier runs) and on
   CUDA with a largest batch of each of ``--cuda-batches``; ``--seconds`` each. Domains per second, the
   status and the open domains left, and the ratio CUDA / CPU per clause.
2. **Instances**: :func:`verify.verify` with ``device="cuda"`` on ``--instances`` (mnistfc instances that
   this project's CPU run leaves open at the competition's 300 s), ``--timeout`` each, while the run's
   ``--budget`` lasts. The answer is compared with the tool consensus; a wrong answer is reported as such.

Run (on a machine with a GPU; the data root from $NEUROSPEC_DATA, results into $NEUROSPEC_RESULTS):
    python benchmarks/cuda_engine.py [--seconds 12] [--cuda-batches 1024 8192] [--timeout 120] [--budget 480]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import write_result
from bab_throughput import CASES

from probe.core.paths import data_root
from verify import bab
from verify.api import verify
from verify.bab import bab_clause
from verify.bounds import BoxBounds
from verify.network import ReluNetwork
from verify.vnnlib import read_vnnlib

#: mnistfc instances that the 2-core CPU run leaves open at 300 s and that other tools decided in 2021
#: (VeriNet in 7 s and 70 s; alpha-beta-CROWN on a GPU in 121-260 s), easiest first.
INSTANCES = [("256x6", "prop_5_0.03"), ("256x4", "prop_9_0.03"), ("256x4", "prop_4_0.05"),
             ("256x6", "prop_6_0.05"), ("256x4", "prop_6_0.05")]


def _load(net_name: str, prop: str):
    cifar = net_name.startswith("cifar10")
    root = data_root() / "vnncomp2021" / ("marabou-cifar10" if cifar else "mnistfc")
    net = ReluNetwork.from_onnx(root / (f"{net_name}.onnx" if cifar else f"mnist-net_{net_name}.onnx"))
    spec = read_vnnlib(root / f"{prop}.vnnlib", n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    return net, spec


def _consensus() -> dict[tuple[str, str], str]:
    path = data_root() / "vnncomp2021" / "results" / "consensus.csv"
    out = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            c = r["consensus"]
            out[(r["onnx"], r["vnnlib"])] = "unsat" if c.startswith("holds") else "sat" if c.startswith("violated") \
                else "unknown"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0, help="per branch and bound run (part 1)")
    parser.add_argument("--cuda-batches", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--cases", type=int, default=4, help="how many of bab_throughput.CASES (part 1)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per instance (part 2)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    parser.add_argument("--instances", type=int, default=len(INSTANCES))
    parser.add_argument("--device", default="cuda", help="the accelerator ('cpu' only for a dry run of the script)")
    args = parser.parse_args()
    gpu = args.device
    if gpu.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("cuda_engine.py needs a GPU (torch.cuda.is_available() is False here)")
    t_start = time.perf_counter()
    torch.ones(1, device=gpu).sum().item()  # the CUDA context, outside the timings
    rows: list[dict] = []
    inst_rows: list[dict] = []
    errors: list[str] = []
    best_batch = {"value": args.cuda_batches[0]}

    def save() -> None:
        ratios = []
        for r in rows:
            if r["on"] == "accelerator":
                cpu = [c for c in rows if c["on"] == "cpu" and c["case"] == r["case"]]
                if cpu:
                    ratios.append({"case": r["case"], "max batch": r["max batch"],
                                   "ratio domains/s (cuda / cpu)": round(r["domains/s"] / max(cpu[0]["domains/s"], 1e-9), 1)})
        summary = [{"max batch": b, "median ratio": statistics.median(
            [q["ratio domains/s (cuda / cpu)"] for q in ratios if q["max batch"] == b])}
                   for b in sorted({q["max batch"] for q in ratios})]
        tables = []
        if rows:
            tables.append({"caption": "Branch and bound per clause, CPU (1 torch thread) and CUDA",
                           "columns": list(rows[0]), "rows": rows})
        if summary:
            tables.append({"caption": "Median ratio of domains per second, CUDA / CPU", "columns": list(summary[0]),
                           "rows": summary})
        if inst_rows:
            tables.append({"caption": f"verify(device='cuda') on mnistfc instances open on the 2-core CPU at 300 s "
                                      f"(largest batch {best_batch['value']})",
                           "columns": list(inst_rows[0]), "rows": inst_rows})
        write_result("cuda_engine", "python benchmarks/cuda_engine.py " + " ".join(sys.argv[1:]), {
            "title": "The bound engine and branch and bound on CUDA beside the CPU (one run on a GPU machine)",
            "notes": [f"Part 1: {args.seconds:.0f} s of branch and bound per clause and setting, the same root bounds; "
                      "the CPU row is this GPU machine's CPU with one torch thread.",
                      f"Part 2: {args.timeout:.0f} s per instance; 'consensus' is the VNN-COMP 2021 tools' answer.",
                      *(f"error: {e}" for e in errors)],
            "tables": tables})

    # ---- part 1: throughput --------------------------------------------------------------------------------
    settings = [("cpu", "cpu", bab.MAX_BATCH["cpu"])] + [("accelerator", gpu, b) for b in args.cuda_batches]
    for net_name, prop in CASES[: args.cases]:
        try:
            net, spec = _load(net_name, prop)
            box = BoxBounds(net, spec.lower, spec.upper)
            box.optimised()
            lows = [float(np.max(box.spec_lower(a) - b)) for a, b in spec.unsafe]
            i = int(np.argmin(lows))
            for on, device, max_batch in settings:
                t0 = time.perf_counter()
                out = bab_clause(net, spec, i, box.best[:-1], t0 + args.seconds, device=device, max_batch=max_batch)
                seconds = time.perf_counter() - t0
                s = out.stats
                rows.append({"case": f"{net_name} {prop} clause {i}", "clause bound": round(lows[i], 4),
                             "on": on, "device": device, "max batch": max_batch, "status": out.status,
                             "domains": s["domains"], "domains/s": round(s["domains"] / seconds, 1),
                             "batches": s.get("batches", 0), "open": s.get("open", 0),
                             "max depth": s["max_depth"], "seconds": round(seconds, 2)})
                print(rows[-1], flush=True)
                save()
        except Exception as err:  # a benchmark run on a lent machine keeps going and says what failed
            errors.append(f"part 1, {net_name} {prop}: {err!r}")
            traceback.print_exc()
            save()
    # the largest CUDA batch with the best median domains per second goes to part 2
    per_batch = {b: [r["domains/s"] for r in rows if r["on"] == "accelerator" and r["max batch"] == b]
                 for b in args.cuda_batches}
    per_batch = {b: statistics.median(v) for b, v in per_batch.items() if v}
    if per_batch:
        best_batch["value"] = max(per_batch, key=per_batch.get)
    bab.MAX_BATCH[torch.device(gpu).type] = best_batch["value"]

    # ---- part 2: instances ---------------------------------------------------------------------------------
    consensus = _consensus()
    for net_name, prop in INSTANCES[: args.instances]:
        left = args.budget - (time.perf_counter() - t_start)
        if left < 30:
            break
        timeout = min(args.timeout, left - 10)
        try:
            net, spec = _load(net_name, prop)
            t0 = time.perf_counter()
            res = verify(net, spec, solver="highs", timeout=timeout, device=gpu)
            seconds = time.perf_counter() - t0
            want = consensus.get((f"mnist-net_{net_name}.onnx", f"{prop}.vnnlib"), "unknown")
            got = {"verified": "unsat", "falsified": "sat"}.get(res.status, res.status)
            bab_stats = res.stats.get("bab", []) if isinstance(res.stats, dict) else []
            inst_rows.append({"network": net_name, "property": prop, "timeout": round(timeout), "result": got,
                              "method": res.method,
                              "seconds": round(seconds, 1), "consensus": want,
                              "wrong": got in ("sat", "unsat") and want in ("sat", "unsat") and got != want,
                              "bab domains": sum(b.get("domains", 0) for b in bab_stats),
                              "bab domains/s": max([b.get("domains_per_second", 0) for b in bab_stats], default=0)})
            print(inst_rows[-1], flush=True)
        except Exception as err:
            errors.append(f"part 2, {net_name} {prop}: {err!r}")
            traceback.print_exc()
        save()
    save()


if __name__ == "__main__":
    main()
