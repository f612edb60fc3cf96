"""docs/adding_an_analysis.md: its toy analysis (library module + script), extracted from the page, runs on a
tiny detector with the embedded default stood in, and writes the shape every analysis writes."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import forensics.analysis
import forensics.cli.inputs as cli_inputs
from forensics.analysis.result import AnalysisResult
from helpers import calibrated_cached, single_thread

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding_an_analysis.md"
MODULE = "forensics.analysis.margins"


def blocks() -> dict[str, str]:
    """The page's Python code blocks by their title."""
    found = re.findall(r'```python title="([^"]+)"\n(.*?)\n```', PAGE.read_text(), re.S)
    return {title: code + "\n" for title, code in found}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The page's library module, importable as forensics.analysis.margins; its script's path."""
    code = blocks()
    assert set(code) == {"forensics/analysis/margins.py", "analyses/margins.py"}
    assert not (ROOT / "forensics" / "analysis" / "margins.py").exists()  # a page's example, not a module
    lib, script = tmp_path / "margins.py", tmp_path / "margins_cli.py"
    lib.write_text(code["forensics/analysis/margins.py"])
    script.write_text(code["analyses/margins.py"])
    spec = importlib.util.spec_from_file_location(MODULE, lib)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, MODULE, module)
    monkeypatch.setattr(forensics.analysis, "margins", module, raising=False)
    spec.loader.exec_module(module)
    return module, script


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("margins")
    rng = np.random.default_rng(0)
    for name in ("gen_a", "gen_b"):
        for sub in ("0_real", "1_fake"):
            d = root / name / sub
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "gen_a" / "1_fake" / "broken.png").write_bytes(b"not a png")
    return root


def test_the_toy_analysis_runs_as_the_page_says(toy, data, tmp_path, monkeypatch, capsys):
    module, script = toy
    model = calibrated_cached("resnet50", 0, 32)
    bench = SimpleNamespace(test_root=data, train_family="gen_a", families=["gen_a", "gen_b"],
                            manifest={"image_size": 32})
    monkeypatch.setattr(cli_inputs, "embedded_default", lambda args: (model, bench))
    cli = importlib.util.module_from_spec(importlib.util.spec_from_file_location("margins_cli", script))
    cli.__spec__.loader.exec_module(cli)
    with single_thread():
        assert cli.main(["--out", str(tmp_path / "out"), "--margin", "0.5", "--bsize", "4"]) == 0
    out = tmp_path / "out" / "resnet50"
    table = pd.read_csv(out / "margins.csv")
    assert table[["set", "class", "images"]].values.tolist() == [
        ["gen_a", "real", 3], ["gen_a", "fake", 3], ["gen_b", "real", 3], ["gen_b", "fake", 3]]
    summary = json.loads((out / "margins.json").read_text())
    assert summary["settings"]["margin"] == 0.5 and summary["settings"]["args"]["margin"] == 0.5
    assert list(summary["settings"]).index("provenance") < list(summary["settings"]).index("args")
    assert [s["path"].endswith("broken.png") for s in summary["skipped"]["gen_a"]] == [True]  # listed, not dropped
    assert (out / "margins.png").stat().st_size > 0 and (out / "margins.pdf").stat().st_size > 0
    assert "margins.csv" in capsys.readouterr().out


def test_the_toy_result_computes_the_margins_it_claims(toy):
    from forensics.analysis.inference import Predictions
    from forensics.data import ImageRecord
    module, _ = toy
    records = [ImageRecord(Path(f"{i}.png"), label, "s") for i, label in enumerate([0, 0, 1, 1])]
    result = module.MarginResult({"s": Predictions(records, np.array([-2.0, 0.2, 3.0, -0.4]))}, margin=0.5)
    assert isinstance(result, AnalysisResult)
    rows = result.table().set_index("class")
    # signed margins: reals -(-2) = 2 and -0.2; fakes 3 and -0.4 (wrong side)
    assert rows.loc["real", "mean_margin"] == pytest.approx(0.9) and rows.loc["fake", "mean_margin"] == pytest.approx(1.3)
    assert rows.loc["real", "near_threshold"] == 0.5 and rows.loc["fake", "near_threshold"] == 0.5
