"""The feature-space view (analyses/embed.py, forensics.analysis.embed): per-class sampling, the head's input
as features, t-SNE determinism, separation of well-separated classes, the CLI's files and the report page."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from forensics.analysis.embed import (collect_features, embed, head_input, knn_accuracy, reduce_pca,
                                      sample_per_class, separation, tsne_2d)
from forensics.data import ImageRecord, load_sets
from forensics.errors import InputError
from forensics.report import discover, write_report
from helpers import calibrated, run_script, save_cnndet_checkpoint, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "embed.py"


def _records(n_real: int, n_fake: int, n_unknown: int = 0) -> list[ImageRecord]:
    return ([ImageRecord(Path(f"r{i}.png"), 0, "real") for i in range(n_real)]
            + [ImageRecord(Path(f"f{i}.png"), 1, "gan") for i in range(n_fake)]
            + [ImageRecord(Path(f"u{i}.png"), None, "x") for i in range(n_unknown)])


def test_sample_per_class_splits_evenly_and_is_seeded():
    records = _records(100, 10, 30)
    kept, counts = sample_per_class(records, 60, seed=3)
    by = {c["class"]: c for c in counts}
    # fake has fewer than its share (20): all 10 kept, the rest split over real and unknown
    assert by["fake"]["kept"] == 10 and by["real"]["kept"] == 25 and by["unknown"]["kept"] == 25
    assert sum(c["kept"] for c in counts) == len(kept) == 60 and by["real"]["dropped"] == 75
    assert kept == sorted(set(kept))
    assert kept == sample_per_class(records, 60, seed=3)[0] != sample_per_class(records, 60, seed=4)[0]
    assert sample_per_class(records, 0)[0] == list(range(140))


def _blobs(n: int = 60, dims: int = 80, gap: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, dims))
    x[labels == 1, :5] += gap
    return x, labels


def test_tsne_deterministic_and_separates_separated_classes():
    x, labels = _blobs()
    reduced, info = reduce_pca(x, 50, seed=0)
    assert reduced.shape == (60, 50) and info["pca"] == 50 and 0 < info["pca_explained_variance"] <= 1
    a, perp = tsne_2d(reduced, seed=1, perplexity=30)
    b, _ = tsne_2d(reduced, seed=1, perplexity=30)
    np.testing.assert_array_equal(a, b)
    assert perp == pytest.approx(59 / 3)  # capped for a small set
    assert separation(a, labels)["knn_accuracy"] == 1.0 and separation(a, labels)["silhouette"] > 0.5
    # overlapping classes: close to chance
    mixed, _ = _blobs(gap=0.0)
    c, _ = tsne_2d(reduce_pca(mixed, 50, 0)[0], seed=1)
    assert knn_accuracy(c, labels) < 0.75
    assert np.isnan(separation(a, np.zeros(60, dtype=int))["knn_accuracy"])
    with pytest.raises(InputError):
        tsne_2d(x[:3])


def test_neighbour_agreement_tells_which_set_mixes_with_the_reals():
    """Reals at 0, the fakes of set 'apart' far away, those of set 'mixed' among the reals: every neighbour of an
    'apart' fake is a fake, an image of the mixed pair agrees about half the time."""
    from forensics.analysis.embed import neighbour_agreement
    rng = np.random.default_rng(0)
    reals, mixed, apart = rng.normal(0, 1, (40, 2)), rng.normal(0, 1, (40, 2)), rng.normal(50, 1, (40, 2))
    points = np.concatenate([reals, mixed, apart])
    labels = np.array([0] * 40 + [1] * 80)
    sets = np.array(["real"] * 40 + ["mixed"] * 40 + ["apart"] * 40, dtype=object)
    rows = {(r["set"], r["class"]): r for r in neighbour_agreement("v", sets, labels, points, points)}
    assert rows[("apart", "fake")]["neighbours_same_2d"] == 1.0 and rows[("apart", "fake")]["n"] == 40
    assert 0.3 < rows[("mixed", "fake")]["neighbours_same_2d"] < 0.7
    assert 0.3 < rows[("real", "real")]["neighbours_same_features"] < 0.7
    assert set(rows) == {("real", "real"), ("mixed", "fake"), ("apart", "fake")}


def _mini_set(root: Path, n: int = 8, size: int = 40) -> Path:
    """Two ForenSynths sets; reals dark noise, fakes bright stripes (well apart in any feature space), and one
    broken file."""
    rng = np.random.default_rng(0)
    for name in ("gan_a", "gan_b"):
        for sub in ("0_real", "1_fake"):
            d = root / name / sub
            d.mkdir(parents=True)
            for i in range(n):
                if sub == "0_real":
                    arr = rng.integers(0, 60, (size, size, 3))
                else:
                    arr = np.zeros((size, size, 3)) + 200
                    arr[:, ::4] = rng.integers(0, 255, (size, 3))[:, None, :]
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{i}.png")
    (root / "gan_a" / "1_fake" / "broken.png").write_bytes(b"not a png")
    return root


def test_head_input_is_the_pooled_vector_before_fc(tmp_path):
    model = calibrated("resnet50", size=32)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad(), head_input(model) as captured:
        logits = model(x)
        pooled = torch.flatten(model.net.avgpool(model.net.layer4(model.net.layer3(model.net.layer2(model.net.layer1(
            model.net.maxpool(model.net.relu(model.net.bn1(model.net.conv1(x))))))))), 1)
    torch.testing.assert_close(captured["x"], pooled)
    torch.testing.assert_close(model.net.fc(captured["x"]).squeeze(1), logits)
    assert not model.net.fc._forward_pre_hooks  # removed on exit


def test_block_features_of_a_cnn_are_a_clear_error(tmp_path):
    records = load_sets(_mini_set(tmp_path / "d", n=2), ["gan_b"])["gan_b"]
    with pytest.raises(InputError, match="CLIP detector"):
        collect_features(tiny("resnet50"), records, blocks="0")


def test_rine_blocks_match_its_own_tokens(tmp_path):
    model = tiny("rine", nproj=1, proj_dim=16)
    records = load_sets(_mini_set(tmp_path / "d", n=2, size=56), ["gan_b"])["gan_b"]
    head = collect_features(model, records, progress=False)
    blocks = collect_features(model, records, blocks="all", site="ln_2", progress=False)
    assert head.views == ["block 3 (head input)"] and len(blocks.views) == 4 and blocks.values.shape == (4, 4, 64)
    np.testing.assert_allclose(head.values[:, 0], blocks.values[:, 3], atol=1e-5)


def test_write_defaults_its_title_and_records_annotations_last(tmp_path):
    sets = load_sets(_mini_set(tmp_path / "d", n=4), ["gan_a", "gan_b"])
    result = embed(tiny("resnet50"), sets, max_images=None, perplexity=3.0, progress=False)
    paths = result.annotate(note="test").write(tmp_path / "out")
    summary = json.loads(paths["json"].read_text())
    assert summary["report"]["title"] == "resnet50: feature space (gan_a, gan_b)"
    assert list(summary) == ["report", "settings", "sampling", "views", "summary", "note"]
    assert paths["figure_label"].is_file() and paths["figure_label"].with_suffix(".pdf").is_file()


def test_cli_writes_coordinates_figures_and_report(tmp_path, capsys):
    data = _mini_set(tmp_path / "data")
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth", calibrated("resnet50", size=32))
    out = tmp_path / "out"
    argv = ["--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(data), "--layout", "forensynths",
            "--max_images", "24", "--bsize", "8", "--device", "cpu", "--out", str(out), "--seed", "5"]
    assert run_script(SCRIPT, argv) == 0
    folder = out / "resnet50" / "head"
    frame = pd.read_csv(folder / "embed.csv")
    summary = json.loads((folder / "embed.json").read_text())
    # 32 listed (plus one broken file): 12 real + 12 fake sampled, the broken one (if drawn) skipped
    by = {c["class"]: c for c in summary["sampling"]}
    assert by["real"]["kept"] == 12 and by["fake"]["kept"] == 12 and by["fake"]["total"] == 17
    assert len(frame) == 24 - summary["summary"]["num_skipped"] and frame["path"].is_unique
    assert set(frame.columns) >= {"path", "set", "source", "label", "x", "y"}
    assert set(frame["set"]) <= {"gan_a", "gan_b"} and set(frame["label"]) == {0, 1}
    assert summary["views"][0]["dims"] == 2048 and summary["views"][0]["pca"] == len(frame)
    assert summary["views"][0]["knn_accuracy_2d"] >= 0.9 and summary["views"][0]["knn_accuracy_features"] >= 0.9
    assert "provenance" in summary and summary["report"]["table"] == "embed-views.csv"
    sets = pd.read_csv(folder / "embed-sets.csv")
    assert sorted(sets.set.unique()) == ["gan_a", "gan_b"] and sets.n.sum() == len(frame)
    assert (sets.neighbours_same_features >= 0.9).all()  # stripes vs dark noise: apart in feature space
    assert list(summary)[-4:] == ["args", "detector", "weights", "provenance"]  # the run's record, in order
    assert summary["report"]["title"] == "resnet50: feature space (gan_a, gan_b)"
    for name in ("embed-label", "embed-source"):
        assert Image.open(folder / f"{name}.png").size[0] > 300 and (folder / f"{name}.pdf").stat().st_size > 0
    # the same seed gives the same map
    assert run_script(SCRIPT, [*argv[:-4], "--out", str(tmp_path / "again"), "--seed", "5"]) == 0
    again = pd.read_csv(tmp_path / "again" / "resnet50" / "head" / "embed.csv")
    pd.testing.assert_frame_equal(frame.drop(columns="path"), again.drop(columns="path"))
    # the report finds the run, its figures and its table
    runs = discover(out).runs
    assert len(runs) == 1 and runs[0].analysis == "embed"
    assert [p.name for p in runs[0].ordered_figures()][:2] == ["embed-label.png", "embed-source.png"]
    assert runs[0].key_table().name == "embed-views.csv"
    page = write_report(out).read_text()
    assert "feature space" in page and "knn_accuracy_2d" in page
