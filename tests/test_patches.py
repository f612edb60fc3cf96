"""Max-activation rankings and LRP-max patches (forensics.analysis.patches, forensics.explain.unit,
analyses/max_activation_patches.py; docs/patches.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.analysis.fmap_ranking import write_ranking_csv
from forensics.analysis.patches import (PatchStudy, binarize, collage_figure, collage_files, collage_tile,
                                        extract_patches, max_activation_rankings, patch_rank, tight_box)
from forensics.data import forensynths
from forensics.detectors import create
from forensics.explain.unit import explain_unit, max_unit_gradient, unit_relevance_fn
from helpers import calibrated_cached, run_script, save_cnndet_checkpoint, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- geometry
def test_binarize_and_box_on_synthetic_heatmap():
    heat = np.zeros((20, 30))
    heat[4:9, 10:17] = np.linspace(0.2, 1.0, 35).reshape(5, 7)  # a 5x7 blob: 35 of 600 pixels
    mask = binarize(heat)
    assert mask.sum() == 35  # the 75th percentile is 0 here: every positive pixel is kept
    assert tight_box(mask) == (4, 9, 10, 17)
    assert heat[slice(4, 9), slice(10, 17)].min() > 0
    assert tight_box(mask, reference=True) == (4, 8, 10, 16)  # the reference's exclusive bounds
    assert tight_box(np.zeros((5, 6), bool)) == (0, 5, 0, 6)  # empty mask: the whole image
    one = np.zeros((5, 6), bool)
    one[2, 3] = True
    assert tight_box(one) == (2, 3, 3, 4) and tight_box(one, reference=True) == (2, 3, 3, 4)
    ramp = np.arange(100, dtype=float).reshape(10, 10)  # > 75th percentile (74.25): 75..99
    m = binarize(ramp)
    assert m.sum() == 25 and tight_box(m) == (7, 10, 0, 10)


def test_max_unit_gradient_places_z_at_the_argmax():
    fmap = torch.zeros(2, 3, 4, 5)
    fmap[0, 1, 2, 3] = 5.0
    fmap[0, 1, 0, 0] = 4.0
    fmap[1, 1] = -1.0  # no positive value: z = 0, nothing explained
    start, z, pos = max_unit_gradient(fmap, 1)
    assert z.tolist() == [5.0, 0.0] and pos[0] == 2 * 5 + 3
    assert start.sum() == 5.0 and start[0, 1, 2, 3] == 5.0


# ---------------------------------------------------------------------------- unit relevance
@pytest.mark.parametrize("name", ["resnet50", "efb0"])
def test_unit_relevance_conserves_z(name):
    det = calibrated_cached(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    key = det.feature_keys()[3]
    res = explain_unit(det, x, key)
    assert res.pixel.shape == x.shape and (res.value > 0).all()
    total = res.pixel.sum(dim=(1, 2, 3))
    tol = 1e-4 if name == "resnet50" else 0.05  # R50: z+ / z^B conserve exactly; EfB0's SiLU/SE only roughly
    torch.testing.assert_close(total, res.value, rtol=tol, atol=1e-5)
    one = explain_unit(det, x[1:], key)  # batched == one at a time
    torch.testing.assert_close(one.pixel[0], res.pixel[1], rtol=1e-4, atol=1e-6)


def test_rine_unit_relevance_goes_through_the_vit_and_others_are_refused():
    from forensics.explain.unit import vit_unit_relevance
    torch.manual_seed(0)
    rine = create("rine", backbone="forensics-tiny-vit", backbone_weights=None, nproj=1, proj_dim=16).eval()
    assert unit_relevance_fn(rine) is vit_unit_relevance
    key = rine.feature_keys()[70]  # a CLS channel of block 1
    x = torch.randn(2, 3, 56, 56)
    res = explain_unit(rine, x, key)
    with torch.no_grad(), rine.record([key]) as rec:
        rine(x)
    torch.testing.assert_close(res.value, rec[key.layer].reshape(-1), rtol=1e-4, atol=1e-5)
    assert res.pixel.shape == x.shape and res.pixel.abs().sum() > 0 and (res.position == 0).all()
    ufd = create("ufd", backbone="forensics-tiny-vit", backbone_weights=None)
    with pytest.raises(NotImplementedError, match="register_unit_relevance"):
        unit_relevance_fn(ufd)


# ---------------------------------------------------------------------------- rankings, patches, collage
@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("patchset")
    rng = np.random.default_rng(0)
    for label in ("0_real", "1_fake"):
        (root / "gan" / label).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
            Image.fromarray(arr).save(root / "gan" / label / f"{i}.png")
    return root


def test_rankings_patches_and_files(fakes, tmp_path):
    det = calibrated_cached("resnet50")
    records = forensynths(fakes, "gan", False, 0, None)
    keys = [det.feature_keys()[5], det.feature_keys(["layer1.0.conv2"])[7]]
    ranking = max_activation_rankings(det, records, keys, batch_size=2, progress=False)  # last batch of one
    tf = det.transform(crop="none")
    x = torch.stack([tf(Image.open(r.path).convert("RGB")) for r in records])
    with torch.no_grad(), det.record(keys, reduce="spatial_max") as rec:
        det(x)
    for key in keys:
        values = [v for _, v in ranking.rows[str(key)]]
        assert values == sorted(values, reverse=True)
        expected = sorted(rec.key(key).tolist(), reverse=True)
        np.testing.assert_allclose(values, expected, rtol=1e-5)
    paths = ranking.write_csvs(tmp_path / "rank")
    assert list(np.genfromtxt(paths[str(keys[0])], delimiter=",", dtype=str)[0]) == ["name", "max_act"]

    patches = extract_patches(det, ranking, num_instances=3, batch_size=2, progress=False)
    for key in keys:
        items = patches[str(key)]
        assert [p.rank for p in items] == [1, 2, 3]
        assert [p.max_act for p in items] == [v for _, v in ranking.top(key, 3)]
        for p in items:
            top, bottom, left, right = p.box
            assert 0 <= top < bottom <= 32 and 0 <= left < right <= 32
            assert p.pixels.shape == (bottom - top, right - left, 3)
            assert tight_box(binarize(p.heat)) == p.box
    study = PatchStudy(ranking, patches, {"detector": "tiny"}).annotate(note="test")
    written = study.write(tmp_path / "study", collage_n=2)
    f = written[f"patch/{keys[0]}/1"]
    assert f.name.startswith("1_hm_") and patch_rank(f) == 1
    with Image.open(f) as im:
        assert im.size == (patches[str(keys[0])][0].box[3] - patches[str(keys[0])][0].box[2],
                           patches[str(keys[0])][0].box[1] - patches[str(keys[0])][0].box[0])
    assert not list((tmp_path / "study").rglob(".*"))  # atomic: no temporary files left
    assert written[f"ranking/{keys[0]}"].read_text() == paths[str(keys[0])].read_text()
    import json
    index = json.loads(written["patches_index"].read_text())
    assert [(r["key"], r["rank"]) for r in index] == [(str(k), r) for k in keys for r in (1, 2, 3)]
    summary = json.loads(written["summary"].read_text())
    assert list(summary) == ["detector", "point", "num_images", "skipped", "note"]  # settings, numbers, record
    assert summary["num_images"] == 5 and summary["note"] == "test"
    assert written["collage"].is_file() and written["collage"].with_suffix(".pdf").is_file()


def test_collage_order_and_tiles(tmp_path):
    folder = tmp_path / "conv1.#0"
    folder.mkdir()
    for rank in range(1, 13):
        Image.new("RGB", (3 + rank, 4), (rank * 20, 0, 0)).save(folder / f"{rank}_hm_{rank:.3f}_0.500.jpg")
    assert [patch_rank(p) for p in collage_files(folder, 5)] == [1, 2, 3, 4, 5]
    # the reference's file order (docs/patches.md): "10_..." < "1_..." ("0" sorts before "_")
    assert [patch_rank(p) for p in collage_files(folder, 5, "lexicographic")] == [10, 11, 12, 1, 2]
    tile = collage_tile(np.full((3, 5, 3), 255, np.uint8), size=20)
    assert tile.shape == (20, 20, 3) and tile[0, 0].max() < 255 and tile[10, 10].min() == 255
    fig = collage_figure({"conv1.#0(T=64)": folder}, n=5, title="t")
    assert len(fig.axes) == 5


def test_cli(fakes, tmp_path, capsys):
    det = tiny("resnet50")
    weights = save_cnndet_checkpoint(tmp_path / "w.pth", det)
    csv = write_ranking_csv(tmp_path / "fake.csv", [(k, 1.0 / (i + 1)) for i, k in enumerate(det.feature_keys()[:3])])
    argv = ["--arch", "resnet50", "--weights", str(weights), "--dataset_dir", str(fakes), "--gan_name", "gan",
            "--fmap_csv", str(csv), "--topk", "2", "--num_instances", "2", "--collage_n", "2", "--bsize", "5",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    assert run_script(ROOT / "analyses" / "max_activation_patches.py", argv) == 0
    out = tmp_path / "out" / "resnet50" / "gan_default"
    assert (out / "collage.png").is_file() and (out / "collage.pdf").is_file()
    assert len(list((out / "patches" / "conv1.#0").glob("*.jpg"))) == 2
    assert (out / "activation_rankings" / "conv1.#1(T=64).csv").is_file()
    assert "2 maps" in capsys.readouterr().out
