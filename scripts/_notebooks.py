"""Shared by the tutorial generators: write a notebook from its cells with the project's kernel metadata."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

OUT = Path(__file__).resolve().parent.parent / "tutorials"
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def write_notebook(cells: list, filename: str) -> Path:
    """Write ``tutorials/<filename>`` holding ``cells``."""
    OUT.mkdir(exist_ok=True)
    path = OUT / filename
    nbformat.write(new_notebook(cells=cells, metadata=METADATA), path)
    return path
