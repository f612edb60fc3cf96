"""analyses/faithfulness.py end to end on a tiny local-manipulation split and a random-weight ResNet-50."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from forensics.data.local_fakes import LocalFakeConfig, build_local_fakes
from helpers import run_script, save_cnndet_checkpoint, single_thread
from test_local_fakes import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("faith") / "local"
    build_local_fakes(root, TINY, LocalFakeConfig(families=("tconv",), per_family=4))
    return root / "test"


def test_faithfulness_cli_writes_leaderboard_and_figures(local, tmp_path, capsys):
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth")
    out = tmp_path / "out"
    argv = ["--detector", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(local), "--gan_name",
            "tconv_local", "--crop", "none", "--method", "random", "saliency", "--num_images", "3", "--steps", "2",
            "--patch", "16", "--randomisation_images", "2", "--bsize", "3", "--out", str(out), "--device", "cpu"]
    with single_thread():
        assert run_script(ROOT / "analyses" / "faithfulness.py", argv) == 0
    run = out / "resnet50" / "tconv_local"
    for name in ("leaderboard.csv", "leaderboard.md", "per_image.csv", "randomisation.csv", "summary.json",
                 "curves_blur.png", "curves_mean.pdf", "curves_road.png", "masks_grid.png", "randomisation.png"):
        assert (run / name).stat().st_size > 0, name
    rows = {r["method"]: r for r in csv.DictReader((run / "leaderboard.csv").open())}
    assert set(rows) >= {"random", "saliency"}
    assert float(rows["random"]["random_spearman_mean"]) == pytest.approx(1.0)   # its maps ignore the model
    assert float(rows["random"]["random_spearman_abs_mean"]) == pytest.approx(1.0)
    assert rows["random"]["model_sensitive"] == "False"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images"] == 3 and summary["perturbation"]["steps"] == 2
    assert summary["provenance"]["command"][0] == "faithfulness.py"
    assert len(list(csv.DictReader((run / "per_image.csv").open()))) == 6
    assert "| random |" in capsys.readouterr().out


def test_faithfulness_cli_needs_masks(local, tmp_path):
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth")
    argv = ["--detector", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(local), "--gan_name",
            "tconv_local", "--mask_dir", str(tmp_path / "none"), "--method", "random"]
    assert run_script(ROOT / "analyses" / "faithfulness.py", argv) != 0
