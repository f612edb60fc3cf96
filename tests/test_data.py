"""Tests of forensics.data: strict image decoding, benchmark layouts, batching with skips."""
from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from forensics.data import (DEFAULT_MAX_PIXELS, UFD_DIFFUSION_REAL_FOLDERS, ImageDataset, ImageRecord,
                            RunSummary, collate, collect, forensynths, genimage, is_candidate_file,
                            is_image_file, iter_batches, label_from_path, list_sources, load_rgb,
                            plain_folder, to_rgb, ufd_diffusion)
from forensics.data import images as images_mod
from forensics.errors import DatasetLayoutError, ImageReadError, ImageTooLargeError


# ----------------------------------------------------------------------------- helpers
def save(path: Path, image: Image.Image | None = None, size: tuple[int, int] = (8, 6),
         color: tuple[int, int, int] = (10, 20, 30), **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if image is not None else Image.new("RGB", size, color)).save(path, **kwargs)
    return path


def noise(h: int = 64, w: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width x height`` (8-bit grey) with an empty IDAT: tiny on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def rgb(path: Path, **kwargs) -> np.ndarray:
    im = load_rgb(path, **kwargs)
    assert im.mode == "RGB"
    return np.asarray(im)


def names(records: list[ImageRecord]) -> list[tuple[str, int | None, str]]:
    return [(r.path.name, r.label, r.category) for r in records]


# ----------------------------------------------------------------------------- load_rgb: bad inputs
def test_missing_zero_byte_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="no such file") as e:
        load_rgb(tmp_path / "absent.png")
    assert str(tmp_path / "absent.png") in str(e.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty file \(0 bytes\)"):
        load_rgb(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_rgb(tmp_path)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "text.png"
    p.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageReadError, match="not an image") as e:
        load_rgb(p)
    assert str(p) in str(e.value) and not isinstance(e.value, ImageTooLargeError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path, fmt):
    full = save(tmp_path / f"full.{fmt.lower()}", noise(), format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageReadError, match="truncated or corrupt") as e:
        load_rgb(cut)
    assert str(cut) in str(e.value)
    assert load_rgb(full).size == (64, 64)


def test_corrupt_png_data(tmp_path):
    data = bytearray(save(tmp_path / "ok.png", noise()).read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10: start + 200] = bytes(190)  # zero a stretch of compressed pixels (CRC now wrong)
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=str(bad).replace("\\", "\\\\")):
        load_rgb(bad)


def test_huge_header_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageTooLargeError, match="decompression-bomb guard"):
        load_rgb(bomb)  # beyond Pillow's hard guard: converted to ours
    # between 1x and 2x Pillow's limit: our own check decides, and Pillow's warning is not leaked
    big = png_header_only(tmp_path / "big.png", 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError, match=r"10000x10000 = 100,000,000 pixels exceeds the limit "
                                                     r"of 89,478,485") as e:
            load_rgb(big)
    assert str(big) in str(e.value) and DEFAULT_MAX_PIXELS == 89_478_485


def test_max_pixels_limit_is_inclusive_and_can_be_disabled(tmp_path):
    p = save(tmp_path / "a.png", size=(100, 50))
    with pytest.raises(ImageTooLargeError, match="100x50 = 5,000 pixels exceeds the limit of 4,999"):
        load_rgb(p, max_pixels=4999)
    assert load_rgb(p, max_pixels=5000).size == (100, 50)
    assert load_rgb(p, max_pixels=None).size == (100, 50)


def test_truncated_images_are_never_globally_allowed(monkeypatch, caplog):
    import forensics  # noqa: F401  (importing the package must not flip the flag)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(images_mod, "_truncation_warned", False)
    with caplog.at_level(logging.WARNING, logger="forensics.data.images"):
        images_mod._warn_if_truncation_allowed()
        images_mod._warn_if_truncation_allowed()
    assert sum("LOAD_TRUNCATED_IMAGES" in r.message for r in caplog.records) == 1


# ----------------------------------------------------------------------------- load_rgb: modes
def test_rgb_png_roundtrip_exact(tmp_path):
    im = noise(5, 7)
    assert np.array_equal(rgb(save(tmp_path / "n.png", im)), np.asarray(im))


def test_grey_and_grey_alpha(tmp_path):
    grey = np.array([[0, 17, 255]], dtype=np.uint8)
    out = rgb(save(tmp_path / "l.png", Image.fromarray(grey, "L")))
    assert np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    la = Image.merge("LA", [Image.fromarray(grey, "L"), Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L")])
    out = rgb(save(tmp_path / "la.png", la))
    assert np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))  # alpha dropped, grey kept


def test_one_bit(tmp_path):
    bits = Image.fromarray(np.array([[0, 1, 0, 1]], dtype=bool))
    assert bits.mode == "1"
    assert rgb(save(tmp_path / "b.png", bits))[0, :, 0].tolist() == [0, 255, 0, 255]


def _palette_image() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [7, 8, 9]], dtype=np.uint8)
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.flatten().tolist())
    return im, palette, idx


def test_palette_without_transparency(tmp_path):
    im, palette, idx = _palette_image()
    for suffix in ("png", "gif"):
        assert np.array_equal(rgb(save(tmp_path / f"p.{suffix}", im)), palette[idx])


def test_palette_with_transparency_matches_palette_lookup_without_warning(tmp_path):
    im, palette, idx = _palette_image()
    p = save(tmp_path / "pt.png", im, transparency=bytes([0, 255, 128, 255]))  # tRNS with alpha bytes
    assert "transparency" in Image.open(p).info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rgb(p)
    assert np.array_equal(out, palette[idx])


def test_rgba_drops_alpha_without_compositing(tmp_path):
    arr = np.array([[[200, 100, 50, 0], [1, 2, 3, 128], [9, 9, 9, 255]]], dtype=np.uint8)
    out = rgb(save(tmp_path / "a.png", Image.fromarray(arr, "RGBA")))
    assert np.array_equal(out, arr[..., :3])


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, suffix):
    arr = np.array([[0, 255, 256, 511, 32768, 65535]], dtype=np.uint16)
    p = save(tmp_path / f"g16.{suffix}", Image.fromarray(arr))
    assert Image.open(p).mode.startswith("I;16")
    assert rgb(p)[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]
    assert rgb(p)[0, :, 0].tolist() == rgb(p)[0, :, 2].tolist()


def test_int32_is_read_as_sixteen_bit_and_clipped(tmp_path):
    arr = np.array([[0, 256, 65535, 70000, -5]], dtype=np.int32)
    p = save(tmp_path / "i.tif", Image.fromarray(arr))
    assert Image.open(p).mode == "I"
    assert rgb(p)[0, :, 0].tolist() == [0, 1, 255, 255, 0]


def test_float_follows_pillow(tmp_path):
    arr = np.array([[0.0, 100.0, 300.0, -5.0]], dtype=np.float32)
    p = save(tmp_path / "f.tif", Image.fromarray(arr))
    assert Image.open(p).mode == "F"
    assert rgb(p)[0, :, 0].tolist() == [0, 100, 255, 0]


def test_cmyk(tmp_path):
    arr = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], dtype=np.uint8)
    p = save(tmp_path / "c.tif", Image.fromarray(arr, "CMYK"))
    assert rgb(p)[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]


def test_other_modes_in_memory():
    assert np.asarray(to_rgb(Image.new("LAB", (1, 1), (128, 128, 128)))).tolist() == [[[119, 119, 119]]]
    assert np.asarray(to_rgb(Image.new("HSV", (1, 1), (0, 255, 255)))).tolist() == [[[255, 0, 0]]]
    ycc = Image.new("RGB", (1, 1), (90, 160, 30)).convert("YCbCr")
    assert np.abs(np.asarray(to_rgb(ycc)).astype(int) - [90, 160, 30]).max() <= 2
    same = Image.new("RGB", (2, 2))
    assert to_rgb(same) is same


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((16, 32, 3), dtype=np.uint8)  # 32 wide, 16 high: left half red, right half blue
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = save(tmp_path / "rot.jpg", Image.fromarray(arr), exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (16, 32)  # width and height swapped
    a = np.asarray(out).astype(int)
    assert a[4, 8, 0] > 200 and a[4, 8, 2] < 50  # top: the former left half (red)
    assert a[28, 8, 2] > 200 and a[28, 8, 0] < 50  # bottom: the former right half (blue)
    plain = save(tmp_path / "plain.jpg", Image.fromarray(arr), quality=95)  # same pixels, no tag
    stored = np.asarray(load_rgb(plain))
    assert stored.shape == (16, 32, 3)
    assert np.array_equal(a, np.rot90(stored, k=-1))  # exactly the stored pixels, rotated 90 deg CW


def test_extension_helpers():
    assert is_image_file("a/B.JPEG") and is_image_file("x.tiff") and is_image_file("x.v2.png")
    assert not is_image_file("x.png.txt") and not is_image_file("noext")
    assert is_candidate_file("x.heic") and is_candidate_file("noext")
    assert not is_candidate_file("notes.TXT") and not is_candidate_file(".DS_Store")
    assert not is_candidate_file("._photo.png")  # macOS resource fork, not an image


# ----------------------------------------------------------------------------- layouts
@pytest.fixture
def synth_root(tmp_path) -> Path:
    """ForenSynths test root: progan with classes (car, airplane), biggan flat, plus noise."""
    root = tmp_path / "test"
    for cls in ("car", "airplane"):
        for side in ("0_real", "1_fake"):
            for i in range(3):
                save(root / "progan" / cls / side / f"{cls}_{side[0]}_{i}.png")
    for side in ("0_real", "1_fake"):
        for i in (2, 0, 1):
            save(root / "biggan" / side / f"{i:03d}.png")
    (root / "biggan" / "0_real" / "README.txt").write_text("not an image")
    (root / "biggan" / "0_real" / ".DS_Store").write_bytes(b"junk")
    (root / "biggan" / "0_real" / "zz.dat").write_bytes(b"unknown kind")  # kept: reported at decode time
    (root / "docs").mkdir()
    return root


def test_forensynths_classes_detected_sorted_capped_reals_first(synth_root):
    recs = forensynths(synth_root, "progan", num_real=2, num_fake=1)
    assert names(recs) == [
        ("airplane_0_0.png", 0, "airplane"), ("airplane_0_1.png", 0, "airplane"),
        ("car_0_0.png", 0, "car"), ("car_0_1.png", 0, "car"),
        ("airplane_1_0.png", 1, "airplane"), ("car_1_0.png", 1, "car")]
    assert {r.source for r in recs} == {"progan"}
    assert len(forensynths(synth_root, "progan")) == 12
    assert forensynths(synth_root, "progan", have_classes=True) == forensynths(synth_root / "progan")


def test_forensynths_flat(synth_root):
    recs = forensynths(synth_root, "biggan")
    assert names(recs) == [("000.png", 0, ""), ("001.png", 0, ""), ("002.png", 0, ""), ("zz.dat", 0, ""),
                           ("000.png", 1, ""), ("001.png", 1, ""), ("002.png", 1, "")]
    assert forensynths(synth_root / "biggan", have_classes=False) == recs
    assert recs[0].source == "biggan" and recs[0].path == synth_root / "biggan" / "0_real" / "000.png"
    assert names(forensynths(synth_root, "biggan", num_real=1, num_fake=0)) == [("000.png", 0, "")]


def test_forensynths_forced_layout_mismatch(synth_root):
    with pytest.raises(DatasetLayoutError, match="flat set: pass have_classes=False"):
        forensynths(synth_root, "biggan", have_classes=True)
    with pytest.raises(DatasetLayoutError, match=r"class folders \(airplane, car\): pass have_classes=True"):
        forensynths(synth_root, "progan", have_classes=False)
    with pytest.raises(DatasetLayoutError, match="no 0_real/1_fake folders found"):
        forensynths(synth_root, "docs")
    with pytest.raises(DatasetLayoutError, match="no such folder"):
        forensynths(synth_root, "nonexistent")


def test_forensynths_missing_side_and_empty_folder(tmp_path):
    save(tmp_path / "stargan" / "0_real" / "a.png")
    with pytest.raises(DatasetLayoutError, match="1_fake: no such folder.*pass num_fake=0"):
        forensynths(tmp_path, "stargan")
    assert names(forensynths(tmp_path, "stargan", num_fake=0)) == [("a.png", 0, "")]
    (tmp_path / "stargan" / "1_fake").mkdir()
    (tmp_path / "stargan" / "1_fake" / "notes.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match=r"stargan/1_fake: no image files"):
        forensynths(tmp_path, "stargan")


def test_forensynths_ignores_non_class_folders_with_warning(synth_root, caplog):
    (synth_root / "progan" / "misc").mkdir()
    with caplog.at_level(logging.WARNING):
        assert len(forensynths(synth_root, "progan")) == 12
    assert any("misc" in r.message for r in caplog.records)


def test_forensynths_rejects_negative_cap(synth_root):
    with pytest.raises(ValueError, match=">= 0"):
        forensynths(synth_root, "biggan", num_real=-1)


def test_list_sources(synth_root, tmp_path):
    assert list_sources(synth_root) == ["biggan", "progan"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetLayoutError, match="no generator folder"):
        list_sources(tmp_path / "nothing")


@pytest.fixture
def diffusion_root(tmp_path) -> Path:
    root = tmp_path / "diffusion_datasets"
    for i in range(3):
        save(root / "imagenet" / "0_real" / f"in{i}.png")
        save(root / "laion" / "0_real" / ("sub" if i == 0 else "") / f"la{i}.png")  # recursive listing
        save(root / "guided" / "1_fake" / f"g{i}.png")
        save(root / "ldm_200" / "1_fake" / f"l{i}.png")
    return root


def test_ufd_diffusion_shared_real_folders(diffusion_root):
    guided = ufd_diffusion(diffusion_root, "guided")
    assert [(r.path.name, r.label) for r in guided] == [
        ("in0.png", 0), ("in1.png", 0), ("in2.png", 0), ("g0.png", 1), ("g1.png", 1), ("g2.png", 1)]
    assert {r.source for r in guided} == {"guided"}
    ldm = ufd_diffusion(diffusion_root, "ldm_200", max_per_class=2)
    assert [(r.path.relative_to(diffusion_root).as_posix(), r.label) for r in ldm] == [
        ("laion/0_real/la1.png", 0), ("laion/0_real/la2.png", 0),
        ("ldm_200/1_fake/l0.png", 1), ("ldm_200/1_fake/l1.png", 1)]
    assert UFD_DIFFUSION_REAL_FOLDERS["dalle"] == "laion" and UFD_DIFFUSION_REAL_FOLDERS["guided"] == "imagenet"
    over = ufd_diffusion(diffusion_root, "ldm_200", real_folder="imagenet")
    assert [r.path.name for r in over if r.label == 0] == ["in0.png", "in1.png", "in2.png"]
    with pytest.raises(DatasetLayoutError, match="no known real folder for generator 'mystery'"):
        ufd_diffusion(diffusion_root, "mystery")
    with pytest.raises(DatasetLayoutError, match="glide_100_27/1_fake: no such folder"):
        ufd_diffusion(diffusion_root, "glide_100_27")


def test_genimage(tmp_path):
    for side in ("ai", "nature"):
        for i in range(3):
            save(tmp_path / "ADM" / "val" / side / f"{side}{i}.png")
            save(tmp_path / "BigGAN" / "imagenet_ai_0419_biggan" / "val" / side / f"{side}{i}.png")
    recs = genimage(tmp_path, "ADM", num_real=2)
    assert [(r.path.name, r.label) for r in recs] == [
        ("nature0.png", 0), ("nature1.png", 0), ("ai0.png", 1), ("ai1.png", 1), ("ai2.png", 1)]
    nested = genimage(tmp_path, "BigGAN", num_fake=1)
    assert [(r.path.name, r.label) for r in nested] == [
        ("nature0.png", 0), ("nature1.png", 0), ("nature2.png", 0), ("ai0.png", 1)]
    assert nested[0].source == "BigGAN"
    with pytest.raises(DatasetLayoutError, match="expected .*ADM/train/"):
        genimage(tmp_path, "ADM", split="train")


def test_plain_folder_and_label_inference(tmp_path):
    root = tmp_path / "mixed"
    save(root / "car" / "0_real" / "r.png")
    save(root / "car" / "1_fake" / "f.png")
    save(root / "top.jpg")
    save(root / "a" / "b" / "deep.png")
    (root / "list.csv").write_text("x")
    (root / ".hidden").mkdir()
    save(root / ".hidden" / "h.png")
    recs = plain_folder(root)
    assert names(recs) == [("deep.png", None, "a/b"), ("r.png", 0, "car"), ("f.png", 1, "car"),
                           ("top.jpg", None, "")]
    assert {r.source for r in recs} == {"mixed"}
    assert names(plain_folder(root, recursive=False)) == [("top.jpg", None, "")]
    assert names(plain_folder(root / "car" / "0_real")) == [("r.png", 0, "")]
    assert label_from_path("x/1_fake/0_real/a.png") == 0 and label_from_path("0_real") is None
    (tmp_path / "void").mkdir()
    with pytest.raises(DatasetLayoutError, match="void: no image files"):
        plain_folder(tmp_path / "void")


def test_broken_link_is_listed_then_reported(tmp_path):
    save(tmp_path / "d" / "ok.png")
    (tmp_path / "d" / "dangling.png").symlink_to(tmp_path / "gone.png")
    recs = plain_folder(tmp_path / "d")
    assert [r.path.name for r in recs] == ["dangling.png", "ok.png"]
    assert ImageDataset(recs)[0]["error"] == "no such file"


def test_collect_keeps_file_order(tmp_path):
    b = save(tmp_path / "x" / "1_fake" / "b.png")
    a = save(tmp_path / "a.png")
    save(tmp_path / "folder" / "0_real" / "z.png")
    recs = collect([b, tmp_path / "folder", str(a)])
    assert [(r.path.name, r.label) for r in recs] == [("b.png", 1), ("z.png", 0), ("a.png", None)]
    with pytest.raises(DatasetLayoutError, match="no such file or folder"):
        collect([tmp_path / "missing.png"])
    with pytest.raises(DatasetLayoutError, match="no input"):
        collect([])


# ----------------------------------------------------------------------------- dataset and batching
@pytest.fixture
def mixed_records(tmp_path) -> list[ImageRecord]:
    """Sizes A A A bad A B B A (A = 8x6, B = 5x4) plus a trailing zero-byte file."""
    A, B = (8, 6), (5, 4)
    recs = []
    for i, size in enumerate([A, A, A, None, A, B, B, A, None]):
        p = tmp_path / f"{i}.png"
        if size is None:
            p.write_bytes(b"" if i == 8 else b"garbage")
        else:
            save(p, size=size, color=(i, 0, 0))
        recs.append(ImageRecord(p, label=i % 2 if i != 7 else None, source="t"))
    return recs


def test_dataset_sample_never_raises(mixed_records):
    ds = ImageDataset(mixed_records)
    good, bad = ds[0], ds[3]
    assert good["error"] is None and good["image"].shape == (3, 6, 8) and good["label"] == 0
    assert round(float(good["image"][0, 0, 0]) * 255) == 0 and ds[2]["index"] == 2
    assert bad["image"] is None and bad["label"] == 1 and bad["path"] == str(mixed_records[3].path)
    assert bad["error"].startswith("not an image")
    assert ds[7]["label"] == -1
    assert ds[8]["error"] == "empty file (0 bytes)"


def test_transform_errors_are_bugs_not_skips(mixed_records):
    def broken(_):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom") as e:
        ImageDataset(mixed_records, transform=broken)[0]
    assert any(str(mixed_records[0].path) in n for n in e.value.__notes__)


@pytest.mark.parametrize("workers", [0, 2])
def test_iter_batches_groups_consecutive_sizes_and_reports_skips(mixed_records, workers):
    ds = ImageDataset(mixed_records)
    summary = RunSummary()
    batches = [summary.add(b) for b in iter_batches(ds, batch_size=2, num_workers=workers)]
    assert [b.indices for b in batches] == [[0, 1], [2, 4], [5, 6], [7]]
    assert [tuple(b.images.shape) for b in batches] == [(2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 4, 5), (1, 3, 6, 8)]
    assert [b.labels.tolist() for b in batches] == [[0, 1], [0, 0], [1, 0], [-1]]
    assert batches[1].skipped == [(str(mixed_records[3].path), batches[1].skipped[0][1])]
    assert batches[3].skipped == [(str(mixed_records[8].path), "empty file (0 bytes)")]
    assert [round(float(x) * 255) for b in batches for x in b.images[:, 0, 0, 0]] == [0, 1, 2, 4, 5, 6, 7]
    assert (summary.total, summary.used, len(summary.skipped)) == (9, 7, 2)
    d = summary.to_dict()
    assert d["num_skipped"] == 2 and d["skipped"][1] == {"path": str(mixed_records[8].path),
                                                         "reason": "empty file (0 bytes)"}


def test_iter_batches_full_batches_and_only_skipped(tmp_path, mixed_records):
    same = [r for r, i in zip(mixed_records, range(9)) if i in (0, 1, 2, 4)]
    assert [b.indices for b in iter_batches(ImageDataset(same), batch_size=3)] == [[0, 1, 2], [3]]
    only_bad = ImageDataset([mixed_records[3], mixed_records[8]])
    batches = list(iter_batches(only_bad, batch_size=4))
    assert len(batches) == 1 and len(batches[0]) == 0 and batches[0].images is None
    assert batches[0].labels.shape == (0,) and len(batches[0].skipped) == 2
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(only_bad, batch_size=0))


def test_collate_refuses_mixed_shapes(mixed_records):
    ds = ImageDataset(mixed_records)
    with pytest.raises(ValueError, match="different shapes.*iter_batches"):
        collate([ds[0], ds[5]])
    b = collate([ds[0], ds[3], ds[1]])
    assert b.indices == [0, 1] and b.images.dtype == torch.float32 and len(b.skipped) == 1


def test_run_summary_log(caplog):
    s = RunSummary(total=3, used=1, skipped=[("a.png", "empty file (0 bytes)"), ("b.png", "not an image")])
    logger = logging.getLogger("test.summary")
    with caplog.at_level(logging.INFO, logger="test.summary"):
        s.log(logger)
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert msgs == [(logging.WARNING, "skipped a.png: empty file (0 bytes)"),
                    (logging.WARNING, "skipped b.png: not an image"),
                    (logging.WARNING, "used 1 of 3 images; skipped 2 file(s) (unreadable, or listed by the reader)")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.summary"):
        RunSummary(total=2, used=2).log(logger)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "used 2 of 2 images; skipped 0 file(s) (unreadable, or listed by the reader)")]
