"""NAP figures on the VNN-COMP 2021 MNIST networks (issue: probe.nap).

1. For mnist-net_256x4 and 256x6: mine over the first 50,000 MNIST training images (only correctly predicted
   ones count, as in the paper), delta in {1.0, 0.99, 0.95, 0.85}: NAP size per class, coverage and precision
   on the 10,000 test images.
2. Mining overhead: mining all 60,000 training images through 256x6 versus plain inference over the same
   loader (same batch size, same process), interleaved, median of --repeats runs.
3. Peak memory of mining for 10k versus 60k samples, each in a fresh process (RSS growth during mining).

Run: .venv/bin/python benchmarks/nap_mnist.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result

from probe import data, nap
from probe.zoo.vnncomp import load_vnncomp

DELTAS = [1.0, 0.99, 0.95, 0.85]


def figures_per_delta(nets: list[str], n_train: int) -> tuple[list[dict], dict]:
    train = data.load_mnist("train").subset(n_train)
    test = data.load_mnist("test")
    rows, raw = [], {}
    for name in nets:
        net = load_vnncomp(name)
        naps = nap.mine(net, data.make_loader(train, batch_size=1000), delta=1.0, verbose=False)
        stats = naps.sweep(net, data.make_loader(test, batch_size=1000), DELTAS, verbose=False)
        raw[name] = {"n_samples": naps.n_samples.tolist(), "neurons": naps.num_neurons(), "deltas": {}}
        for st in stats:
            sizes = naps.with_delta(st.delta).sizes()
            raw[name]["deltas"][str(st.delta)] = {**st.to_dict(), **sizes}
            for c in range(naps.num_classes):
                rows.append({
                    "network": name, "delta": st.delta, "class": c,
                    "NAP size": sizes["total"][c], "active": sizes["active"][c], "inactive": sizes["inactive"][c],
                    "coverage": f"{st.coverage[c]:.4f}", "precision": f"{st.precision[c]:.4f}",
                })
    return rows, raw


def overhead(repeats: int, batch_size: int) -> dict:
    net = load_vnncomp("mnist-256x6")
    loader = data.make_loader(data.load_mnist("train"), batch_size=batch_size)

    def infer() -> None:
        with torch.no_grad():
            for x, _ in loader:
                net(x)

    infer()  # warm-up
    nap.mine(net, loader, verbose=False)
    t_inf, t_mine, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        infer()
        t1 = time.perf_counter()
        nap.mine(net, loader, verbose=False)
        t2 = time.perf_counter()
        t_inf.append(t1 - t0)
        t_mine.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return {"batch_size": batch_size, "inference_s": statistics.median(t_inf), "mining_s": statistics.median(t_mine),
            "ratio_median": statistics.median(ratios), "ratios": ratios}


def _memory_child(n: int) -> None:
    train = data.load_mnist("train").subset(n)
    net = load_vnncomp("mnist-256x6")
    loader = data.make_loader(train, batch_size=1000)
    with torch.no_grad():
        net(next(iter(loader))[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nap.mine(net, loader, verbose=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_rss_before_mb": before / 1024, "peak_rss_after_mb": after / 1024}))


def memory() -> list[dict]:
    out = []
    for n in (10_000, 60_000):
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        rec["growth_mb"] = rec["peak_rss_after_mb"] - rec["peak_rss_before_mb"]
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    rows, raw = figures_per_delta(["mnist-256x4", "mnist-256x6"], args.n_train)
    over = [overhead(args.repeats, bs) for bs in (256, 1000, 4096)]
    mem = memory()
    summary = []
    for name, r in raw.items():
        for d, v in r["deltas"].items():
            st = nap.NAPStats(float(d), v["n_class"], v["n_follow"], v["n_follow_and_class"])
            summary.append({"network": name, "delta": d, "mean NAP size": round(sum(v["total"]) / 10, 1),
                            "neurons": r["neurons"], "mean coverage": f"{st.mean_coverage():.4f}",
                            "mean precision": f"{st.mean_precision():.4f}"})
    write_result("nap_mnist", "python benchmarks/nap_mnist.py " + " ".join(sys.argv[1:]), {
        "title": "probe.nap on VNN-COMP 2021 MNIST networks",
        "notes": [
            f"NAPs mined over the first {args.n_train} MNIST training images (correctly predicted only), "
            "coverage/precision on the 10,000 test images. Coverage = share of class-c test images that follow "
            "NAP_c (the paper's recall); precision = share of images following NAP_c that are labelled c.",
            "Overhead: full 60,000-image train set through mnist-net_256x6, plain inference versus mine() over "
            f"the same loader in the same process, interleaved, median of {args.repeats} runs, verbose=False.",
            "Memory: each size in a fresh process; growth = peak RSS after mining minus peak RSS before it "
            "(the data set itself is loaded before).",
            "Per-class figures for every delta: benchmarks/results/nap_mnist.json (raw).",
        ],
        "raw": raw,
        "tables": [
            {"caption": "Summary (means over the 10 classes)", "columns": list(summary[0]), "rows": summary},
            {"caption": "Mining overhead (target <= 1.15x)",
             "columns": ["batch_size", "inference_s", "mining_s", "ratio_median"],
             "rows": [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in o.items()} for o in over]},
            {"caption": "Peak memory of mining (MB)",
             "columns": ["n", "peak_rss_before_mb", "peak_rss_after_mb", "growth_mb"],
             "rows": [{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in m.items()} for m in mem]},
            {"caption": "Per class", "columns": list(rows[0]), "rows": rows},
        ],
    })


if __name__ == "__main__":
    main()
