"""Colour ablation (forensics.data.color, forensics.analysis.color, analyses/color_ablation.py,
analyses/compare_color_robust.py; docs/colour.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from forensics.analysis.color import color_ablation, compare_color_robust, pair_labels
from forensics.analysis.color_comparison import compare_rgb_gray
from forensics.analysis.evaluate import eval_transform, evaluate_sets
from forensics.data import load_sets
from forensics.data.color import ABLATIONS, ColorAblation, chroma_only, grayscale
from forensics.detectors import Detector, DetectorConfig, Preprocessing, create
from forensics.metrics import average_precision
from helpers import run_script, save_cnndet_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


class Chroma(Detector):
    """logit = 20 * (mean R - mean B) on [0, 1] pixels: blind on grayscale images (logit 0, p 0.5)."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__(DetectorConfig(name="chroma", arch="test", paper="",
                                        preprocessing=Preprocessing((0, 0, 0), (1, 1, 1), crop="none", crop_size=32)))
        self.register_buffer("scale", torch.tensor(20.0 * sign))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, 0] - x[:, 2]).mean(dim=(1, 2))


class Luma(Chroma):
    """logit = 8 * (mean pixel - 0.5): unchanged by grayscale up to the luma weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * (x.mean(dim=(1, 2, 3)) - 0.5)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """Two flat sets; fakes are redder and brighter than reals on average, with overlap."""
    root = tmp_path_factory.mktemp("colorset")
    rng = np.random.default_rng(0)
    for name in ("gan_a", "gan_b"):
        for label, tint in (("0_real", 0.0), ("1_fake", 25.0)):
            folder = root / name / label
            folder.mkdir(parents=True)
            for i in range(6):
                arr = rng.integers(40, 200, (24, 28, 3)).astype(np.float64)
                arr[..., 0] += tint + rng.normal(0, 12)
                arr += tint / 2
                Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def sets(layout):
    return load_sets(layout, None, have_classes=False)


# ---------------------------------------------------------------------------- ablation ops
def test_grayscale_equals_pil_luma_everywhere():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (9, 11, 3)).astype(np.uint8))
    luma = np.asarray(img.convert("L"))
    expected = np.asarray(img, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma - expected).max() <= 1  # PIL's ITU-R 601-2 (fixed-point rounding)
    gray = np.asarray(grayscale(img))
    assert (gray == luma[..., None]).all()
    assert (gray == np.asarray(T.Grayscale(num_output_channels=3)(img))).all()
    det = create("resnet50")
    ref = T.Compose([T.ToTensor(), T.Normalize(det.config.preprocessing.mean, det.config.preprocessing.std)])
    want = ref(Image.merge("RGB", [img.convert("L")] * 3))
    for t in (det.transform(crop="none", grayscale=True), det.transform(crop="none", pixel_op=ColorAblation()),
              eval_transform(det, "none", ablation="grayscale"), eval_transform(det, "none", grayscale=True)):
        assert torch.equal(t(img), want)


def test_other_ablations():
    rng = np.random.default_rng(2)
    arr = rng.integers(80, 180, (6, 7, 3)).astype(np.uint8)  # chroma in gamut at luma 128
    img = Image.fromarray(arr)
    assert (np.asarray(ColorAblation("swap_rb")(img)) == arr[..., ::-1]).all()
    assert (np.asarray(ColorAblation("rotate_gbr")(img)) == arr[..., [1, 2, 0]]).all()
    ycc = np.asarray(chroma_only(img).convert("YCbCr"), dtype=int)
    orig = np.asarray(img.convert("YCbCr"), dtype=int)
    assert np.abs(ycc[..., 0] - 128).max() <= 2  # luma flattened (YCbCr round trip rounding)
    assert set(ABLATIONS) >= {"grayscale", "chroma_only", "swap_rb"}
    assert np.abs(ycc[..., 1:] - orig[..., 1:]).max() <= 2
    with pytest.raises(KeyError, match="unknown colour ablation"):
        ColorAblation("sepia")
    with pytest.raises(ValueError, match="contradicts"):
        eval_transform(create("resnet50"), "none", grayscale=True, ablation="swap_rb")


# ---------------------------------------------------------------------------- analysis
def test_color_ablation_study_values_and_outputs(sets, tmp_path):
    study = color_ablation(Chroma(), sets, batch_size=4, progress=False)
    cmp = study.comparison
    for name in sets:
        rgb, gray = cmp.rgb.predictions[name], cmp.gray.predictions[name]
        np.testing.assert_allclose(gray.probs, 0.5, atol=1e-6)  # grayscale: R == B
        assert cmp.gray.rows[name]["threshold"] == cmp.rgb.thresholds[name]
        keep = (rgb.labels == 1) & (rgb.probs >= 0.2)
        r, g = study.fake_probs(name)
        np.testing.assert_allclose(r, rgb.probs[keep])
        stats = study.box_stats(name)
        assert stats["n_box"] == keep.sum()
        assert stats["median_drop"] == pytest.approx(100 * (np.median(rgb.probs[keep]) - 0.5), abs=1e-4)
        rows = study.reference_rows(name)
        assert rows["ap"]["original_ap"] == pytest.approx(100 * average_precision(rgb.labels, rgb.probs))
        assert rows["uncalibrated"]["grayscale_y_fake_mean"] == pytest.approx(50.0, abs=1e-4)
        assert rows["calibrated"]["threshold"] == cmp.rgb.thresholds[name]
    frame = study.to_frame()
    np.testing.assert_allclose(frame["ap_drop"], frame["ap_rgb"] - frame["ap_ablated"])
    assert study.annotate(note="test") is study
    paths = study.write(tmp_path, tag="t")
    summary = json.loads(paths["json"].read_text())
    assert list(summary["settings"])[-1] == "note" and summary["settings"]["min_p"] == 0.2
    assert not [p for p in tmp_path.rglob(".*")]  # atomic writes leave no temporary files
    assert pd.read_csv(paths["csv"], index_col=0).index.tolist() == ["gan_a", "gan_b", "mean"]
    ap = pd.read_csv(tmp_path / "gan_a_t" / "gan_a-AP-#12-samples-no-crop.csv")
    assert list(ap.columns) == ["gan_name", "original_ap", "grayscale_ap"]
    with Image.open(paths["box_png"]) as im:
        assert im.size[0] > 300
    assert paths["gan_b_box_pdf"].read_bytes().startswith(b"%PDF")
    pred = pd.read_csv(paths["predictions"])
    assert len(pred) == 24 and {"p_fake_rgb", "p_fake_ablated"} <= set(pred.columns)


def test_other_ablation_through_evaluate(sets):
    det = Chroma()
    res = evaluate_sets(det, sets, ablation="swap_rb", batch_size=4)
    rgb = evaluate_sets(det, sets, batch_size=4)
    for name in sets:  # swapping R and B negates the chroma logit
        np.testing.assert_allclose(res.predictions[name].logits, -rgb.predictions[name].logits, atol=1e-5)
    assert res.settings["ablation"] == "swap_rb"


def test_color_comparison_annotates_both_runs(sets, tmp_path):
    cmp = compare_rgb_gray(Chroma(), sets, batch_size=6, progress=False)
    assert cmp.annotate(note="test") is cmp and cmp.record is cmp.rgb.settings
    paths = cmp.write(tmp_path)  # default stem "grayscale"; evaluate.py passes its own positionally
    assert paths["rgb_json"] == tmp_path / "grayscale-rgb.json" and paths["gray_json"] == tmp_path / "grayscale-gray.json"
    for run in ("rgb", "gray"):
        assert json.loads(paths[f"{run}_json"].read_text())["settings"]["note"] == "test"
    assert set(cmp.write(tmp_path, "eval").values()) == {tmp_path / f"eval-{p.name.split('-', 1)[1]}"
                                                         for p in paths.values()}


def test_compare_color_robust_table(sets, tmp_path):
    result = compare_color_robust({"R50": (Chroma(), Luma())}, sets, batch_size=6, progress=False)
    table = result.table()
    assert list(table.index) == ["R50 baseline RGB", "R50 baseline color-ablated", "CR-R50 RGB",
                                 "CR-R50 color-ablated"]
    assert list(table.columns) == ["gan_a", "gan_b", "mean"]
    base = result.studies["R50"]["baseline"].comparison
    assert table.loc["R50 baseline RGB", "gan_a"] == pytest.approx(100 * base.rgb.rows["gan_a"]["ap"])
    drops = result.drops()
    assert drops.loc["R50 baseline", "gan_b"] == pytest.approx(
        table.loc["R50 baseline RGB", "gan_b"] - table.loc["R50 baseline color-ablated", "gan_b"])
    md = result.to_markdown().splitlines()
    assert md[0] == "| detector / input | gan_a | gan_b | mean |" and len(md) == 6
    result.annotate(note="test")  # lands in every study's summary
    paths = result.write(tmp_path)
    assert paths["png"].stat().st_size > 0 and (tmp_path / "R50" / "robust" / "whisker" / "all.png").is_file()
    for which in ("baseline", "robust"):
        assert json.loads(paths[f"R50_{which}_json"].read_text())["settings"]["note"] == "test"
    assert pd.read_csv(paths["csv"], index_col=0).shape == (4, 3)


def test_pair_labels_keep_two_baselines_of_one_architecture_apart():
    assert pair_labels([("resnet50", "resnet50"), ("efb0", "efb0")]) == ["R50", "EfB0"]
    assert pair_labels([("resnet50", "resnet50"), ("resnet50", "resnet50_long"), ("efb0", "efb0")]) == [
        "R50-resnet50", "R50-resnet50_long", "EfB0"]


# ---------------------------------------------------------------------------- CLIs
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("w")
    out = []
    for seed in (0, 1):
        out.append(save_cnndet_checkpoint(folder / f"r50_{seed}.pth", seed=seed))
    return tuple(out)


def test_clis(layout, checkpoints, tmp_path, capsys):
    common = ["--arch", "resnet50", "--dataset_dir", str(layout), "--gan_name", "gan_a", "--num_instances", "2",
              "--device", "cpu", "--bsize", "4"]
    assert run_script(ROOT / "analyses" / "color_ablation.py",
                      [*common, "--weights", str(checkpoints[0]), "--out", str(tmp_path / "c")]) == 0
    out = tmp_path / "c" / "resnet50" / "grayscale_default"
    assert (out / "whisker" / "all.png").is_file() and (out / "whisker" / "gan_a.pdf").is_file()
    assert "gan_a: AP" in capsys.readouterr().out
    assert run_script(ROOT / "analyses" / "compare_color_robust.py",
                      [*common, "--weights", str(checkpoints[0]), "--cr_weights", str(checkpoints[1]),
                       "--out", str(tmp_path / "r")]) == 0
    table = pd.read_csv(tmp_path / "r" / "color-robust.csv", index_col=0)
    assert list(table.index)[2] == "CR-R50 RGB"
    assert "| R50 baseline RGB |" in (tmp_path / "r" / "color-robust.md").read_text()
    for script in ("color_ablation.py", "compare_color_robust.py", "median_test.py", "max_activation_patches.py"):
        assert run_script(ROOT / "analyses" / script, ["--help"]) == 0
