#!/usr/bin/env python
"""Which explanation can be trusted? Faithfulness, localisation and randomisation checks of every
explanation method of a detector (docs/faithfulness.md).

    python analyses/faithfulness.py                      # embedded default ResNet-50, every method it supports,
                                                         # 16 local fakes of the training family (2 of them in
                                                         # the randomisation check): < 10 min on 2 CPU cores
    python analyses/faithfulness.py --detector rine      # the default RINE (cp_lrp, attn_lrp, ...)
    python analyses/faithfulness.py --method lrp gradcam random --num_images 64 --gan_name pshuffle_local
    python analyses/faithfulness.py --detector resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 \\
        --dataset_dir /data/local_fakes --gan_name inpainting --mask_dir /data/local_fakes/inpainting/masks

Images: the first --num_images fakes (1_fake) of one set that the detector calls fake (--all_fakes: the
first fakes, whatever it calls them); the embedded default uses the local-manipulation split of the
synthetic benchmark (test/<family>_local, built once into the cache, forensics.data.local_fakes) whose
masks say exactly which pixels a generator replaced. --mask_dir holds one mask per fake with the same
file stem (PNG, >= 128 = manipulated; default: <dataset_dir>/<set>/masks). Every method explains
the class fake. Measured per method: the MoRF/LeRF perturbation curves of the fake logit for each
fill-in (blur, mean, road) and their symmetric relevance gain SRG = AUC(LeRF) - AUC(MoRF) (all
images); relevance mass accuracy, relevance rank accuracy, pointing game and AUROC against the mask
(the images the detector calls fake); cascading parameter randomisation from the head down (Spearman
and SSIM with the trained model's maps, the first --randomisation_images images); seconds per image.

Writes under OUT/<detector>/<set>/: leaderboard.csv and leaderboard.md (mean and bootstrap 95 % CI
over images, plus the chance row), per_image.csv, curves_<fill>.{png,pdf}, masks_grid.{png,pdf},
randomisation.{png,pdf,csv}, summary.json (with provenance). Library: forensics.analysis.faithfulness.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from forensics import provenance
from forensics.analysis.faithfulness import FILL_INS, PerturbationConfig
from forensics.analysis.faithfulness.run import called_fake, evaluate, load_images, write_outputs
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import (add_detector_args, add_run_args, chosen_methods, describe, embedded_default,
                                         output_name, parse_have_classes, parse_method_option, resolve_detector,
                                         uses_embedded_default)
from forensics.cli.options import add_bsize_arg, add_crop_arg
from forensics.data import forensynths
from forensics.data.local_fakes import MASK_DIR, local_set_name
from forensics.explain import list_explainers

log = logging.getLogger("forensics.faithfulness")

#: Images of the default run: 16 fakes, 2 of them in the randomisation check, keep every ResNet-50 method
#: within 10 minutes on 2 CPU cores (586 s of CPU time, 2.3 GB peak RSS, measured on a busy machine;
#: bench/README.md).
DEFAULT_IMAGES = 16
DEFAULT_RANDOMISATION_IMAGES = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--dataset_dir", type=Path, help="root holding one folder per set (with --weights)")
    d.add_argument("--gan_name", metavar="SET", default=None,
                   help="the set under --dataset_dir (embedded default: <training family>_local)")
    d.add_argument("--have_classes", type=parse_have_classes, default=None, metavar="{auto,1,0}",
                   help="the set has class sub-folders: auto (detect, default), 1/True, 0/False")
    d.add_argument("--mask_dir", type=Path, default=None,
                   help=f"one mask per fake, same file stem (default: <dataset_dir>/<set>/{MASK_DIR})")
    d.add_argument("--num_images", type=int, default=DEFAULT_IMAGES,
                   help="fakes evaluated: the first N by file name that the detector calls fake (default: "
                        "%(default)s)")
    d.add_argument("--all_fakes", action="store_true",
                   help="evaluate the first --num_images fakes whatever the detector calls them (localisation "
                        "still only on those called fake)")
    add_bsize_arg(d, 16)
    add_crop_arg(d)
    e = p.add_argument_group("methods and metrics")
    e.add_argument("--method", nargs="+", metavar="M", choices=list_explainers(), default=None,
                   help="registered methods (default: every method defined on the detector)")
    e.add_argument("-x", "--explainer_option", action="append", type=parse_method_option, default=[],
                   metavar="METHOD:KEY=VALUE", help="option of one method (repeatable)")
    e.add_argument("--patch", type=int, default=8, help="perturbation patch side in pixels (default: %(default)s)")
    e.add_argument("--steps", type=int, default=8, help="perturbation steps from intact to fully removed "
                                                        "(default: %(default)s)")
    e.add_argument("--fill_in", nargs="+", choices=FILL_INS, default=list(FILL_INS),
                   help="fill-ins of removed patches (default: all)")
    e.add_argument("--blur_sigma", type=float, default=4.0, help="sigma of the blur fill-in (default: %(default)s)")
    e.add_argument("--randomisation_images", type=int, default=DEFAULT_RANDOMISATION_IMAGES,
                   help="images of the randomisation check (0: skip it; default: %(default)s)")
    add_run_args(p, out_help="output root (default: figures/faithfulness)")
    return p


def resolve_data(args):
    """``(detector, root, set, have_classes, mask_dir)``."""
    if uses_embedded_default(args):
        from forensics.defaults import default_local_fakes
        detector, bench = embedded_default(args)
        root = default_local_fakes() / "test"
        gan = args.gan_name or local_set_name(bench.train_family)
        return detector, root, gan, False, args.mask_dir or root / gan / MASK_DIR
    if args.dataset_dir is None or not args.gan_name:
        raise SystemExit("error: --dataset_dir and --gan_name are required with --weights")
    mask_dir = args.mask_dir or args.dataset_dir / args.gan_name / MASK_DIR
    if not Path(mask_dir).is_dir():
        raise SystemExit(f"error: no mask folder {mask_dir} (give --mask_dir)")
    return resolve_detector(args), args.dataset_dir, args.gan_name, args.have_classes, mask_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    detector, root, gan, have_classes, mask_dir = resolve_data(args)
    available = list_explainers(detector)
    methods, options = chosen_methods(detector.name, available, args.method, args.explainer_option)
    crop = args.crop or ("none" if uses_embedded_default(args) else None)
    records = forensynths(root, gan, have_classes, 0, args.num_images if args.all_fakes else None)
    data = load_images(detector, records, mask_dir, crop=crop, batch_size=args.bsize)
    data.summary.log(log)
    if not args.all_fakes:
        data = called_fake(detector, data, args.num_images, args.bsize)
    cfg = PerturbationConfig(patch=args.patch, steps=args.steps, fill_ins=tuple(args.fill_in),
                             blur_sigma=args.blur_sigma, seed=args.seed)
    ev = evaluate(detector, data, methods, options=options, perturbation=cfg,
                  randomisation_images=min(args.randomisation_images, len(data.paths)), batch_size=args.bsize,
                  seed=args.seed)
    out = (args.out or Path("figures/faithfulness")) / output_name(args, detector) / gan
    summary = write_outputs(ev, out, extra={"args": describe(args), "options": options, "mask_dir": str(mask_dir),
                                            "provenance": provenance.collect(detector, files=records)})
    print((out / "leaderboard.md").read_text(), end="")
    print(f"{summary['images']} fakes ({summary['called_fake']} called fake) x {len(methods)} methods of "
          f"{detector.name} -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
