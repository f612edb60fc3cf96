"""Mood's median test and the colour-conditional percentage (forensics.analysis.median_test,
analyses/median_test.py; docs/median_test.md), and the colour analyses through resnet50 / efb0 / rine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from PIL import Image

from forensics.analysis.color import color_ablation
from forensics.analysis.fmap_ranking import write_ranking_csv
from forensics.analysis.median_test import (bh_adjust, color_conditional_percentage, median_test_analysis,
                                            mood_median_test)
from forensics.data import forensynths, load_sets
from forensics.detectors import list_detectors
from helpers import calibrated_cached, run_script, save_cnndet_checkpoint, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def test_mood_median_test_equals_scipy_and_hand_computation():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    b = np.array([4.0, 6.0, 7.5, 9.0, 10.0, 11.0, 12.0, 13.0, 2.5])
    stat, p = mood_median_test(a, b)
    ref = scipy.stats.median_test(a, b)
    assert (stat, p) == (ref.statistic, ref.pvalue)
    grand = np.median(np.concatenate([a, b]))  # 6.0; ties go "below" (not above)
    table = np.array([[(a > grand).sum(), (b > grand).sum()], [(a <= grand).sum(), (b <= grand).sum()]])
    assert table.tolist() == [[2, 6], [6, 3]]
    chi2, p_hand, _, _ = scipy.stats.chi2_contingency(table, correction=True)  # Pearson with Yates
    assert stat == pytest.approx(chi2) and p == pytest.approx(p_hand)


def test_color_conditional_percentage_constructed_case():
    p = [0.01, 0.04, 0.05, 0.2, 0.001]
    assert color_conditional_percentage(p, 0.05, topk=4) == 75.0  # p <= alpha counts (the reference's <=)
    assert color_conditional_percentage(p, 0.05) == 80.0
    # BH on the first 4: sorted 0.01, 0.04, 0.05, 0.2 -> 0.04, 0.08, 0.0667, 0.2 -> step-up min: 0.04, 0.0667, 0.0667, 0.2
    np.testing.assert_allclose(bh_adjust(p[:4]), [0.04, 0.2 / 3, 0.2 / 3, 0.2])
    assert color_conditional_percentage(p, 0.05, topk=4, correction="bh") == 25.0
    assert color_conditional_percentage([0.01, np.nan], 0.05) == 50.0  # NaN = not significant
    with pytest.raises(ValueError):
        color_conditional_percentage(p, correction="holm")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """56 x 56 images (the tiny ViT's size), reals grey-ish and fakes colourful."""
    root = tmp_path_factory.mktemp("mtset")
    rng = np.random.default_rng(0)
    for label, sat in (("0_real", 0.2), ("1_fake", 1.0)):
        (root / "gan" / label).mkdir(parents=True)
        for i in range(6):
            base = rng.integers(30, 220, (56, 56, 1)).astype(np.float64)
            arr = base + sat * rng.normal(0, 40, (56, 56, 3))
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / "gan" / label / f"{i}.png")
    return root


@pytest.mark.parametrize("name", list_detectors())
def test_median_test_and_color_ablation_through_every_detector(name, data, tmp_path):
    det = calibrated_cached(name)
    records = forensynths(data, "gan", False, 0, None)
    keys = det.feature_keys()[:2] + det.feature_keys()[-1:]
    res = median_test_analysis(det, records, keys, batch_size=6, progress=False)  # one batch, as below
    tf, gray_tf = det.transform(crop="none"), det.transform(crop="none", grayscale=True)
    imgs = [Image.open(r.path).convert("RGB") for r in records]
    for transform, acts in ((tf, res.rgb), (gray_tf, res.ablated)):
        with torch.no_grad(), det.record(keys, reduce="spatial_max") as rec:
            det(torch.stack([transform(im) for im in imgs]))
        for j, key in enumerate(keys):
            np.testing.assert_allclose(acts.values[:, j], rec.key(key).double().numpy(), rtol=1e-4, atol=1e-5)
    for j in range(len(keys)):
        want = scipy.stats.median_test(res.rgb.values[:, j], res.ablated.values[:, j]).pvalue
        assert res.p_values[j] == pytest.approx(want)
    res.annotate(note="test")  # lands in the summary's settings, after the analysis' own
    paths = res.write(tmp_path, topk=3, grid_maps=2, per_map_plots=(name == "resnet50"))
    assert paths["csv"] == tmp_path / "median_test" / "gan.csv"  # the set's name from the records
    summary = json.loads(paths["json"].read_text())
    assert list(summary["settings"])[-1] == "note" and summary["settings"]["detector"] == det.name
    frame = pd.read_csv(paths["csv"])
    assert list(frame.columns[:2]) == ["feature_map_name", "p_value"]
    assert frame["feature_map_name"].tolist() == [str(k) for k in keys]  # FF-RS (given) order
    assert paths["grid_png"].stat().st_size > 0 and not list(tmp_path.rglob(".*"))
    study = color_ablation(det, load_sets(data, ["gan"], have_classes=False), batch_size=6, progress=False)
    assert 0.0 <= study.comparison.gray.rows["gan"]["ap"] <= 1.0


def test_cli(data, tmp_path, capsys):
    det = tiny("resnet50")
    weights = save_cnndet_checkpoint(tmp_path / "w.pth", det)
    csv = write_ranking_csv(tmp_path / "fake.csv", [(k, 1.0 / (i + 1)) for i, k in enumerate(det.feature_keys()[:4])])
    argv = ["--arch", "resnet50", "--weights", str(weights), "--dataset_dir", str(data), "--gan_name", "gan",
            "--fmap_csv", str(csv), "--topk", "3", "--bsize", "6", "--device", "cpu", "--no_per_map_plots",
            "--out", str(tmp_path / "out")]
    assert run_script(ROOT / "analyses" / "median_test.py", argv) == 0
    out = tmp_path / "out" / "resnet50_default"
    assert len(pd.read_csv(out / "median_test" / "gan.csv")) == 3
    assert (out / "activation_histograms" / "gan-grid.pdf").is_file()
    assert "of the top-3 maps are colour-conditional" in capsys.readouterr().out
