"""``neurospec experiment nap``: the NAP paper's experiments end to end (:func:`verify.experiment.nap_study`).

Example:
    neurospec experiment nap --dataset mnist --onnx ../shared/data/vnncomp2021/mnistfc/mnist-net_256x4.onnx --out runs/nap
    neurospec experiment nap --dataset mnist --model mnist-256x2 --out runs/nap_2x --train-limit 2000 --images 5
    neurospec experiment nap --dataset cifar10 --model cifar10-small --out runs/nap_cifar --deltas 0.99 --marabou

Every option is checked before anything is loaded; the results folder holds ``study.json``, ``summary.md``,
``report.html``, ``figures/``, ``naps.json`` and ``queries.jsonl``. Interrupted (Ctrl-C, SIGTERM), the command
exits with 130/143 and one line; the same command resumes without redoing a finished query.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.core.errors import InvalidParameterError, OnnxFileNotFoundError

__all__ = ["add_commands"]


def _cmd_experiment_nap(args: argparse.Namespace) -> int:
    from verify.experiment import nap_study

    if args.onnx and not Path(args.onnx).is_file():
        raise OnnxFileNotFoundError(f"ONNX file {args.onnx!r} does not exist")
    if args.train_limit is not None and args.train_limit < 0:
        raise InvalidParameterError(f"--train-limit must be a number of images >= 0 (0: all); got {args.train_limit}")
    # nap_study: -1 is the preset's limit, None every training image
    train_limit = -1 if args.train_limit is None else (args.train_limit or None)
    study = nap_study(
        args.onnx or args.model, args.dataset, args.out, deltas=args.deltas, train_limit=train_limit,
        test_limit=args.test_limit, only_correct=not args.all_samples, timeout=args.timeout, images=args.images,
        solver=args.solver, marabou=args.marabou, classes=args.classes, ambiguity=not args.no_ambiguity,
        eps_max=args.eps_max, refine=args.refine, root=args.root, verbose=not args.quiet)
    print(study.summary())
    print(f"wrote {study.paths['study']}, {study.paths['summary']}, {study.paths['report']} "
          f"({study.wall_seconds:.1f} s)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec experiment nap`` on the ``neurospec`` sub-parser collection."""
    exp = sub.add_parser("experiment", help="the experiments of a paper, end to end")
    exp_sub = exp.add_subparsers(dest="experiment_command", required=True)
    p = exp_sub.add_parser("nap", help="NAP study: mine NAPs, coverage/precision, NAP robustness, non-ambiguity, "
                                       "NAP-augmented robustness radii (resumable)")
    p.add_argument("--dataset", required=True, choices=["mnist", "cifar10"],
                   help="the data set and its preset (mnist: the NAP paper's settings)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", help="an ONNX network, e.g. mnist-net_256x4.onnx or cifar10_small.onnx")
    src.add_argument("--model", help="a model name: mnist-256x2/4/6, cifar10-small/medium/large, mnist-mlp, ...")
    p.add_argument("--out", required=True, help="the results folder (an existing study there is resumed)")
    p.add_argument("--deltas", nargs="+", type=float, default=None, help="NAP thresholds (default 1.0 0.99 0.95)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="mine on the first N training images (default 50000; 0: all)")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--all-samples", action="store_true", help="count misclassified training samples too")
    p.add_argument("--timeout", type=float, default=None, help="seconds per query (default 30)")
    p.add_argument("--images", type=int, default=None, help="test images of the radius study (default 100)")
    p.add_argument("--solver", choices=["highs", "cbc"], default="highs")
    p.add_argument("--marabou", action="store_true", help="also run the NAP robustness queries through Marabou")
    p.add_argument("--classes", nargs="+", type=int, default=None, help="only these classes (default: all)")
    p.add_argument("--no-ambiguity", action="store_true", help="skip the non-ambiguity queries")
    p.add_argument("--eps-max", type=float, default=None, help="largest radius tried (default 1.0)")
    p.add_argument("--refine", type=int, default=3, help="bisection steps of the radius search (default 3)")
    p.add_argument("--root", default=None, help="data root")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_experiment_nap)
