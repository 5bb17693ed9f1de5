"""Branch and bound before and after the bound engine (issue 17), in one run on one machine.

For each clause (a VNN-COMP 2021 mnistfc or marabou-cifar10 network, property and unsafe clause that the
bounds leave open),
the same root bounds (BoxBounds: CROWN + alpha-CROWN) go to

* ``before``: verify/bab.py as of commit ``--before`` (default 113a188, the last commit before the engine),
  loaded from git into its own module (its defaults: batch 64, 10 Adam steps per batch from CROWN's slopes,
  intermediate bounds recomputed, BaBSR branching);
* ``after``: :func:`verify.bab.bab_clause` with its defaults (50 Adam steps at the root, at most 10 per
  batch with early stopping and the best values kept, float32 search, filtered smart branching, growing
  batches, no intermediate recomputation);
* ``after+intermediate``: the same with ``intermediate=True``.

Each run gets ``--seconds``; the table gives the status, domains bounded, domains per second, open domains
left, depth and seconds, and the ratio of domains per second (after / before) per clause. Runs alternate on
each clause, one after the other, so load affects both alike.

Run: .venv/bin/python benchmarks/bab_throughput.py [--seconds 60] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import write_result

from probe.core.paths import data_root
from verify.bab import bab_clause
from verify.bounds import BoxBounds
from verify.network import ReluNetwork
from verify.vnnlib import read_vnnlib

#: (network, property): the lowest-bound clauses of each are run (``--clauses``). The mnistfc networks are
#: mnist-net_<network>.onnx; the marabou-cifar10 property is the category's one ``unsat`` instance (a
#: convolutional network: its first two layers go through the engine's sparse products).
CASES = [("256x6", "prop_5_0.03"), ("256x6", "prop_6_0.05"), ("256x4", "prop_0_0.03"), ("256x4", "prop_5_0.03"),
         ("cifar10_small", "networkcifar10_small_index9409_eps0.012_target0_orig9")]


def _old_bab(commit: str):
    """verify/bab.py of ``commit`` as a module of its own."""
    repo = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{commit}:verify/bab.py"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout
    path = Path(tempfile.mkdtemp()) / "bab_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("bab_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bab_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--before", default="113a188")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clauses", type=int, default=2, help="lowest-bound clauses per property")
    args = parser.parse_args()
    old = _old_bab(args.before)
    rows = []
    for net_name, prop in CASES:
        cifar = net_name.startswith("cifar10")
        root = data_root() / "vnncomp2021" / ("marabou-cifar10" if cifar else "mnistfc")
        net = ReluNetwork.from_onnx(root / (f"{net_name}.onnx" if cifar else f"mnist-net_{net_name}.onnx"))
        spec = read_vnnlib(root / f"{prop}.vnnlib", n_inputs=net.n_inputs, n_outputs=net.n_outputs)
        box = BoxBounds(net, spec.lower, spec.upper)
        box.optimised()
        lows = [float(np.max(box.spec_lower(a) - b)) for a, b in spec.unsafe]
        for i in np.argsort(lows)[: args.clauses]:
            runs = [("before", old.bab_clause, {}),
                    ("after", bab_clause, {"device": args.device}),
                    ("after+intermediate", bab_clause, {"device": args.device, "intermediate": True})]
            for name, run, options in runs:
                t0 = time.perf_counter()
                out = run(net, spec, int(i), box.best[:-1], time.perf_counter() + args.seconds, **options)
                seconds = time.perf_counter() - t0
                s = out.stats
                rows.append({"network": net_name, "property": prop, "clause": int(i),
                             "clause bound": round(lows[int(i)], 4), "bab": name, "status": out.status,
                             "domains": s["domains"], "domains/s": round(s["domains"] / seconds, 1),
                             "open": s.get("open", 0), "max depth": s["max_depth"], "seconds": round(seconds, 2)})
                print(rows[-1], flush=True)
    ratios = []
    for r in rows:
        if r["bab"] == "after":
            before = next(b for b in rows if b["bab"] == "before" and (b["network"], b["property"], b["clause"])
                          == (r["network"], r["property"], r["clause"]))
            ratios.append(r["domains/s"] / max(before["domains/s"], 1e-9))
    summary = [{"network": n, "median domains/s before": statistics.median(
                    [r["domains/s"] for r in rows if r["network"] == n and r["bab"] == "before"]),
                "median domains/s after": statistics.median(
                    [r["domains/s"] for r in rows if r["network"] == n and r["bab"] == "after"]),
                "median ratio": round(statistics.median(
                    [q for q, r in zip(ratios, [r for r in rows if r["bab"] == "after"], strict=True)
                     if r["network"] == n]), 1),
                "decided before": sum(r["status"] != "timeout" for r in rows if r["network"] == n and r["bab"] == "before"),
                "decided after": sum(r["status"] != "timeout" for r in rows if r["network"] == n and r["bab"] == "after"),
                "decided after+intermediate": sum(r["status"] != "timeout" for r in rows
                                                  if r["network"] == n and r["bab"] == "after+intermediate")}
               for n in sorted({r["network"] for r in rows})]
    write_result("bab_throughput", "python benchmarks/bab_throughput.py " + " ".join(sys.argv[1:]), {
        "title": "Branch and bound throughput before and after the bound engine (one run, same root bounds)",
        "notes": [f"Each run {args.seconds:.0f} s on one clause; before = verify/bab.py of commit {args.before} "
                  f"(loaded from git), after = this commit's defaults, on device {args.device}.",
                  "Domains per second alone is not the goal: a tighter domain needs fewer; the status and the "
                  "open domains left say how far each got."],
        "tables": [{"caption": "Per clause", "columns": list(rows[0]), "rows": rows},
                   {"caption": "Per network (median over its clauses)", "columns": list(summary[0]),
                    "rows": summary}],
    })


if __name__ == "__main__":
    main()
