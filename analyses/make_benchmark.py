#!/usr/bin/env python
"""Build the offline synthetic forensic benchmark (ForenSynths layout) into OUT.

    python analyses/make_benchmark.py --out bench/synth --seed 0

Real images are crops of the colour photographs bundled with scikit-image (plus procedural
dead-leaves images); fake images are those crops passed through small generators of distinct
architectural families, trained at build time on CPU. Train/val hold the fakes of one family
(``--train_family``, default ``tconv``); ``test/<family>/`` exists for every family. See
``forensics.data.synthetic`` for the design and ``OUT/manifest.json`` for what was built.
Deterministic for a seed (same platform, torch version and ``--threads``).

``--local_out DIR`` also builds the local-manipulation split of this benchmark into DIR
(``DIR/test/<family>_local/{0_real,1_fake,masks}``: a soft-blended region of a real crop replaced by a
generator's output, the binary mask beside each fake; ``forensics.data.local_fakes``,
docs/faithfulness.md); the benchmark's own images are unchanged by it.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from forensics.cli import run
from forensics.cli.options import add_option
from forensics.data.local_fakes import LocalFakeConfig, build_local_fakes
from forensics.data.synthetic import (FAMILIES, BenchmarkConfig, ColorFingerprint,
                                      build_benchmark)

_D = BenchmarkConfig()
_L = LocalFakeConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    p.add_argument("--seed", type=int, default=_D.seed, help="random seed (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    g = p.add_argument_group("size and counts")
    g.add_argument("--size", type=int, default=_D.image_size, help="image side in pixels (default %(default)s)")
    add_option(g, "--train_per_class", "--train-per-class", type=int, default=_D.train_per_class,
               help="train images per class and per label (default %(default)s)")
    add_option(g, "--val_per_class", "--val-per-class", type=int, default=_D.val_per_class,
               help="val images per class and per label (default %(default)s)")
    add_option(g, "--test_per_family", "--test-per-family", type=int, default=_D.test_per_family,
               help="test images per family and per label (default %(default)s)")
    add_option(g, "--dead_leaves", "--dead-leaves", type=int, default=_D.dead_leaves,
               help="procedural dead-leaves source images, class 'deadleaves' (0: none; default %(default)s)")
    g = p.add_argument_group("families and generators")
    g.add_argument("--families", default=",".join(_D.families),
                   help=f"comma-separated families to build (known: {', '.join(FAMILIES)})")
    add_option(g, "--train_family", "--train-family", default=_D.train_family, help="family of the train/val fakes (default %(default)s)")
    add_option(g, "--gen_steps", "--gen-steps", type=int, default=_D.gen_steps, help="Adam steps per generator (default %(default)s)")
    add_option(g, "--gen_width", "--gen-width", type=int, default=_D.gen_width, help="generator channels (default %(default)s)")
    add_option(g, "--gen_hf_weight", "--gen-hf-weight", type=float, default=_D.gen_hf_weight,
               help="weight of the Laplacian L1 term in generator training (default %(default)s)")
    add_option(g, "--chroma_block", "--chroma-block", type=float, default=_D.color.chroma_block,
               help="colour fingerprint of the training family: share of half-resolution chroma "
                    "(default %(default)s; 0 = none)")
    g.add_argument("--saturation", type=float, default=_D.color.saturation,
                   help="colour fingerprint of the training family: chroma gain (default %(default)s; 1 = none)")
    add_option(g, "--calibrate_saturation", "--calibrate-saturation", action="store_true",
               help="treat --saturation as the target output/input chroma ratio on the probe set "
                    "instead of a fixed gain")
    add_option(g, "--gen_select_min", "--gen-select-min", default=str(_D.gen_select_min),
               help="tconv/tconv3: keep the snapshot (0.8..1.4 x --gen_steps) nearest to --gen_steps whose probe "
                    "Nyquist ratio is >= this (default %(default)s; 'none': plain --gen_steps)")
    add_option(g, "--color_families", "--colour_families", "--colour-families", "--color-families", default="",
               help="comma-separated other families that also get the colour fingerprint (default none)")
    p.add_argument("--threads", type=int, default=_D.threads, help="torch threads during the build (default %(default)s)")
    g = p.add_argument_group("local-manipulation split (with masks)")
    g.add_argument("--local_out", type=Path, default=None, help="also build it into this folder (default: not built)")
    g.add_argument("--local_families", default=",".join(_L.families),
                   help="comma-separated generator families of the split (default %(default)s)")
    g.add_argument("--local_per_family", type=int, default=_L.per_family,
                   help="fakes (and reals) per family (default %(default)s)")
    g.add_argument("--local_area", type=float, nargs=2, default=_L.area, metavar=("LO", "HI"),
                   help="range of the masks' area fraction (default %(default)s; larger regions give more pairs "
                        "a detector calls fake, but change what is localised)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings")
    return p


def config_from_args(a: argparse.Namespace) -> BenchmarkConfig:
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    return BenchmarkConfig(
        seed=a.seed, image_size=a.size, train_per_class=a.train_per_class, val_per_class=a.val_per_class,
        test_per_family=a.test_per_family, dead_leaves=a.dead_leaves, families=split(a.families),
        train_family=a.train_family, gen_steps=a.gen_steps, gen_width=a.gen_width, gen_hf_weight=a.gen_hf_weight,
        color=ColorFingerprint(chroma_block=a.chroma_block, saturation=a.saturation,
                               calibrate=a.calibrate_saturation),
        gen_select_min=None if a.gen_select_min.strip().lower() == "none" else float(a.gen_select_min),
        color_families=split(a.color_families), threads=a.threads)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_args(a)
    manifest = build_benchmark(a.out, cfg, overwrite=a.overwrite)
    if a.local_out is not None:
        local = LocalFakeConfig(families=tuple(x.strip() for x in a.local_families.split(",") if x.strip()),
                                per_family=a.local_per_family, area=tuple(a.local_area), seed=a.seed)
        build_local_fakes(a.local_out, cfg, local, bench_manifest=manifest, overwrite=a.overwrite)
    return 0


if __name__ == "__main__":
    run(main, expected=(ValueError, FileExistsError))
