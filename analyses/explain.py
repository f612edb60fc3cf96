#!/usr/bin/env python
"""Heatmaps of every explanation method on the same images, side by side (forensics.explain).

    python analyses/explain.py                              # the embedded default ResNet-50, every CNN method,
                                                            # the first 4 fakes and 4 reals of its test set
    python analyses/explain.py --detector rine              # the default RINE, every ViT method
    python analyses/explain.py --detector resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name stylegan2 --num_fake 8 --num_real 0 \\
        --method lrp integrated_gradients gradcam -x integrated_gradients:n_steps=100

--method picks registered methods (default: every method defined on the detector; list them with
--list). --target says what is explained: fake (default), real, predicted or label (each image's true
class); positive values are evidence for the target (red in the figure), negative against it (blue).
-x METHOD:KEY=VALUE passes an option to one method (e.g. lrp:composite=epsilon_plus_flat,
occlusion:window=8). Writes, under OUT/<detector>/<set>/<target>/: grid.{png,pdf} (rows = images,
columns = the input then one heatmap per method), maps.safetensors (<method>.pixel [N, H, W],
<method>.input_map [N, C, H, W], logits, target), explain.csv (per image: logit, P(fake), target,
seconds per image of each method) and summary.json. Library: forensics.analysis.heatmaps,
forensics.explain.
"""
from __future__ import annotations

import argparse
import logging

import torch

from forensics.analysis.heatmaps import explain_records
from forensics import provenance
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import (add_data_args, add_detector_args, add_run_args, chosen_methods, describe,
                                         parse_method_option)
from forensics.cli.inputs import resolve_heatmap_set
from forensics.cli.options import add_crop_arg
from forensics.explain import TARGET_NAMES, list_explainers

log = logging.getLogger("forensics.explain")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    g = add_data_args(p, gan_default=None, bsize=8, per_label=True)
    g.set_defaults(num_fake=4, num_real=4)
    e = p.add_argument_group("explanations")
    e.add_argument("--method", nargs="+", metavar="M", choices=list_explainers(), default=None,
                   help="registered methods (default: every method defined on the detector)")
    e.add_argument("--target", choices=[*TARGET_NAMES, "label"], default="fake",
                   help="explained class: fake (default), real, predicted or label (the true class)")
    e.add_argument("-x", "--explainer_option", action="append", type=parse_method_option, default=[],
                   metavar="METHOD:KEY=VALUE", help="option of one method (repeatable)")
    add_crop_arg(e)
    e.add_argument("--list", action="store_true", help="print the methods defined on the detector and exit")
    add_run_args(p, out_help="output root (default: figures/explain)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    hs = resolve_heatmap_set(args, "figures/explain")
    detector, gan = hs.detector, hs.gan
    available = list_explainers(detector)
    if args.list:
        print("\n".join(available))
        return 0
    methods, options = chosen_methods(detector.name, available, args.method, args.explainer_option)
    records = hs.records
    out = hs.out / args.target
    result = explain_records(detector, records, methods, args.target, options=options, crop=hs.crop,
                             batch_size=args.bsize, num_workers=args.workers)
    result.annotate(args=describe(args), detector=detector.name, options=options,
                    provenance=provenance.collect(detector, files=records))
    result.write(out, title=f"{detector.name} on {gan}, target: {args.target}")
    result.summary.log(log)
    for m in result.methods:
        print(f"{m:22s} {result.seconds_per_image(m).mean():.4f} s/image")
    print(f"{len(result.paths)} images x {len(methods)} methods of {detector.name} -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
