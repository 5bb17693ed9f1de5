"""The NAP paper's CIFAR-10 experiments end to end, with the cifar10 preset (``verify.experiment.PRESETS["cifar10"]``:
all 50,000 training images, correctly predicted samples only, deltas 1.0 0.99 0.95, the 10,000 test
images for coverage and precision, 100 test images for NAP-augmented robustness, 30 s per query) on the
VNN-COMP 2021 marabou-cifar10 networks (NHWC input, convolutions: ReLUs count per channel x position).

    .venv/bin/python scripts/verify_cifar10.py                                # cifar10_small, into runs/nap_cifar10
    .venv/bin/python scripts/verify_cifar10.py --model cifar10-medium --out runs/nap_cm --images 10

The run resumes where it stopped (same command). Same as ``neurospec experiment nap --dataset cifar10 ...``.
"""

from __future__ import annotations

import argparse

from verify.experiment import nap_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar10-small", help="an ONNX file or a model name (cifar10-small/medium/large, cifar10-cnn)")
    parser.add_argument("--out", default="runs/nap_cifar10")
    parser.add_argument("--images", type=int, default=None, help="radius-study images (default 100)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per query (default 30)")
    parser.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    parser.add_argument("--marabou", action="store_true", help="Marabou on the same NAP robustness queries")
    args = parser.parse_args()
    study = nap_study(args.model, "cifar10", args.out, images=args.images, timeout=args.timeout, solver=args.solver,
                      marabou=args.marabou)
    print(study.summary())
    print(f"report: {study.paths['report']}")


if __name__ == "__main__":
    main()
