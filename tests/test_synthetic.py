"""The synthetic benchmark: ForenSynths layout, manifest, determinism for a seed, disjoint regions."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from forensics.data import forensynths, list_sources
from forensics.data.synthetic import BenchmarkConfig, build_benchmark, read_manifest, split_regions
from helpers import single_thread

TINY = BenchmarkConfig(image_size=32, train_per_class=3, val_per_class=2, test_per_family=4, gen_steps=2,
                       gen_pool=8, gen_batch=4, dead_leaves=1, dead_leaves_size=96,
                       photo_sources=("astronaut", "coffee"), families=("tconv", "nearest", "denoise"))


def test_layout_manifest_and_determinism(tmp_path):
    with single_thread():
        m1 = build_benchmark(tmp_path / "a", TINY)
        m2 = build_benchmark(tmp_path / "b", TINY)
        m3 = build_benchmark(tmp_path / "c", dataclasses.replace(TINY, seed=1))
    assert m1["images_sha256"] == m2["images_sha256"] != m3["images_sha256"]
    root = tmp_path / "a"
    assert read_manifest(root)["train_family"] == "tconv"
    assert list_sources(root / "test") == ["denoise", "nearest", "tconv"]
    train = forensynths(root, "train")
    assert {r.category for r in train} == {"astronaut", "coffee", "deadleaves"}
    assert sum(r.label == 0 for r in train) == sum(r.label == 1 for r in train) == 3 * 3
    test = forensynths(root / "test", "nearest")
    assert len(test) == 8 and {r.label for r in test} == {0, 1}
    img = Image.open(test[0].path)
    assert img.size == (32, 32) and img.mode == "RGB"
    assert m1["counts"]["test"]["tconv"] == {"0_real": 4, "1_fake": 4}


def test_train_and_test_regions_are_disjoint():
    (a0, a1, b0, b1), (c0, c1, d0, d1) = split_regions(300, 500, 0.3, 8)
    # split along the longer side (width): train region ends before the gap, test region after it
    train_cols, test_cols = set(range(b0, b1)), set(range(d0, d1))
    assert not train_cols & test_cols and min(test_cols) - max(train_cols) > 8 - 1
    assert np.isclose((d1 - d0) / 500, 0.3, atol=0.03)


def test_color_spelling_keeps_serialized_names_and_cache_key():
    """Public names spell "color"; to_dict keeps the manifest's keys ("colour", "colour_families"), so the
    default benchmark's cache key is unchanged; config_from_dict reads both spellings; old names warn."""
    import pytest

    from forensics import defaults
    from forensics.data.synthetic import ColorFingerprint, DEFAULT_COLOR, config_from_dict

    assert defaults.settings_key(BenchmarkConfig().to_dict()) == "8c78fd12b822"
    cfg = BenchmarkConfig(color=ColorFingerprint(0.5, 1.1), color_families=("nearest",))
    d = cfg.to_dict()
    assert d["colour"] == {"chroma_block": 0.5, "saturation": 1.1, "calibrate": False}
    assert d["colour_families"] == ["nearest"] and "color" not in d and "color_families" not in d
    assert config_from_dict(d) == cfg
    renamed = {{"colour": "color", "colour_families": "color_families"}.get(k, k): v for k, v in d.items()}
    assert config_from_dict(renamed) == cfg
    assert cfg.family_color("nearest") == cfg.color and cfg.family_color("bilinear") == ColorFingerprint()
    assert BenchmarkConfig().color == DEFAULT_COLOR
    with pytest.warns(DeprecationWarning):
        assert cfg.colour == cfg.color
    with pytest.warns(DeprecationWarning):
        assert cfg.colour_families == ("nearest",)
