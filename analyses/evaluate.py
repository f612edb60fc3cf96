#!/usr/bin/env python
"""Evaluate a detector on test sets and print ``set: acc / ap`` lines and a ``Mean`` line (in %),
as CNNDetection's eval.py and RINE print them, plus a full table; CSV/JSON under --out.

    python analyses/evaluate.py                      # the project's embedded default detector and data
    python analyses/evaluate.py --arch resnet50 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --blur_jpg 0.5 --dataset_dir data/CNN_synth_testset --gan_name progan stylegan biggan --crop none
    ... --calibrate                  # + accuracies at each set's G-mean threshold (T-FF §6.3)
    ... --grayscale --calibrate      # T-FF colour ablation: RGB vs grayscale AP and the AP drop (§7.2)
    ... --perturb jpeg --level 50    # clean vs every image re-compressed at quality 50
    ... --perturb combined --protocol rine --reference_bugs   # RINE §4.5 as published, bugs included
    ... --sweep blur                 # AP over the standard sigma levels: table + PNG/PDF line plot

Without --weights and --dataset_dir the embedded default (forensics.defaults) is used. With
--dataset_dir but no --weights, the detector's default release is loaded (see
`python -m forensics weights list`). Library: forensics.analysis.evaluate.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forensics.analysis.evaluate import (CROP_MODES, LAYOUTS, compare_rgb_gray, evaluate_perturbations,  # noqa: E402
                                         evaluate_sets, load_sets)
from forensics.cli import setup_logging  # noqa: E402
from forensics.cli.predict import parse_option  # noqa: E402
from forensics.data.perturb import ALIASES, PERTURBATIONS, PROTOCOLS, Perturbation, make, sweep  # noqa: E402
from forensics.detectors import Detector, create, list_detectors  # noqa: E402
from forensics.device import DEVICE_CHOICES, resolve_device  # noqa: E402
from forensics.errors import ForensicsError  # noqa: E402

log = logging.getLogger("forensics.evaluate")

_BOOLS = {"auto": None, "none": None, "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

NO_DEFAULT_MESSAGE = (
    "the project's embedded default detector and data (forensics.defaults) are not available yet.\n"
    "Pass them explicitly, e.g.:\n"
    "  python analyses/evaluate.py --arch resnet50 --weights PATH/TO/checkpoint.pth --dataset_dir PATH/TO/testset\n"
    "(--dataset_dir: a ForenSynths-style root with <set>/[<class>/]{0_real,1_fake}; see --help)")


def parse_have_classes(text: str) -> bool | None:
    """``auto``/``1``/``0``/``True``/``False``/``yes``/``no`` (any case) -> None/True/False (the
    reference's ``type=bool`` made every non-empty string True; not reproduced)."""
    key = str(text).strip().lower()
    if key not in _BOOLS:
        raise argparse.ArgumentTypeError(f"expected auto, 1/0 or True/False, got {text!r}")
    return _BOOLS[key]


def build_parser() -> argparse.ArgumentParser:
    kinds = sorted([*PERTURBATIONS, *ALIASES])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("detector")
    g.add_argument("--detector", "--arch", dest="detector", choices=list_detectors(),
                   help="registered detector (--arch: the reference's name); required with --weights/--dataset_dir")
    g.add_argument("--weights", help="checkpoint path or release tag (default with --dataset_dir: the detector's "
                                     "default release)")
    g.add_argument("-o", "--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="detector option, e.g. -o backbone_weights=weights/clip/ViT-L-14.safetensors (repeatable)")
    g.add_argument("--blur_jpg", default="", help="training-augmentation tag of the weights (e.g. 0.5); used in "
                                                  "output file names only, as T-FF")
    g.add_argument("--device", default="auto", help=f"{'|'.join(DEVICE_CHOICES)}[:N] (default: %(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset_dir", type=Path, help="test-set root (one folder per generator)")
    g.add_argument("--layout", choices=list(LAYOUTS), default="forensynths",
                   help="folder layout of --dataset_dir (default: %(default)s)")
    g.add_argument("--gan_name", nargs="+", metavar="SET",
                   help="sets to evaluate, in this order (default: every set found under --dataset_dir)")
    g.add_argument("--have_classes", type=parse_have_classes, default=None, metavar="{auto,1,0}",
                   help="ForenSynths sets have class sub-folders: auto (detect per set, default), 1/True, 0/False")
    g.add_argument("--num_instances", type=int, default=None,
                   help="at most this many images per class folder and label (default: all)")
    g.add_argument("--bsize", "--batch_size", dest="bsize", type=int, default=32,
                   help="images per batch (ten-crop: x10 crops; default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default: 0)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--crop", choices=CROP_MODES, default=None,
                   help="center: CenterCrop (the references' default); none: full resolution (T-FF); ten: TenCrop, "
                        "logits averaged (RINE Synthbuster). Default: the detector's own policy")
    g.add_argument("--crop_size", type=int, default=None, help="crop size (default: the detector's, 224)")
    g.add_argument("--calibrate", action="store_true",
                   help="also report accuracies at each set's G-mean threshold, calibrated on the RGB, unperturbed "
                        "predictions (T-FF §6.3)")
    g.add_argument("--inclusive_threshold", action="store_true",
                   help="calibrated accuracy with p >= t (consistent with roc_curve) instead of the reference's p > t")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--grayscale", action="store_true",
                      help="also evaluate grayscale images (ITU-R 601-2 luma x3, T-FF §7): both tables + AP drop")
    mode.add_argument("--perturb", choices=kinds, metavar="KIND",
                      help=f"evaluate clean and perturbed images; KIND: {', '.join(kinds)}")
    mode.add_argument("--sweep", choices=kinds, metavar="KIND",
                      help="evaluate clean and each standard level of KIND: table + line plot")
    g.add_argument("--level", type=float, default=None,
                   help="fixed level for --perturb (blur sigma, jpeg quality, noise std, crop fraction, resize "
                        "scale); default: drawn per image from the reference's range")
    g.add_argument("--levels", type=float, nargs="+", default=None, help="levels for --sweep (default: standard)")
    g.add_argument("--protocol", choices=list(PROTOCOLS), default="always",
                   help="always: perturb every image (default); rine: perturb with p=0.5, then Resize(256,256) "
                        "before the crop (RINE §4.5)")
    g.add_argument("--reference_bugs", action="store_true",
                   help="reproduce RINE's perturbation bugs (blur sigma 4, JPEG quality ignored, crop H/W swap)")
    g.add_argument("--seed", type=int, default=0, help="seed of the per-image perturbation draws (default: 0)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None, help="output folder (default: figures/evaluate/<detector>)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_inputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Detector, dict]:
    """The detector and the sets: explicit arguments, or the embedded default when neither
    --weights nor --dataset_dir is given. ``forensics.defaults.default_detector_and_data()`` must
    return ``(detector, data)`` with ``data`` a test-set root (read with --layout) or a mapping
    set name -> records."""
    if args.weights is None and args.dataset_dir is None:
        try:
            from forensics.defaults import default_detector_and_data
        except ModuleNotFoundError as exc:
            if exc.name != "forensics.defaults":
                raise
            parser.exit(2, f"{parser.prog}: error: {NO_DEFAULT_MESSAGE}\n")
        detector, data = default_detector_and_data()
        detector.to(resolve_device(args.device))
        if isinstance(data, Mapping):
            return detector, dict(data)
    else:
        if args.dataset_dir is None:
            parser.error("--dataset_dir is required when --weights is given")
        if args.detector is None:
            parser.error("--detector/--arch is required with --weights/--dataset_dir")
        detector = create(args.detector, weights=args.weights or "default", device=args.device, **dict(args.option))
        data = args.dataset_dir
    return detector, load_sets(data, args.gan_name, args.layout, args.have_classes, args.num_instances)


def output_stem(args: argparse.Namespace, mode: str, crop: str) -> str:
    """``<mode>_<crop>[_<blur_jpg>]``, e.g. ``eval_center_0.5``, ``sweep-blur_none``."""
    return "_".join(part for part in (mode, crop, args.blur_jpg) if part)


def run_eval(detector, sets, args, options) -> tuple[str, dict]:
    result = evaluate_sets(detector, sets, calibrate=args.calibrate, **options)
    return f"{result.format()}\n\n{result.format_table()}", {"eval": result}


def run_grayscale(detector, sets, args, options) -> tuple[str, dict]:
    cmp = compare_rgb_gray(detector, sets, calibrate=args.calibrate, **options)
    text = (f"RGB\n{cmp.rgb.format()}\n\ngrayscale\n{cmp.gray.format()}\n\nAP drop (RGB - grayscale)\n{cmp.format()}"
            f"\n\n{cmp.format_table()}")
    return text, {"gray": cmp}


def perturbations_from_args(args: argparse.Namespace) -> list[Perturbation]:
    """The --perturb perturbation or the --sweep levels (ValueError for an impossible combination)."""
    if args.perturb:
        return [make(args.perturb, args.level, reference_bugs=args.reference_bugs)]
    if args.sweep:
        return sweep(args.sweep, args.levels, reference_bugs=args.reference_bugs)
    return []


def run_perturbations(detector, sets, args, options) -> tuple[str, dict]:
    study = evaluate_perturbations(detector, sets, args.perturbations, calibrate=args.calibrate,
                                   protocol=args.protocol, seed=args.seed, **options)
    first = study.runs[0][0]
    if args.sweep:
        text = f"AP (%) by {first.kind} level\n{study.format('ap')}\n\nacc (%)\n{study.format('acc')}"
        return text, {f"sweep-{first.kind}": study}
    level = "" if first.level is None else f"-{first.level:g}"
    text = (f"clean\n{study.baseline.format()}\n\n{first.label()} ({args.protocol})\n{study.runs[0][1].format()}"
            f"\n\nAP (%)\n{study.format('ap')}")
    return text, {f"perturb-{first.kind}{level}": study}


MODES = {"eval": run_eval, "grayscale": run_grayscale, "perturb": run_perturbations, "sweep": run_perturbations}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.level is not None and not args.perturb:
        parser.error("--level goes with --perturb")
    if args.levels is not None and not args.sweep:
        parser.error("--levels goes with --sweep")
    if (args.protocol != "always" or args.reference_bugs) and not (args.perturb or args.sweep):
        parser.error("--protocol and --reference_bugs go with --perturb or --sweep")
    try:
        args.perturbations = perturbations_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging(args.verbose)
    try:
        detector, sets = resolve_inputs(args, parser)
        mode = next((m for m in ("grayscale", "perturb", "sweep") if getattr(args, m)), "eval")
        options = dict(crop=args.crop, crop_size=args.crop_size, batch_size=args.bsize,
                       inclusive=args.inclusive_threshold, num_workers=args.workers, progress=True)
        text, results = MODES[mode](detector, sets, args, options)
        out_dir = args.out or Path("figures") / "evaluate" / detector.name
        crop = args.crop or detector.config.preprocessing.crop
        written = [path for name, result in results.items()
                   for path in result.write(out_dir, output_stem(args, name, crop)).values()]
    except ForensicsError as exc:
        log.error("%s", exc)
        return 2
    print(text)
    print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
