#!/usr/bin/env python
"""Baseline vs colour-robust detector on RGB and colour-ablated test images (T-FF; the table of docs/colour.md).

    python analyses/compare_color_robust.py      # the embedded default: resnet50 vs resnet50_cr
    python analyses/compare_color_robust.py --pairs resnet50:resnet50_cr efb0:efb0_cr
    python analyses/compare_color_robust.py --arch resnet50 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --cr_weights weights/resnet50/blur_jpg_prob0.5_cr.pth --dataset_dir /mnt/data/CNN_synth_testset \\
        --gan_name progan stylegan2 stylegan biggan cyclegan stargan gaugan --bsize 256

Each detector of each pair runs the colour ablation of analyses/color_ablation.py (RGB vs grayscale,
or --ablation, full resolution, G-mean thresholds from the RGB predictions) over every test set; the
table has, per architecture, the rows "<arch> baseline RGB", "<arch> baseline color-ablated",
"CR-<arch> RGB" and "CR-<arch> color-ablated" (AP in %), one column per set plus the mean.

With no --weights/--dataset_dir: the default recipes of forensics.defaults named by --pairs
(BASELINE:ROBUST; default resnet50:resnet50_cr), trained once into the cache when missing (the EfB0 pair
takes 10+ CPU minutes per detector the first time), on every family of the synthetic benchmark's test
split. With --weights: --cr_weights is the colour-robust checkpoint of the same --arch (train it with
`analyses/train.py --color_robust`).

Writes under OUT/: color-robust.csv (the table, %), color-robust-drop.csv (RGB - ablated AP),
color-robust.md, color-robust.{png,pdf} and per architecture <arch>/{baseline,robust}/ the full colour
ablation outputs (CSVs, box plots). Library: forensics.analysis.color.compare_color_robust.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from forensics.analysis.color import MIN_P, arch_label, compare_color_robust, pair_labels
from forensics.cli import run, setup_logging
from forensics.cli.layout_args import add_layout_args, layout_options
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import resolve_detector, uses_embedded_default
from forensics.data import load_sets
from forensics.data.color import ABLATIONS, DEFAULT_ABLATION
from forensics.defaults import DEFAULT_RECIPES, default_benchmark, default_detector
from forensics.device import resolve_device

log = logging.getLogger("forensics.compare_color_robust")


def parse_pair(text: str) -> tuple[str, str]:
    base, sep, robust = text.partition(":")
    if not sep or base not in DEFAULT_RECIPES or robust not in DEFAULT_RECIPES:
        raise argparse.ArgumentTypeError(f"expected BASELINE:ROBUST with recipes from {', '.join(DEFAULT_RECIPES)}, "
                                         f"got {text!r}")
    return base, robust


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = add_detector_args(p)
    g.add_argument("--cr_weights", help="colour-robust checkpoint of the same --arch (required with --weights)")
    g.add_argument("--pairs", type=parse_pair, nargs="+", default=[("resnet50", "resnet50_cr")],
                   metavar="BASELINE:ROBUST", help="embedded default only: default-recipe pairs "
                                                   "(default: resnet50:resnet50_cr; also efb0:efb0_cr)")
    g = add_data_args(p, gan_default=None, bsize=32)
    add_layout_args(g)
    g = p.add_argument_group("colour ablation")
    g.add_argument("--ablation", choices=list(ABLATIONS), default=DEFAULT_ABLATION,
                   help="colour ablation (default: grayscale, the reference)")
    g.add_argument("--min_p", type=float, default=MIN_P, help="box plots: fakes with RGB p >= this (default: 0.2)")
    add_crop_arg(g, default="none")
    add_run_args(p, out_help="output folder (default: figures/compare_color_robust)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if uses_embedded_default(args):
        bench = default_benchmark()
        log.info("no --weights/--dataset_dir given: embedded default = the recipe pairs %s trained on the "
                 "synthetic benchmark's '%s' family (%s)", args.pairs, bench.train_family, bench.root)
        device = resolve_device(args.device)
        labels = pair_labels([(DEFAULT_RECIPES[base].detector, base) for base, _ in args.pairs])
        pairs = {label: (default_detector(base, device=device), default_detector(robust, device=device))
                 for label, (base, robust) in zip(labels, args.pairs)}
        sets = load_sets(bench.test_root, args.gan_name, "forensynths", False, args.num_instances)
    else:
        if args.cr_weights is None or args.dataset_dir is None:
            raise SystemExit("error: --weights, --cr_weights and --dataset_dir go together")
        baseline = resolve_detector(args)
        robust = resolve_detector(argparse.Namespace(**{**vars(args), "weights": args.cr_weights}))
        pairs = {arch_label(args.detector): (baseline, robust)}
        sets = load_sets(args.dataset_dir, args.gan_name, args.layout, args.have_classes, args.num_instances,
                                   layout_options(args))
    result = compare_color_robust(pairs, sets, ablation=args.ablation, min_p=args.min_p, crop=args.crop,
                                  batch_size=args.bsize, num_workers=args.workers, progress=True)
    paths = result.write(args.out or Path("figures/compare_color_robust"))
    print(f"AP (%) on RGB vs {args.ablation} test images\n{result.to_markdown()}\n")
    print(f"AP drop (RGB - {args.ablation}, AP points)\n{result.drops().to_string(float_format='{:.1f}'.format)}")
    print(f"written: {paths['csv']}, {paths['markdown']}, {paths['png']} (+ {len(paths) - 3} more)")
    return 0


if __name__ == "__main__":
    run(main)
