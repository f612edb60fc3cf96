#!/usr/bin/env python
"""TIE block importance vs LRP block relevance of a RINE detector over a data set (real and fake apart).

    python analyses/tie_vs_lrp.py             # the embedded default (benchmark test set of its training family)
    python analyses/tie_vs_lrp.py --arch rine --weights rine.2class --dataset_dir /mnt/data/test \\
        --gan_name progan --have_classes 1 --num_instances 100 -o backbone_weights=clip.vit_l14_openai

Per image, LRP from the logit (sign-correct: evidence for the true class) through RINE's head to each
block's ln_2 CLS token gives the block relevance; its share (|R_b| / sum |R|, --share) is averaged per group
and compared with the TIE mean importance by Spearman and Kendall, with bootstrap CIs over images
(--n_boot, seeded). Writes under OUT/<arch>/<gan>/: tie_vs_lrp.csv, correlations.csv, per_image.csv,
tie_vs_lrp.json, the side-by-side bars tie_vs_lrp.{png,pdf} and per_image.{png,pdf} (image, CP-LRP pixel map
through the ViT, per-block share vs TIE) and per_block.{png,pdf} (per fake: CP-LRP map of each block's relevance
and Grad-CAM on each block's token grid). Library: forensics.analysis.tie_vs_lrp.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from forensics.analysis.tie_vs_lrp import (SHARES, collect_block_relevance, compare, tie_importance,
                                           write_block_maps, write_image_grid)
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import record_run, resolve_inputs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=32, per_label=False)
    g = p.add_argument_group("comparison")
    g.add_argument("--share", choices=SHARES, default="abs",
                   help="block share: abs = |R_b| / sum |R| (default), signed = R_b / sum R")
    g.add_argument("--sign", choices=["correct", "reference"], default="correct",
                   help="LRP start: correct = +1 at the true class's logit (default), reference = +1 fake / -1 real")
    g.add_argument("--include_wrong", action="store_true", help="also explain misclassified images")
    g.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    g.add_argument("--max_images", type=int, default=6, help="rows of the per-image grid (default: %(default)s)")
    g.add_argument("--block_maps", type=int, default=4,
                   help="fakes in the per-block heatmap figure (LRP per block + Grad-CAM per block; 0: none; "
                        "default: %(default)s)")
    add_crop_arg(g)
    add_run_args(p, out_help="output root (default: figures/tie_vs_lrp)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    if args.detector is None:
        args.detector = "rine"
    inputs = resolve_inputs(args, single=True, default_sets="train_family",
                            per_label=(args.num_instances, args.num_instances))
    detector, gan, records = inputs.detector, inputs.set_name, inputs.records
    transform = detector.transform(crop=args.crop)
    data = collect_block_relevance(detector, records, batch_size=args.bsize, transform=transform, sign=args.sign,
                                   include_wrong=args.include_wrong, num_workers=args.workers)
    comp = compare(data, tie_importance(detector), share=args.share, n_boot=args.n_boot, seed=args.seed)
    out = (args.out or Path("figures/tie_vs_lrp")) / detector.name / gan
    record_run(comp, args, detector, files=records, weights=detector.weights_source, sign=args.sign)
    paths = comp.write(out)
    if args.max_images > 0:
        paths["per_image_grid"] = write_image_grid(detector, comp, out, args.max_images, transform)[0]
    if args.block_maps > 0:
        paths["per_block"] = write_block_maps(detector, comp, out, args.block_maps, transform)[0]
    print(f"TIE vs LRP block relevance of {detector.name} on {gan} ({args.share} shares, {args.n_boot} bootstraps)")
    print(comp.table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(comp.correlation_table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
