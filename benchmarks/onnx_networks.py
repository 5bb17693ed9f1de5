"""VNN-COMP 2021 ONNX networks imported into torch: agreement with onnxruntime and accuracy.

Per network: accuracy on ERAN's 100 test images (targets 1.00/1.00/0.99 for mnist-net_256x2/4/6 and
0.61/0.77/0.78 for cifar10_small/medium/large), max |torch - onnxruntime| over those images, accuracy on the
full 10,000-image test set, import time (median of 5).

Run: .venv/bin/python benchmarks/onnx_networks.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import write_result

from probe import data
from probe.core.paths import data_root
from probe.graph.onnx import run_reference
from probe.zoo.reference import evaluate
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp

TARGET = {"mnist-256x2": 1.00, "mnist-256x4": 1.00, "mnist-256x6": 0.99,
          "cifar10-small": 0.61, "cifar10-medium": 0.77, "cifar10-large": 0.78}


def main() -> None:
    root = data_root()
    rows = []
    for name, rel in VNNCOMP_NETWORKS.items():
        kind = "mnist" if name.startswith("mnist") else "cifar10"
        eran = data.load_eran(kind)
        x, y = eran.tensors()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            net = load_vnncomp(name)
            times.append(time.perf_counter() - t0)
        with torch.no_grad():
            ours = net(x).numpy()
        onnx_in = x.numpy().reshape(len(x), 784, 1) if kind == "mnist" else x.permute(0, 2, 3, 1).numpy()
        ref = run_reference(root / rel, onnx_in)
        test = data.load_mnist("test") if kind == "mnist" else data.load_cifar10("test")
        xt, yt = test.tensors()
        rows.append({
            "network": name,
            "ERAN-100 accuracy": f"{(ours.argmax(1) == y.numpy()).mean():.2f}",
            "target": f"{TARGET[name]:.2f}",
            "onnxruntime accuracy": f"{(ref.argmax(1) == y.numpy()).mean():.2f}",
            "max abs diff": f"{np.abs(ours - ref).max():.1e}",
            "test accuracy (10k)": f"{evaluate(net, xt, yt):.4f}",
            "ReLU layers": len(net.relu_names()),
            "import ms (median)": f"{1000 * statistics.median(times):.1f}",
        })
        print(rows[-1], flush=True)
    write_result("onnx_networks", "python benchmarks/onnx_networks.py", {
        "title": "VNN-COMP 2021 networks imported from ONNX",
        "notes": ["Inputs in [0, 1]; our module gets NCHW batches (adapted to the networks' (784,1) / NHWC inputs); "
                  "onnxruntime gets the files' own layout, one image at a time."],
        "tables": [{"columns": list(rows[0]), "rows": rows}],
    })


if __name__ == "__main__":
    main()
