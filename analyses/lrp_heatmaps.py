#!/usr/bin/env python
"""Pixel-space LRP heatmaps of a detector's logit (T-FF §12.2, the beta=0 composite of §4).

    python analyses/lrp_heatmaps.py                  # the embedded default: first 8 fakes of the
                                                     # benchmark's training-family test set, 64x64
    python analyses/lrp_heatmaps.py --arch resnet50 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name stylegan2 --have_classes True \\
        --num_instances 500 --max_images 32

The input relevance of each fake (explained when correctly classified, p >= 0.5, as the reference;
--explain_all explains every image) is summed over RGB, its positive part divided by its max,
median-blurred (k=5, --median), coloured with T-FF's black->#ffc300->#ffaa00 map and blended
0.55/0.45 with the image. Positive relevance is evidence for fake (the target "fake" of
forensics.explain: T-FF's reference start on correctly classified fakes; --sign correct explains
each image's true class, the same for fakes). --method picks the LRP variant: lrp (T-FF's beta=0
composite, ResNet-50 and EfB0; -x composite=epsilon_plus_flat etc. for zennit's), cp_lrp or attn_lrp
(through the CLIP ViT of RINE and UFD); default: the first of these the detector supports. Writes,
under OUT/<detector>/<gan>/, per image <name>/{image,lrp}.{png,pdf} and one grid.{png,pdf}.
Library: the registered LRP explainers (forensics.explain), forensics.plots.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from forensics.analysis.heatmaps import collect_heatmaps
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_data_args, add_detector_args, add_heatmap_args, add_run_args
from forensics.cli.inputs import record_run, resolve_heatmap_set
from forensics.cli.options import parse_option
from forensics.explain import SIGNS, create_explainer, explainer_class, list_explainers
from forensics.plots import positive_heatmap

log = logging.getLogger("forensics.lrp_heatmaps")

#: the LRP family: the registered methods that conserve relevance (lrp, cp_lrp, attn_lrp)
LRP_METHODS = tuple(m for m in list_explainers() if explainer_class(m).capabilities.conservation)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=16)
    g = p.add_argument_group("LRP heatmaps")
    g.add_argument("--sign", choices=SIGNS, default="reference",
                   help="start signal: as the reference (default) or sign-correct (same for fakes)")
    g.add_argument("--explain_all", action="store_true",
                   help="explain every image, also misclassified ones (default: only p >= 0.5, as the reference)")
    g.add_argument("--median", type=int, default=5, help="median-blur kernel (default: %(default)s; 0: none)")
    g.add_argument("--method", choices=LRP_METHODS, default=None,
                   help="LRP variant (default: the first of %(choices)s defined on the detector)")
    g.add_argument("-x", "--explainer_option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="option of the LRP explainer, e.g. composite=epsilon_plus_flat (repeatable)")
    add_heatmap_args(g)
    add_run_args(p, out_help="output root (default: figures/lrp_heatmaps)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    hs = resolve_heatmap_set(args, "figures/lrp_heatmaps", per_label=(0, args.num_instances))
    detector, gan, crop = hs.detector, hs.gan, hs.crop
    available = [m for m in LRP_METHODS if m in list_explainers(detector)]
    method = args.method or (available[0] if available else None)
    if method not in available:
        raise SystemExit(f"error: {method or 'LRP'} is not defined on {detector.name}; available: {available}")
    records = hs.records[:args.max_images]
    out = hs.out
    unexplained = [0]
    with create_explainer(method, detector, **dict(args.explainer_option)) as lrp:
        def explain(batch):
            res = lrp.attribute(batch.images, "fake" if args.sign == "reference" else batch.labels)
            keep = torch.ones(len(batch), dtype=torch.bool) if args.explain_all else res.logits >= 0
            unexplained[0] += int((~keep).sum())
            return {"lrp": np.stack([positive_heatmap(p.numpy(), median=args.median) * float(k)
                                     for p, k in zip(res.input_map, keep)])}

        hm = collect_heatmaps(detector, records, explain, crop=crop, batch_size=args.bsize,
                              num_workers=args.workers)
    if unexplained[0]:
        log.warning("%d of %d fakes are misclassified (p < 0.5) and get no relevance (black heatmaps); "
                    "--explain_all explains them too", unexplained[0], len(hm.names))
    record_run(hm, args, detector, files=records, weights=detector.weights_source)
    hm.write(out, title=f"{lrp.label} (sign {args.sign}) of {detector.name} on {gan}")
    hm.summary.log(log)
    print(f"{lrp.label} heatmaps of {detector.name}: {len(hm.names)} images -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
