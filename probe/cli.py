"""The ``neurospec`` command line.

Subcommands:
    neurospec data check [--root DIR]          what data was found (counts, checksums)
    neurospec train NAME [--seed S] [--force]  train (or load from the cache) a reference model
    neurospec demo [--root DIR]                a short end-to-end run on real data

Errors raised by neurospec are printed as one line (``error: ...``) without a stack trace, and the
command exits with status 1 (2 for wrong usage).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from probe.errors import NeurospecError


def _cmd_data_check(args: argparse.Namespace) -> int:
    from probe.data import check_data, format_data_check

    results = check_data(args.root)
    print(format_data_check(results))
    bad = [r for r in results if not r.found or r.checksum_ok is False]
    return 1 if bad else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from probe.models import train_reference

    model = train_reference(args.name, root=args.root, seed=args.seed, force=args.force, device=args.device)
    info = model.reference_info
    print(
        f"{info['name']} (seed {info['seed']}): test accuracy {info['test_accuracy']:.4f}, "
        f"trained in {info['train_seconds']:.1f} s on {info['device']}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from probe.demo import run_demo

    print(run_demo(root=args.root, verbose=not args.quiet))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``neurospec`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="neurospec", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="report which data files were found and whether they are intact")
    check.add_argument("--root", default=None, help="data root (default: $NEUROSPEC_DATA or ../shared/data)")
    check.set_defaults(func=_cmd_data_check)

    train = sub.add_parser("train", help="train (or load from the cache) a reference model")
    train.add_argument("name", help="mnist-mlp, mnist-cnn or cifar10-cnn")
    train.add_argument("--root", default=None, help="data root")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--force", action="store_true", help="retrain even if cached")
    train.set_defaults(func=_cmd_train)

    demo = sub.add_parser("demo", help="run a short end-to-end demo on real data")
    demo.add_argument("--root", default=None, help="data root")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurospec`` console script.

    Example:
        >>> main(["data", "check"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except NeurospecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
