"""The NAP paper's MNIST experiments end to end, with its settings (``verify.experiment.PRESETS["mnist"]``:
the first 50,000 training images, correctly predicted samples only, deltas 1.0 0.99 0.95, the 10,000 test
images for coverage and precision, 100 test images for NAP-augmented robustness, 30 s per query).

    .venv/bin/python scripts/verify_mnist.py                                  # mnist-net_256x4, into runs/nap_mnist
    .venv/bin/python scripts/verify_mnist.py --model mnist-256x2 --out runs/nap_2x --images 10 --marabou

The run resumes where it stopped (same command). Same as ``neurospec experiment nap --dataset mnist ...``.
"""

from __future__ import annotations

import argparse

from verify.experiment import nap_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-256x4", help="an ONNX file or a model name (mnist-256x2/4/6, mnist-mlp)")
    parser.add_argument("--out", default="runs/nap_mnist")
    parser.add_argument("--images", type=int, default=None, help="radius-study images (default 100)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per query (default 30)")
    parser.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    parser.add_argument("--marabou", action="store_true", help="Marabou on the same NAP robustness queries")
    args = parser.parse_args()
    study = nap_study(args.model, "mnist", args.out, images=args.images, timeout=args.timeout, solver=args.solver,
                      marabou=args.marabou)
    print(study.summary())
    print(f"report: {study.paths['report']}")


if __name__ == "__main__":
    main()
