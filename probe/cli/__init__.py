"""The ``neurospec`` command line.

Subcommands:
    neurospec data check [--root DIR]          what data was found (counts, checksums)
    neurospec train NAME [--seed S] [--force]  train (or load from the cache) a reference model
    neurospec demo [--root DIR]                a short end-to-end run on real data
    neurospec nap mine (--onnx NET.onnx | --model NAME) --data mnist [--delta 0.99] --out naps.json
    neurospec nap stats naps.json (--onnx NET.onnx | --model NAME) --data mnist [--split test]
    neurospec verify --onnx NET.onnx --vnnlib PROP.vnnlib --timeout S [--out result.txt] [--solver cbc|highs]
    neurospec verify-batch instances.csv --out results.csv [--root DIR]
    neurospec complexity measure (--onnx NET.onnx | --model NAME) [--beta 0.1] [--rule exact|paper] [--out DIR]
    neurospec complexity sweep (--onnx NET.onnx | --model NAME) --data mnist --betas 0.05 0.1 [--out sweep.json]
    neurospec moe detect (--model NAME --data mnist | --tokfsm relu|gelu) --experts E [--method M ...] --out DIR
    neurospec codebook train-tokfsm --out DIR [--n-codes 10000] [--steps 1000] [--device cpu|cuda]
    neurospec codebook steer DIR [--pairs 100] [--samples 20]

Errors raised by neurospec are printed as one line (``error: ...``) without a stack trace, and the
command exits with status 1 (2 for wrong usage).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from probe.core.errors import NeurospecError

__all__ = ["COMMAND_GROUPS", "Terminated", "build_parser", "main"]

#: The command groups, in ``--help`` order: each module has ``add_commands(sub)``. They are imported only
#: when the parser is built, so ``probe`` never imports ``verify`` or ``codebook`` at module level.
COMMAND_GROUPS: tuple[str, ...] = (
    "probe.cli.data",
    "probe.cli.train",
    "probe.cli.demo",
    "probe.cli.nap",
    "probe.cli.moe",
    "verify.cli",
    "verify.experiment_cli",
    "probe.cli.complexity",
    "codebook.cli",
    "probe.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``neurospec`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="neurospec", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_GROUPS:
        importlib.import_module(name).add_commands(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM, so a long job unwinds exactly as on
    Ctrl-C: ``finally`` blocks run, checkpoints and finished results stay on disk, and the run resumes."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurospec`` console script.

    Exit status: 0 on success, 1 for an error neurospec raised on purpose (one line, ``error: ...``), 2 for
    wrong usage, 130 after Ctrl-C (SIGINT) and 143 after SIGTERM; interrupted jobs keep their finished work
    and resume when the same command is run again.

    Example:
        >>> main(["data", "check"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args))
    except NeurospecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except Terminated:
        print("terminated (SIGTERM); finished work is saved: run the same command again to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted; finished work is saved: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
