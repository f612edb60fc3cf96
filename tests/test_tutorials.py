"""The tutorial notebooks of docs/tutorials/ are stored without outputs and run top to bottom without an
error (executed through a Jupyter kernel by nbclient, on the embedded default).

A notebook runs when the default detectors it asks for are in the cache (``make demo`` trains the
ResNet-50, a RINE notebook trains the RINE on first use): on a warm cache all three take about 2-3 minutes
on 2 cores, while building and training the defaults from scratch adds about 7 minutes, which would
break the suite's time budget on a fresh machine; there they skip, naming what to run first."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from forensics import defaults

nbformat = pytest.importorskip("nbformat", reason="nbformat/nbclient/ipykernel come with requirements.txt: make venv")
nbclient = pytest.importorskip("nbclient", reason="nbformat/nbclient/ipykernel come with requirements.txt: make venv")

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "docs" / "tutorials").glob("*.ipynb"))


def test_there_are_tutorials_and_they_are_stored_without_outputs():
    assert len(TUTORIALS) >= 3
    for path in TUTORIALS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith("# ")


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_without_error(path, tmp_path):
    """Every cell runs (a cell that raises fails the test, naming the cell); outputs go under tmp_path."""
    book = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    needed = sorted(set(re.findall(r"default_detector\(\s*[\"'](\w+)[\"']", code)))
    missing = [name for name in needed if not defaults.is_cached(name)]
    if missing:
        pytest.skip(f"the embedded default {', '.join(missing)} is not cached yet (training takes minutes): run "
                    f"`make demo` / `python -c \"from forensics.defaults import default_detector as d; "
                    f"[d(n) for n in {missing!r}]\"` first")
    client = nbclient.NotebookClient(book, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert any(o.get("output_type") in ("stream", "display_data") for c in book.cells if c.cell_type == "code"
               for o in c.outputs)
