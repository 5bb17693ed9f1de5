"""How far complete MILP bounds of ReLU layer 1 carry branch and bound on one mnistfc instance, for a given
time per MILP (verify() runs the same steps when branch and bound stalls, within its time shares).

Steps, with one overall deadline: alpha-CROWN bounds of the box; MILP bounds of ReLU layers
``1..--to-layer`` (``BoxBounds.milp_tightened``, every unstable neuron, at most ``--per-neuron`` seconds per
MILP); then branch and bound (``verify.bab.bab_clause``) on every clause the bounds leave open, lowest root
bound first, each counterexample candidate re-checked. Prints the unstable neurons per layer and the clauses'
root bounds after each step, and each clause's outcome with its domains and time.

verify() gives the same MILP bounds ``milp_share`` (0.4) of branch and bound's time left when it stalls, on
``milp_threads`` threads (default the usable cores): about 1.2 s per MILP on mnist-net_256x4 prop_3_0.03 on two
cores at the competition's 300 s; this script shows what a given budget per MILP buys (``--workers``: threads).

Run:
    .venv/bin/python benchmarks/mnistfc_milp_root.py prop_4_0.05 --per-neuron 2 --deadline 600 --workers 2 --write

``--write``: also write ``benchmarks/results/mnistfc_milp_root_<network>_<prop>.json`` (the steps and each
clause's outcome) and re-render RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from probe.core.paths import data_root
from verify.api import confirm_counterexample
from verify.bab import bab_clause
from verify.bounds import BoxBounds
from verify.network import ReluNetwork
from verify.vnnlib import read_vnnlib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prop", help="property name in vnncomp2021/mnistfc, e.g. prop_9_0.03")
    ap.add_argument("--network", default="256x4", choices=["256x2", "256x4", "256x6"])
    ap.add_argument("--to-layer", type=int, default=1, help="last ReLU layer given MILP bounds")
    ap.add_argument("--per-neuron", type=float, default=2.0, help="seconds per MILP at most")
    ap.add_argument("--deadline", type=float, default=900.0, help="seconds for everything")
    ap.add_argument("--workers", type=int, default=1, help="threads solving the MILPs side by side")
    ap.add_argument("--write", action="store_true", help="write the figures to benchmarks/results/")
    args = ap.parse_args()
    folder = data_root() / "vnncomp2021" / "mnistfc"
    t0 = time.perf_counter()
    deadline = t0 + args.deadline
    net = ReluNetwork.from_onnx(folder / f"mnist-net_{args.network}.onnx")
    spec = read_vnnlib(folder / f"{args.prop}.vnnlib", n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    box = BoxBounds(net, spec.lower, spec.upper)
    box.optimised()

    steps, clauses = [], []

    def report(step: str) -> list[float]:
        roots = [float(np.max(box.spec_lower(a) - b)) for a, b in spec.unsafe]
        unstable = [int(((lo < 0) & (up > 0)).sum()) for lo, up in box.best[:-1]]
        print(f"[{time.perf_counter() - t0:6.1f} s] {step}: unstable {unstable}, clause root bounds "
              f"{np.round(roots, 3).tolist()}", flush=True)
        open_roots = [r for r in roots if r <= 0]
        steps.append({"step": step, "at s": round(time.perf_counter() - t0, 1), "unstable per layer": unstable,
                      "clauses open": len(open_roots),
                      "open roots": f"{min(open_roots):.3f}..{max(open_roots):.3f}" if open_roots else "-"})
        return roots

    report("alpha-CROWN")
    _, stats = box.milp_tightened(deadline, to_layer=args.to_layer, per_neuron=args.per_neuron,
                                     workers=args.workers)
    roots = report(f"MILP bounds of layers 1-{args.to_layer}")
    print(f"MILP statistics: {stats}", flush=True)
    for i in (int(i) for i in np.argsort(roots) if roots[i] <= 0):
        out = bab_clause(net, spec, i, box.best[:-1], deadline, solver="highs",
                         check=lambda x: confirm_counterexample(net, spec, x) is not None)
        print(f"[{time.perf_counter() - t0:6.1f} s] clause {i}: {out.status}, {out.stats['domains']} domains in "
              f"{out.stats['seconds']:.1f} s (root {out.stats['root_bound']:.3f})", flush=True)
        clauses.append({"clause": i, "root bound": round(float(out.stats["root_bound"]), 4), "status": out.status,
                        "domains": out.stats["domains"], "seconds": round(float(out.stats["seconds"]), 1)})
        if out.status != "verified":
            # a falsified clause comes with a counterexample that check() re-ran on the network
            answer = "sat" if out.status == "falsified" else "open"
            break
    else:
        answer = "unsat"
    total = time.perf_counter() - t0
    print(f"[{total:6.1f} s] {answer}", flush=True)
    if args.write:
        write_result(f"mnistfc_milp_root_{args.network}_{args.prop}",
                     "python benchmarks/mnistfc_milp_root.py " + " ".join(sys.argv[1:]), {
                         "title": f"Layer-1 MILP bounds, then branch and bound: mnist-net_{args.network} {args.prop}",
                         "notes": [f"{args.per_neuron} s per MILP at most on {args.workers} thread(s), ReLU layers "
                                   f"1..{args.to_layer}, deadline {args.deadline} s for everything (one run).",
                                   f"MILP statistics: {stats}.",
                                   f"Outcome: **{answer}** after {total:.1f} s (clauses in order of their root bound; "
                                   "the run stops at the first clause branch and bound does not prove)."],
                         "tables": [{"caption": "Bounds after each step", "rows": steps,
                                     "columns": ["step", "at s", "unstable per layer", "clauses open", "open roots"]},
                                    {"caption": "Branch and bound per clause", "rows": clauses,
                                     "columns": ["clause", "root bound", "status", "domains", "seconds"]}]})


if __name__ == "__main__":
    main()
