#!/usr/bin/env python
"""Max-activation rankings and LRP-max patches of the top-k feature maps (T-FF, docs/patches.md, Fig. 1).

    python analyses/max_activation_patches.py     # the embedded default (synthetic benchmark + its ResNet-50)
    python analyses/max_activation_patches.py --arch resnet50 --blur_jpg 0.5 --bsize 64 \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name stylegan2 --have_classes 1 --topk 114 \\
        --num_instances 20 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --fmap_csv figures/rank_fmaps/resnet50/progan_val_0.5/progan_val-fake.csv

For each of the top-k maps of the FF-RS CSV: every fake image of the set ranked by the spatial max of
the map's activation (--point pre_bn, the reference, or post_bn; full resolution); for its top
--num_instances images, LRP from that map's spatial-max unit to the pixels, the heatmap binarised at its
--percentile (75th) and the tight box around it cropped as the patch; then one collage figure of the
first --collage_maps maps with their top --collage_n patches in rank order.

--reference_box reproduces the reference's exclusive box bounds (last row/column lost);
--collage_order lexicographic its file-name sort (ranks 10-14 shown instead of 1-5). Needs a detector
with a pixel relevance of a single unit (resnet50, efb0; not rine yet: a clear error).

With no --weights/--dataset_dir: the test fakes of the benchmark's training family, the recipe's own
FF-RS ranking (computed as rank_fmaps.py does when missing) and k = min(114, 1% of the maps).

Writes under OUT/<detector>/<gan>_<blur_jpg or default>/: activation_rankings/<key>.csv (name,max_act),
patches/<layer>.#<c>/<rank>_hm_<max_act>_<z>.jpg, patches/patches.json, collage.{png,pdf},
summary.json. Library: forensics.analysis.patches, forensics.explain.unit.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.patches import ORDERS, PERCENTILE, patch_study
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_data_args, add_detector_args, add_run_args, add_topk_args
from forensics.cli.inputs import record_run, resolve_inputs, resolve_topk
from forensics.detectors import POINTS
from forensics.explain.unit import unit_relevance_fn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=16,
                  num_instances=(20, "patches per map: its top-N images (default: %(default)s, the README's)"))
    g = p.add_argument_group("patches")
    add_topk_args(g)
    g.add_argument("--point", choices=POINTS, default="pre_bn",
                   help="where the ranking's activation is measured: pre_bn (raw conv output, the reference; "
                        "default) or post_bn")
    g.add_argument("--percentile", type=float, default=PERCENTILE,
                   help="heatmap binarisation: pixels above this percentile (default: %(default)s)")
    g.add_argument("--reference_box", action="store_true",
                   help="the reference's exclusive box bounds (drops the last row and column) [quirk]")
    g.add_argument("--collage_maps", type=int, default=27, help="maps in the collage (default: 27, the reference's)")
    g.add_argument("--collage_n", type=int, default=5, help="patches per map in the collage (default: 5)")
    g.add_argument("--collage_order", choices=ORDERS, default="numeric",
                   help="numeric rank order (default) or the reference's lexicographic file order [quirk]")
    add_run_args(p, out_help="output root (default: figures/max_activation_patches)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    inputs = resolve_inputs(args, default_sets="train_family", per_label=(0, None), need=("gan_name",))
    detector, label, sets, bench = inputs.detector, inputs.label, inputs.sets, inputs.bench
    unit_relevance_fn(detector)  # fail before ranking when the detector has no single-unit pixel relevance
    csv_path, keys, k = resolve_topk(args, detector, label, bench)
    for gan, records in sets.items():
        out = (args.out or Path("figures/max_activation_patches")) / label / f"{gan}_{args.blur_jpg or 'default'}"
        study = patch_study(detector, records, keys, point=args.point, num_instances=args.num_instances,
                            percentile=args.percentile, reference_box=args.reference_box, batch_size=args.bsize,
                            num_workers=args.workers,
                            settings={"detector": label, "weights": detector.weights_source, "gan_name": gan,
                                      "fmap_csv": str(csv_path), "topk": k})
        record_run(study, args, detector, files=records)
        paths = study.write(out, collage_maps=args.collage_maps, collage_n=args.collage_n,
                            collage_order=args.collage_order)
        print(f"{gan}: {len(records)} fakes ranked on {k} maps; "
              f"{sum(len(v) for v in study.patches.values())} patches under {out / 'patches'}")
        for name, path in paths.items():
            if not name.startswith(("ranking/", "patch/")):
                print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main, expected=(NotImplementedError,))
