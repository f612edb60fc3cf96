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


def _split_threshold(ckpt: Path, local: Path) -> tuple[float, int]:
    """A logit threshold at which at least one pair of the random-weight detector is valid (fake above, base
    below), and how many pairs are valid at it: the library's own logits, computed before the CLI runs."""
    import torch
    from forensics.data.images import load_rgb
    from forensics.detectors import create
    det = create("resnet50", weights=ckpt, device="cpu", preprocessing={"crop": "none"})
    folder = local / "tconv_local"
    fakes = sorted((folder / "1_fake").glob("*.png"))
    with torch.no_grad():
        f, b = (det(torch.stack([det.transform()(load_rgb(d / p.name)) for p in fakes])).numpy()
                for d in (folder / "1_fake", folder / "bases"))
    i = int((f - b).argmax())
    assert f[i] > b[i]
    t = float((f[i] + b[i]) / 2)
    return t, int(((f >= t) & (b < t)).sum())


def test_faithfulness_cli_writes_leaderboard_and_figures(local, tmp_path, capsys):
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth")
    threshold, n_valid = _split_threshold(ckpt, local)
    out = tmp_path / "out"
    argv = ["--detector", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(local), "--gan_name",
            "tconv_local", "--crop", "none", "--method", "random", "saliency", "--num_images", "3", "--steps", "2",
            "--patch", "16", "--randomisation_images", "2", "--bsize", "3", "--out", str(out), "--device", "cpu",
            "--threshold", repr(threshold), "--validity_draws", "2", "--perturbation_images", "0"]
    with single_thread():
        assert run_script(ROOT / "analyses" / "faithfulness.py", argv) == 0
    run = out / "resnet50" / "tconv_local"
    for name in ("leaderboard.csv", "leaderboard.md", "per_image.csv", "randomisation.csv", "summary.json",
                 "curves_blur.png", "curves_mean.pdf", "curves_road.png", "masks_grid.png", "randomisation.png",
                 "validity.csv", "validity.png", "validity.pdf"):
        assert (run / name).stat().st_size > 0, name
    rows = {r["method"]: r for r in csv.DictReader((run / "leaderboard.csv").open())}
    assert set(rows) == {"random", "saliency", "mask", "difference", "chance"}
    assert {m: rows[m]["kind"] for m in rows} == {"random": "method", "saliency": "method", "mask": "reference",
                                                  "difference": "reference", "chance": "chance"}
    assert float(rows["random"]["random_spearman_mean"]) == pytest.approx(1.0)   # its maps ignore the model
    assert float(rows["random"]["random_spearman_abs_mean"]) == pytest.approx(1.0)
    assert rows["random"]["model_sensitive"] == "False"
    for metric in ("mass_accuracy", "rank_accuracy", "iou", "precision", "recall", "f1"):
        assert float(rows["mask"][f"{metric}_mean"]) == 1.0, metric       # the ceiling
    summary = json.loads((run / "summary.json").read_text())
    sel = summary["selection"]
    assert sel["valid_pairs"] == n_valid >= 1 and sel["scored"] == min(n_valid, 3) == summary["images"]
    assert sel["fakes"] == 4 and sel["called_fake"] - sel["dropped_base_called_fake"] == n_valid
    assert summary["mask_validity"]["pairs"] == summary["valid_pairs"] == sel["scored"]
    assert summary["perturbation"]["steps"] == 2 and summary["references"] == ["mask", "difference"]
    assert summary["provenance"]["command"][0] == "faithfulness.py"
    image_rows = list(csv.DictReader((run / "per_image.csv").open()))
    assert len(image_rows) == 4 * sel["scored"]
    for r in image_rows:                                  # every scored pair: base file present, same name
        assert Path(r["base"]).name == Path(r["path"]).name and Path(r["base"]).parent.name == "bases"
        assert float(r["logit"]) >= threshold > float(r["base_logit"]) and r["valid_pair"] == "1"
    printed = capsys.readouterr().out
    assert "| random |" in printed and "| mask (reference) |" in printed and "valid pairs" in printed
    assert "The masks carry the detector's evidence:" in printed


def test_faithfulness_cli_without_bases_takes_masks_on_trust(local, tmp_path, capsys):
    """A set without bases/ still runs (every fake called fake is scored) and says the masks are taken on trust."""
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(local, copy)
    shutil.rmtree(copy / "tconv_local" / "bases")
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth")
    out = tmp_path / "out"
    argv = ["--detector", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(copy), "--gan_name",
            "tconv_local", "--crop", "none", "--method", "random", "--num_images", "2", "--steps", "2", "--patch",
            "16", "--randomisation_images", "0", "--out", str(out), "--device", "cpu", "--threshold=-1e9",
            "--perturbation_images", "1"]
    with single_thread():
        assert run_script(ROOT / "analyses" / "faithfulness.py", argv) == 0
    summary = json.loads((out / "resnet50" / "tconv_local" / "summary.json").read_text())
    assert summary["selection"]["bases"] is False and summary["mask_validity"] is None
    assert summary["references"] == ["mask"] and summary["images"] == 2
    board = summary["leaderboard"]["random"]
    assert board["srg_blur"]["n"] == 1 and board["mass_accuracy"]["n"] == 2   # SRG capped, localisation not
    assert summary["metric_sets"]["perturbation"] == "the first 1 scored images"
    assert "taken on trust" in capsys.readouterr().out


def test_faithfulness_cli_needs_masks(local, tmp_path):
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth")
    argv = ["--detector", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(local), "--gan_name",
            "tconv_local", "--mask_dir", str(tmp_path / "none"), "--method", "random"]
    assert run_script(ROOT / "analyses" / "faithfulness.py", argv) != 0
