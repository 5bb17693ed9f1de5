"""Helpers shared by the command groups: naming a subject model and a data set on the command line."""

from __future__ import annotations

import argparse

from probe.core.errors import InvalidParameterError

__all__ = ["add_subject_args", "check_subject_args", "data_loader", "load_subject"]


def check_subject_args(args: argparse.Namespace) -> None:
    """Check the subject options before anything is loaded or trained: the reference model's name, that the
    ONNX file exists, the data set's name, ``--batch-size`` and ``--limit``."""
    from pathlib import Path

    from probe.core.errors import ModelError, OnnxFileNotFoundError
    from probe.core.validate import check_choice, check_int
    from probe.data import DATASET_NAMES
    from probe.zoo import REFERENCE_MODELS

    if getattr(args, "model", None) and args.model not in REFERENCE_MODELS:
        raise ModelError(f"unknown reference model {args.model!r}; choose one of {sorted(REFERENCE_MODELS)}")
    if getattr(args, "onnx", None) and not Path(args.onnx).is_file():
        raise OnnxFileNotFoundError(f"ONNX file {args.onnx!r} does not exist")
    if getattr(args, "data", None) is not None:
        check_choice("--data", args.data, DATASET_NAMES)
    if getattr(args, "batch_size", None) is not None:
        check_int("--batch-size", args.batch_size, 1)
    if getattr(args, "limit", None) is not None:
        check_int("--limit", args.limit, 1)


def load_subject(args: argparse.Namespace, source: dict | None = None):
    """The model named on the command line (an ONNX file or a cached or freshly trained reference model),
    else the one recorded in ``source`` (a NAP file's subject). The options are checked first."""
    if not args.onnx and not args.model and source:
        args.onnx, args.model, args.seed = source.get("onnx"), source.get("model"), source.get("seed", args.seed)
    if not args.onnx and not args.model:
        raise InvalidParameterError("name the model with --onnx NET.onnx or --model NAME")
    check_subject_args(args)
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
