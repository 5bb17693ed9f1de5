"""Helpers shared by the command groups: naming a subject model and a data set on the command line."""

from __future__ import annotations

import argparse

from probe.core.errors import InvalidParameterError

__all__ = ["add_subject_args", "data_loader", "load_subject"]


def load_subject(args: argparse.Namespace, source: dict | None = None):
    """The model named on the command line (an ONNX file or a cached or freshly trained reference model),
    else the one recorded in ``source`` (a NAP file's subject)."""
    if not args.onnx and not args.model and source:
        args.onnx, args.model, args.seed = source.get("onnx"), source.get("model"), source.get("seed", args.seed)
    if not args.onnx and not args.model:
        raise InvalidParameterError("name the model with --onnx NET.onnx or --model NAME")
    if args.onnx:
        from probe.graph.onnx import load_onnx

        return load_onnx(args.onnx)
    from probe.zoo.reference import train_reference

    return train_reference(args.model, root=args.root, seed=args.seed, verbose=not args.quiet)


def data_loader(args: argparse.Namespace, split: str):
    """The data set named by ``--data`` (``--root``, ``--limit``) and a loader over it (``--batch-size``)."""
    from probe import data

    dataset = data.load(args.data, split, root=args.root)
    if args.limit is not None:
        dataset = dataset.subset(args.limit)
    return dataset, data.make_loader(dataset, batch_size=args.batch_size)


def add_subject_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--onnx``/``--model``, ``--data`` and the options every subject command shares."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--onnx", help="an ONNX network (e.g. mnist-net_256x4.onnx); stats: default from the file")
    src.add_argument("--model", help="a reference model: mnist-mlp, mnist-cnn, cifar10-cnn")
    p.add_argument("--data", required=True, help="mnist, cifar10, digits, eran-mnist, eran-cifar10")
    p.add_argument("--root", default=None, help="data root")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference model")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
