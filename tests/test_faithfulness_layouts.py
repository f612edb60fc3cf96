"""analyses/faithfulness.py on a user's data set in the registered layouts (a CSV manifest with a mask column,
polygon annotations): only the fakes with a mask are scored, masks matched by name/key and carried through
the detector's geometry, every drop counted, and the masks said to be taken on trust (no bases). Plus the
polygons reader's unmatched images and keys, counted as listed skips."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.analysis.evaluate import evaluate_sets
from forensics.analysis.faithfulness.layout_data import TRUST, load_layout_fakes
from forensics.data import (ImageDataset, LayoutOptions, RunSummary, describe_sets, iter_batches, load_sets,
                            parse_label_map)
from forensics.data.readers.polygons import NO_IMAGE, NO_KEY, unmatched
from forensics.detectors import create
from helpers import run_script, save_cnndet_checkpoint, single_thread
from test_layouts_more import write_shards

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32


def image(path: Path, seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def box_mask(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    """A 0/255 PNG mask with the rectangle ``(x0, y0, x1, y1)`` set; returns it as 0/1."""
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m * 255).save(path)
    return m


#: Fake name -> its mask's rectangle; every area differs, so a mask given to the wrong image shows.
BOXES = {"a": (0, 0, 4, 4), "b": (8, 8, 20, 14), "c": (2, 10, 30, 30)}


@pytest.fixture()
def manifest_set(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """``shop/shop.csv``: 2 reals, fakes a, b, c with masks whose file names sort in the opposite order
    (z_, y_, x_), fake d with no mask, fake e whose image file is missing (unreadable)."""
    root = tmp_path / "shop"
    truth = {}
    rows = [["path", "label", "mask", "source"]]
    for i, name in enumerate(("r1", "r2")):
        image(root / "real" / f"{name}.png", 10 + i)
        rows.append([f"real/{name}.png", "real", "", "camera"])
    for i, (name, box) in enumerate(BOXES.items()):
        image(root / "edited" / f"{name}.png", 20 + i)
        mask = f"gt/{'zyx'[i]}_{name}.png"
        truth[name] = box_mask(root / mask, box)
        rows.append([f"edited/{name}.png", "fake", mask, "inpaint"])
    image(root / "edited" / "d.png", 30)
    rows.append(["edited/d.png", "1", "", "inpaint"])
    box_mask(root / "gt" / "w_e.png", (0, 0, 2, 2))
    rows.append(["edited/e.png", "fake", "gt/w_e.png", "inpaint"])
    with open(root / "shop.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root, truth


@pytest.fixture()
def polygon_set(tmp_path) -> Path:
    """``xaigd/``: fakes p1, p2 (polygons), real r (empty list), n.png without a key, key gone.png without
    an image."""
    root = tmp_path / "xaigd"
    for i, name in enumerate(("p1", "p2", "r", "n")):
        image(root / "images" / f"{name}.png", 40 + i)
    (root / "ann.json").write_text(json.dumps({
        "p1.png": [{"points": [[2, 2], [12, 2], [12, 9], [2, 9]], "category": "inpaint"}],
        "p2": [{"points": [[16, 16], [30, 16], [30, 30], [16, 30]], "category": "splice"}],
        "r.png": [], "gone.png": [{"points": [[0, 0], [4, 0], [4, 4]], "category": "inpaint"}]}))
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_cnndet_checkpoint(tmp_path_factory.mktemp("faith_layouts") / "r50.pth")


def faithfulness(argv: list[str]) -> int:
    with single_thread():
        return run_script(ROOT / "analyses" / "faithfulness.py", argv)


def common(ckpt: Path, out: Path) -> list[str]:
    return ["--detector", "resnet50", "--weights", str(ckpt), "--crop", "none", "--steps", "2", "--patch", "8",
            "--randomisation_images", "0", "--out", str(out), "--device", "cpu", "--threshold=-1e9",
            "--perturbation_images", "1", "--fill_in", "blur"]


def test_manifest_masks_matched_by_row_and_carried_through_the_crop(manifest_set):
    """The library: each fake read with the mask its row names (not the sorted mask files), through the
    detector's own CenterCrop; drops counted."""
    root, truth = manifest_set
    det = create("resnet50", device="cpu", preprocessing={"crop": "center", "crop_size": 24})
    (name, records), = load_sets(root, layout="manifest").items()
    with torch.no_grad():
        data, sel, counts, read = load_layout_fakes(det, records, "manifest", name, threshold=-1e9, batch_size=2)
    assert [Path(p).stem for p in data.paths] == ["a", "b", "c"] and len(read) == 3
    for p, m in zip(data.paths, data.masks):
        assert m.shape == (24, 24) and np.array_equal(m, truth[Path(p).stem][4:28, 4:28].astype(bool)), p
    assert counts.to_dict() | {"ground_truth": TRUST} == {
        "layout": "manifest", "set": "shop", "records": 7, "reals_dropped": 2, "unlabelled_dropped": 0, "fakes": 5,
        "fakes_without_mask_dropped": 1, "reader_skips": {}, "unreadable_skipped": 1, "fakes_read": 3,
        "masks_matched_by": "the layout's reader (name or key, never order)", "ground_truth": TRUST}
    assert sel.fakes == 3 and sel.called_fake == 3 and sel.scored == 3 and not sel.has_bases
    assert [Path(p).name for p, _ in data.summary.skipped] == ["e.png"]


def test_parquet_mask_cells_null_cells_counted_as_fakes_without_mask(tmp_path):
    """Parquet rows: the tampered fakes' mask cells are read (all-255 masks), the null cells of the fully
    synthetic fakes count as fakes without a mask, the reals as dropped reals."""
    write_shards(tmp_path / "sidset" / "data")
    records = load_sets(tmp_path / "sidset", layout="parquet", options=LayoutOptions(label_map=parse_label_map(
        "0=real,1=fake,2=fake")))["sidset"]
    det = create("resnet50", device="cpu")
    data, sel, counts, read = load_layout_fakes(det, records, "parquet", "sidset", crop="none", threshold=-1e9)
    assert (counts.reals_dropped, counts.fakes, counts.fakes_without_mask_dropped, counts.unreadable_skipped,
            counts.fakes_read) == (2, 4, 2, 0, 2)
    assert len(data) == 2 and data.masks.shape == (2, 12, 16) and data.masks.all()
    assert all("#row=" in p for p in data.paths) and sel.fakes == 2


def test_faithfulness_cli_manifest_layout_scores_fakes_with_masks_on_trust(manifest_set, ckpt, tmp_path, capsys):
    root, truth = manifest_set
    out = tmp_path / "out"
    argv = [*common(ckpt, out), "--dataset_dir", str(root / "shop.csv"), "--layout", "manifest", "--method",
            "random", "saliency", "--num_images", "2"]
    assert faithfulness(argv) == 0
    run = out / "resnet50" / "shop"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["reals_dropped"] == 2 and summary["data"]["fakes_without_mask_dropped"] == 1
    assert summary["data"]["unreadable_skipped"] == 1 and summary["data"]["fakes_read"] == 3
    assert summary["ground_truth"] == TRUST and summary["mask_validity"] is None
    assert summary["selection"]["bases"] is False and summary["selection"]["fakes"] == 3
    assert summary["images"] == 2 and summary["selection"]["scored"] == 2      # --num_images: a and b
    assert summary["mean_mask_area_valid"] == pytest.approx(np.mean([truth["a"].mean(), truth["b"].mean()]))
    assert [Path(s[0]).name for s in summary["skipped"]] == ["e.png"]
    for method in ("random", "saliency", "mask"):
        row = summary["leaderboard"][method]
        for metric in ("srg_blur", "mass_accuracy", "iou", "pointing_game"):
            assert np.isfinite(row[metric]["mean"]), (method, metric)
        assert row["iou"]["n"] == 2
    assert summary["leaderboard"]["mask"]["iou"]["mean"] == 1.0
    printed = capsys.readouterr().out
    assert "dropped 2 real(s)" in printed and "1 of 5 fake(s) without a mask" in printed
    assert f"Ground truth: {TRUST}." in printed and "masks taken on trust" in printed.splitlines()[-1]


def test_faithfulness_cli_polygons_layout_counts_unmatched_entries(polygon_set, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*common(ckpt, out), "--dataset_dir", str(polygon_set), "--layout", "auto", "--method", "random"]
    assert faithfulness(argv) == 0
    summary = json.loads((out / "resnet50" / "xaigd" / "summary.json").read_text())
    data = summary["data"]
    assert data["layout"] == "polygons" and data["records"] == 5 and data["reals_dropped"] == 1
    assert data["reader_skips"] == {f"{NO_KEY} in ann.json": 1, NO_IMAGE: 1}
    assert data["fakes"] == 2 == data["fakes_read"] == summary["images"]
    assert sorted(r for _, r in summary["skipped"]) == [f"{NO_IMAGE}: gone.png", f"{NO_KEY} in ann.json"]
    areas = [(11 * 8) / SIDE ** 2, (15 * 15) / SIDE ** 2]                     # fillPoly includes the edges
    assert summary["mean_mask_area_valid"] == pytest.approx(np.mean(areas))
    assert np.isfinite(summary["leaderboard"]["random"]["iou"]["mean"])
    printed = capsys.readouterr().out
    assert "listed by the reader as 'annotation key without an image'" in printed and "taken on trust" in printed


def test_faithfulness_cli_layout_errors(manifest_set, ckpt, tmp_path):
    root, _ = manifest_set
    base = [*common(ckpt, tmp_path / "out"), "--dataset_dir", str(root), "--layout", "manifest"]
    assert faithfulness([*base, "--base_dir", str(root)]) != 0            # bases go with forensynths only
    only_reals = tmp_path / "reals"
    image(only_reals / "x.png", 1)
    (only_reals / "m.csv").write_text("path,label\nx.png,real\n")
    assert faithfulness([*common(ckpt, tmp_path / "out"), "--dataset_dir", str(only_reals), "--layout",
                         "manifest"]) != 0                                   # no fake with a mask: one clear error


def test_polygons_unmatched_images_and_keys_are_counted_listed_skips(polygon_set):
    """Images without a key and keys without an image: counted by :func:`unmatched`, in describe_sets, and
    listed skips (with their reasons) in the RunSummary of any run that reads the records."""
    (name, records), = load_sets(polygon_set, layout="polygons").items()
    assert unmatched(records) == {"images_without_key": 1, "keys_without_image": 1}
    assert [(Path(r.path).name, r.label) for r in records if not r.skip] == [("r.png", 0), ("p1.png", 1),
                                                                             ("p2.png", 1)]
    text = describe_sets("polygons", {name: records})
    assert "1 real, 2 fake" in text and f"1 listed skip(s): {NO_KEY} in ann.json" in text
    assert f"1 listed skip(s): {NO_IMAGE}" in text
    summary = RunSummary()
    for batch in iter_batches(ImageDataset(records, masks=True), batch_size=2):
        summary.add(batch)
    assert summary.total == 5 and summary.used == 3
    assert sorted((Path(p).name, r) for p, r in summary.skipped) == [
        ("ann.json", f"{NO_IMAGE}: gone.png"), ("n.png", f"{NO_KEY} in ann.json")]
    with single_thread():                                              # an evaluate run lists them too
        result = evaluate_sets(create("resnet50", device="cpu"), {name: records}, crop="none", batch_size=4)
    row = result.rows[name]
    assert row["n_skipped"] == 2 and row["n_real"] == 1 and row["n_fake"] == 2
    assert sorted(s["reason"] for s in result.to_dict()["skipped"][name]) == [f"{NO_IMAGE}: gone.png",
                                                                             f"{NO_KEY} in ann.json"]
