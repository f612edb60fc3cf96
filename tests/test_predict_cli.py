"""`python -m forensics predict` end to end on a CNNDetection-format checkpoint."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from forensics.cli import main
from helpers import exit_code, save_cnndet_checkpoint, tiny

REFERENCE_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "reference-data" / "images"


@pytest.fixture(scope="module")
def cnndet_checkpoint(tmp_path_factory):
    model = tiny("resnet50")
    path = save_cnndet_checkpoint(tmp_path_factory.mktemp("w") / "blur_jpg_prob0.5.pth", model, optimizer={},
                                  total_steps=0)
    return path, model


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for sub, n in (("0_real", 2), ("1_fake", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (240, 250, 3), dtype=np.uint8)).save(root / sub / f"{i}.png")
    (root / "1_fake" / "broken.png").write_bytes(b"not a png")
    (root / "1_fake" / "empty.jpg").write_bytes(b"")
    return root


def test_predict_writes_csv_and_lists_skips(tmp_path, cnndet_checkpoint, capsys):
    ckpt, model = cnndet_checkpoint
    root = _folder(tmp_path)
    out = tmp_path / "preds.csv"
    assert main(["predict", "--detector", "resnet50", "--weights", str(ckpt), str(root), "--out", str(out),
                 "--device", "cpu", "--batch-size", "3"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 4 and list(frame["label"]) == [0, 0, 1, 1]
    # values equal a direct computation with the detector's own transform
    t = model.transform()
    x = torch.stack([t(Image.open(p).convert("RGB")) for p in frame["path"]])
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    np.testing.assert_allclose(frame["p_fake"].to_numpy(), expected, atol=1e-5)
    printed = capsys.readouterr().out
    assert "4 images scored, 2 skipped" in printed


def test_predict_reference_images(tmp_path, cnndet_checkpoint):
    if not REFERENCE_IMAGES.is_dir():
        pytest.skip(f"reference data absent: {REFERENCE_IMAGES}")
    ckpt, _ = cnndet_checkpoint
    out = tmp_path / "ref.csv"
    assert main(["predict", "--detector", "resnet50", "--weights", str(ckpt), str(REFERENCE_IMAGES),
                 "--out", str(out), "--crop", "none", "--batch-size", "4"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 4 and set(frame["label"]) == {-1}  # folders are real/ and fake/, not 0_real/1_fake
    assert frame["p_fake"].between(0, 1).all()


def test_missing_weights_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FORENSICS_WEIGHTS", str(tmp_path / "nowhere"))
    root = _folder(tmp_path)
    code = exit_code(main, ["predict", "--detector", "resnet50", str(root), "--out", str(tmp_path / "x.csv")])
    assert code == 2
    assert not (tmp_path / "x.csv").exists()


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "forensics", "predict", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--detector" in res.stdout and "--weights" in res.stdout


def test_predict_reads_a_layout(tmp_path, cnndet_checkpoint, capsys):
    """``--layout manifest``: the rows of a CSV (one Parquet-free layout stands for all: the readers are
    tested in test_layouts_more.py); sources come from the manifest."""
    ckpt, _ = cnndet_checkpoint
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "list.csv").write_text("path,label,source\na.png,real,coco\nb.png,fake,sd\nc.png,1,flux\n")
    out = tmp_path / "preds.csv"
    assert main(["predict", "--detector", "resnet50", "--weights", str(ckpt), str(tmp_path / "list.csv"),
                 "--layout", "manifest", "--out", str(out), "--device", "cpu"]) == 0
    frame = pd.read_csv(out)
    assert list(frame["source"]) == ["coco", "sd", "flux"] and list(frame["label"]) == [0, 1, 1]
    # labels known: the per-group table is printed and written, and equals breakdown() of the same scores
    groups = pd.read_csv(tmp_path / "preds-groups.csv")
    assert "per generator, real source, format and size" in capsys.readouterr().out
    gen = groups[groups["grouping"] == "generator"].set_index("group")
    assert set(gen.index) == {"sd", "flux"} and (gen["pool"] == "vs all reals").all()
    assert list(gen.loc[["sd", "flux"], "n_fake"]) == [1, 1]
    p = frame.set_index("source")["logit"]
    for g in ("sd", "flux"):  # one real, one fake: AP 1 when the fake scores higher, else 0.5
        assert gen.loc[g, "ap"] == (1.0 if p[g] > p["coco"] else 0.5)
    from forensics.analysis.breakdown import breakdown
    from forensics.analysis.inference import Predictions
    from forensics.data import load_sets
    records = load_sets(tmp_path / "list.csv", None, "manifest")
    (name, recs), = records.items()
    expected = breakdown({name: Predictions(recs, frame["logit"].to_numpy())}).to_frame()
    pd.testing.assert_frame_equal(groups.drop(columns=["ap", "acc", "acc_best", "threshold_best", "gap", "group_acc"]),
                                  expected.drop(columns=["ap", "acc", "acc_best", "threshold_best", "gap", "group_acc"]),
                                  check_dtype=False)
    np.testing.assert_allclose(groups["acc"], expected["acc"], atol=1e-5)


def test_predict_without_labels_writes_no_groups(tmp_path, cnndet_checkpoint, capsys):
    ckpt, _ = cnndet_checkpoint
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "p.csv"
    assert main(["predict", "--detector", "resnet50", "--weights", str(ckpt), str(tmp_path / "x.png"),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert not (tmp_path / "p-groups.csv").exists() and "per generator" not in capsys.readouterr().out
