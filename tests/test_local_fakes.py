"""The local-manipulation split: masks in range, aligned with the images pixel for pixel, deterministic."""
from __future__ import annotations

import math

import numpy as np
import pytest

from forensics.data import synthetic as syn
from forensics.data.local_fakes import (BASE_DIR, LOCAL_VERSION, MASK_DIR, LocalFakeConfig, base_for,
                                        build_local_fakes, composite, file_for, mask_for, random_mask,
                                        read_local_manifest, read_mask)

TINY = syn.BenchmarkConfig(image_size=32, train_per_class=2, val_per_class=0, test_per_family=2, gen_steps=2,
                           gen_pool=8, gen_batch=4, gen_probe=8, dead_leaves=0, photo_sources=("astronaut", "coffee"),
                           families=("tconv", "nearest"), gen_select_min=None)
LOCAL = LocalFakeConfig(families=("tconv", "nearest"), per_family=6, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "a"
    return root, build_local_fakes(root, TINY, LOCAL)


def test_masks_in_range_for_every_shape():
    rng = np.random.default_rng(0)
    for shape in ("ellipse", "rectangle", "stroke"):
        cfg = LocalFakeConfig(shapes=(shape,))
        areas = []
        for _ in range(30):
            kind, alpha, mask = random_mask(64, rng, cfg)
            assert kind == shape and mask.dtype == bool and mask.shape == alpha.shape == (64, 64)
            assert np.array_equal(mask, alpha >= 0.5)
            areas.append(mask.mean())
        assert 0.05 <= min(areas) and max(areas) <= 0.40
        assert max(areas) - min(areas) > 0.1          # the whole range is used


def test_composite_changes_only_where_alpha_is_positive():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _, alpha, mask = random_mask(32, rng, LocalFakeConfig())
    out = composite(real, gen, alpha)
    assert np.array_equal(out[alpha == 0], real[alpha == 0])
    assert np.array_equal(composite(real, gen, np.ones((32, 32))), gen)


def test_layout_and_mask_alignment(built):
    import cv2
    root, manifest = built
    assert manifest["counts"]["tconv_local"] == {"0_real": 6, "1_fake": 6, BASE_DIR: 6, MASK_DIR: 6}
    assert read_local_manifest(root)["images_sha256"] == manifest["images_sha256"]
    # recompute the untouched crops the fakes were made from: outside the (dilated) mask the fake equals
    # its crop exactly, inside it differs: the mask lies on the manipulated pixels, not shifted or flipped
    sources = syn.load_sources(TINY)
    per_src = syn._split_count(LOCAL.per_family, len(sources))
    for fam in LOCAL.families:
        rng = syn._rng(LOCAL.seed, "local", fam)
        syn.sample_crops(sources, "test", per_src, rng, TINY)
        base, _ = syn.sample_crops(sources, "test", per_src, rng, TINY)
        fakes = sorted((root / "test" / f"{fam}_local" / "1_fake").glob("*.png"))
        assert len(fakes) == len(base) == 6
        grow = 2 * math.ceil(3 * LOCAL.feather) + 1
        for img_path, crop in zip(fakes, base):
            fake = cv2.imread(str(img_path))[..., ::-1]
            mask = read_mask(mask_for(img_path, img_path.parent.parent / MASK_DIR))
            assert mask.shape == fake.shape[:2]
            assert LOCAL.area[0] <= mask.mean() <= LOCAL.area[1]
            outside = ~cv2.dilate(mask.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
            assert np.array_equal(fake[outside], crop[outside])
            diff = np.abs(fake.astype(int) - crop.astype(int)).sum(-1)
            assert diff[mask].mean() > 3 * max(diff[~mask].mean(), 0.1)


def test_deterministic_for_a_seed(built, tmp_path):
    _, first = built
    again = build_local_fakes(tmp_path / "b", TINY, LOCAL)
    other = build_local_fakes(tmp_path / "c", TINY, LocalFakeConfig(families=("tconv", "nearest"), per_family=6,
                                                                    seed=4))
    assert again["images_sha256"] == first["images_sha256"] != other["images_sha256"]
    assert again["images"] == first["images"]


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError):
        LocalFakeConfig(area=(0.5, 0.2))
    with pytest.raises(ValueError):
        LocalFakeConfig(families=("nope",))
    with pytest.raises(ValueError, match="not in the benchmark"):
        build_local_fakes(tmp_path / "x", TINY, LocalFakeConfig(families=("pshuffle",)))


def test_make_benchmark_builds_the_local_split_beside(tmp_path):
    """The benchmark is the same with or without --local_out; the split's generators match its manifest."""
    from pathlib import Path
    from helpers import run_script
    script = Path(__file__).resolve().parents[1] / "analyses" / "make_benchmark.py"
    args = ["--size", "32", "--train_per_class", "1", "--val_per_class", "0", "--test_per_family", "2",
            "--dead_leaves", "0", "--families", "tconv,nearest", "--gen_steps", "2", "--gen_select_min", "none", "-q"]
    assert run_script(script, ["--out", str(tmp_path / "a"), *args]) == 0
    assert run_script(script, ["--out", str(tmp_path / "b"), *args, "--local_out", str(tmp_path / "loc"),
                               "--local_families", "nearest", "--local_per_family", "3"]) == 0
    plain, with_local = (syn.read_manifest(tmp_path / n) for n in "ab")
    assert plain["images_sha256"] == with_local["images_sha256"]
    local = read_local_manifest(tmp_path / "loc")
    assert local["benchmark_images_sha256"] == plain["images_sha256"]
    assert local["counts"] == {"nearest_local": {"0_real": 3, "1_fake": 3, BASE_DIR: 3, MASK_DIR: 3}}
    assert local["version"] == LOCAL_VERSION == 2


def test_every_fake_has_its_base_under_the_same_name_differing_only_around_the_mask(built):
    """Version 2: bases/<fake's file name> is the untouched crop; fake and base differ only inside the
    feathered mask (the mask dilated by the feather's 3 sigma), and clearly inside the mask itself."""
    import cv2
    root, manifest = built
    grow = 2 * math.ceil(3 * LOCAL.feather) + 1
    for fam in LOCAL.families:
        folder = root / "test" / f"{fam}_local"
        fakes = sorted((folder / "1_fake").glob("*.png"))
        assert sorted(p.name for p in (folder / BASE_DIR).glob("*.png")) == [p.name for p in fakes]
        records = manifest["images"][folder.name]
        assert [r["base"] for r in records] == [f"{BASE_DIR}/{p.name}" for p in fakes]
        assert [r["fake"] for r in records] == [f"1_fake/{p.name}" for p in fakes]
        for fake_path in fakes:
            base_path = base_for(fake_path, folder / BASE_DIR)
            assert base_path.name == fake_path.name
            fake, base = (cv2.imread(str(p)).astype(int) for p in (fake_path, base_path))
            mask = read_mask(mask_for(fake_path, folder / MASK_DIR))
            near = cv2.dilate(mask.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
            changed = (fake != base).any(-1)
            assert not changed[~near].any()
            assert changed[mask].mean() > 0.5


def test_pairing_is_by_name_never_by_sort_order(tmp_path):
    """Files listed in another order (and with extra files around) pair by name; an ambiguous stem is an error."""
    bases = tmp_path / "bases"
    bases.mkdir()
    for name in ("b.png", "a.png", "c.jpg", "0_unrelated.png"):
        (bases / name).write_bytes(b"x")
    assert file_for(tmp_path / "1_fake" / "a.png", bases) == bases / "a.png"
    assert base_for("x/1_fake/b.png", bases) == bases / "b.png"
    assert base_for("x/1_fake/c.png", bases) == bases / "c.jpg"      # same stem, other extension
    assert base_for("x/1_fake/d.png", bases) is None
    (bases / "e.jpg").write_bytes(b"x")
    (bases / "e.webp").write_bytes(b"x")
    with pytest.raises(ValueError, match="could be the pair"):
        base_for("x/1_fake/e.bmp", bases)
    (bases / "[x].png").write_bytes(b"x")                              # glob characters in a name
    assert mask_for("y/[x].jpg", bases) == bases / "[x].png"
