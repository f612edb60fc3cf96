"""The tutorial notebooks of docs/tutorials/ are stored without outputs and run top to bottom without an
error (executed through a Jupyter kernel by nbclient), their own checks included.

They run on the embedded default's ``smoke`` scale (``FORENSICS_DEFAULT_SCALE=smoke``, see
:data:`forensics.defaults.SCALES`: a small benchmark and short trainings) in a private cache shared by the
notebooks of one test session, so that a fresh clone with an empty cache (CI) executes every notebook within
the suite's time budget: building the full-size default from scratch takes about 7 minutes on 2 cores, the
smoke scale a fraction of that (docs/report.md, "Tutorials"). A user runs the same notebooks, unchanged, on the
full default. The kernel inherits this process's environment, so the variables are set before it starts;
``JPY_SESSION_NAME`` tells it the notebook's path, as Jupyter Server does, so its runs record the notebook as
their command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from forensics import defaults, provenance
from forensics.report.discover import find_provenance

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
def test_tutorial_runs_without_error(path, tmp_path, smoke_cache, monkeypatch):
    """Every cell runs (a cell that raises, an assert of the notebook included, fails the test, naming the
    cell); outputs go under tmp_path."""
    monkeypatch.setenv(defaults.CACHE_ENV, str(smoke_cache))
    monkeypatch.setenv(defaults.SCALE_ENV, "smoke")
    monkeypatch.setenv(provenance.NOTEBOOK_ENV, str(path))
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert any(o.get("output_type") in ("stream", "display_data") for c in book.cells if c.cell_type == "code"
               for o in c.outputs)
    for summary in (tmp_path / "figures").rglob("*.json"):  # runs the notebook wrote name it as their command
        prov = find_provenance(json.loads(summary.read_text()))
        assert prov is None or prov["command"] == [path.name], summary
