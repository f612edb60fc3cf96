"""One shape for every analysis (docs/adding_an_analysis.md): a result class with ``record``, ``annotate`` and
``write(out_dir)`` (the only required argument), no free ``write_outputs`` functions, and what is annotated lands
in the summary JSON."""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import numpy as np
import pytest

import forensics.analysis
import forensics.attribution
from forensics.analysis.breakdown import Breakdown
from forensics.analysis.dropout import KSweep
from forensics.analysis.ffrs import FFRSResult
from forensics.analysis.format_audit import FormatAudit
from forensics.analysis.heatmaps import Heatmaps
from forensics.analysis.result import AnalysisResult
from forensics.data import RunSummary

PACKAGES = (forensics.analysis, forensics.attribution)


def analysis_modules():
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def defined_here(module):
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and obj.__module__ == module.__name__]


def test_every_class_that_writes_is_an_analysis_result():
    writers = [cls for m in analysis_modules() for cls in defined_here(m) if callable(getattr(cls, "write", None))]
    assert len(writers) >= 15
    assert [c.__qualname__ for c in writers if not issubclass(c, AnalysisResult)] == []


def test_write_needs_only_the_output_folder():
    results = [cls for m in analysis_modules() for cls in defined_here(m)
               if issubclass(cls, AnalysisResult) and cls is not AnalysisResult]
    wrong = {}
    for cls in results:
        params = list(inspect.signature(cls.write).parameters.values())[1:]
        required = [p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required != ["out_dir"]:
            wrong[cls.__qualname__] = required
    assert wrong == {}


def test_no_free_write_outputs_functions():
    free = [f"{m.__name__}.{name}" for m in analysis_modules() for name, obj in vars(m).items()
            if inspect.isfunction(obj) and obj.__module__ == m.__name__ and name.startswith("write_outputs")]
    assert free == []


def _ffrs():
    return FFRSResult("toy", {}, {}, {"real": {"used": 0, "filtered": 0}, "fake": {"used": 0, "filtered": 0}},
                      RunSummary())


def _heatmaps():
    rng = np.random.default_rng(0)
    return Heatmaps(["0_a"], rng.integers(0, 255, (1, 8, 8, 3), dtype=np.uint8), {"m": rng.random((1, 8, 8))},
                    RunSummary())


@pytest.mark.parametrize("make, summary, where", [
    (lambda: Breakdown([]), "groups.json", ("settings",)),
    (lambda: FormatAudit([], {}, {}), "format-audit.json", ("settings",)),
    (lambda: KSweep([1], {"topk": [0.5], "randomk": [0.5], "lowk": [0.5]}, 0.9), "k_vs_ap.json", ("settings",)),
    (_ffrs, "summary.json", ()),
    (_heatmaps, "summary.json", ()),
])
def test_annotations_land_in_the_summary_in_order(tmp_path, make, summary, where):
    result = make()
    assert result.annotate(args={"seed": 3}, provenance={"software": "x"}) is result
    result.annotate(args={"seed": 4})  # replaced in place, order kept
    paths = result.write(tmp_path)
    assert all(p.is_file() for p in paths.values())
    data = json.loads((tmp_path / summary).read_text())
    for key in where:
        data = data[key]
    keys = [k for k in data if k in ("args", "provenance")]
    assert keys == ["args", "provenance"]
    assert data["args"] == {"seed": 4} and data["provenance"] == {"software": "x"}
