"""The NAP study (``verify.experiment.nap_study``, ``neurospec experiment nap``) on the VNN-COMP networks:
NAP robustness per (class, competitor) with neurospec and, with ``--marabou``, Marabou on the same queries
(same timeout, one after the other); non-ambiguity; NAP-augmented robustness radii; coverage and precision.

The study resumes in ``--out``, so a long study can be split into runs of a few classes each (``--classes``),
each under the machine's time budget; every run rewrites the result file from all queries finished so far.

Run:
    .venv/bin/python benchmarks/nap_study.py --model mnist-256x4 --deltas 0.99 --images 0 --marabou --classes 0 1 2 3
    .venv/bin/python benchmarks/nap_study.py --model mnist-256x2 --deltas 0.99 --images 5 --timeout 10 --tag radius
    .venv/bin/python benchmarks/nap_study.py --model cifar10-small --dataset cifar10 --deltas 0.99 --images 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from verify.experiment import nap_study


def _rows(table) -> list[dict]:
    out = []
    for row in table:
        out.append({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mnist-256x4")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    parser.add_argument("--deltas", nargs="+", type=float, default=[0.99])
    parser.add_argument("--train-limit", type=int, default=50_000)
    parser.add_argument("--classes", nargs="+", type=int, default=None)
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    parser.add_argument("--marabou", action="store_true")
    parser.add_argument("--no-ambiguity", action="store_true")
    parser.add_argument("--eps-max", type=float, default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--note", action="append", default=[], help="a note for the result file (repeatable)")
    parser.add_argument("--out", default=None, help="results folder (default /tmp/neurospec-runs/nap_study_<model>_<tag>)")
    args = parser.parse_args()
    name = f"nap_study_{args.model}{'_' + args.tag if args.tag else ''}"
    out = Path(args.out or f"/tmp/neurospec-runs/{name}")
    t0 = time.perf_counter()
    study = nap_study(args.model, args.dataset, out, deltas=args.deltas, train_limit=args.train_limit,
                      classes=args.classes, images=args.images, timeout=args.timeout, solver=args.solver,
                      marabou=args.marabou, ambiguity=not args.no_ambiguity, eps_max=args.eps_max, verbose=False)
    wall = time.perf_counter() - t0
    print(study.summary())
    log = out / "benchmark_runs.json"
    runs = json.loads(log.read_text()) if log.exists() else []
    runs.append({"command": " ".join(sys.argv[1:]), "wall_s": round(wall, 1)})
    log.write_text(json.dumps(runs, indent=1))
    done = sorted({q["class"] for q in study.select("robustness")})
    query_time = sum(q["seconds"] for q in study.queries)
    notes = [f"{study.settings['network']}; NAPs mined on {study.settings['train_samples']} {args.dataset} training "
             f"images (correctly predicted only), deltas {args.deltas}; input domain [0, 1]^n; {args.solver}, "
             f"timeout {args.timeout} s per query (Marabou: the same, {study.settings.get('marabou_version', '')}).",
             f"Classes with finished NAP robustness queries: {done}. "
             + ("The study resumes in its folder, so the queries were run in several invocations of this script "
                "(one per group of classes); each invocation rewrote this file from every query finished so far."
                if len(runs) > 1 else "All queries were run in one invocation of this script."),
             "Wall time of each invocation (mining, statistics, queries, report): "
             + "; ".join(f"`{r['command']}` {r['wall_s']:.0f} s" for r in runs)
             + f". Sum of all query times: {query_time:.0f} s.",
             "Machine: 2 CPU cores shared with other jobs: times are upper bounds.", *args.note]
    tables = [{"caption": "NAP robustness per delta (decided = verified + falsified)",
               "columns": list(study.robustness_summary()[0]), "rows": _rows(study.robustness_summary())},
              {"caption": "NAP robustness per class", "columns": list(study.robustness_table()[0]),
               "rows": _rows(study.robustness_table())}]
    if args.marabou and study.marabou_table():
        tables.append({"caption": "neurospec vs Marabou on the same queries", "columns": list(study.marabou_table()[0]),
                       "rows": _rows(study.marabou_table())})
        tables.append({"caption": "Marabou per class", "columns": list(study.robustness_table("marabou")[0]),
                       "rows": _rows(study.robustness_table("marabou"))})
    if study.select("ambiguity"):
        tables.append({"caption": "Non-ambiguity", "columns": list(study.ambiguity_table()[0]),
                       "rows": _rows(study.ambiguity_table())})
    tables.append({"caption": "Coverage and precision (test set)", "columns": list(study.coverage_summary()[0]),
                   "rows": _rows(study.coverage_summary())})
    if study.radii:
        rs = study.radius_summary()
        tables.append({"caption": f"NAP-augmented robustness over {rs['images']} test images (radius search: doubling "
                                  f"from {study.settings['eps_start']:.4g} up to {study.settings['eps_max']}, then "
                                  f"{study.settings['refine']} bisection steps)",
                       "columns": list(rs), "rows": _rows([rs])})
        tables.append({"caption": "Per image", "columns": list(study.radius_table().columns),
                       "rows": _rows(study.radius_table())})
    cmd = "python benchmarks/nap_study.py " + " ".join(sys.argv[1:])
    write_result(name, cmd, {"title": f"NAP study: {args.model} on {args.dataset} ({name})", "notes": notes,
                             "tables": tables})


if __name__ == "__main__":
    main()
