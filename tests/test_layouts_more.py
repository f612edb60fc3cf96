"""The layouts beyond the folder conventions, each read back from a miniature copy of the real layout
written into tmp_path: Synthbuster, WildRF, CSV manifests, Parquet shards, image/mask pairs, polygon
annotations, and ``--layout auto``; bad input gets one clear error or a listed skip."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from forensics.data import (ImageDataset, LayoutOptions, ParquetCell, RunSummary, describe_sets, detect_layout,
                            iter_batches, load_sets, parse_label_map)
from forensics.errors import DatasetLayoutError


def img(path: Path, size=(16, 12), value: int = 100, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def png_bytes(size=(16, 12), value: int = 0, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def mask(path: Path, size=(16, 12), box=(2, 2, 8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    m[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(m).save(path)
    return path


def read_all(records, masks=False, **kw):
    summary = RunSummary()
    batches = [summary.add(b) for b in iter_batches(ImageDataset(records, masks=masks, **kw), batch_size=4)]
    return batches, summary


# ---------------------------------------------------------------------------- synthbuster
def synthbuster_tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "synthbuster"
    for gen in ("dalle2", "midjourney-v5", "stable-diffusion-2"):
        for i in range(3):
            img(root / gen / f"r{i}.png", value=i)
        (root / gen / "prompts.txt").write_text("a cat")
    (root / "make_csv.py").write_text("print()")
    (root / "prompts.csv").write_text("a,b")
    raise_dir = tmp_path / "RAISE"
    for i in range(4):
        img(raise_dir / "sub" / f"r{i:02d}.png", value=10 + i)
    return root, raise_dir


def test_synthbuster_reals_from_real_dir_non_images_ignored_and_counted(tmp_path, caplog):
    root, raise_dir = synthbuster_tree(tmp_path)
    with caplog.at_level(logging.INFO):
        sets = load_sets(root, layout="synthbuster", options=LayoutOptions(real_dir=raise_dir))
    assert list(sets) == ["dalle2", "midjourney-v5", "stable-diffusion-2"]
    recs = sets["dalle2"]
    assert [r.label for r in recs] == [0] * 4 + [1] * 3
    assert {r.source for r in recs} == {"RAISE", "dalle2"}
    assert all(r.path.suffix == ".png" for r in recs)
    assert "ignored 1 non-image file(s) (.txt: 1)" in caplog.text
    with pytest.raises(DatasetLayoutError, match="--real_dir"):
        load_sets(root, layout="synthbuster")
    assert load_sets(root, ["dalle2"], "synthbuster", num_instances=2,
                     options=LayoutOptions(real_dir=raise_dir))["dalle2"][1].path.name == "r01.png"


# ---------------------------------------------------------------------------- wildrf
def wildrf_tree(tmp_path: Path) -> Path:
    root = tmp_path / "WildRF"
    for split in ("train", "val", "test/reddit", "test/twitter", "test/facebook"):
        for label_dir, n in (("0_real", 2), ("1_fake", 3)):
            for i in range(n):
                img(root / split / label_dir / f"{i}.jpg", value=i, fmt="JPEG")
    return root


def test_wildrf_splits_and_platforms_become_sets(tmp_path):
    root = wildrf_tree(tmp_path)
    sets = load_sets(root, layout="wildrf")
    assert list(sets) == ["train", "val", "facebook", "reddit", "twitter"]
    assert [r.label for r in sets["reddit"]] == [0, 0, 1, 1, 1]
    assert all("test/reddit" in r.path.as_posix() for r in sets["reddit"])
    assert detect_layout(root) == "wildrf"  # a special case of forensynths, which it wins over


# ---------------------------------------------------------------------------- manifest
def test_manifest_labels_masks_sources_splits_relative_paths(tmp_path):
    root = tmp_path / "sid"
    img(root / "imgs/a.png"), img(root / "imgs/b.png", value=3), img(root / "imgs/c.png", value=4)
    mask(root / "masks/b.png")
    (root / "list.csv").write_text("path,label,mask,source,split\nimgs/a.png,real,,coco,test\n"
                                   "imgs/b.png,1,masks/b.png,sd2,test\nimgs/c.png,FAKE,,flux,train\n")
    sets = load_sets(root / "list.csv", layout="manifest")
    assert list(sets) == ["test", "train"]
    a, b = sets["test"]
    assert (a.label, a.source, a.mask) == (0, "coco", None)
    assert (b.label, b.source, b.mask) == (1, "sd2", root / "masks/b.png")
    assert sets["train"][0].path == root / "imgs/c.png"
    batches, summary = read_all(sets["test"], masks=True)
    assert summary.used == 2 and not summary.skipped
    m = batches[0].masks
    assert m[0].sum() == 0 and m[1].sum() == 6 * 4  # the real: zeros; the fake: its 6x4 box


@pytest.mark.parametrize("text, message", [
    ("file,label\na.png,0\n", "missing column.*path"),
    ("path,label\na.png,2\n", "line 2: label '2'"),
    ("path,label\n,1\n", "line 2: empty path"),
])
def test_manifest_errors_name_the_problem(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetLayoutError, match=message):
        load_sets(tmp_path / "m.csv", layout="manifest")


def test_manifest_label_map(tmp_path):
    img(tmp_path / "x.png")
    (tmp_path / "m.csv").write_text("path,label\nx.png,2\n")
    opts = LayoutOptions(label_map=parse_label_map("0=real,1=fake,2=fake"))
    assert load_sets(tmp_path / "m.csv", layout="manifest", options=opts)["m"][0].label == 1
    with pytest.raises(ValueError):
        parse_label_map("2=tampered")


# ---------------------------------------------------------------------------- parquet
def write_shards(folder: Path, struct: bool = True, bad_row: bool = False, n_groups: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(6):
        label = [0, 1, 2][i % 3]  # SID-Set: real / full synthetic / tampered
        image = png_bytes(value=20 * i)
        if bad_row and i == 4:
            image = b"not an image"
        m = png_bytes(value=255, mode="L") if label == 2 else None
        rows.append({"image": {"bytes": image, "path": f"{i}.png"} if struct else image, "label": label,
                     "mask": m})
    table = pa.Table.from_pylist(rows)
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=6 // n_groups)
    return path


def test_parquet_struct_images_label_map_masks_lazy(tmp_path):
    path = write_shards(tmp_path / "sidset" / "data")
    opts = LayoutOptions(label_map={"0": 0, "1": 1, "2": 1})
    sets = load_sets(tmp_path / "sidset", layout="parquet", options=opts)
    recs = sets["sidset"]
    assert [r.label for r in recs] == [0, 0, 1, 1, 1, 1]
    assert all(isinstance(r.image, ParquetCell) and r.path == path for r in recs)
    assert sorted(r.image.row for r in recs) == list(range(6))
    assert len({r.ref for r in recs}) == 6  # one name per row
    batches, summary = read_all(recs, masks=True)
    assert summary.used == 4 and len(summary.skipped) == 2  # the full synthetics have no mask
    assert all("no mask" in reason for _, reason in summary.skipped)
    assert torch_sum(batches) == 2 * 16 * 12  # two tampered images, all-255 masks
    _, plain = read_all(recs)
    assert plain.used == 6  # scoring needs no mask
    with pytest.raises(DatasetLayoutError, match=r"row 2: label 2"):
        load_sets(tmp_path / "sidset", layout="parquet")


def torch_sum(batches) -> int:
    return int(sum(int(b.masks.sum()) for b in batches if b.masks is not None))


def test_parquet_binary_column_and_unreadable_row_is_a_listed_skip(tmp_path):
    path = write_shards(tmp_path, struct=False, bad_row=True, n_groups=3)
    recs = load_sets(path, layout="parquet", options=LayoutOptions(label_map=parse_label_map("0=0,1=1,2=1")))[path.stem]
    _, summary = read_all(recs)
    assert summary.used == 5 and summary.skipped[0][0] == f"{path}#row=4"


def test_parquet_bad_file_and_missing_column(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(DatasetLayoutError, match="not a readable Parquet file"):
        load_sets(tmp_path / "broken.parquet", layout="parquet")
    good = tmp_path / "g" / "x.parquet"
    good.parent.mkdir()
    pq.write_table(pa.table({"image": [png_bytes()], "y": [0]}), good)
    with pytest.raises(DatasetLayoutError, match="no label column 'label'.*--label_column"):
        load_sets(good, layout="parquet")


# ---------------------------------------------------------------------------- pairs
@pytest.mark.parametrize("pattern", ["{stem}.png", "{stem}_mask.png", "{stem}_gt.png"])
def test_pairs_matched_by_stem_never_by_order(tmp_path, pattern, caplog):
    root = tmp_path / "CocoGlide"
    boxes = {"b": (0, 0, 4, 4), "a": (8, 6, 16, 12)}  # sort order of masks differs from a crafted one
    for stem, box in boxes.items():
        img(root / "fake" / f"{stem}.png")
        mask(root / "mask" / pattern.format(stem=stem), box=box)
    mask(root / "mask" / pattern.format(stem="zz_orphan"))
    img(root / "fake" / "c.png")  # no mask
    img(root / "real" / "r.jpg", fmt="JPEG")
    with caplog.at_level(logging.WARNING):
        recs = load_sets(root, layout="pairs", options=LayoutOptions(mask_pattern=pattern))["CocoGlide"]
    assert "1 image(s) without a mask" in caplog.text and "1 mask(s) match no image" in caplog.text
    by_name = {r.path.stem: r for r in recs if not r.skip}
    assert by_name["a"].mask.name == pattern.format(stem="a") and by_name["c"].mask is None
    assert by_name["r"].label == 0
    orphan = pattern.format(stem="zz_orphan")
    assert [r.skip for r in recs if r.skip] == [f"mask without an image: {orphan}"]  # a listed skip
    batches, summary = read_all(recs, masks=True)
    assert [p for p, _ in summary.skipped] == [str(root / "fake" / "c.png"), str(root / "mask" / orphan)]
    got = {Path(p).stem: m for b in batches for p, m in zip(b.paths, b.masks)}
    assert got["a"][6:, 8:].all() and got["a"].sum() == 8 * 6
    assert got["b"][:4, :4].all() and got["b"].sum() == 16
    assert got["r"].sum() == 0


def test_pairs_mask_of_another_size_is_an_error_naming_both_sizes(tmp_path):
    root = tmp_path / "AutoSplice"
    img(root / "images" / "x.jpg", size=(16, 12), fmt="JPEG")
    mask(root / "masks" / "x.png", size=(8, 6), box=(0, 0, 4, 3))
    recs = load_sets(root, layout="pairs")["AutoSplice"]
    _, summary = read_all(recs, masks=True)
    assert "8x6 but the image is 16x12" in summary.skipped[0][1] and "--mask_resize" in summary.skipped[0][1]
    batches, summary = read_all(recs, masks=True, mask_resize=True)
    assert summary.used == 1 and batches[0].masks[0].sum() == 8 * 6


def test_pairs_no_match_at_all_is_one_error(tmp_path):
    img(tmp_path / "fake" / "x.png"), mask(tmp_path / "mask" / "x_gt.png")
    with pytest.raises(DatasetLayoutError, match="pass --mask_pattern"):
        load_sets(tmp_path, layout="pairs")


# ---------------------------------------------------------------------------- polygons
def test_polygons_rasterised_with_fillpoly_matched_by_key(tmp_path, caplog):
    root = tmp_path / "X-AIGD"
    img(root / "images" / "p.png", size=(20, 10)), img(root / "images" / "q.png"), img(root / "images" / "n.png")
    (root / "ann.json").write_text(json.dumps({
        "p.png": [{"points": [[2, 2], [9, 2], [9, 7], [2, 7]], "category": "inpaint"}],
        "q": [], "gone.png": []}))
    with caplog.at_level(logging.WARNING):
        recs = load_sets(root, layout="polygons")["X-AIGD"]
    assert "1 image(s) without annotations: n.png" in caplog.text
    assert "1 annotation key(s) without an image: gone.png" in caplog.text
    assert [(r.path.name, r.label, r.source) for r in recs if not r.skip] == [("q.png", 0, "real"),
                                                                               ("p.png", 1, "inpaint")]
    assert [(r.path.name, r.skip) for r in recs if r.skip] == [
        ("n.png", "image without an annotation key in ann.json"), ("ann.json", "annotation key without an image: gone.png")]
    batches, summary = read_all(recs, masks=True)
    assert summary.used == 2 and len(summary.skipped) == 2
    got = {Path(p).name: m for b in batches for p, m in zip(b.paths, b.masks)}
    assert got["p.png"].shape == (10, 20) and got["p.png"][2:8, 2:10].all() and got["p.png"].sum() == 8 * 6
    (root / "ann.json").write_text(json.dumps({"p.png": [{"pts": []}]}))
    with pytest.raises(DatasetLayoutError, match="'p.png'.*points"):
        load_sets(root, layout="polygons")


# ---------------------------------------------------------------------------- auto
def test_auto_detects_each_layout_says_what_it_reads_and_refuses_ambiguity(tmp_path, caplog):
    assert detect_layout(wildrf_tree(tmp_path)) == "wildrf"
    root, raise_dir = synthbuster_tree(tmp_path)
    assert detect_layout(root, LayoutOptions(real_dir=raise_dir)) == "synthbuster"
    fs = tmp_path / "cnn" / "progan" / "car"
    img(fs / "0_real" / "a.png"), img(fs / "1_fake" / "b.png")
    assert detect_layout(tmp_path / "cnn") == "forensynths"
    assert detect_layout(write_shards(tmp_path / "pq")) == "parquet"
    (tmp_path / "man").mkdir()
    (tmp_path / "man" / "m.csv").write_text("path,label\nx.png,0\n")
    assert detect_layout(tmp_path / "man") == "manifest"
    pairs = tmp_path / "pairs"
    img(pairs / "fake" / "x.png"), mask(pairs / "mask" / "x.png"), img(pairs / "real" / "r.png")
    with caplog.at_level(logging.INFO):
        sets = load_sets(pairs, layout="auto")
    assert "layout pairs: 1 set(s)" in caplog.text and "1 real, 1 fake; masks: 1 given, 0 fake(s) without" in caplog.text
    assert describe_sets("pairs", sets).splitlines()[0] == "layout pairs: 1 set(s)"
    (pairs / "ann.json").write_text("{}")
    img(pairs / "images" / "y.png")  # now it also looks like polygons: images/ beside one JSON
    with pytest.raises(DatasetLayoutError, match="ambiguous layout.*pairs and polygons"):
        detect_layout(pairs)
    with pytest.raises(DatasetLayoutError, match="no known layout"):
        detect_layout(img(tmp_path / "lonely" / "x.png").parent)


def test_auto_prefers_the_more_specific_layout(tmp_path):
    """pairs and polygons are special cases of a folder of generator folders (synthbuster with --real_dir)."""
    root = tmp_path / "CocoGlide"
    img(root / "fake" / "x.png"), mask(root / "mask" / "x.png")
    img(tmp_path / "reals" / "r.png")
    assert detect_layout(root, LayoutOptions(real_dir=tmp_path / "reals")) == "pairs"
    fs = tmp_path / "cnn" / "progan"
    img(fs / "0_real" / "a.png"), img(fs / "1_fake" / "b.png")
    (tmp_path / "cnn" / "info.json").write_text("{}")  # metadata beside the sets, not polygons
    assert detect_layout(tmp_path / "cnn") == "forensynths"
