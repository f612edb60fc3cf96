"""The seed study: runs per (benchmark seed, training seed), resumable, summarised, properties checked."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from forensics import defaults
from forensics.analysis import seed_study
from helpers import single_thread
from test_defaults import RECIPE, TINY


def _rows(b, s, det, part, values):
    return [dict(zip(seed_study.COLUMNS, (b, s, det, part, fam, metric, v))) for fam, metric, v in values]


def test_property_checks_on_known_numbers():
    rows = _rows(0, 0, "resnet50", "properties", [
        ("tconv", "ap_rgb", 0.98), ("tconv", "ap_gray", 0.90), ("near", "ap_rgb", 0.95), ("near", "ap_gray", 0.9),
        ("far1", "ap_rgb", 0.70), ("far1", "ap_gray", 0.7), ("far2", "ap_rgb", 0.88), ("far2", "ap_gray", 0.8)])
    rows += _rows(0, 0, "resnet50_cr", "robust", [("tconv", "ap_rgb", 0.97), ("tconv", "ap_gray", 0.95)])
    # seed 1: AP too low, one family far only, grayscale costs little, robust loses more than half
    rows += _rows(0, 1, "resnet50", "properties", [
        ("tconv", "ap_rgb", 0.90), ("tconv", "ap_gray", 0.87), ("near", "ap_rgb", 0.89), ("near", "ap_gray", 0.9),
        ("far1", "ap_rgb", 0.70), ("far1", "ap_gray", 0.7), ("far2", "ap_rgb", 0.85), ("far2", "ap_gray", 0.8)])
    rows += _rows(0, 1, "resnet50_cr", "robust", [("tconv", "ap_rgb", 0.97), ("tconv", "ap_gray", 0.95)])
    checks = seed_study.property_checks(pd.DataFrame(rows), "tconv").set_index("train_seed")
    assert checks.loc[0, ["a", "b", "c_baseline", "c_robust"]].tolist() == [True, True, True, True]
    assert checks.loc[1, ["a", "b", "c_baseline", "c_robust"]].tolist() == [False, False, False, False]
    assert checks.loc[0, "gray_drop"] == pytest.approx(0.08) and checks.loc[0, "robust_gray_drop"] == pytest.approx(0.02)
    summary = seed_study.summarise(pd.DataFrame(rows))
    row = summary[(summary.detector == "resnet50") & (summary.set == "tconv") & (summary.metric == "ap_rgb")].iloc[0]
    assert (row["mean"], row["min"], row["max"], row["n"]) == (pytest.approx(0.94), 0.90, 0.98, 2)
    drop = summary[(summary.detector == "resnet50") & (summary.set == "tconv") & (summary.metric == "ap_gray_drop")]
    # the per-run difference (0.08 and 0.03), not the difference of the ranges
    assert (drop.iloc[0]["mean"], drop.iloc[0]["min"], drop.iloc[0]["max"]) == (
        pytest.approx(0.055), pytest.approx(0.03), pytest.approx(0.08))
    text = seed_study.markdown(summary, seed_study.property_checks(pd.DataFrame(rows), "tconv"))
    assert "94.0 [90.0, 98.0]" in text and "| 0 | 1 | 0.900 |" in text


def test_study_runs_every_seed_resumes_and_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(defaults.DEFAULT_RECIPES, "resnet50", RECIPE)
    out = tmp_path / "study"
    with single_thread():
        first = seed_study.run_study([0], [0, 1], ["properties", "color"], out, batch_size=4, bench_config=TINY)
    frame = first.frame
    assert first.train_family == TINY.train_family
    assert sorted(frame["train_seed"].unique()) == [0, 1]
    ap = frame[(frame.metric == "ap_rgb")]
    assert set(ap["set"]) == {"tconv", "nearest"} and ap["value"].between(0, 1).all()
    # two training seeds train two detectors (seed 0 = the default recipe's cache entry)
    runs = sorted(p.name for p in (tmp_path / "cache" / "detectors").iterdir() if p.is_dir())
    assert len(runs) == 2
    ckpts = frame.attrs["sources"]
    assert ckpts["b0-s0"]["checkpoints"]["resnet50"][0]["sha256"] != ckpts["b0-s1"]["checkpoints"]["resnet50"][0]["sha256"]
    assert ckpts["b0-s0"]["benchmarks"][0]["images_sha256"]
    # a second study reads the finished parts back instead of recomputing them
    monkeypatch.setitem(seed_study.PARTS, "properties", lambda run: pytest.fail("recomputed a finished part"))
    second = seed_study.run_study([0], [0, 1], ["properties"], out, batch_size=4, bench_config=TINY)
    again = second.frame
    pd.testing.assert_frame_equal(again.reset_index(drop=True),
                                  frame[frame.part == "properties"].reset_index(drop=True), check_dtype=False)
    assert again.attrs["sources"] == ckpts and again.attrs["timings"] == []  # read back runs are still described
    first.write(out)
    paths = second.annotate(test=True).write(out)
    study = json.loads((out / "seed_study.json").read_text())
    assert list(study) == ["settings", "timings", "runs", "provenance"] and study["settings"] == {"test": True}
    order = lambda t: (t["bench_seed"], t["train_seed"], t["part"])  # noqa: E731
    assert study["timings"] == sorted(frame.attrs["timings"], key=order) and set(study["runs"]) == {"b0-s0", "b0-s1"}
    assert {p.name for p in paths.values()} == {"seeds.csv", "summary.csv", "properties.csv", "summary.md",
                                                 "seed_study.json"}
    checks = pd.read_csv(out / "properties.csv")
    assert len(checks) == 2 and np.isnan(checks["c_robust"]).all()  # the robust part was not run


def test_dropout_and_median_parts_run_on_a_ranking(tmp_path, monkeypatch):
    """The parts that need an FF-RS ranking (a 2-step detector is too unsure for FF-RS's confidence filter,
    so the ranking is given: maps in key order)."""
    from forensics.detectors import FeatureMapKey
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(defaults.DEFAULT_RECIPES, "resnet50", RECIPE)

    def ranking(self, name="resnet50"):
        keys = self.detector(name).feature_keys()
        return [(FeatureMapKey.parse(k), float(len(keys) - i)) for i, k in enumerate(keys)], 5
    monkeypatch.setattr(seed_study.SeedRun, "ranking", ranking)
    with single_thread():
        frame = seed_study.run_study([0], [0], ["dropout", "median"], tmp_path / "study", batch_size=4,
                                     bench_config=TINY, replicas=2).frame
    got = frame.set_index(["part", "set", "metric"])["value"]
    assert got[("dropout", "all", "k")] == 5
    assert {m for p, s, m in got.index if p == "dropout"} >= {"ap_original", "ap_topk", "ap_randomk", "ap_lowk"}
    assert 0 <= got[("median", "tconv", "color_conditional_pct")] <= 100


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown part"):
        seed_study.run_study([0], [0], ["nope"], tmp_path)


def test_attribution_part_reports_every_block_and_the_chosen_one(tmp_path, monkeypatch):
    """The attribution part runs analyses/attribution.py's embedded default on the run's benchmark (here the
    tiny benchmark and the 4-block tiny CLIP stand-in), its partition and probes drawn from the training seed."""
    from forensics.attribution import run as attribution_run
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(attribution_run, "EMBEDDED_BACKBONE", "forensics-tiny-vit")
    monkeypatch.setattr(attribution_run, "EMBEDDED_C_STEP", 3)
    split = tmp_path / "split.json"
    split.write_text('{"layout": "families", "known": ["tconv"], "unknown": ["nearest"]}')
    monkeypatch.setattr(attribution_run, "DEFAULT_SPLIT", str(split))
    config = dataclasses.replace(TINY, test_per_family=10)
    with single_thread():
        frame = seed_study.run_study([0], [0, 1], ["attribution"], tmp_path / "study", bench_config=config).frame
    got = frame.set_index(["train_seed", "set", "metric"])["value"]
    blocks = {s for _, s, _ in got.index if s.startswith("block ")}
    assert blocks == {f"block {b}" for b in range(4)}
    for seed in (0, 1):
        best = int(got[(seed, "best block", "block")])
        for m in seed_study.ATTRIBUTION_METRICS:
            assert 0 <= got[(seed, f"block {best}", m)] <= 1
            assert got[(seed, "best block", m)] == got[(seed, f"block {best}", m)]
    assert set(frame["detector"]) == {"forensics-tiny-vit"}
    table = seed_study.markdown(seed_study.summarise(frame), seed_study.property_checks(frame, "tconv"))
    assert "**attribution** (forensics-tiny-vit; mean [min, max] over 2 runs)" in table
    assert "properties per run" not in table  # no properties part: no per-run property rows
