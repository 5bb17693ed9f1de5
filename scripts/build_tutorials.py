"""Build the tutorial notebooks from their sources: ``tutorials/NN_name.py`` (jupytext percent format, linted
by ruff) -> ``tutorials/NN_name.ipynb`` (no outputs). The test suite fails when a notebook and its source
differ (``tests/test_tutorials.py``), so run this after editing a source:

    .venv/bin/python scripts/build_tutorials.py            # all tutorials
    .venv/bin/python scripts/build_tutorials.py --check    # exit 1 if a notebook is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def notebook_from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook a percent-format source stands for, with the project's kernel metadata."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = dict(METADATA)
    for cell in nb.cells:
        cell.metadata = {}
    return nb


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a notebook says: the type and text of every cell (outputs and ids left out)."""
    return [(c.cell_type, c.source) for c in nb.cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale notebooks instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(TUTORIALS.glob("[0-9][0-9]_*.py")):
        target = source.with_suffix(".ipynb")
        nb = notebook_from_source(source)
        if target.exists() and cells(nbformat.read(target, as_version=4)) == cells(nb):
            continue
        stale.append(target.name)
        if not args.check:
            nbformat.write(nb, target)
    verb = "stale" if args.check else "rebuilt"
    print(f"{verb}: {', '.join(stale) or 'none'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
