#!/usr/bin/env python
"""Colour ablation (T-FF, docs/colour.md): a detector on RGB vs grayscale (or another colour ablation) test images,
per set: AP, accuracies at 0.5 and at the G-mean threshold calibrated on the RGB predictions, mean/std
of P(fake) for reals and fakes, and the box plot of the fakes' P(fake) (RGB p >= 0.2) with the median drop.

    python analyses/color_ablation.py            # the embedded default (synthetic benchmark + its ResNet-50)
    python analyses/color_ablation.py --arch resnet50 --blur_jpg 0.5 --bsize 256 \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name progan stylegan2 biggan --have_classes auto \\
        --weights weights/resnet50/blur_jpg_prob0.5.pth
    ... --ablation chroma_only       # keep only the chroma; also swap_rb, swap_rg, swap_gb, rotate_gbr

Images are scored at full resolution (--crop none, the reference) unless --crop center. With no
--weights/--dataset_dir: every family of the synthetic benchmark's test split; --recipe picks a
default recipe of forensics.defaults (resnet50, the default; resnet50_cr is the colour-robust one, see
analyses/compare_color_robust.py).

Writes under OUT/<detector>/<ablation>_<blur_jpg or default>/: color-ablation.csv (one row per set and
the mean), color-ablation.json, predictions.csv, the reference's per-set CSVs <gan>_<tag>/<gan>-AP-#N-
samples-no-crop.csv, -UNCALIBRATED_ACC-, -CALIBRATED_ACC- (percent; threshold as a fraction) and the
box plots whisker/<gan>.{png,pdf} and whisker/all.{png,pdf}. Library: forensics.analysis.color.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.color import MIN_P, color_ablation
from forensics.cli import run, setup_logging
from forensics.cli.layout_args import add_layout_args
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import record_run, resolve_inputs
from forensics.data.color import ABLATIONS, DEFAULT_ABLATION


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    g = add_data_args(p, gan_default=None, bsize=32)
    add_layout_args(g)
    g = p.add_argument_group("colour ablation")
    g.add_argument("--ablation", choices=list(ABLATIONS), default=DEFAULT_ABLATION,
                   help="grayscale (ITU-R 601-2 luma x3, the reference; default) or another ablation: "
                        + "; ".join(f"{k}: {v[1]}" for k, v in ABLATIONS.items() if k != DEFAULT_ABLATION))
    g.add_argument("--min_p", type=float, default=MIN_P,
                   help="box plot: fakes with RGB P(fake) >= this (default: %(default)s, the reference)")
    add_crop_arg(g, default="none")
    g.add_argument("--inclusive_threshold", action="store_true",
                   help="calibrated accuracy with p >= t instead of the reference's p > t")
    add_run_args(p, out_help="output root (default: figures/color_ablation)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    inputs = resolve_inputs(args)
    detector, label, sets = inputs.detector, inputs.label, inputs.sets
    study = color_ablation(detector, sets, ablation=args.ablation, label=label, min_p=args.min_p,
                           crop=args.crop, batch_size=args.bsize, inclusive=args.inclusive_threshold,
                           num_workers=args.workers, progress=True)
    record_run(study, args, detector, files=sets)  # the study's settings have the provenance already
    tag = args.blur_jpg or "default"
    out = (args.out or Path("figures/color_ablation")) / label / f"{args.ablation}_{tag}"
    paths = study.write(out, tag=tag, crop=args.crop)
    print(study.format())
    shown = ("csv", "json", "predictions", "box_png")
    for name in shown:
        print(f"{name}: {paths[name]}")
    print(f"(+ {len(paths) - len(shown)} more files under {out}: per set CSVs and box plots)")
    return 0


if __name__ == "__main__":
    run(main)
