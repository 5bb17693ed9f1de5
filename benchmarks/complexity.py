"""Feature complexity (iterative feature merging) figures (issue 7: probe.complexity).

Parts (``--parts``, default all):

dup     Exactly duplicated features planted in real networks (mnist-net_256x2: no BatchNorm; cifar10-vgg:
        BatchNorm) and in a tiny conv net: relative change of the logits ||y' - y|| / ||y|| on test images
        after merging at beta=1e-6 with the ``exact`` and the ``paper`` rule.
layers  Feature complexity per layer of every subject (mnist-mlp, mnist-cnn, cifar10-vgg, mnist-net_256x2/4/6)
        at beta in {0.05, 0.1, 0.15, 0.2}.
sweep   The beta sweep (no fine-tuning, max_ratio=1) on each subject: test accuracy, parameters and FLOPs kept,
        feature complexity, merge time; the time of the whole sweep.
speed   Median of 3 `measure` calls (beta=0.5, max_ratio=0.5) with the incremental distance updates versus
        recomputing every group's distance matrix after each merge (same merges, checked).
cap     The max_ratio sweep at beta=0.5 (every layer merges its closest pairs until the cap): test accuracy,
        parameters and FLOPs removed, no fine-tuning.

Run: .venv/bin/python benchmarks/complexity.py [--parts dup layers sweep cap] [--subjects ...] [--cifar-limit N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result
from torch import nn

from probe import complexity, data
from probe.zoo.reference import load_reference
from probe.zoo.vnncomp import load_vnncomp

SUBJECTS = ["mnist-mlp", "mnist-cnn", "cifar10-vgg", "mnist-256x2", "mnist-256x4", "mnist-256x6"]
LAYER_BETAS = [0.05, 0.1, 0.15, 0.2]
SWEEP_BETAS = [0.02, 0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3]
CIFAR_BETAS = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2]  # collapses earlier than MNIST
CAP_BETA = 0.5
CAP_RATIOS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
COMMAND = "nice -n 10 .venv/bin/python benchmarks/complexity.py"


def _subject(name: str) -> nn.Module:
    if name.startswith("mnist-256"):
        return load_vnncomp(name)
    return load_reference(name)


def _dataset(name: str) -> str:
    return "cifar10" if name.startswith("cifar10") else "mnist"


def _test(name: str, limit: int | None):
    ds = (data.load_cifar10 if _dataset(name) == "cifar10" else data.load_mnist)("test")
    return ds.subset(limit) if limit else ds


def _plant(model: nn.Module, producer: str, bn: str | None, consumer: str, k: int) -> nn.Module:
    """Copy features 0..k-1 of ``producer`` onto k..2k-1; the copies share the outgoing weight equally."""
    net = copy.deepcopy(model).eval()
    mods = dict(net.named_modules())
    with torch.no_grad():
        p, c = mods[producer], mods[consumer]
        p.weight[k : 2 * k] = p.weight[:k]
        if p.bias is not None:
            p.bias[k : 2 * k] = p.bias[:k]
        if bn is not None:
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(mods[bn], key)[k : 2 * k] = getattr(mods[bn], key)[:k]
        c.weight[:, :k] /= 2
        c.weight[:, k : 2 * k] = c.weight[:, :k]
    return net


def _tiny_bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2)
        net[1].bias.uniform_(-0.5, 0.5)
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


def part_dup(args) -> None:
    cases = [("mnist-256x2 (no BatchNorm)", lambda: load_vnncomp("mnist-256x2"), "gemm_0", None, "gemm_1", 64,
              lambda: _test("mnist-256x2", 1000).tensors()[0], None),
             ("tiny conv net (BatchNorm)", _tiny_bn_cnn, "0", "1", "4", 4,
              lambda: torch.rand(256, 3, 8, 8), (3, 8, 8))]
    if "cifar10-vgg" in args.subjects:
        cases.append(("cifar10-vgg (BatchNorm), conv '12'", lambda: load_reference("cifar10-vgg"), "12", "13", "15",
                      32, lambda: _test("cifar10-vgg", 1000).tensors()[0], None))
    rows = []
    for label, make, producer, bn, consumer, k, inputs, shape in cases:
        net = _plant(make(), producer, bn, consumer, k)
        x = inputs()
        with torch.no_grad():
            y = net(x)
        for rule in ("exact", "paper"):
            rep = complexity.measure(net, beta=1e-6, rule=rule, input_shape=shape)
            g = next(g for g in rep.groups if producer in g.producers)
            with torch.no_grad():
                y2 = rep.merged_model(x)
            planted = sum(1 for c in g.merged_groups if any(i < k and i + k in c for i in c))
            rows.append({"network": label, "rule": rule, "planted pairs": k, "planted pairs merged": planted,
                         "features merged away (layer)": g.width - g.complexity,
                         "relative logit change": f"{float((y2 - y).norm() / y.norm()):.2e}",
                         "max abs change": f"{float((y2 - y).abs().max()):.2e}",
                         "same argmax": f"{float((y2.argmax(1) == y.argmax(1)).float().mean()):.4f}",
                         "inputs": len(x)})
            print(rows[-1], flush=True)
    write_result("complexity_duplicates", f"{COMMAND} --parts dup", {
        "title": "Feature merging on exactly duplicated features: exact versus paper rule",
        "notes": ["Features 0..k-1 of a layer are copied onto k..2k-1 (weights, bias, BatchNorm weight/bias/"
                  "statistics) and the consumer's columns of both copies are set to half the original, so the "
                  "network's function is unchanged and each copy pair is at distance 0; merging at beta=1e-6.",
                  "Target: the exact rule changes outputs by <= 1e-5 relative. The paper rule sums BatchNorm "
                  "statistics, which mis-scales the normalised value by sqrt(2) for a merged pair."],
        "tables": [{"caption": "relative change of the logits after merging", "columns": list(rows[0]),
                    "rows": rows}],
    })


def part_layers(args) -> None:
    rows = []
    for name in args.subjects:
        model = _subject(name)
        reps = {b: complexity.measure(model, beta=b) for b in LAYER_BETAS}
        first = reps[LAYER_BETAS[0]]
        for gi, g in enumerate(first.groups):
            row = {"subject": name, "layer": g.name, "width": g.width}
            for b, rep in reps.items():
                row[f"complexity b={b:g}"] = rep.groups[gi].complexity
            rows.append(row)
        print(name, {b: r.complexity for b, r in reps.items()}, flush=True)
    name = "complexity_layers" if len(args.subjects) > 1 else f"complexity_layers_{args.subjects[0]}"
    write_result(name, f"{COMMAND} --parts layers --subjects {' '.join(args.subjects)}", {
        "title": "Feature complexity per layer (iterative feature merging, exact rule)",
        "notes": ["Layer = the feature group of a Linear/Conv2d's outputs, named by that module; output layer "
                  "excluded (never merged). Complexity = features left after merging at the given beta.",
                  "mnist-256xN are the VNN-COMP 2021 ONNX networks loaded with probe.graph.onnx.load_vnncomp."],
        "tables": [{"caption": "width and feature complexity per layer", "columns": list(rows[0]), "rows": rows}],
    })


def part_sweep(args) -> None:
    tables, notes = [], []
    settings = [(n, 1.0) for n in args.subjects]
    summary = []
    for name, ratio in settings:
        model = _subject(name)
        limit = args.cifar_limit if _dataset(name) == "cifar10" else None
        ds = _test(name, limit)
        loader = data.make_loader(ds, batch_size=1000)
        t0 = time.perf_counter()
        betas = CIFAR_BETAS if _dataset(name) == "cifar10" else SWEEP_BETAS
        res = complexity.sweep(model, betas, loader, max_ratio=ratio)
        total = time.perf_counter() - t0
        merge_s = sum(p.seconds for p in res.points)
        rows = []
        for p in res.points:
            rows.append({"beta": p.beta, "accuracy": f"{p.accuracy:.4f}",
                         "drop (points)": f"{100 * (res.baseline_accuracy - p.accuracy):.2f}",
                         "params removed": f"{100 * (1 - p.params / res.params_before):.1f}%",
                         "FLOPs removed": f"{100 * (1 - p.flops / res.flops_before):.1f}%",
                         "complexity per layer": " ".join(str(v) for v in p.complexity.values()),
                         "merge s": f"{p.seconds:.2f}"})
        best = res.best_within(0.01)
        summary.append({"subject": name, "max_ratio": ratio, "test images": res.n_samples,
                        "baseline accuracy": f"{res.baseline_accuracy:.4f}",
                        "widths": " ".join(str(v) for v in res.widths.values()),
                        "best params removed at <= 1 pt drop": (f"{100 * (1 - best.params / res.params_before):.1f}% "
                                                                f"(beta {best.beta:g})") if best else "none",
                        "merge s (all betas)": f"{merge_s:.1f}", "sweep s (with evaluation)": f"{total:.1f}"})
        print(summary[-1], flush=True)
        tables.append({"caption": f"{name}, max_ratio={ratio:g}: beta sweep, no fine-tuning (baseline accuracy "
                                  f"{res.baseline_accuracy:.4f} on {res.n_samples} test images)",
                       "columns": list(rows[0]), "rows": rows})
    notes.append(f"Betas {SWEEP_BETAS} (cifar10: {CIFAR_BETAS}); exact rule; accuracy on the test split (cifar10: first "
                 f"{args.cifar_limit or 10000} images); no fine-tuning. Merge s: merging + building the merged "
                 f"model; sweep s adds the accuracy evaluations. Load average at start: {os.getloadavg()[0]:.1f} "
                 "(2 cores shared with other jobs, so times are upper bounds).")
    name = "complexity_sweep" if len(args.subjects) > 1 else f"complexity_sweep_{args.subjects[0]}"
    write_result(name, f"{COMMAND} --parts sweep --subjects {' '.join(args.subjects)}"
                 + (f" --cifar-limit {args.cifar_limit}" if args.cifar_limit else ""), {
        "title": "Beta sweep of iterative feature merging: accuracy versus parameters removed (no fine-tuning)",
        "notes": notes,
        "tables": [{"caption": "summary", "columns": list(summary[0]), "rows": summary}, *tables],
    })


@torch.no_grad()
def _accuracy(model: nn.Module, loader) -> float:
    correct = total = 0
    for xb, yb in loader:
        correct += int((model(xb).argmax(1) == yb).sum())
        total += len(yb)
    return correct / total


def part_cap(args) -> None:
    rows = []
    for name in args.subjects:
        model = _subject(name)
        limit = args.cifar_limit if _dataset(name) == "cifar10" else None
        ds = _test(name, limit)
        loader = data.make_loader(ds, batch_size=1000)
        base = _accuracy(model.eval(), loader)
        for ratio in CAP_RATIOS:
            rep = complexity.measure(model, beta=CAP_BETA, max_ratio=ratio)
            acc = _accuracy(rep.merged_model, loader)
            rows.append({"subject": name, "max_ratio": ratio, "baseline accuracy": f"{base:.4f}",
                         "accuracy": f"{acc:.4f}", "drop (points)": f"{100 * (base - acc):.2f}",
                         "params removed": f"{100 * rep.params_removed:.1f}%",
                         "FLOPs removed": f"{100 * rep.flops_removed:.1f}%",
                         "complexity per layer": " ".join(str(v) for v in rep.complexity.values()),
                         "merge s": f"{rep.seconds:.2f}", "test images": len(ds)})
            print(rows[-1], flush=True)
    name = "complexity_cap" if len(args.subjects) > 1 else f"complexity_cap_{args.subjects[0]}"
    write_result(name, f"{COMMAND} --parts cap --subjects {' '.join(args.subjects)}"
                 + (f" --cifar-limit {args.cifar_limit}" if args.cifar_limit else ""), {
        "title": f"Iterative feature merging capped by max_ratio (beta={CAP_BETA}, exact rule, no fine-tuning)",
        "notes": ["At beta=0.5 every layer keeps merging its closest pair until max_ratio of its features are "
                  "merged away, so the cap sets the width and the distance decides which features merge."],
        "tables": [{"caption": "accuracy and size versus max_ratio", "columns": list(rows[0]), "rows": rows}],
    })


def _median_measure(model: nn.Module, repeats: int = 3) -> tuple[float, dict]:
    times, rep = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        rep = complexity.measure(model, beta=0.5, max_ratio=0.5)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rep.complexity


def part_speed(args) -> None:
    import probe.complexity.merge as merge_mod

    rows = []
    original = merge_mod.Merger.merge

    def full_recompute(self, g, i, j):
        original(self, g, i, j)
        for h in self.mergeable:
            self.D[h] = merge_mod.pairwise_sq(self.vectors(h))

    for name in args.subjects:
        model = _subject(name)
        fast, c_fast = _median_measure(model)
        merge_mod.Merger.merge = full_recompute
        try:
            slow, c_slow = _median_measure(model)
        finally:
            merge_mod.Merger.merge = original
        rows.append({"subject": name, "incremental s": f"{fast:.2f}", "full recompute s": f"{slow:.2f}",
                     "speed-up": f"{slow / fast:.1f}x", "same result": c_fast == c_slow,
                     "complexity": " ".join(str(v) for v in c_fast.values())})
        print(rows[-1], flush=True)
    write_result("complexity_speed", f"{COMMAND} --parts speed --subjects {' '.join(args.subjects)}", {
        "title": "Merging speed: incremental distance updates versus full recomputation",
        "notes": ["Whole measure() call (graph analysis, merging, building the merged model, FLOP count), "
                  "median of 3, beta=0.5, max_ratio=0.5; machine shared with other jobs."],
        "tables": [{"caption": "seconds per measure()", "columns": list(rows[0]), "rows": rows}],
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", nargs="+", default=["dup", "layers", "sweep", "cap"])
    parser.add_argument("--subjects", nargs="+", default=SUBJECTS)
    parser.add_argument("--cifar-limit", type=int, default=None, help="evaluate cifar10 on the first N test images")
    args = parser.parse_args()
    torch.manual_seed(0)
    for part in args.parts:
        {"dup": part_dup, "layers": part_layers, "sweep": part_sweep, "cap": part_cap,
         "speed": part_speed}[part](args)


if __name__ == "__main__":
    main()
