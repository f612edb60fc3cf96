"""Feature-map dropout sensitivity (forensics.analysis.dropout, analyses/sensitivity.py; docs/dropout.md, after
Chandrasegaran et al., ECCV 2022)."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from forensics.analysis.dropout import (ORIGINAL, dropout_analysis, feature_map_sets, random_k, score_variants,
                                        sweep_k, variant_metrics)
from forensics.analysis.fmap_ranking import write_ranking_csv
from forensics.data import load_sets
from forensics.detectors import FeatureMapKey
from forensics.metrics import accuracies, gmean_threshold
from helpers import calibrated_cached, save_cnndet_checkpoint, single_thread

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "sensitivity.py"
SIZE = 32


def toy_ranking(n: int = 60, seed: int = 0) -> list[tuple[FeatureMapKey, float]]:
    values = np.random.default_rng(seed).random(n)
    return [(FeatureMapKey("a", c, n), float(v)) for c, v in enumerate(values)]


def detector_ranking(detector, seed: int = 0) -> list[tuple[FeatureMapKey, float]]:
    keys = detector.feature_keys()
    values = np.random.default_rng(seed).random(len(keys))
    return list(zip(keys, values.tolist()))


@pytest.fixture(scope="module")
def detector():
    return calibrated_cached("resnet50", size=SIZE)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny flat ForenSynths layout: progan and biggan, 4 reals + 4 fakes each (fakes brighter)."""
    root = tmp_path_factory.mktemp("dropout") / "data"
    rng = np.random.default_rng(0)
    for gan in ("progan", "biggan"):
        for label, sub in enumerate(("0_real", "1_fake")):
            d = root / gan / sub
            d.mkdir(parents=True)
            for i in range(4):
                img = rng.integers(0, 160, (SIZE, SIZE, 3)) + 90 * label
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def sets(data_root):
    return load_sets(data_root, ["progan", "biggan"], have_classes=False)


# ---------------------------------------------------------------------------- sets
def test_sets_disjoint_and_deterministic():
    ranking = toy_ranking()
    s = feature_map_sets(ranking, 10, replicas=4, seed=3)
    top = set(s.topk)
    ordered = sorted(ranking, key=lambda kv: kv[1], reverse=True)
    assert s.topk == [k for k, _ in ordered[:10]] and s.lowk == [k for k, _ in ordered[-10:]]
    assert not top & set(s.lowk)
    assert len(s.randomk) == 4
    for keys in s.randomk:
        assert len(keys) == len(set(keys)) == 10 and not top & set(keys)
    again = feature_map_sets(ranking, 10, replicas=4, seed=3)
    assert again.randomk == s.randomk
    assert feature_map_sets(ranking, 10, replicas=4, seed=4).randomk != s.randomk
    assert len({tuple(k) for k in s.randomk}) > 1  # replicas differ
    with pytest.raises(ValueError):
        feature_map_sets(ranking, 31)


def test_reference_random_mode_semantics():
    ranking = toy_ranking()
    keys = [k for k, _ in ranking]
    top = feature_map_sets(ranking, 10).topk
    picked = random_k(keys, top, 10, np.random.default_rng(7), mode="reference")
    # the same draws by hand: len(all) with replacement, de-duplicated, seeded order, skip top-k, first k
    rng = np.random.default_rng(7)
    drawn = np.unique(rng.integers(0, len(keys), size=len(keys)))
    expected = [keys[i] for i in rng.permutation(drawn) if keys[i] not in set(top)][:10]
    assert picked == expected
    assert len(set(picked)) == 10 and not set(picked) & set(top)
    s = feature_map_sets(ranking, 10, replicas=3, seed=1, random_mode="reference")
    assert s.randomk == feature_map_sets(ranking, 10, replicas=3, seed=1, random_mode="reference").randomk


# ---------------------------------------------------------------------------- scoring
def test_masked_forward_equals_manual_mask(detector, sets):
    keys = detector.feature_keys()[:5] + detector.feature_keys(["layer1.0.conv1"])[:3]
    records = sets["progan"]
    transform = detector.transform(crop="none")
    with single_thread():
        preds, summary = score_variants(detector, records, {"m": keys}, batch_size=3, transform=transform)
        x = torch.stack([transform(Image.open(r.path).convert("RGB")) for r in records])
        handles = []
        for layer, chans in (("conv1", list(range(5))), ("layer1.0.conv1", [0, 1, 2])):
            def hook(_m, _i, out, chans=chans):
                out = out.clone()
                out[:, chans] = 0
                return out
            handles.append(detector.get_submodule(detector.feature_layer(layer).module_name("pre_bn"))
                           .register_forward_hook(hook))
        with torch.no_grad():
            manual = detector(x).numpy()
        for h in handles:
            h.remove()
        with torch.no_grad():
            plain = detector(x).numpy()
        post, _ = score_variants(detector, records, {"m": keys}, point="post_bn", batch_size=3, transform=transform)
    assert summary.used == len(records)
    np.testing.assert_allclose(preds["m"].logits, manual, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(preds[ORIGINAL].logits, plain, rtol=1e-4, atol=1e-5)
    assert not np.allclose(preds["m"].logits, plain)
    assert not np.allclose(post["m"].logits, preds["m"].logits)  # the BN shift survives pre-BN masking


def test_one_pass_decodes_each_image_once(detector, sets):
    calls = []
    base = detector.transform(crop="none")

    def counting(img):
        calls.append(1)
        return base(img)
    ranking = detector_ranking(detector)
    fmap_sets = feature_map_sets(ranking, 20, replicas=3)
    records = sets["biggan"]
    with single_thread():
        dropout_analysis(detector, {"biggan": records}, fmap_sets, transform=counting, batch_size=4)
        assert len(calls) == len(records)  # 1 + 2 + 3 forwards per batch, one decode
        calls.clear()
        sweep = sweep_k(detector, records, ranking, [5, 20], replicas=2, transform=counting, batch_size=4)
    assert len(calls) == len(records)
    assert sweep.ks == [5, 20] and all(len(v) == 2 for v in sweep.ap.values())


@pytest.fixture(scope="module")
def analysis(detector, sets):
    fmap_sets = feature_map_sets(detector_ranking(detector), 60, replicas=3, seed=0)
    with single_thread():
        ens = dropout_analysis(detector, sets, fmap_sets, fixed_threshold_sets=["progan"], batch_size=8)
        per = dropout_analysis(detector, sets, fmap_sets, fixed_threshold_sets=["progan"], batch_size=8,
                               per_replica=True)
    return ens, per


def test_ensemble_average_vs_per_replica(analysis):
    ens, per = analysis
    for name in ("progan", "biggan"):
        preds = ens.predictions[name]
        y, t = preds[ORIGINAL].labels, ens.thresholds[name]
        avg = np.mean([preds[f"randomk#{r}"].probs for r in range(3)], axis=0)
        assert ens.rows[name]["randomk"] == pytest.approx(variant_metrics(y, avg, t), nan_ok=True)
        reps = [variant_metrics(y, preds[f"randomk#{r}"].probs, t) for r in range(3)]
        assert per.replica_rows[name] == ens.replica_rows[name] == reps
        for m in ("ap", "acc_cal", "r_acc_cal"):
            assert per.rows[name]["randomk"][m] == pytest.approx(np.mean([r[m] for r in reps]))
            assert per.randomk_std[name][m] == pytest.approx(np.std([r[m] for r in reps]))
        assert not ens.randomk_std
        frame = per.to_frame()
        assert set(frame.columns) == {"set", "variant", "metric", "value", "std"}
        assert frame.query("variant == 'randomk' and metric == 'ap'")["std"].notna().all()


def test_threshold_calibrated_on_unmasked_and_reused(analysis):
    ens, _ = analysis
    preds = ens.predictions["biggan"]
    y = preds[ORIGINAL].labels
    t = gmean_threshold(y, preds[ORIGINAL].probs)
    assert ens.thresholds == {"progan": 0.5, "biggan": t}
    for variant, row in ens.rows["biggan"].items():
        assert row["threshold"] == t
    topk_acc = accuracies(y, preds["topk"].probs, t)
    assert ens.rows["biggan"]["topk"]["r_acc_cal"] == topk_acc["r_acc"]
    assert ens.rows["biggan"]["topk"]["f_acc_cal"] == topk_acc["f_acc"]
    assert all(r["threshold"] == 0.5 for r in ens.rows["progan"].values())


def test_reference_csvs_in_percent_threshold_not_scaled(analysis, tmp_path):
    ens, _ = analysis
    paths = ens.write(tmp_path, tag="0.5")
    ap = pd.read_csv(tmp_path / "biggan_0.5" / "biggan-AP-#8-samples-no-crop.csv")
    assert list(ap.columns) == ["gan_name/topk", "original_ap", "topk_masked_ap", "randomk_masked_ap",
                                "lowk_masked_ap"]
    assert ap["gan_name/topk"][0] == "biggan/60"
    assert ap["original_ap"][0] == pytest.approx(100 * ens.rows["biggan"][ORIGINAL]["ap"], abs=1e-5)
    acc = pd.read_csv(tmp_path / "biggan_0.5" / "biggan-CALIBRATED_ACC-#8-samples-no-crop.csv")
    expected = ["gan_name/topk", "original_threshold_calibrated"] + [
        f"{p}_{m}_calibrated" for p in ("original", "topk_masked", "randomk_masked", "lowk_masked")
        for m in ("r_acc", "f_acc", "acc")]
    assert list(acc.columns) == expected
    assert acc["original_threshold_calibrated"][0] == pytest.approx(ens.thresholds["biggan"], abs=1e-6)
    assert 0 <= acc["original_threshold_calibrated"][0] <= 1
    assert acc["topk_masked_f_acc_calibrated"][0] == pytest.approx(100 * ens.rows["biggan"]["topk"]["f_acc_cal"],
                                                                   abs=1e-5)
    assert json.loads(paths["json"].read_text())["feature_map_sets"]["k"] == 60
    assert "rand-k AP" in ens.format_table()


# ---------------------------------------------------------------------------- CLI
def test_cli_end_to_end(data_root, tmp_path, capsys):
    from helpers import calibrated
    model = calibrated("resnet50", size=SIZE)
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth", model)
    csv_path = write_ranking_csv(tmp_path / "progan_val-fake.csv", detector_ranking(model, seed=1))
    out = tmp_path / "out"
    saved = sys.argv
    sys.argv = [str(SCRIPT), "--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(data_root),
                "--gan_name", "progan", "biggan", "--have_classes", "0", "--topk", "30", "--fmap_csv", str(csv_path),
                "--bsize", "8", "--replicas", "2", "--blur_jpg", "0.5", "--device", "cpu", "--out", str(out),
                "--sweep_k", "10", "30", "--random_mode", "reference"]
    try:
        with single_thread(), pytest.raises(SystemExit) as exc:
            runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved
    assert exc.value.code == 0
    run = out / "resnet50" / "0.5"
    for gan in ("progan", "biggan"):
        assert (run / f"{gan}_0.5" / f"{gan}-AP-#8-samples-no-crop.csv").is_file()
        assert (run / f"{gan}_0.5" / f"{gan}-CALIBRATED_ACC-#8-samples-no-crop.csv").is_file()
    summary = json.loads((run / "dropout.json").read_text())
    assert summary["thresholds"]["progan"] == 0.5 and summary["settings"]["random_mode"] == "reference"
    tidy = pd.read_csv(run / "dropout.csv")
    assert set(tidy["variant"]) == {"original", "topk", "randomk", "lowk"}
    assert (run / "k_vs_ap.png").stat().st_size > 0 and (run / "k_vs_ap.pdf").stat().st_size > 0
    assert list(pd.read_csv(run / "k_vs_ap.csv")["k"]) == [10, 30]
    text = capsys.readouterr().out
    assert "Feature-map dropout of resnet50, k = 30" in text and "top-k AP" in text


def test_cli_reads_a_layout(data_root, tmp_path):
    """``--layout manifest``: the progan images listed in a CSV give the same dropout table as the folders."""
    from helpers import calibrated, run_script
    model = calibrated("resnet50", size=SIZE)
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth", model)
    csv_path = write_ranking_csv(tmp_path / "fake.csv", detector_ranking(model, seed=1))
    lines = [f"{p},{label},progan" for label, sub in enumerate(("0_real", "1_fake"))
             for p in sorted((data_root / "progan" / sub).glob("*.png"))]
    manifest = tmp_path / "m" / "progan.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,source\n" + "\n".join(lines) + "\n")
    common = ["--arch", "resnet50", "--weights", str(ckpt), "--topk", "30", "--fmap_csv", str(csv_path), "--bsize", "8",
              "--replicas", "2", "--device", "cpu"]
    with single_thread():
        assert run_script(SCRIPT, [*common, "--dataset_dir", str(data_root), "--gan_name", "progan",
                                   "--out", str(tmp_path / "folders")]) == 0
        assert run_script(SCRIPT, [*common, "--dataset_dir", str(manifest), "--layout", "manifest",
                                   "--out", str(tmp_path / "manifest")]) == 0
    a, b = (pd.read_csv(tmp_path / name / "resnet50" / "default" / "dropout.csv") for name in ("folders", "manifest"))
    assert set(a["set"]) == set(b["set"]) == {"progan"} and len(a) > 0
    pd.testing.assert_frame_equal(a, b)
