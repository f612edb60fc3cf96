#!/usr/bin/env python
"""Which explanation can be trusted? Faithfulness, localisation and randomisation checks of every
explanation method of a detector, on ground truth proven first (docs/faithfulness.md).

    python analyses/faithfulness.py                      # embedded default ResNet-50, every method it supports,
                                                         # the first 64 valid pairs of the training family's
                                                         # local fakes (2 in the randomisation check)
    python analyses/faithfulness.py --detector rine      # the default RINE (cp_lrp, attn_lrp, ...)
    python analyses/faithfulness.py --method lrp gradcam random --num_images 32 --gan_name pshuffle_local
    python analyses/faithfulness.py --detector resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 \\
        --dataset_dir /data/local_fakes --gan_name inpainting --mask_dir /data/local_fakes/inpainting/masks
    python analyses/faithfulness.py --detector resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 \\
        --layout polygons --dataset_dir /data/X-AIGD   # any registered layout with masks (manifest, parquet,
                                                       # pairs, polygons, auto): masks taken on trust

Images: fakes (1_fake) of one set with a mask each (--mask_dir, default <dataset_dir>/<set>/masks: the same
file name or stem, PNG, >= 128 = manipulated) and, where the set has them, the untouched *base* each fake
was made from (--base_dir, default <dataset_dir>/<set>/bases, same file name). The scored images are the
first --num_images *valid pairs* by file name: the detector calls the fake fake and its base real (logit
threshold --threshold, default 0); without bases, the fakes it calls fake, and the masks are taken on trust
(said in the output). --all_fakes scores the first --num_images fakes whatever they are called (localisation
still only on the valid pairs among them). --layout L (default forensynths: the folders above) reads
--dataset_dir in any registered layout instead: the fakes with a mask, matched by the layout's reader (name or
key) and carried through the detector's geometry; reals, unlabelled images, fakes without a mask, the reader's
listed skips and unreadable files are counted (printed and summary.json["data"]); no bases, so the masks are
taken on trust (said in the output and summary.json["ground_truth"]). The embedded default uses the local-manipulation split of the
synthetic benchmark (test/<family>_local, built once into the cache, forensics.data.local_fakes).

Before any heatmap is scored, the mask-validity check (where bases exist): per valid pair the fake logit, the
base logit, the logit with the mask region restored from the base and with equal-area random regions outside
the mask restored (--validity_draws, seeded); the fraction of the fake - base gap each removes, with CIs, a
figure and a verdict line ("the masks carry the detector's evidence: yes/no"; no = a warning above the table).

Measured per method, every method explaining the class fake: MoRF/LeRF perturbation curves of the fake logit
for each fill-in (blur, mean, road) and SRG = AUC(LeRF) - AUC(MoRF); relevance mass and rank accuracy,
pointing game, AUROC, and pixel IoU / precision / recall / F1 of the map binarised at its top-k pixels, k =
the mask's area (--binarise_quantile Q: the top 1-Q fraction instead); cascading parameter randomisation
(Spearman and SSIM with the trained model's maps, the first --randomisation_images images); seconds per
image. Reference rows (not methods): `mask` (the ground truth as the map: each localisation metric's
ceiling) and `difference` (|fake - base| summed over channels: where the pixels changed); `random` is the
floor and `chance` what a map unrelated to the mask scores.

Writes under OUT/<detector>/<set>/: leaderboard.csv and leaderboard.md (selection counts, validity verdict,
mean and bootstrap 95 % CI over images), per_image.csv, validity.{csv,png,pdf}, curves_<fill>.{png,pdf},
masks_grid.{png,pdf}, randomisation.{png,pdf,csv}, summary.json (with provenance). Library:
forensics.analysis.faithfulness.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from forensics import provenance
from forensics.analysis.faithfulness import FILL_INS, PerturbationConfig
from forensics.analysis.faithfulness.layout_data import TRUST, load_layout_fakes
from forensics.analysis.faithfulness.run import evaluate, load_images, select_pairs
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import (add_detector_args, add_run_args, chosen_methods, describe, parse_have_classes,
                                         parse_method_option)
from forensics.cli.inputs import embedded_default, output_name, resolve_detector, uses_embedded_default
from forensics.cli.layout_args import add_layout_args, layout_options
from forensics.cli.options import add_bsize_arg, add_crop_arg
from forensics.data import AUTO, detect_layout, forensynths, load_sets
from forensics.data.local_fakes import BASE_DIR, MASK_DIR, local_set_name
from forensics.explain import list_explainers

log = logging.getLogger("forensics.faithfulness")

#: Images of the default run: 64 valid pairs, 2 of them in the randomisation check, keep every ResNet-50
#: method within 10 minutes on 2 CPU cores (bench/README.md).
DEFAULT_IMAGES = 64
DEFAULT_RANDOMISATION_IMAGES = 2
#: Images of the perturbation curves (fill-ins x orders x steps forward passes each, for every method and
#: reference map): on 64 images they alone took 36 s per method of the default run (quiet 2-core CPU), which
#: put the whole run over 10 minutes; localisation and the validity check still use all 64 pairs.
DEFAULT_PERTURBATION_IMAGES = 32


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--dataset_dir", type=Path, help="root holding one folder per set (with --weights)")
    d.add_argument("--gan_name", metavar="SET", default=None,
                   help="the set under --dataset_dir (embedded default: <training family>_local)")
    d.add_argument("--have_classes", type=parse_have_classes, default=None, metavar="{auto,1,0}",
                   help="the set has class sub-folders: auto (detect, default), 1/True, 0/False")
    add_layout_args(d)
    _set_help(p, "--layout", "layout of --dataset_dir (default: %(default)s, with --mask_dir/--base_dir; any other "
                             "layout: its fakes with a mask as its reader matches them, masks taken on trust; auto: "
                             "detect it)")
    _set_help(p, "--mask_dir", f"forensynths: one mask per fake, same file stem (default: <dataset_dir>/<set>/{MASK_DIR}); "
                               "pairs: the mask folder (default: mask/, masks/, gt/...)")
    d.add_argument("--base_dir", type=Path, default=None,
                   help=f"the untouched base of each fake, same file name (default: <dataset_dir>/<set>/{BASE_DIR} "
                        "where it exists; without bases the masks are taken on trust)")
    d.add_argument("--num_images", type=int, default=DEFAULT_IMAGES,
                   help="images scored: the first N valid pairs by file name (fake called fake, base called real; "
                        "default: %(default)s)")
    d.add_argument("--threshold", type=float, default=0.0,
                   help="logit threshold of 'called fake' for the pair selection (default: %(default)s)")
    d.add_argument("--all_fakes", action="store_true",
                   help="score the first --num_images fakes whatever the detector calls them (localisation "
                        "still only on the valid pairs among them)")
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
    e.add_argument("--binarise_quantile", type=float, default=None, metavar="Q",
                   help="binarise maps at their top 1-Q fraction for IoU/precision/recall/F1 (default: top-k "
                        "pixels, k = the mask's area)")
    e.add_argument("--perturbation_images", type=int, default=DEFAULT_PERTURBATION_IMAGES, metavar="N",
                   help="perturbation curves (SRG, the costliest metric) on the first N scored images only (0: all; "
                        "default: %(default)s)")
    e.add_argument("--validity_draws", type=int, default=8,
                   help="random regions per pair in the mask-validity check (default: %(default)s)")
    e.add_argument("--randomisation_images", type=int, default=DEFAULT_RANDOMISATION_IMAGES,
                   help="images of the randomisation check (0: skip it; default: %(default)s)")
    add_run_args(p, out_help="output root (default: figures/faithfulness)")
    return p


def _set_help(parser: argparse.ArgumentParser, option: str, text: str) -> None:
    """The help of ``option`` declared by a shared helper, in this analysis's words."""
    for action in parser._actions:
        if option in action.option_strings:
            action.help = text


def chosen_layout(args) -> str:
    """The layout to read: ``forensynths`` (the folders with --mask_dir/--base_dir) or another registered one;
    ``auto`` is detected here."""
    if args.layout == "forensynths" or (uses_embedded_default(args) and args.layout == AUTO):
        return "forensynths"
    if args.dataset_dir is None:
        raise SystemExit(f"error: --layout {args.layout} reads --dataset_dir, which is missing")
    return detect_layout(args.dataset_dir, layout_options(args)) if args.layout == AUTO else args.layout


def read_layout(args, detector, layout: str, crop: str | None):
    """``(images, selection, counts, records read, set name)`` of the one set of --dataset_dir in ``layout``
    (--gan_name picks one where the layout finds several)."""
    if args.base_dir is not None:
        raise SystemExit(f"error: --base_dir goes with --layout forensynths (given: --layout {layout})")
    sets = load_sets(args.dataset_dir, [args.gan_name] if args.gan_name else None, layout, args.have_classes, None,
                     layout_options(args))
    if len(sets) > 1:
        raise SystemExit(f"error: {args.dataset_dir} holds {len(sets)} sets in the {layout} layout "
                         f"({', '.join(sets)}); pick one with --gan_name")
    (name, records), = sets.items()
    data, selection, counts, read = load_layout_fakes(
        detector, records, layout, name, crop=crop, batch_size=args.bsize, mask_resize=args.mask_resize,
        limit=args.num_images, threshold=args.threshold, all_fakes=args.all_fakes)
    return data, selection, counts, read, name


def resolve_data(args):
    """``(detector, root, set, have_classes, mask_dir, base_dir)``; ``base_dir`` is None where the set has
    no bases."""
    if uses_embedded_default(args):
        from forensics.defaults import default_local_fakes
        detector, bench = embedded_default(args)
        root = default_local_fakes() / "test"
        gan = args.gan_name or local_set_name(bench.train_family)
        return detector, root, gan, False, args.mask_dir or root / gan / MASK_DIR, args.base_dir or root / gan / BASE_DIR
    missing = [o for o, v in (("--dataset_dir", args.dataset_dir), ("--gan_name", args.gan_name)) if not v]
    if missing:
        raise SystemExit(f"error: {' and '.join(missing)} required to read your own data set (given: --weights "
                         f"{args.weights}{'' if args.dataset_dir is None else f', --dataset_dir {args.dataset_dir}'})")
    mask_dir = args.mask_dir or args.dataset_dir / args.gan_name / MASK_DIR
    if not Path(mask_dir).is_dir():
        raise SystemExit(f"error: no mask folder {mask_dir} (give --mask_dir)")
    base_dir = args.base_dir or args.dataset_dir / args.gan_name / BASE_DIR
    if args.base_dir is not None and not Path(base_dir).is_dir():
        raise SystemExit(f"error: no base folder {base_dir}")
    return (resolve_detector(args), args.dataset_dir, args.gan_name, args.have_classes, mask_dir,
            base_dir if Path(base_dir).is_dir() else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.manual_seed(args.seed)
    layout = chosen_layout(args)
    if layout == "forensynths":
        detector, root, gan, have_classes, mask_dir, base_dir = resolve_data(args)
    else:
        detector = resolve_detector(args)
    available = list_explainers(detector)
    methods, options = chosen_methods(detector.name, available, args.method, args.explainer_option)
    crop = args.crop or ("none" if uses_embedded_default(args) else None)
    lines: list[str] = []
    if layout == "forensynths":
        records = forensynths(root, gan, have_classes, 0, None)
        data = load_images(detector, records, mask_dir, crop=crop, batch_size=args.bsize, base_dir=base_dir)
        data.summary.log(log)
        data, selection = select_pairs(detector, data, args.num_images, args.threshold, args.bsize, args.all_fakes)
        extra = {"mask_dir": str(mask_dir), "base_dir": None if base_dir is None else str(base_dir),
                 "provenance": provenance.collect(detector, files=records)}
    else:
        data, selection, counts, read, gan = read_layout(args, detector, layout, crop)
        data.summary.log(log)
        lines = counts.lines()
        extra = {"data": counts.to_dict(), "ground_truth": TRUST, "provenance": provenance.collect(detector, files=read)}
    cfg = PerturbationConfig(patch=args.patch, steps=args.steps, fill_ins=tuple(args.fill_in),
                             blur_sigma=args.blur_sigma, seed=args.seed)
    ev = evaluate(detector, data, methods, options=options, perturbation=cfg,
                  randomisation_images=min(args.randomisation_images, len(data.paths)), batch_size=args.bsize,
                  seed=args.seed, threshold=args.threshold, quantile=args.binarise_quantile, selection=selection,
                  validity_draws=args.validity_draws, perturbation_images=args.perturbation_images or None)
    out = (args.out or Path("figures/faithfulness")) / output_name(args, detector) / gan
    ev.annotate(args=describe(args), options=options, **extra).write(out)
    print("".join(f"{line}\n" for line in lines), end="")
    print((out / "leaderboard.md").read_text(), end="")
    valid = int(ev.valid.sum())
    scored = f"{valid} valid pairs" if layout == "forensynths" else f"{valid} called fake; masks taken on trust"
    print(f"{len(ev.data.paths)} fakes scored ({scored}) x {len(methods)} methods of {detector.name} -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
