#!/usr/bin/env python
"""FF-RS: rank every feature map of a detector by its forensic relevance (omega, T-FF, docs/ffrs.md).

    python analyses/rank_fmaps.py            # the embedded default (synthetic benchmark + its ResNet-50)
    python analyses/rank_fmaps.py --arch resnet50 --blur_jpg 0.5 --bsize 16 --dataset_dir /mnt/data/ \\
        --gan_name progan_val --have_classes True --num_real 50 --num_fake 50 \\
        --weights weights/resnet50/blur_jpg_prob0.5.pth

LRP (the T-FF beta=0 composite) runs from the logit of every correctly and confidently classified
image (fake p >= 0.9, real p <= 0.1) to every conv output; omega is accumulated in streaming sums, so
memory does not grow with the number of images. Writes, under OUT/<arch>/<gan>_<blur_jpg>/, the
reference's CSVs (<gan>-real.csv, <gan>-fake.csv: key,mean_relevance sorted), the omega plot (PNG,
PDF) and summary.json (images used/filtered/skipped, per-layer share of the top-k). Library:
forensics.analysis.ffrs.

Sharded over processes and machines with torchrun, resumable with --resume (docs/distributed.md):
    torchrun --nproc_per_node 2 analyses/rank_fmaps.py --device cpu ... [--resume]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from forensics.analysis.ffrs import FFRS_CROPS, compute_ffrs, ffrs_transform
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import record_run, resolve_inputs
from forensics.cli.sharding import add_resume_args, sharded_session


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_data_args(p, gan_default=None, bsize=16, per_label=True)
    g = p.add_argument_group("FF-RS")
    add_crop_arg(g, "input crop: the reference's RandomResizedCrop(scale 0.99-1) (default), center, none",
                 default="random_resized", extra=FFRS_CROPS,
                 size_help="crop size (default: the detector's, 224; the embedded default: the benchmark's 64)")
    g.add_argument("--conf_fake", type=float, default=0.9, help="keep fakes with p >= this (default: 0.9)")
    g.add_argument("--conf_real", type=float, default=0.1, help="keep reals with p <= this (default: 0.1)")
    g.add_argument("--sign", choices=["reference", "correct"], default="reference",
                   help="start signal: +-1 at the logit as the reference (default), or sign-correct")
    g.add_argument("--topk", type=int, default=114, help="k of the per-layer top-k share in summary.json "
                                                          "(default: 114, the reference's R50 k)")
    add_run_args(p, out_help="output root (default: figures/rank_fmaps)")
    add_resume_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with sharded_session(args) as run:
        return rank_fmaps(args, run)


def rank_fmaps(args: argparse.Namespace, run) -> int:
    torch.manual_seed(args.seed)  # the reference's RandomResizedCrop draws from torch's global RNG
    inputs = resolve_inputs(args, split="val", single=True, per_label=True)
    detector, gan, records, bench = inputs.detector, inputs.set_name, inputs.records, inputs.bench
    size = args.crop_size or (int(bench.manifest["image_size"]) if bench is not None else None)
    tag = f"{gan}_{args.blur_jpg or 'default'}"
    out = (args.out or Path("figures/rank_fmaps")) / inputs.label / tag
    run.checkpoint_in(out / ".resume")
    result = compute_ffrs(detector, records, batch_size=args.bsize, transform=ffrs_transform(detector, args.crop, size),
                          conf_real=args.conf_real, conf_fake=args.conf_fake, sign=args.sign,
                          num_workers=args.workers, progress=True)  # the detector is on --device already
    record_run(result, args, detector, files=records, session=run, weights=detector.weights_source)
    if not run.is_main:
        return 0
    paths = result.write(out, gan=gan, topk_k=args.topk)
    counts = result.counts
    print(f"FF-RS of {detector.name}: {counts['fake']['used']} fakes and {counts['real']['used']} reals used "
          f"({counts['fake']['filtered']} + {counts['real']['filtered']} below the confidence filter, "
          f"{len(result.summary.skipped)} unreadable)")
    fake = result.rankings.get("fake", [])
    for rank, (key, value) in enumerate(fake[:10], 1):
        print(f"{rank:>3}  {str(key):<40} {value:.6f}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
