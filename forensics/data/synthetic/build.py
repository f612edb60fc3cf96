"""Building the benchmark: sample the crops, train the generators, write the PNGs in the ForenSynths layout
(atomically, under a temporary name) and the manifest with a SHA-256 over every written image."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ...io import atomic_dir
from .config import BENCHMARK_VERSION, FAKE_DIR, REAL_DIR, BenchmarkConfig, PathLike
from .generators import build_generators, generate
from .seeding import _rng, _torch_seed, deterministic_torch
from .sources import Source, _split_count, class_name, load_sources, sample_crops

log = logging.getLogger(__name__)


def _write_pngs(folder: Path, imgs: np.ndarray, names: Sequence[str], prefix: str, hasher) -> None:
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, src) in enumerate(zip(imgs, names)):
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise OSError(f"cannot encode PNG for {folder}")
        data = buf.tobytes()
        fname = f"{prefix}_{i:05d}_{src}.png"
        (folder / fname).write_bytes(data)
        hasher.update(f"{folder.name}/{fname}".encode())
        hasher.update(hashlib.sha256(data).digest())


def build_benchmark(out: PathLike, cfg: BenchmarkConfig = BenchmarkConfig(), overwrite: bool = False,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Build the benchmark into ``out`` (atomically) and return its manifest (also ``out/manifest.json``)."""
    out = Path(out)
    say = progress or (lambda msg: log.info("%s", msg))
    t_start = time.perf_counter()
    with atomic_dir(out, overwrite, hint="overwrite=True (--overwrite)") as tmp:
        with deterministic_torch(cfg.threads):
            manifest = _build_into(tmp, cfg, say)
        manifest["build_seconds"] = round(time.perf_counter() - t_start, 1)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    say(f"benchmark written to {out} in {manifest['build_seconds']} s")
    return manifest


def _build_into(root: Path, cfg: BenchmarkConfig, say: Callable[[str], None]) -> dict:
    t0 = time.perf_counter()
    sources = load_sources(cfg)
    say(f"{len(sources)} sources loaded ({time.perf_counter() - t0:.1f} s)")
    gens, gen_info = build_generators(cfg, sources, say)
    hasher = hashlib.sha256()
    counts: dict = {"train": {}, "val": {}, "test": {}}

    # train / val: per class, reals and fakes of the training family from distinct train-region crops
    classes: dict[str, list[Source]] = {}
    for s in sources:
        classes.setdefault(class_name(s.name), []).append(s)
    tgen = gens[cfg.train_family]
    for split, n in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
        if n == 0:
            continue
        for ci, (cname, srcs) in enumerate(classes.items()):
            rng = _rng(cfg.seed, split, cname)
            reals, rnames = sample_crops(srcs, "train", _split_count(n, len(srcs)), rng, cfg)
            base, fnames = sample_crops(srcs, "train", _split_count(n, len(srcs)), rng, cfg)
            fakes = generate(tgen, base, _torch_seed(cfg.seed, "gen", split, cname))
            _write_pngs(root / split / cname / REAL_DIR, reals, rnames, "real", hasher)
            _write_pngs(root / split / cname / FAKE_DIR, fakes, fnames, cfg.train_family, hasher)
            counts[split][cname] = {REAL_DIR: len(reals), FAKE_DIR: len(fakes)}
        say(f"{split}: {sum(v[REAL_DIR] + v[FAKE_DIR] for v in counts[split].values())} images")

    # test: per family, own reals and fakes, both from the test regions, balanced over sources
    per_src = _split_count(cfg.test_per_family, len(sources))
    for fam in cfg.families:
        rng = _rng(cfg.seed, "test", fam)
        reals, rnames = sample_crops(sources, "test", per_src, rng, cfg)
        base, fnames = sample_crops(sources, "test", per_src, rng, cfg)
        fakes = generate(gens[fam], base, _torch_seed(cfg.seed, "gen", "test", fam))
        _write_pngs(root / "test" / fam / REAL_DIR, reals, [class_name(n) for n in rnames], "real", hasher)
        _write_pngs(root / "test" / fam / FAKE_DIR, fakes, [class_name(n) for n in fnames], fam, hasher)
        counts["test"][fam] = {REAL_DIR: len(reals), FAKE_DIR: len(fakes)}
    say(f"test: {len(cfg.families)} families x {2 * cfg.test_per_family} images")

    import skimage
    return {
        "benchmark": "forensics.synthetic",
        "version": BENCHMARK_VERSION,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "format": "png (RGB, 8 bit)",
        "layout": {"train": "train/<class>/{0_real,1_fake}", "val": "val/<class>/{0_real,1_fake}",
                   "test": "test/<family>/{0_real,1_fake}"},
        "train_family": cfg.train_family,
        "families": list(cfg.families),
        "classes": list(classes),
        "counts": counts,
        "sources": [{"name": s.name, "class": class_name(s.name), "shape": list(s.image.shape),
                     "train_region_yyxx": list(s.train_region), "test_region_yyxx": list(s.test_region)}
                    for s in sources],
        "generators": gen_info,
        "config": cfg.to_dict(),
        "software": {"torch": torch.__version__, "numpy": np.__version__, "skimage": skimage.__version__,
                     "threads": torch.get_num_threads()},
        "images_sha256": hasher.hexdigest(),
    }


def read_manifest(root: PathLike) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())
