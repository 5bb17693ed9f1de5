"""``neurospec demo``: a short end-to-end run on real data."""

from __future__ import annotations

import argparse


def _cmd_demo(args: argparse.Namespace) -> int:
    from probe.demo import run_demo

    print(run_demo(root=args.root, verbose=not args.quiet))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec demo`` on the ``neurospec`` sub-parser collection."""
    demo = sub.add_parser("demo", help="run a short end-to-end demo on real data")
    demo.add_argument("--root", default=None, help="data root")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
