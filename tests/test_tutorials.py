"""Every notebook in tutorials/ matches its percent-format source and runs top to bottom as a test (they
call only the public API)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("*.ipynb"))


SOURCES = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_tutorials():
    assert TUTORIALS, "tutorials/ holds no notebook"
    assert [p.stem for p in SOURCES] == [p.stem for p in TUTORIALS], "every notebook has one .py source"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_matches_its_source(source: Path):
    import sys

    import nbformat

    sys.path.insert(0, str(source.parent.parent / "scripts"))
    try:
        from build_tutorials import cells, notebook_from_source
    finally:
        sys.path.pop(0)
    built = cells(notebook_from_source(source))
    stored = cells(nbformat.read(source.with_suffix(".ipynb"), as_version=4))
    assert stored == built, (f"{source.with_suffix('.ipynb').name} differs from {source.name}: run "
                             "`.venv/bin/python scripts/build_tutorials.py`")


@pytest.mark.tutorial
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path: Path, tmp_path: Path, data_root: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["NEUROSPEC_DATA"] = str(data_root)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
