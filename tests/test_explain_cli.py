"""analyses/explain.py (every method side by side) and analyses/lrp_heatmaps.py on the CLIP detectors,
on tiny models and a generated folder; the figure helpers of forensics.explain.figures."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import forensics.cli.inputs as cli_inputs
from forensics.detectors import create
from forensics.explain.figures import explanation_grid, scale_map
from helpers import calibrated_cached, run_script, single_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_cli")
    rng = np.random.default_rng(0)
    for sub in ("0_real", "1_fake"):
        d = root / "gen" / sub
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def stub_default(monkeypatch, model, data):
    bench = SimpleNamespace(test_root=data, train_family="gen", families=["gen"], manifest={"image_size": 56})
    monkeypatch.setattr(cli_inputs, "embedded_default", lambda args: (model, bench))


def test_explain_cli_writes_grid_maps_and_csv(data, monkeypatch, tmp_path, capsys):
    """No arguments: every method defined on the (stubbed) default detector, the first fakes and reals."""
    model = calibrated_cached("resnet50", 0, 32)
    stub_default(monkeypatch, model, data)
    monkeypatch.chdir(tmp_path)
    fast = ["-x", "integrated_gradients:n_steps=4", "-x", "smoothgrad:nt_samples=2", "-x", "gradient_shap:n_samples=2",
            "-x", "occlusion:window=28", "-x", "occlusion:stride=28"]
    with single_thread():
        assert run_script(ROOT / "analyses" / "explain.py", [*fast, "--bsize", "3"]) == 0
    out = tmp_path / "figures" / "explain" / "resnet50" / "gen" / "fake"
    assert (out / "grid.png").stat().st_size > 0 and (out / "grid.pdf").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    from forensics.explain import list_explainers
    methods = list_explainers(model)
    assert list(summary["methods"]) == methods and summary["images"] == 4
    maps = load_file(str(out / "maps.safetensors"))
    assert maps["lrp.pixel"].shape == (4, 56, 56) and maps["lrp.input_map"].shape == (4, 3, 56, 56)
    assert "gradcam.input_map" not in maps and maps["target"].tolist() == [1, 1, 1, 1]
    rows = list(csv.DictReader((out / "explain.csv").open()))
    assert [r["label"] for r in rows] == ["0", "0", "1", "1"]
    assert all(float(r[f"seconds_{m}"]) > 0 for r in rows for m in methods)
    with torch.no_grad():
        first = model(model.transform(crop="none")(Image.open(rows[0]["path"]).convert("RGB"))[None])
    assert float(rows[0]["logit"]) == pytest.approx(float(first), rel=1e-4, abs=1e-5)
    assert "s/image" in capsys.readouterr().out


def test_explain_and_lrp_heatmaps_cli_on_a_clip_detector(data, monkeypatch, tmp_path):
    """The ViT methods through explain.py, and lrp_heatmaps.py now explains RINE/UFD (CP-LRP by default)."""
    torch.manual_seed(0)
    model = create("ufd", backbone="forensics-tiny-vit", backbone_weights=None).eval()
    stub_default(monkeypatch, model, data)
    monkeypatch.chdir(tmp_path)
    with single_thread():
        assert run_script(ROOT / "analyses" / "explain.py",
                          ["--detector", "ufd", "--method", "cp_lrp", "attn_lrp", "block_gradcam", "--target", "label",
                           "--num_fake", "1", "--num_real", "1"]) == 0
        assert run_script(ROOT / "analyses" / "lrp_heatmaps.py", ["--detector", "ufd", "--explain_all", "--max_images", "1"]) == 0
        assert run_script(ROOT / "analyses" / "lrp_heatmaps.py", ["--detector", "ufd", "--method", "attn_lrp", "--out", "attn"]) == 0
        assert run_script(ROOT / "analyses" / "explain.py", ["--detector", "ufd", "--method", "lrp"]) != 0  # not defined on ufd
    out = tmp_path / "figures" / "explain" / "ufd" / "gen" / "label"
    assert load_file(str(out / "maps.safetensors"))["target"].tolist() == [0, 1]
    assert (tmp_path / "figures" / "lrp_heatmaps" / "ufd" / "gen" / "000_0" / "lrp.png").stat().st_size > 0
    assert (tmp_path / "attn" / "ufd" / "gen" / "grid.png").stat().st_size > 0


def test_explanation_grid_scaling():
    heat = np.array([[-2.0, 0.0], [1.0, 4.0]])
    torch.testing.assert_close(torch.from_numpy(scale_map(heat, percentile=100)),
                               torch.tensor([[-0.5, 0.0], [0.25, 1.0]]))
    assert scale_map(heat, signed=False, percentile=100).min() == 0.0
    assert not scale_map(np.zeros((2, 2))).any()
    fig = explanation_grid(np.zeros((2, 4, 4, 3), np.uint8), {"a": np.ones((2, 4, 4)), "b": -np.ones((2, 4, 4))},
                           signed={"b": True}, row_labels=["r0", "r1"], title="t")
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "a"


def test_explain_cli_help():
    assert run_script(ROOT / "analyses" / "explain.py", ["--help"]) == 0
