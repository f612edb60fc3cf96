"""Locally manipulated images with exact masks: a test split for localisation (docs/faithfulness.md).

A region of a real test crop (a random ellipse, rotated rectangle or free-form brush stroke covering
5-40 % of the image) is replaced by the output of one of the benchmark's generator families run on
that same crop, blended in with a soft (Gaussian-feathered) edge:

    fake = alpha * G(crop) + (1 - alpha) * crop,     alpha = Gaussian blur of the shape, sigma ``feather``

so the manipulated region shows the same content and differs only by the generator's trace, and the
binary mask ``alpha >= 0.5`` says exactly where that trace is. The generators are the benchmark's
own (retrained here from the benchmark's configuration, which is deterministic; their probe
measurements are checked against the benchmark's manifest).

Layout written by :func:`build_local_fakes` (its own folder; the benchmark's splits are untouched)::

    OUT/test/<family>_local/0_real/*.png     untouched real test crops
    OUT/test/<family>_local/1_fake/*.png     locally manipulated crops
    OUT/test/<family>_local/bases/*.png      the untouched crop each fake was made from, same file name as the fake
    OUT/test/<family>_local/masks/*.png      one mask per fake, same file name: 8-bit grey, 255 = manipulated
    OUT/local_manifest.json                  settings, counts, the pairs (fake, base, mask, shape, area), SHA-256

A fake and its base differ only where ``alpha > 0`` (the mask and its feathered rim), so the pair is a
counterfactual: whatever the detector sees in the fake but not in the base was put there by the
generator, inside the region (:mod:`forensics.analysis.faithfulness.validity` checks that the detector's
evidence really lies there before any heatmap is scored against the mask).

Versions: 1 had no bases; 2 adds ``bases/`` and the pairs in the manifest, and its defaults (more fakes per
family) give every default detector enough counterfactual pairs. The benchmark itself is never rebuilt.

Deterministic for a seed (same platform and torch version, one torch thread by default).
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..io import atomic_dir
from . import synthetic as syn

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

LOCAL_VERSION = 2
LOCAL_SUFFIX = "_local"
MASK_DIR = "masks"
BASE_DIR = "bases"
MANIFEST = "local_manifest.json"
SHAPES = ("ellipse", "rectangle", "stroke")


@dataclass(frozen=True)
class LocalFakeConfig:
    """Settings of the local-manipulation split. ``families``: generator families (default: the
    benchmark's training family and the unseen ``pshuffle``); ``per_family``: images per family and
    label; ``area``: range of the mask's area fraction; ``feather``: sigma (pixels) of the soft edge.

    ``per_family`` is 1000 since version 2 (100 before): only the *valid pairs* are scored (the detector calls
    the fake fake and its base real), and the default detectors find such pairs in a fraction of the fakes
    (the default ResNet-50 in about one in five at these mask areas), so that many fakes give every default
    detector at least 64 pairs. Larger regions raise that fraction (``area``, ``--local_area`` of
    ``analyses/make_benchmark.py``) but change what is being localised; the default keeps 5-40 %."""

    families: tuple[str, ...] = ("tconv", "pshuffle")
    per_family: int = 1000
    area: tuple[float, float] = (0.05, 0.40)
    feather: float = 1.5
    shapes: tuple[str, ...] = SHAPES
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in syn.FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {list(syn.FAMILIES)}")
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {list(self.shapes)}")
        lo, hi = self.area
        if not 0 < lo < hi < 1:
            raise ValueError(f"area must be (lo, hi) with 0 < lo < hi < 1, got {self.area}")
        if self.per_family < 1 or self.feather < 0:
            raise ValueError("per_family must be >= 1 and feather >= 0")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {**d, "families": list(self.families), "area": list(self.area), "shapes": list(self.shapes)}


# ---------------------------------------------------------------------------------------- shapes
def _shape(kind: str, size: int, target: float, rng: np.random.Generator) -> np.ndarray:
    """A filled shape (float32 0/1, ``size x size``) of about ``target`` area fraction."""
    import cv2
    canvas = np.zeros((size, size), np.uint8)
    area = target * size * size
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, size=2)
    angle = float(rng.uniform(0, 180))
    aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
    if kind == "ellipse":
        a = math.sqrt(area / math.pi * aspect)
        cv2.ellipse(canvas, ((float(cx), float(cy)), (2 * a, 2 * a / aspect), angle), 1, -1, cv2.LINE_8)
    elif kind == "rectangle":
        w = math.sqrt(area * aspect)
        box = cv2.boxPoints(((float(cx), float(cy)), (w, w / aspect), angle))
        cv2.fillPoly(canvas, [np.round(box).astype(np.int32)], 1)
    else:  # a brush stroke: a random walk of thick segments until the area is reached
        width = int(rng.integers(max(2, size // 16), max(3, size // 6) + 1))
        y, x, heading = float(cy), float(cx), float(rng.uniform(0, 2 * math.pi))
        for _ in range(64):
            if canvas.sum() >= area:
                break
            heading += float(rng.normal(0, 0.8))
            step = float(rng.uniform(size / 12, size / 5))
            ny = min(max(y + step * math.sin(heading), 0.0), size - 1.0)
            nx = min(max(x + step * math.cos(heading), 0.0), size - 1.0)
            cv2.line(canvas, (int(round(x)), int(round(y))), (int(round(nx)), int(round(ny))), 1, width)
            y, x = ny, nx
    return canvas.astype(np.float32)


def soft_alpha(shape: np.ndarray, feather: float) -> np.ndarray:
    """The blending weight: the shape blurred with a Gaussian of sigma ``feather`` (0: hard edge)."""
    import cv2
    if feather <= 0:
        return shape.astype(np.float32)
    return cv2.GaussianBlur(shape.astype(np.float32), (0, 0), sigmaX=feather, borderType=cv2.BORDER_REFLECT)


def random_mask(size: int, rng: np.random.Generator, cfg: LocalFakeConfig, max_tries: int = 100
                ) -> tuple[str, np.ndarray, np.ndarray]:
    """``(shape kind, alpha [H, W] float32, mask [H, W] bool)`` with the mask (``alpha >= 0.5``)
    covering a fraction of the image inside ``cfg.area`` (shapes are redrawn until it does)."""
    lo, hi = cfg.area
    for _ in range(max_tries):
        kind = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
        target = float(rng.uniform(lo, hi))
        alpha = soft_alpha(_shape(kind, size, target, rng), cfg.feather)
        mask = alpha >= 0.5
        if lo <= mask.mean() <= hi:
            return kind, alpha, mask
    raise RuntimeError(f"no {cfg.shapes} mask with area in {cfg.area} after {max_tries} tries")


def composite(real: np.ndarray, generated: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha * generated + (1 - alpha) * real`` in uint8 (HxWx3 arrays, alpha HxW)."""
    a = alpha[..., None].astype(np.float64)
    return np.clip(np.rint(a * generated + (1 - a) * real), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- build
def build_local_fakes(out: PathLike, bench_cfg: syn.BenchmarkConfig = syn.BenchmarkConfig(),
                      cfg: LocalFakeConfig = LocalFakeConfig(), *, bench_manifest: dict | None = None,
                      overwrite: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Build the local-manipulation split of the benchmark built with ``bench_cfg`` into ``out``
    (atomically) and return its manifest. ``bench_manifest``: that benchmark's manifest, whose
    generator probe measurements must match the regenerated generators (else a ``RuntimeError``)."""
    out = Path(out)
    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.perf_counter()
    with atomic_dir(out, overwrite) as tmp:
        with syn.deterministic_torch(bench_cfg.threads):
            manifest = _build_into(tmp, bench_cfg, cfg, bench_manifest, say)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    say(f"local fakes written to {out} in {manifest['build_seconds']} s")
    return manifest


def _generators(bench_cfg: syn.BenchmarkConfig, families: Sequence[str], sources, say):
    """The benchmark's generators of ``families`` (each is trained from its own seeds, whatever the
    other families, so a build restricted to them gives the same generators)."""
    missing = [f for f in families if f not in bench_cfg.families]
    if missing:
        raise ValueError(f"families {missing} are not in the benchmark ({list(bench_cfg.families)})")
    wanted = tuple(f for f in bench_cfg.families if f in families or f == bench_cfg.train_family)
    return syn.build_generators(dataclasses.replace(bench_cfg, families=wanted), sources, say)


def _build_into(root: Path, bench_cfg: syn.BenchmarkConfig, cfg: LocalFakeConfig, bench_manifest: dict | None,
                say: Callable[[str], None]) -> dict:
    import cv2
    sources = syn.load_sources(bench_cfg)
    gens, info = _generators(bench_cfg, cfg.families, sources, say)
    if bench_manifest is not None:
        for fam in cfg.families:
            want = bench_manifest["generators"][fam]["probe"]
            if info[fam]["probe"] != want:
                raise RuntimeError(f"regenerated {fam} generator differs from the benchmark's "
                                   f"(probe {info[fam]['probe']} vs {want}): other platform or torch version?")
    hasher = hashlib.sha256()
    per_src = syn._split_count(cfg.per_family, len(sources))
    size = bench_cfg.image_size
    counts, images = {}, {}
    for fam in cfg.families:
        rng = syn._rng(cfg.seed, "local", fam)
        reals, rnames = syn.sample_crops(sources, "test", per_src, rng, bench_cfg)
        base, fnames = syn.sample_crops(sources, "test", per_src, rng, bench_cfg)
        generated = syn.generate(gens[fam], base, syn._torch_seed(cfg.seed, "local", "gen", fam))
        fakes, masks, records = [], [], []
        for i in range(len(base)):
            kind, alpha, mask = random_mask(size, rng, cfg)
            fakes.append(composite(base[i], generated[i], alpha))
            masks.append(mask)
            records.append({"shape": kind, "area": round(float(mask.mean()), 5)})
        folder = root / "test" / f"{fam}{LOCAL_SUFFIX}"
        syn._write_pngs(folder / syn.REAL_DIR, reals, [syn.class_name(n) for n in rnames], "real", hasher)
        fake_names = [syn.class_name(n) for n in fnames]
        syn._write_pngs(folder / syn.FAKE_DIR, np.stack(fakes), fake_names, fam, hasher)
        syn._write_pngs(folder / BASE_DIR, base, fake_names, fam, hasher)   # same file names as the fakes
        (folder / MASK_DIR).mkdir()
        for i, (mask, src) in enumerate(zip(masks, fake_names)):
            fname = f"{fam}_{i:05d}_{src}.png"
            ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            if not ok:
                raise OSError(f"cannot encode mask {fname}")
            (folder / MASK_DIR / fname).write_bytes(buf.tobytes())
            hasher.update(f"{MASK_DIR}/{fname}".encode())
            hasher.update(hashlib.sha256(buf.tobytes()).digest())
            records[i] = {"file": fname, "fake": f"{syn.FAKE_DIR}/{fname}", "base": f"{BASE_DIR}/{fname}",
                          "mask": f"{MASK_DIR}/{fname}", **records[i]}
        counts[folder.name] = {syn.REAL_DIR: len(reals), syn.FAKE_DIR: len(fakes), BASE_DIR: len(base),
                               MASK_DIR: len(masks)}
        images[folder.name] = records
        areas = [r["area"] for r in records]
        say(f"{folder.name}: {len(fakes)} fakes, mask area {np.mean(areas):.3f} (min {min(areas):.3f}, "
            f"max {max(areas):.3f})")
    return {"split": "forensics.local_fakes", "version": LOCAL_VERSION, "config": cfg.to_dict(),
            "benchmark_config": bench_cfg.to_dict(),
            "benchmark_images_sha256": None if bench_manifest is None else bench_manifest["images_sha256"],
            "layout": f"test/<family>{LOCAL_SUFFIX}/{{{syn.REAL_DIR},{syn.FAKE_DIR},{BASE_DIR},{MASK_DIR}}}",
            "mask_format": "8-bit grey PNG, same file name as the fake; 255 = manipulated (alpha >= 0.5), 0 = original",
            "base_format": "the untouched crop the fake was made from, PNG, same file name as the fake; it differs "
                           "from the fake only where the feathered mask alpha > 0",
            "generators": {f: info[f]["probe"] for f in cfg.families},
            "counts": counts, "images": images, "images_sha256": hasher.hexdigest()}


# ---------------------------------------------------------------------------------------- reading
def read_mask(path: PathLike) -> np.ndarray:
    """A mask PNG as ``bool [H, W]`` (True = manipulated: any value >= 128)."""
    import cv2
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return m >= 128


def file_for(image: PathLike, folder: PathLike) -> Path | None:
    """The file of ``folder`` paired with ``image`` by name, never by position: the same file name, else the
    same stem as ``.png``, else the one file with the same stem; ``None`` if there is none. Several files
    with the stem and none of the first two names is an error (the pairing would be a guess)."""
    image, folder = Path(image), Path(folder)
    for cand in (folder / image.name, folder / f"{image.stem}.png"):
        if cand.is_file():
            return cand
    found = [p for p in folder.glob(f"{glob.escape(image.stem)}.*") if p.is_file()]
    if len(found) > 1:
        raise ValueError(f"{len(found)} files in {folder} could be the pair of {image.name}: "
                         f"{sorted(p.name for p in found)}")
    return found[0] if found else None


def mask_for(image: PathLike, mask_dir: PathLike) -> Path | None:
    """The mask of ``image`` in ``mask_dir`` (:func:`file_for`), or ``None``."""
    return file_for(image, mask_dir)


def base_for(image: PathLike, base_dir: PathLike) -> Path | None:
    """The untouched base of fake ``image`` in ``base_dir`` (:func:`file_for`), or ``None``."""
    return file_for(image, base_dir)


def local_set_name(family: str) -> str:
    return f"{family}{LOCAL_SUFFIX}"


def read_local_manifest(root: PathLike) -> dict:
    return json.loads((Path(root) / MANIFEST).read_text())


__all__ = ["BASE_DIR", "LOCAL_VERSION", "LocalFakeConfig", "MASK_DIR", "base_for", "build_local_fakes", "composite",
           "file_for", "local_set_name", "mask_for", "random_mask", "read_local_manifest", "read_mask", "soft_alpha"]
