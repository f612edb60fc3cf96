#!/usr/bin/env python
"""Grad-CAM and Guided Grad-CAM overlays of a detector's logit (T-FF §12.1).

    python analyses/gradcam.py                       # the embedded default: first 8 fakes of the
                                                     # benchmark's training-family test set, 64x64
    python analyses/gradcam.py --arch resnet50 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name stylegan2 --have_classes True \\
        --num_instances 500 --max_images 32 --target fake --guided

Grad-CAM at the detector's Grad-CAM layer (ResNet-50 layer4, EfB0 _conv_head, CLIP detectors a
block's ln_1) of the logit (--target fake) or of the negated logit (--target real). --guided adds
Guided Grad-CAM (CAM x guided backprop; positive part summed over RGB, divided by its max). Guided
backprop needs a ReLU network: for EfB0 and the CLIP detectors it is the plain gradient, and the
figures are labelled "cam_grad" / "Grad-CAM x gradient" instead of "cam_gb". Overlays use T-FF's
black->#ffc300->#ffaa00 colormap blended 0.55/0.45 with the image. Writes, under
OUT/<detector>/<gan>/<target>/, per image <name>/{image,cam[,cam_gb|cam_grad]}.{png,pdf} and one
grid.{png,pdf}. Library: the registered gradcam / guided_gradcam explainers (forensics.explain).
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
from forensics.explain import create_explainer
from forensics.explain.cam import TARGETS
from forensics.plots import positive_heatmap

log = logging.getLogger("forensics.gradcam")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=8)
    g = p.add_argument_group("Grad-CAM")
    g.add_argument("--target", choices=TARGETS, default="fake",
                   help="explain the logit (fake, default) or the negated logit (real)")
    g.add_argument("--guided", action="store_true",
                   help="also Guided Grad-CAM (a plain gradient on non-ReLU detectors, labelled so)")
    add_heatmap_args(g)
    add_run_args(p, out_help="output root (default: figures/gradcam)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    hs = resolve_heatmap_set(args, "figures/gradcam", per_label=(0, args.num_instances))
    detector, gan, crop = hs.detector, hs.gan, hs.crop
    records = hs.records[:args.max_images]
    out = hs.out / args.target
    cam = create_explainer("gradcam", detector)
    guided = create_explainer("guided_gradcam", detector) if args.guided else None
    labels: list[str] = [cam.label]

    def explain(batch):
        maps = {"cam": cam.attribute(batch.images, args.target).pixel.numpy()}
        if guided is not None:
            res = guided.attribute(batch.images, args.target)
            labels[0] = res.label
            maps["cam_gb" if res.label == guided.label else "cam_grad"] = np.stack(
                [positive_heatmap(p.numpy()) for p in res.input_map])
        return maps

    hm = collect_heatmaps(detector, records, explain, crop=crop, batch_size=args.bsize, num_workers=args.workers)
    label = labels[0]
    record_run(hm, args, detector, files=records, weights=detector.weights_source)
    hm.write(out, title=f"{label} ({args.target}) of {detector.name} on {gan}")
    hm.summary.log(log)
    print(f"{label} ({args.target}) of {detector.name}: {len(hm.names)} images -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
