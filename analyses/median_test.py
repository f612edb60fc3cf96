#!/usr/bin/env python
"""Max-activation histograms, Mood's median test and the colour-conditional percentage (T-FF Fig. 6;
docs/median_test.md).

    python analyses/median_test.py               # the embedded default (synthetic benchmark + its ResNet-50)
    python analyses/median_test.py --arch resnet50 --blur_jpg 0.5 --bsize 128 \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name stylegan2 --have_classes 1 --topk 114 \\
        --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --fmap_csv figures/rank_fmaps/resnet50/progan_val_0.5/progan_val-fake.csv

For each of the top-k maps of the FF-RS CSV (FF-RS order): the spatial-max activation (--point pre_bn,
the reference, or post_bn) of the set's fakes (--num_instances per class folder, default 500 as the
reference) on RGB and on grayscale inputs (--ablation: another colour ablation), scipy's Mood's median
test with its default settings, the p-values as the reference's CSV (feature_map_name,p_value) and
the colour-conditional share of the top-k maps: % of maps with p <= --alpha (the reference's,
uncorrected) and after the Benjamini-Hochberg correction. KDE plots per map and a grid of the first.

With no --weights/--dataset_dir: the test fakes of the benchmark's training family, the recipe's own
FF-RS ranking (--recipe resnet50_cr for the colour-robust detector) and k = min(114, 1% of the maps).

Writes under OUT/<detector>_<blur_jpg or default>/: median_test/<gan>.csv and .json (percentages),
activations/<gan>-{rgb,ablated}.csv, activation_histograms/<gan>-grid.{png,pdf} and (unless
--no_per_map_plots) activation_histograms/<key>/<gan>.{png,pdf}. Library: forensics.analysis.median_test.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.median_test import ALPHA, median_test_analysis
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import (add_crop_arg, add_data_args, add_detector_args, add_run_args, add_topk_args,
                                         describe)
from forensics.cli.inputs import resolve_inputs, resolve_topk
from forensics.data.color import ABLATIONS, DEFAULT_ABLATION
from forensics.detectors import POINTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=32,
                  num_instances=(500, "fakes per class folder (default: %(default)s, the reference's fixed cap)"))
    g = p.add_argument_group("median test")
    add_topk_args(g)
    g.add_argument("--point", choices=POINTS, default="pre_bn",
                   help="where activations are measured: pre_bn (raw conv output, the reference; default) or post_bn")
    g.add_argument("--ablation", choices=list(ABLATIONS), default=DEFAULT_ABLATION,
                   help="colour ablation compared with RGB (default: grayscale, the reference)")
    g.add_argument("--alpha", type=float, default=ALPHA, help="significance level (default: %(default)s)")
    add_crop_arg(g, default="none")
    g.add_argument("--grid_maps", type=int, default=16, help="maps in the KDE grid figure (default: %(default)s)")
    g.add_argument("--no_per_map_plots", action="store_true", help="only the grid figure, no figure per map")
    add_run_args(p, out_help="output root (default: figures/median_test)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    inputs = resolve_inputs(args, default_sets="train_family", per_label=(0, args.num_instances), need=("gan_name",))
    detector, label, sets, bench = inputs.detector, inputs.label, inputs.sets, inputs.bench
    csv_path, keys, k = resolve_topk(args, detector, label, bench)
    out = (args.out or Path("figures/median_test")) / f"{label}_{args.blur_jpg or 'default'}"
    for gan, records in sets.items():
        result = median_test_analysis(detector, records, keys, point=args.point, ablation=args.ablation,
                                      crop=args.crop, batch_size=args.bsize, num_workers=args.workers)
        result.annotate(fmap_csv=str(csv_path), topk=k, args=describe(args))
        paths = result.write(out, gan=gan, alpha=args.alpha, topk=k, per_map_plots=not args.no_per_map_plots,
                             grid_maps=args.grid_maps)
        pct = result.percentages(args.alpha, k)
        print(f"{label} on {gan} ({len(result.rgb.records)} fakes, {args.point}, RGB vs {args.ablation}): "
              f"{pct['color_conditional_pct']:.1f}% of the top-{pct['topk']} maps are colour-conditional "
              f"(p <= {args.alpha:g}); {pct['color_conditional_pct_bh']:.1f}% after Benjamini-Hochberg")
        for name, path in paths.items():
            if not name.startswith("kde_"):  # one figure per map: listed by their folder below
                print(f"{name}: {path}")
    print(f"written under {out}")
    return 0


if __name__ == "__main__":
    run(main)
