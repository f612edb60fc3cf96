"""Open-set attribution: splits, feature cache, per-block pipeline and CLI on tiny generated data."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.attribution import load_split, partition, predefined, run_attribution
from forensics.attribution.features import attribution_preprocessing, block_features, parse_blocks
from forensics.attribution.splits import SplitSpec
from forensics.defaults import default_clip_backbone
from forensics.errors import DatasetLayoutError
from helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("fa", "fb", "fc", "fd")
TINTS = {"fa": (60, 0, 0), "fb": (0, 60, 0), "fc": (0, 0, 60), "fd": (40, 40, -40)}


def make_families(root: Path, n: int = 16, size: int = 64) -> Path:
    """``<root>/<family>/{0_real,1_fake}``: grey noise reals; fakes = noise + a family colour tint."""
    rng = np.random.default_rng(0)
    for fam in FAMILIES:
        for label, sub in ((0, "0_real"), (1, "1_fake")):
            folder = root / fam / sub
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.normal(128, 30, (size, size, 1)).repeat(3, axis=2)
                if label:
                    img = img + np.array(TINTS[fam])
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{sub}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> Path:
    return make_families(tmp_path_factory.mktemp("fam"))


@pytest.fixture(scope="module")
def backbone():
    return default_clip_backbone("forensics-tiny-vit")


SPEC = SplitSpec("test", "families", ("fa", "fb"), ("fc", "fd"))


def test_predefined_genimage_sliding_windows():
    specs = predefined()
    order = ["wukong", "Midjourney", "VQDM", "stable_diffusion_v_1_4", "ADM", "BigGAN", "glide",
             "stable_diffusion_v_1_5"]
    all8 = set(order)
    for i in range(5):
        s = specs[f"genimage:split{i + 1}"]
        assert list(s.known) == order[i:i + 4] and set(s.unknown) == all8 - set(s.known)
        assert s.classes[0] == "real" and s.n_known == 5 and s.layout == "genimage"
        assert not {"stable_diffusion_v_1_4", "stable_diffusion_v_1_5"} <= set(s.known)
    bench = specs["synthetic:split1"]
    assert bench.known == ("tconv", "tconv3", "pshuffle") and bench.layout == "families"


def test_user_split_file_and_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("layout: families\nknown: [fa]\nunknown: [fb, fc]\n")
    spec = load_split(path)
    assert spec.classes == ["real", "fa", "fb", "fc"] and spec.n_known == 2
    (tmp_path / "mine.json").write_text(json.dumps({"layout": "families", "known": ["fa"], "unknown": ["fb"]}))
    assert load_split(tmp_path / "mine.json").unknown == ("fb",)
    with pytest.raises(ValueError, match="share"):
        SplitSpec("x", "families", ("fa",), ("fa",))
    with pytest.raises(ValueError, match="layout"):
        SplitSpec("x", "nope", ("fa",), ("fb",))
    with pytest.raises(ValueError, match="neither"):
        load_split(tmp_path / "missing.yaml")


def test_partition_is_disjoint_deterministic_and_keeps_unknowns_out_of_train(families):
    part = partition(families, SPEC, fractions=(0.5, 0.25, 0.25), seed=3)
    paths = {p: {str(r.path) for r in part.records[p]} for p in ("train", "val", "test")}
    assert not (paths["train"] & paths["val"]) and not (paths["train"] & paths["test"])
    assert not (paths["val"] & paths["test"])
    assert set(part.labels["train"]) == {0, 1, 2}               # real, fa, fb only
    counts = part.counts()
    assert counts["train"] == {"real": 16, "fa": 8, "fb": 8}    # 32 pooled reals of fa, fb: half
    assert counts["test"] == {"real": 8, "fa": 4, "fb": 4, "fc": 4, "fd": 4}
    reals = [r for r in part.records["train"] if r.label == 0]
    assert {r.source for r in reals} <= {"fa", "fb"}            # reals only from known families
    again = partition(families, SPEC, fractions=(0.5, 0.25, 0.25), seed=3)
    assert [r.path for r in again.records["test"]] == [r.path for r in part.records["test"]]
    other = partition(families, SPEC, fractions=(0.5, 0.25, 0.25), seed=4)
    assert [r.path for r in other.records["test"]] != [r.path for r in part.records["test"]]
    capped = partition(families, SPEC, max_per_class=8, fractions=(0.5, 0.25, 0.25), seed=3)
    assert capped.counts()["train"] == {"real": 4, "fa": 4, "fb": 4}
    with pytest.raises(DatasetLayoutError):
        partition(families, SplitSpec("x", "families", ("fa",), ("nope",)))


def test_parse_blocks():
    assert parse_blocks("all", 4) == [0, 1, 2, 3]
    assert parse_blocks("0, -1 3", 4) == [0, 3]
    with pytest.raises(ValueError):
        parse_blocks("4", 4)


def test_block_features_are_the_pre_ln_post_cls_and_the_cache_is_reused_and_invalidated(families, backbone,
                                                                                          tmp_path):
    part = partition(families, SPEC, fractions=(0.5, 0.25, 0.25))
    records = part.all_records()[:6]
    first = block_features(backbone, records, cache_dir=tmp_path, progress=False)
    assert not first.summary.hit and first.features.shape == (6, backbone.blocks, backbone.width)
    # the feature is the CLS of each block's output; the last one through ln_post @ proj is the embedding
    from forensics.data import load_rgb
    from forensics.detectors.preprocess import build_eval_transform
    x = torch.stack([build_eval_transform(attribution_preprocessing(backbone))(load_rgb(r.path)) for r in records])
    with torch.no_grad():
        emb, tokens = backbone.forward_with_cls_tokens(x, site="")
        visual = backbone.visual
        projected = visual.ln_post(torch.from_numpy(first.features[:, -1])) @ visual.proj
    assert np.allclose(first.features, torch.stack(tokens, 1).numpy(), atol=1e-5)
    assert torch.allclose(projected, emb, atol=1e-4)
    again = block_features(backbone, records, cache_dir=tmp_path, progress=False)
    assert again.summary.hit and np.array_equal(again.features, first.features)
    # invalidated by: another site, another preprocessing, another file list, a changed file
    assert not block_features(backbone, records, site="ln_2", cache_dir=tmp_path, progress=False).summary.hit
    pre = attribution_preprocessing(backbone, norm="imagenet")
    assert not block_features(backbone, records, cache_dir=tmp_path, preprocessing=pre, progress=False).summary.hit
    assert not block_features(backbone, records[:5], cache_dir=tmp_path, progress=False).summary.hit
    st = os.stat(records[0].path)
    os.utime(records[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not block_features(backbone, records, cache_dir=tmp_path, progress=False).summary.hit
    other = default_clip_backbone("forensics-tiny-vit", seed=1)
    assert not block_features(other, records, cache_dir=tmp_path, progress=False).summary.hit


def test_run_attribution_separates_tinted_families(families, backbone, tmp_path):
    report = run_attribution(backbone, families, SPEC, blocks="0 -1", params=[1.0, 100.0], cache_dir=tmp_path,
                             fractions=(0.5, 0.25, 0.25), progress=False,
                             probe_options={"standardize": True, "max_iter": 100})
    assert [r.block for r in report.results] == [0, backbone.blocks - 1]
    for r in report.results:
        assert r.param in (1.0, 100.0) and len(r.sweep) == 2
        assert r.test.metrics["accuracy"] >= 0.75                  # chance: 1/3
        assert len(r.test.metrics["per_unknown"]) == 2
        assert r.test.metrics["oscr"] <= r.test.metrics["accuracy"] + 1e-12
    knn = run_attribution(backbone, families, SPEC, blocks="0", classifier="knn", params=[1, 3], select="accuracy",
                          cache_dir=tmp_path, fractions=(0.5, 0.25, 0.25), progress=False,
                          probe_options={"score": "similarity"})
    assert knn.results[0].param_name == "k" and knn.results[0].test.metrics["accuracy"] >= 0.75
    assert "val_accuracy" in knn.rows()[0]
    paths = knn.annotate(note="test").write(tmp_path / "out", figures=False)
    assert set(paths) == {"results", "sweep", "unknown_details", "summary"}
    assert json.loads(paths["summary"].read_text())["settings"]["note"] == "test"


def test_cli_end_to_end(families, tmp_path):
    split = tmp_path / "split.yaml"
    split.write_text("layout: families\nknown: [fa, fb]\nunknown: [fc, fd]\n")
    out = tmp_path / "out"
    code = run_script(ROOT / "analyses" / "attribution.py",
                      ["--dataset_dir", str(families), "--split", str(split), "--backbone", "forensics-tiny-vit",
                       "--weights", "random", "--cache_dir", str(tmp_path / "cache"), "--c_min", "-2", "--c_max", "2",
                       "--c_step", "3", "--standardize", "--max_train_iters", "100", "--fractions", "0.5,0.25,0.25", "--blocks", "0", "1",
                       "--device", "cpu", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["block"] for r in rows] == ["0", "1"]
    assert all(float(r["accuracy"]) >= 0.75 for r in rows)
    sweep = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(sweep) == 6 and sorted(float(r["C"]) for r in sweep) == pytest.approx([0.01, 0.01, 1, 1, 100, 100])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["real", "fa", "fb", "fc", "fd"] and summary["settings"]["site"] == "block"
    assert list(summary["settings"])[-3:] == ["provenance", "title", "args"]  # the analysis', then the run's
    for name in ("metrics_vs_block", "confusion", "score_histograms"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    assert run_script(ROOT / "analyses" / "attribution.py", ["--split", "nope:split9", "--dataset_dir",
                                                             str(families), "--weights", "random"]) == 2


def test_unreadable_images_are_listed_not_silently_dropped(tmp_path, backbone):
    root = make_families(tmp_path / "data", n=8)
    (root / "fa" / "1_fake" / "zz_broken.png").write_bytes(b"not a png")
    spec = SplitSpec("x", "families", ("fa",), ("fb",))
    report = run_attribution(backbone, root, spec, blocks="0", params=[1.0], cache_dir=tmp_path / "cache",
                             fractions=(0.5, 0.25, 0.25), progress=False, probe_options={"max_iter": 50})
    skipped = report.settings["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["zz_broken.png"] and skipped[0]["reason"]
    counts = report.settings["counts"]
    assert sum(c.get("fa", 0) for c in counts.values()) == 9      # partitioned with the others ...
    partitioned = sum(sum(c.values()) for c in counts.values())
    assert sum(report.settings["used"].values()) == partitioned - 1  # ... and left out of the features


def test_embedded_preprocessing_resizes_only_small_images(backbone):
    from forensics.attribution.run import embedded_preprocessing
    small = default_clip_backbone("forensics-small-vit")
    assert embedded_preprocessing(small, 64).resize == 224 and embedded_preprocessing(small, 64).crop_size == 224
    assert embedded_preprocessing(backbone, 64).resize is None  # 56 px input: centre crop of the 64 px image
    assert embedded_preprocessing(backbone, 64, norm="imagenet").mean == (0.485, 0.456, 0.406)


def test_genimage_partition_trains_on_train_folder_and_splits_val_folder(tmp_path):
    for gen in ("g1", "g2", "g3"):
        for split, n in (("train", 6), ("val", 8)):
            for side in ("ai", "nature"):
                folder = tmp_path / gen / split / side
                folder.mkdir(parents=True)
                for i in range(n):
                    (folder / f"{gen}_{side}_{i}.png").write_bytes(b"x")
    spec = SplitSpec("gi", "genimage", ("g1", "g2"), ("g3",))
    part = partition(tmp_path, spec, fractions=(0.5, 0.5, 0.5), seed=0)
    counts = part.counts()
    assert counts["train"] == {"real": 12, "g1": 6, "g2": 6}        # every train image of the known gens
    assert counts["val"] == {"real": 8, "g1": 4, "g2": 4, "g3": 4}    # val folder cut in two halves
    assert counts["test"] == counts["val"]
    assert all("/train/" in str(r.path) for r in part.records["train"])
    assert all("/val/" in str(r.path) for p in ("val", "test") for r in part.records[p])
    assert not {r.path for r in part.records["val"]} & {r.path for r in part.records["test"]}
    assert partition(tmp_path, spec, max_per_class=3).counts()["test"]["g1"] == 3


def test_reference_annotation_files(tmp_path, caplog):
    spec = SplitSpec("genimage:split2", "annotations", ("g1", "g2"), ("g3", "g4"))
    images = tmp_path / "img"
    images.mkdir()

    def write(part: str, name: str, rows: list[tuple[str, int]]) -> None:
        folder = tmp_path / f"split2_{part}" / "annotations"
        folder.mkdir(parents=True, exist_ok=True)
        for file, _ in rows:
            (images / file).write_bytes(b"x")
        (folder / name).write_text("".join(f"{images / f}\t{lab}\n" for f, lab in rows))

    write("train", "split2_train.txt", [(f"t{c}_{i}.png", c) for c in range(3) for i in range(3)])
    write("val", "split2_val.txt", [(f"v{c}_{i}.png", c) for c in range(3) for i in range(2)])
    write("val", "split2_val_out_all.txt", [("vo_a.png", 7), ("vo_b.png", 5)])
    write("test", "split2_test_out_all.txt", [("to_a.png", 5), ("to_b.png", 7), ("to_c.png", 7)])
    with caplog.at_level("WARNING"):
        part = partition(tmp_path, spec, max_per_class=2)
    assert "validation file" in caplog.text                        # no split2_test.txt: the reference's reuse
    counts = part.counts()
    assert counts["train"] == {"real": 2, "g1": 2, "g2": 2}        # first 2 lines per class, file order
    assert counts["val"] == {"real": 2, "g1": 2, "g2": 2, "g3": 1, "g4": 1}
    assert counts["test"] == {"real": 2, "g1": 2, "g2": 2, "g3": 1, "g4": 2}  # label 5 -> g3, 7 -> g4
    assert {r.path.name for r in part.records["train"] if r.source == "g1"} == {"t1_0.png", "t1_1.png"}
    assert [r.path for r in part.records["test"] if r.label == 0] == [r.path for r in part.records["val"]
                                                                       if r.label == 0]
    (tmp_path / "split2_val" / "annotations" / "split2_val_out_all.txt").write_text(f"{images / 'vo_a.png'}\t1\n")
    with pytest.raises(DatasetLayoutError, match="distinct labels"):
        partition(tmp_path, spec)


def test_cli_help_and_embedded_default_path(families, backbone, monkeypatch, tmp_path):
    """No --weights/--dataset_dir: the embedded default (stubbed here with the generated families, so the
    test does not extract the benchmark's features) with one C per decade."""
    import forensics.attribution.run as run_mod
    script = ROOT / "analyses" / "attribution.py"
    assert run_script(script, ["--help"]) == 0
    calls = []

    def fake_default(backbone_name=None, split=None, backbone=None):
        calls.append((backbone_name, split))
        return default_clip_backbone("forensics-tiny-vit"), families, SPEC, 8, None

    monkeypatch.setattr(run_mod, "embedded_default", fake_default)
    out = tmp_path / "out"
    assert run_script(script, ["--out", str(out), "--cache_dir", str(tmp_path / "c"), "--blocks", "0",
                               "--max_train_iters", "20", "--device", "cpu"]) == 0
    assert calls == [(None, None)]
    assert len(list(csv.DictReader((out / "sweep.csv").open()))) == 12  # 10^-6 .. 10^5, one per decade
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["max_per_class"] == 8
