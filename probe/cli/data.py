"""``neurospec data check``: which data files were found and whether they are intact."""

from __future__ import annotations

import argparse


def _cmd_data_check(args: argparse.Namespace) -> int:
    from probe.data import check_data, format_data_check

    results = check_data(args.root)
    print(format_data_check(results))
    bad = [r for r in results if not r.found or r.checksum_ok is False]
    return 1 if bad else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec data`` on the ``neurospec`` sub-parser collection."""
    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="report which data files were found and whether they are intact")
    check.add_argument("--root", default=None, help="data root (default: $NEUROSPEC_DATA or ../shared/data)")
    check.set_defaults(func=_cmd_data_check)
