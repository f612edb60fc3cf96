"""Evaluation: per-set rows vs forensics.metrics, calibration reuse, ten-crop, perturbations, CLI."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from forensics.analysis.color_comparison import compare_rgb_gray
from forensics.analysis.evaluate import evaluate_sets
from forensics.analysis.perturbation_study import evaluate_sweep
from forensics.data import forensynths, load_sets
from forensics.data.perturb import (JPEG, Blur, Combined, Crop, Noise, PerturbedTransform, Resize, image_rng, make,
                                    sweep)
from forensics.detectors import Detector, DetectorConfig, Preprocessing, create
from forensics.detectors.preprocess import CropAveraging
from forensics.metrics import accuracies, binary_metrics, gmean_threshold, mean_row
from helpers import exit_code, save_cnndet_checkpoint

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- fixtures
def _save(folder: Path, n: int, rng: np.random.Generator, offset: int, shape=(40, 48)) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        base = rng.integers(0, 200, (*shape, 3)) + offset * rng.random()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """``flat/{0_real,1_fake}`` (3 + 3) and ``classes/{cat,dog}/{0_real,1_fake}`` (2 + 2 each); fakes
    are brighter on average, with overlap."""
    root = tmp_path_factory.mktemp("testset")
    rng = np.random.default_rng(0)
    for sub, n in (("flat", 3), ("classes/cat", 2), ("classes/dog", 2)):
        _save(root / sub / "0_real", n, rng, 20)
        _save(root / sub / "1_fake", n, rng, 60)
    return root


@pytest.fixture(scope="module")
def sets(layout):
    out = load_sets(layout, ["flat", "classes"])
    assert out["flat"] == forensynths(layout, "flat", have_classes=False)
    return out


class MeanPixel(Detector):
    """logit = 8 * (mean normalised pixel - 0.5): exact values are hand-computable."""

    def __init__(self) -> None:
        super().__init__(DetectorConfig(name="meanpix", arch="test", paper="",
                                        preprocessing=Preprocessing((0, 0, 0), (1, 1, 1), crop="none", crop_size=32)))
        self.register_buffer("scale", torch.tensor(8.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)


def _manual_probs(records, gray: bool = False) -> np.ndarray:
    out = []
    for r in records:
        img = Image.open(r.path).convert("L" if gray else "RGB")
        out.append(1 / (1 + np.exp(-8 * (np.asarray(img, dtype=np.float64).mean() / 255 - 0.5))))
    return np.array(out)


# ---------------------------------------------------------------------------- evaluation
def test_rows_equal_metrics_and_mean(sets):
    res = evaluate_sets(MeanPixel(), sets, calibrate=True, batch_size=4)
    for name, records in sets.items():
        y = np.array([r.label for r in records])
        p = _manual_probs(records)
        np.testing.assert_allclose(res.predictions[name].probs, p, atol=1e-6)
        expected = binary_metrics(y, p)
        row = res.rows[name]
        for k in ("acc", "ap", "r_acc", "f_acc", "y_real_mean", "y_fake_std", "n_real", "n_fake"):
            assert row[k] == pytest.approx(expected[k], abs=1e-6), k
        t = gmean_threshold(y, p)
        assert res.thresholds[name] == pytest.approx(t, abs=1e-6)
        assert row["acc_cal"] == pytest.approx(accuracies(y, p, t)["acc"])
        assert row["n_skipped"] == 0
    mean = mean_row({n: {k: v for k, v in r.items() if not k.startswith("n_")} for n, r in res.rows.items()})
    assert res.mean["ap"] == pytest.approx(mean["ap"]) and res.mean["acc"] == pytest.approx(mean["acc"])
    assert res.mean["n_real"] == 7
    frame = res.to_frame()
    assert list(frame.index) == ["flat", "classes", "mean"] and "acc_cal" in frame.columns
    lines = res.format().splitlines()
    r = res.rows["flat"]
    assert lines[0] == f"flat: {100 * r['acc']:.1f} / {100 * r['ap']:.1f}"
    assert lines[-1] == f"Mean: {100 * res.mean['acc']:.1f} / {100 * res.mean['ap']:.1f}"


def test_grayscale_uses_rgb_threshold(sets, tmp_path):
    det = MeanPixel()
    cmp = compare_rgb_gray(det, sets, batch_size=8)
    assert cmp.gray.thresholds == cmp.rgb.thresholds
    for name, records in sets.items():
        y = np.array([r.label for r in records])
        g = _manual_probs(records, gray=True)
        np.testing.assert_allclose(cmp.gray.predictions[name].probs, g, atol=2e-6)
        assert cmp.gray.rows[name]["acc_cal"] == pytest.approx(
            accuracies(y, g, cmp.rgb.thresholds[name])["acc"])
    frame = cmp.to_frame()
    np.testing.assert_allclose(frame["ap_drop"], frame["ap_rgb"] - frame["ap_gray"])
    paths = cmp.write(tmp_path, "gray")
    assert pd.read_csv(paths["csv"], index_col=0).shape[0] == 3
    with pytest.raises(ValueError, match="RGB"):
        evaluate_sets(det, sets, grayscale=True, calibrate=True)


def test_ten_crop_averages_logits(sets):
    torch.manual_seed(0)
    model = create("resnet50")
    records = sets["flat"][:2]
    res = evaluate_sets(model, {"flat": records}, crop="ten", crop_size=32, batch_size=2)
    img = Image.open(records[0].path).convert("RGB")
    norm = T.Compose([T.ToTensor(), T.Normalize(model.config.preprocessing.mean, model.config.preprocessing.std)])
    crops = torch.stack([norm(c) for c in T.TenCrop(32)(img)])
    with torch.no_grad():
        expected = model(crops).mean()
    assert res.predictions["flat"].logits[0] == pytest.approx(float(expected), abs=1e-4)
    x = norm(img.crop((0, 0, 32, 32))).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(CropAveraging(model)(x), model(x))


# ---------------------------------------------------------------------------- perturbations
@pytest.fixture(scope="module")
def image() -> Image.Image:
    """Non-square (H=64, W=96), smooth + texture, so JPEG quality matters."""
    yy, xx = np.mgrid[0:64, 0:96]
    base = np.stack([xx * 2.5, yy * 3.5, (xx + yy) * 1.5], axis=-1)
    noise = np.random.default_rng(1).integers(0, 40, (64, 96, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_blur_honours_sigma(image):
    arr = np.asarray(image)
    rng = np.random.default_rng(0)
    assert np.array_equal(np.asarray(Blur(sigma=1.5)(image, rng)), cv2.GaussianBlur(arr, (0, 0), 1.5))
    assert np.array_equal(np.asarray(Blur(sigma=0)(image, rng)), arr)
    k = 5
    assert np.array_equal(np.asarray(Blur(kernel=k)(image, rng)), cv2.GaussianBlur(arr, (k, k), 0))
    assert np.array_equal(np.asarray(Blur(kernel=k, reference_bugs=True)(image, rng)), cv2.GaussianBlur(arr, (k, k), 4))
    with pytest.raises(ValueError):
        Blur(sigma=2, reference_bugs=True)


def test_jpeg_honours_quality(image):
    arr = np.asarray(image)
    rng = np.random.default_rng(0)
    low, high = (np.asarray(JPEG(quality=q)(image, rng)) for q in (10, 74))
    assert not np.array_equal(low, high)
    assert np.abs(low.astype(int) - arr).mean() > np.abs(high.astype(int) - arr).mean()
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert np.array_equal(low, cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    _, buf95 = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])  # the bug: RGB as BGR at 95
    assert np.array_equal(np.asarray(JPEG(reference_bugs=True)(image, rng)), cv2.imdecode(buf95, cv2.IMREAD_COLOR))


def test_crop_keeps_or_swaps_shape(image):
    rng = np.random.default_rng(0)
    assert Crop(fraction=0.1)(image, rng).size == (96, 64)
    assert Crop(fraction=0.1, reference_bugs=True)(image, rng).size == (64, 96)
    arr = np.asarray(image)  # floor(64 * 0.05) = 3 rows, floor(96 * 0.05) = 4 columns each side
    expected = cv2.resize(arr[3:-3, 4:-4], (96, 64), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(np.asarray(Crop(fraction=0.1)(image, rng)), expected)
    assert Crop()(image, rng).size == (96, 64) and Combined()(image, rng).size == (96, 64)


def test_noise_std_and_determinism(image):
    grey = Image.new("RGB", (128, 128), (128, 128, 128))
    out = np.asarray(Noise(std=10)(grey, np.random.default_rng(0))).astype(float)
    assert abs((out - 128).std() - 10) < 0.5 and abs((out - 128).mean()) < 0.3
    assert Resize(scale=0.5)(image, np.random.default_rng(0)).size == (96, 64)
    for pert in (make("combined"), make("noise"), make("compress")):
        a, b = pert.apply(image, seed=3), pert.apply(image, seed=3)
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(pert.apply(image, seed=4)))
    assert image_rng(0, image).random() == image_rng(0, image.copy()).random()
    assert [p.level for p in sweep("blur")] == [0.5, 1.0, 2.0, 3.0, 4.0]


def test_rine_protocol_perturbs_about_half():
    t = PerturbedTransform(make("noise", 5.0), lambda im: im.size, seed=0, protocol="rine")
    sizes = [t(Image.new("RGB", (40, 30), (i, 2 * i, 3))) for i in range(40)]
    perturbed = sum(s == (256, 256) for s in sizes)
    assert 8 <= perturbed <= 32 and all(s in ((256, 256), (40, 30)) for s in sizes)


def test_perturbed_eval_is_deterministic_across_workers(sets):
    det = MeanPixel()
    base = evaluate_sets(det, sets, calibrate=True)
    runs = [evaluate_sets(det, sets, perturbation=make("combined"), seed=1, thresholds=base.thresholds,
                          num_workers=w) for w in (0, 2)]
    for name in sets:
        np.testing.assert_array_equal(runs[0].predictions[name].logits, runs[1].predictions[name].logits)
    assert runs[0].settings["threshold_source"] == "given"
    study = evaluate_sweep(det, sets, "noise", levels=[5, 20], calibrate=True, baseline=base)
    table = study.table("ap")
    assert list(table.index) == ["clean", "noise(std=5)", "noise(std=20)"]
    assert all(r.thresholds == base.thresholds for _, r in study.runs)


# ---------------------------------------------------------------------------- CLI
def _cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "analyses" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_cnndet_checkpoint(tmp_path_factory.mktemp("w") / "blur_jpg_prob0.5.pth")


def test_cli_end_to_end(layout, checkpoint, tmp_path, capsys):
    cli = _cli()
    common = ["--arch", "resnet50", "--weights", str(checkpoint), "--dataset_dir", str(layout), "--device", "cpu",
              "--bsize", "4", "--crop", "none", "--blur_jpg", "0.5", "--num_instances", "1"]
    assert cli.main([*common, "--calibrate", "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "eval_none_0.5.csv", index_col=0)
    assert list(frame.index) == ["classes", "flat", "mean"] and {"ap", "acc_cal"} <= set(frame.columns)
    printed = capsys.readouterr().out
    assert f"flat: {100 * frame.loc['flat', 'acc']:.1f} / {100 * frame.loc['flat', 'ap']:.1f}" in printed
    assert "Mean: " in printed

    assert cli.main([*common, "--gan_name", "flat", "--have_classes", "False", "--sweep", "noise",
                     "--levels", "5", "20", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "sweep-noise_none_0.5-ap.csv", index_col=0)
    assert list(table.index) == ["clean", "noise(std=5)", "noise(std=20)"]
    assert (tmp_path / "sweep-noise_none_0.5-ap.png").stat().st_size > 0
    assert exit_code(cli.main, [*common, "--gan_name", "flat", "--have_classes", "True", "--out", str(tmp_path)]) == 2
    assert cli.main([*common, "--grayscale", "--calibrate", "--out", str(tmp_path)]) == 0
    drop = pd.read_csv(tmp_path / "gray_none_0.5-ap-drop.csv", index_col=0)
    assert list(drop.index) == ["classes", "flat", "mean"] and "threshold" in drop.columns
    assert cli.main([*common, "--perturb", "jpeg", "--level", "50", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "perturb-jpeg-50_none_0.5.csv").is_file()
    printed = capsys.readouterr().out
    assert "AP drop (RGB - grayscale)" in printed and "jpeg(quality=50) (always)" in printed
    from forensics.cli.analysis_args import parse_have_classes
    assert parse_have_classes("0") is False and parse_have_classes("auto") is None
    with pytest.raises(SystemExit):  # combined has no fixed level: a usage error, before any work
        cli.main([*common, "--perturb", "combined", "--level", "3"])
