"""``neurospec train NAME``: train (or load from the cache) a reference model of :mod:`probe.zoo`."""

from __future__ import annotations

import argparse


def _cmd_train(args: argparse.Namespace) -> int:
    from probe.zoo.reference import train_reference

    model = train_reference(args.name, root=args.root, seed=args.seed, force=args.force, device=args.device)
    info = model.reference_info
    print(
        f"{info['name']} (seed {info['seed']}): test accuracy {info['test_accuracy']:.4f}, "
        f"trained in {info['train_seconds']:.1f} s on {info['device']}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec train`` on the ``neurospec`` sub-parser collection."""
    train = sub.add_parser("train", help="train (or load from the cache) a reference model")
    train.add_argument("name", help="mnist-mlp, mnist-cnn, cifar10-cnn or cifar10-vgg")
    train.add_argument("--root", default=None, help="data root")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--force", action="store_true", help="retrain even if cached")
    train.set_defaults(func=_cmd_train)
