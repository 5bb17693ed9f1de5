"""Train the TokFSM base transformers (GELU and ReLU) and measure their FSM metrics.

Run: .venv/bin/python benchmarks/tokfsm_base.py [--device cuda] [--repeats 1] [--copy-to DIR]

Trains through ``probe.zoo.tokfsm.pretrained`` (so the models land in the neurospec cache where every other
part of the project finds them), then measures transition accuracy (512 sampled sequences), first-transition
accuracy and next-state top-10 overlap. ``--copy-to`` also copies the cached model folders (for bringing
GPU-trained models back to a CPU machine, e.g. into ``probe/zoo/weights/``, where ``pretrained`` finds them).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from probe.core.paths import cache_dir
from probe.data.tokfsm import TokFSM
from probe.zoo.tokfsm import TokFSMTrainConfig as TrainConfig
from probe.zoo.tokfsm import evaluate, pretrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--act-fns", default="gelu,relu")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--copy-to", default=None)
    args = ap.parse_args()
    fsm = TokFSM()
    rows, notes = [], []
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    for act in args.act_fns.split(","):
        t0 = time.perf_counter()
        model = pretrained(act, device=args.device, verbose=False, use_shipped=False)
        load_or_train = time.perf_counter() - t0
        m = evaluate(model, fsm, n_samples=args.samples, seed=123, device=args.device)
        info = getattr(model, "info", {})
        rows.append({"model": f"tokfsm-{act}", "train steps": TrainConfig().steps,
                     "batch": TrainConfig().batch_size,
                     "train s": round(info.get("train_seconds", load_or_train), 1),
                     "trained on": info.get("device", args.device),
                     "transition acc": f"{100 * m.transition_accuracy:.2f}%",
                     "first-transition acc": f"{100 * m.first_transition_accuracy:.2f}%",
                     "top-10 overlap": f"{100 * m.top10_overlap:.2f}%"})
        print(rows[-1], flush=True)
        if args.copy_to:
            folder = cache_dir() / f"tokfsm-{act}-seed0-steps{TrainConfig().steps}"
            dest = Path(args.copy_to) / folder.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("model.safetensors", "config.json"):
                shutil.copy2(folder / f, dest / f)
    notes.append(f"measured on {device_name}; transition accuracy over {args.samples} sequences of 64 states "
                 "sampled at temperature 1 from BOS; target >= 95% (paper: 96.77%)")
    notes.append(f"training settings: {dataclasses.asdict(TrainConfig())}")
    write_result("tokfsm_base", " ".join(["python", *sys.argv]), {
        "title": "TokFSM base transformers (4 layers, d_model 128, 4 heads, d_mlp 512)",
        "notes": notes,
        "tables": [{"caption": "FSM metrics", "columns": list(rows[0]), "rows": rows}],
    })


if __name__ == "__main__":
    main()
