"""Emergent experts in every layer of SmolLM2-135M at once: next-token loss and accuracy with only 25% / 50%
of the experts of one layer, or of all 30 layers, active (``probe.moe.detect`` on the gated SiLU MLPs,
64 experts of 24 neurons, the parameter-free ``avg_k`` router), activation-clustered partitions against
random ones. The corpus and settings are those of ``benchmarks/lm_smollm2.py``.

Run (about 10 minutes on 2 busy CPU cores, one torch thread):
    .venv/bin/python benchmarks/lm_smollm2_experts.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result

from probe import moe, zoo
from probe.data.lmtext import build_corpus

WINDOW = 43


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one-layer", type=int, default=15)
    ap.add_argument("--fit-tokens", type=int, default=2048, help="token rows per layer the partitions are fit on")
    ap.add_argument("--eval-texts", type=int, default=32)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = zoo.load("smollm2-135m")
    train, ev = build_corpus(model, n_samples=4, max_new_tokens=40).split(0.25)
    xt, _ = train.windows(WINDOW)
    xe, _ = ev.windows(WINDOW)
    fit = [xt[i:i + 16] for i in range(0, len(xt), 16)]
    test = [xe[i:i + 16] for i in range(0, min(len(xe), args.eval_texts), 16)]
    n_layers = int(model.cfg.n_layers)
    rows, notes = [], []
    for name, layers in ((f"layer {args.one_layer}", [args.one_layer]), (f"all {n_layers} layers", list(range(n_layers)))):
        t = time.perf_counter()
        rep = moe.detect(model, fit, layers=layers, n_experts=64, method=["activations", "random"],
                         routers=("avg_k",), fractions=(0.25, 0.5), eval_loader=test, max_tokens=args.fit_tokens,
                         n_random=1, verbose=False)
        secs = time.perf_counter() - t
        dense = rep.task["dense"]
        for meth in ("activations", "random"):
            row = {"experts restricted in": name, "partition": meth,
                   "dense loss / accuracy": f"{dense['loss']:.3f} / {dense['accuracy']:.3f}"}
            for f, v in zip(rep.task["fractions"], rep.task["curves"][meth]["avg_k"], strict=True):
                row[f"{int(f * 100)}% of experts: loss / accuracy"] = f"{v['loss']:.3f} / {v['accuracy']:.3f}"
            rows.append(row)
        gains = [rep.gain(layer, "activations") for layer in rep.layers]
        notes.append(f"{name}: detect() {secs:.0f} s; coverage gain of activation clustering over random at the top 25% "
                     f"of experts: mean {sum(gains) / len(gains):+.1f} points over {len(gains)} layer(s) "
                     f"(min {min(gains):+.1f}, max {max(gains):+.1f})")
        print(f"[{time.perf_counter() - t0:6.0f} s] {name}: {rows[-2:]}", flush=True)
    notes.append(f"{sum(t.numel() for t in test)} held-out tokens; partitions fit on {args.fit_tokens} token rows per "
                 "layer of the training texts; avg_k router; random: one random balanced partition per layer")
    total = time.perf_counter() - t0
    if not args.no_write:
        write_result("lm_smollm2_experts", "python benchmarks/lm_smollm2_experts.py " + " ".join(sys.argv[1:]), {
            "title": "SmolLM2-135M: emergent experts in one layer and in every layer at once",
            "notes": notes, "tables": [{"caption": "Next-token loss and accuracy on held-out text with some experts "
                                                   "active (avg_k router)", "columns": list(rows[0]), "rows": rows}],
            "settings": vars(args), "seconds": round(total, 1)})


if __name__ == "__main__":
    main()
