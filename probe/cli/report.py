"""``neurospec report RESULT_PATH --out report.html``: one self-contained HTML report of any saved result.

The kind is read from the file (see :func:`probe.report.detect_kind`): NAPs, a feature-complexity report or
sweep, an MoE report folder, a verification result folder, a ``verify-batch`` results CSV, a codebook label
search or steering result. The renderers of ``verify`` and ``codebook`` are imported only when needed.

Example:
    neurospec report runs/naps.json --out naps.html
    neurospec report results.csv --out results.html --root ../shared/data/vnncomp2021/mnistfc
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["add_commands", "write_report"]


def write_report(result_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 root: str | os.PathLike[str] | None = None, title: str | None = None) -> tuple[str, Path]:
    """Detect the kind of the result at ``result_path``, load it and write its report to ``out``.

    Args:
        result_path: a result file or folder.
        out: the HTML file to write.
        root: for a ``verify-batch`` results CSV, the folder its paths are relative to (for the originals of
            counterexamples; default the CSV's folder).
        title: the page title (default: one per kind).

    Returns:
        ``(kind, path written)``.

    Raises:
        OutputPathError: ``out`` cannot be written (checked before anything is read).
        DataNotFoundError: ``result_path`` does not exist.
        CorruptDataError: not a result neurospec renders (the message lists the kinds), or from a newer
            neurospec.

    Example:
        >>> write_report("runs/naps.json", "naps.html")  # doctest: +SKIP
        ('nap', PosixPath('naps.html'))
    """
    from probe.core.artifacts import read_json
    from probe.core.paths import check_output
    from probe.report import detect_kind

    out = check_output(out)
    kind, file = detect_kind(result_path)
    if kind == "nap":
        from probe.nap import NAPSet

        return kind, NAPSet.load(file).to_html(out, title=title)
    if kind == "complexity":
        from probe.complexity import ComplexityReport

        return kind, ComplexityReport.from_dict(read_json(file, what="feature-complexity report")).to_html(
            out, title=title)
    if kind == "complexity-sweep":
        from probe.complexity import SweepResult

        return kind, SweepResult.load(file).to_html(out, title=title)
    if kind == "moe":
        from probe.moe import MoEReport
        from probe.report import moe_report_html

        return kind, moe_report_html(MoEReport.load(file.parent), out, title=title)
    if kind == "verification_result":
        from verify.report import result_html
        from verify.result import VerificationResult

        return kind, result_html(VerificationResult.load(file.parent), out, title=title)
    if kind == "verify-batch":
        from verify.report import batch_html

        return kind, batch_html(file, out, root=root, title=title)
    if kind == "codebook-search":
        from codebook.search import LabelSearchResult

        return kind, LabelSearchResult.load(file).to_html(out, title=title)
    from codebook.steer import SteeringResult  # the last kind: codebook-steering

    return kind, SteeringResult.load(file).to_html(out, title=title)


def _cmd_report(args: argparse.Namespace) -> int:
    kind, path = write_report(args.result, args.out, root=args.root, title=args.title)
    print(f"wrote {path} ({kind} report; open it in a browser, no server needed)")
    return 0


def add_commands(sub) -> None:
    """Register ``report`` on the ``neurospec`` sub-parser collection."""
    from probe.report import KINDS

    p = sub.add_parser("report", help="write one self-contained HTML report of a saved result",
                       description="Write one self-contained HTML report (opens from disk, no server, no network) "
                                   "of a saved result. Kinds: " + "; ".join(f"{k} ({v})" for k, v in KINDS.items()))
    p.add_argument("result", help="a result file or folder (the kind is read from it)")
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    p.add_argument("--root", default=None,
                   help="verify-batch CSV: folder its paths are relative to (for counterexamples' originals)")
    p.add_argument("--title", default=None, help="the page title")
    p.set_defaults(func=_cmd_report)
