"""NAP robustness on mnist-net_256x4 (issue: verify): per (class, competitor) query time.

NAPs mined with delta=0.99 over the first 50,000 MNIST training images (correctly classified only); each
query proves that every input in [0, 1]^784 that follows NAP_c is not scored at least as high for class j
as for c. Target: median under 10 s per query (the NAP paper reports 2-12 minutes per Marabou query).

Run: .venv/bin/python benchmarks/nap_verify.py [--solvers cbc highs] [--classes 0 1 ...] [--timeout 60] [--no-share]
     [--bab-share 0.8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import write_result

import verify
from probe import data, nap
from probe.core.paths import data_root
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp
from verify.network import ReluNetwork
from verify.solvers import solver_versions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--solvers", nargs="+", default=["cbc", "highs"])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--delta", type=float, default=0.99)
    parser.add_argument("--budget", type=float, default=None, help="stop starting queries after this many seconds")
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=True,
                        help="share one BoxBounds (CROWN + LP tightening) across a class's competitor queries")
    parser.add_argument("--bab-share", type=float, default=None,
                        help="verify()'s bab_share: the share of each query's time for branch and bound (0: none; "
                        "default: verify's own, 0 for NAP queries)")
    args = parser.parse_args()
    net = ReluNetwork.from_onnx(data_root() / VNNCOMP_NETWORKS["mnist-256x4"])
    train = data.load_mnist("train").subset(50_000)
    naps = nap.mine(load_vnncomp("mnist-256x4"), data.make_loader(train, batch_size=1000), delta=args.delta,
                    verbose=False)
    rows, per_query = [], []
    from verify.api import nap_states
    from verify.bounds import BoxBounds
    from verify.properties import nap_robustness_spec

    lo, hi = np.zeros(net.n_inputs), np.ones(net.n_inputs)
    for solver in args.solvers:
        times, statuses, skipped, setup = [], {}, 0, []
        t0 = time.perf_counter()
        for c in args.classes:
            states = nap_states(net, naps, [c])
            shared = None
            if args.share and (args.budget is None or time.perf_counter() - t0 <= args.budget):
                ts = time.perf_counter()
                shared = BoxBounds(net, lo, hi, states)
                setup.append(time.perf_counter() - ts)
            for j in (j for j in range(10) if j != c):
                if args.budget is not None and time.perf_counter() - t0 > args.budget:
                    skipped += 1
                    continue
                r = verify.verify(net, nap_robustness_spec(lo, hi, states, c, 10, targets=[j]), solver=solver,
                                  timeout=args.timeout, attack=False, bounds=shared,
                                  bab_share=args.bab_share)
                times.append(r.timings.get("total", 0.0))
                statuses[r.status] = statuses.get(r.status, 0) + 1
                per_query.append({"solver": solver, "class": c, "competitor": j, "status": r.status,
                                  "method": r.method, "seconds": f"{r.timings.get('total', 0.0):.3f}",
                                  "binaries": r.stats.get("binaries", "-")})
                print(per_query[-1], flush=True)
        wall = time.perf_counter() - t0
        rows.append({"solver": solver, "queries run": len(times), "not run (budget)": skipped,
                     "median s": f"{statistics.median(times):.2f}", "max s": f"{max(times):.2f}",
                     "shared bounds s/class": f"{statistics.median(setup):.2f}" if setup else "-",
                     "total s": f"{wall:.1f}",
                     "statuses": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))})
        print(rows[-1], flush=True)
    tag = "_".join(args.solvers) + ("" if args.share else "_noshare") + (
        "" if args.bab_share is None else f"_bab{args.bab_share:g}")
    if sorted(args.classes) != list(range(10)):
        tag += "_classes" + "".join(str(c) for c in args.classes)
    write_result("nap_verify_256x4_" + tag, "python benchmarks/nap_verify.py " + " ".join(sys.argv[1:]), {
        "title": "NAP robustness on mnist-net_256x4 (per class x competitor query)",
        "notes": [f"NAPs: delta={args.delta}, first 50,000 MNIST training images; input domain [0, 1]^784; "
                  f"timeout {args.timeout} s per query; solver versions {solver_versions()}.",
                  ("Bounds shared per class: CROWN bounds of the class's NAP computed once per class (the "
                   "'shared bounds' column, outside the per-query times, inside 'total s'), LP tightening done by "
                   "the first query that needs it and reused by the class's other queries." if args.share else
                   "No sharing: every query computes its own bounds and LP tightening."),
                  "Timings from a shared 2-core machine (other jobs running).",
                  f"NAP sizes per class: {naps.sizes()['total']} of {naps.num_neurons()} neurons."],
        "tables": [{"caption": "Summary (target: median < 10 s)", "columns": list(rows[0]), "rows": rows},
                   {"caption": "Per query", "columns": list(per_query[0]), "rows": per_query}],
    })


if __name__ == "__main__":
    main()
