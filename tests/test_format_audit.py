"""Per-group answers (generator, real source, format, size) and the format-shortcut audit: a detector
that reads JPEG compression traces is flagged on a JPEG-real / PNG-fake set, not on a one-format set."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from forensics.analysis.breakdown import breakdown, group_row, size_bucket
from forensics.analysis.evaluate import evaluate_sets
from forensics.analysis.format_audit import PNG, format_audit, paired_change
from forensics.data import ImageRecord, load_sets
from forensics.detectors import Detector, DetectorConfig, Preprocessing

ROOT = Path(__file__).resolve().parents[1]
N = 12


class JpegTraces(Detector):
    """Reads JPEG compression traces: re-compresses each image at quality 95 and measures how much it
    changes; a decoded JPEG is nearly a fixed point (mean change ~1-2 grey levels), a never-compressed
    image is not (~4.5 on this content). A yes/no reading: logit +2 when the change exceeds 3.4 ("never
    compressed" = fake), else -2 (what a classifier that learned "reals are JPEG" amounts to)."""

    def __init__(self) -> None:
        super().__init__(DetectorConfig(name="jpegtraces", arch="test", paper="",
                                        preprocessing=Preprocessing((0, 0, 0), (1, 1, 1), crop="none", crop_size=64)))
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for img in x:
            a = np.ascontiguousarray((img.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8))
            ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])
            change = np.abs(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(float) - a).mean()
            out.append(1.0 if change > 3.4 else -1.0)
        return self.scale * torch.tensor(out, dtype=torch.float32)


def content(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.normal(128, 50, (64, 64, 3)), (0, 0), 1.0)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``shortcut``: reals JPEG (quality 75..95), fakes PNG, the same kind of content; ``png``: both PNG;
    ``jpeg``: both JPEG 90. The fakes' source (generator) alternates between two names via sub-folders."""
    root = tmp_path_factory.mktemp("audit")
    for i in range(N):
        q = 75 + 2 * (i % 11)
        for name, real_fmt, fake_fmt in (("shortcut", "JPEG", "PNG"), ("png", "PNG", "PNG"), ("jpeg", "JPEG", "JPEG")):
            for label_dir, fmt, seed in (("0_real", real_fmt, i), ("1_fake", fake_fmt, 1000 + i)):
                folder = root / name / label_dir
                folder.mkdir(parents=True, exist_ok=True)
                suffix = ".jpg" if fmt == "JPEG" else ".png"
                content(seed).save(folder / f"{i:02d}{suffix}", format=fmt, **({"quality": q} if fmt == "JPEG" else {}))
    return root


def test_png_reencoding_keeps_pixels():
    a = np.asarray(content(3))
    assert np.array_equal(PNG().apply_array(a, np.random.default_rng(0)), a)


def test_audit_flags_the_jpeg_detector_only_where_formats_differ(data):
    sets = load_sets(data, ["shortcut", "png", "jpeg"], have_classes=False)
    audit = format_audit(JpegTraces(), sets, batch_size=8, n_boot=200, seed=0)
    frame = audit.to_frame().set_index(["set", "encoding"])
    assert frame.loc[("shortcut", "stored"), "ap"] == pytest.approx(1.0)
    assert frame.loc[("shortcut", "png"), "d_ap"] == pytest.approx(0.0, abs=1e-9)  # lossless: same pixels
    assert frame.loc[("shortcut", "jpeg95"), "d_ap"] < -0.3 and frame.loc[("shortcut", "jpeg95"), "d_ap_hi"] < -0.05
    assert audit.flagged == {"shortcut": True, "png": False, "jpeg": False}
    assert audit.composition["shortcut"] == {"real": {"JPEG": N}, "fake": {"PNG": N}}
    text = audit.format()
    assert "shortcut: FLAGGED" in text and "png: not flagged" in text


def test_paired_change_ci_contains_the_change():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    a = np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.1, 60)
    b = rng.random(60)
    ch = paired_change(y, a, b, n_boot=300, seed=1)
    assert ch["d_ap"] == pytest.approx(average_precision_score(y, b) - average_precision_score(y, a))
    assert ch["d_ap_lo"] <= ch["d_ap"] <= ch["d_ap_hi"] < 0
    assert paired_change(y, a, b, n_boot=300, seed=1) == ch  # seeded


# ---------------------------------------------------------------------------- per-group answers
def test_group_rows_pool_one_class_groups_against_the_other_class():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.7, 0.9, 0.3, 0.8, 0.6])
    gen = np.array([False, False, False, True, True, False, False])
    row = group_row(labels, probs, gen)
    pool = gen | (labels == 0)
    assert row["pool"] == "vs all reals" and (row["n_real"], row["n_fake"]) == (0, 2)
    assert row["ap"] == pytest.approx(average_precision_score(labels[pool], probs[pool]))
    # balanced accuracy at 0.5 on the pool: reals 2/3 right, the group's fakes 1/2
    assert row["acc"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert row["acc_best"] >= row["acc"] and row["gap"] == pytest.approx(row["acc_best"] - row["acc"])
    assert row["group_acc"] == pytest.approx(0.5)
    assert size_bucket(300, 200) == "<=256" and size_bucket(2000, 1500) == ">1024"


def test_breakdown_per_generator_real_source_format_and_size(tmp_path, data):
    recs = []
    for i, (label, src, fmt, side) in enumerate([(0, "coco", "JPEG", 64), (0, "raise", "PNG", 300),
                                                 (1, "sd", "PNG", 64), (1, "sd", "PNG", 64), (1, "flux", "WEBP", 300)]):
        path = tmp_path / f"{i}.{fmt.lower()}"
        content(i).resize((side, side)).save(path, format=fmt)
        recs.append(ImageRecord(path, label, src))
    result = evaluate_sets(JpegTraces(), {"mix": recs}, batch_size=2)
    rows = breakdown(result.predictions).to_frame()
    got = {(r.grouping, r.group): (r.n_real, r.n_fake) for r in rows.itertuples()}
    assert got == {("generator", "flux"): (0, 1), ("generator", "sd"): (0, 2), ("real_source", "coco"): (1, 0),
                   ("real_source", "raise"): (1, 0), ("format", "JPEG"): (1, 0), ("format", "PNG"): (1, 2),
                   ("format", "WebP"): (0, 1), ("size", "<=256"): (1, 2), ("size", "257-512"): (1, 1)}
    png = rows[(rows.grouping == "format") & (rows.group == "PNG")].iloc[0]
    assert png.pool == "within"


def test_cli_writes_groups_and_runs_the_audit(data, tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "analyses" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr("forensics.cli.inputs.resolve_detector", lambda args: JpegTraces())
    common = ["--arch", "resnet50", "--weights", "x", "--dataset_dir", str(data), "--layout", "auto",
              "--gan_name", "shortcut", "png", "--bsize", "8", "--out", str(tmp_path)]
    assert cli.main(common) == 0
    groups = pd.read_csv(tmp_path / "eval-groups_none.csv")
    assert set(groups.grouping) == {"generator", "real_source", "format", "size"}
    assert "per generator, real source, format and size" in capsys.readouterr().out
    assert cli.main([*common, "--format_audit"]) == 0
    audit = pd.read_csv(tmp_path / "format-audit_none.csv")
    assert audit.groupby("set").flagged.any().to_dict() == {"png": False, "shortcut": True}
    assert "shortcut: FLAGGED" in capsys.readouterr().out
