#!/usr/bin/env python
"""Evaluate a detector on test sets and print ``set: acc / ap`` lines and a ``Mean`` line (in %),
as CNNDetection's eval.py and RINE print them, plus a full table; CSV/JSON under --out.

    python analyses/evaluate.py                      # the project's embedded default detector and data
    python analyses/evaluate.py --arch resnet50 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --blur_jpg 0.5 --dataset_dir data/CNN_synth_testset --gan_name progan stylegan biggan --crop none
    ... --calibrate                  # + accuracies at each set's G-mean threshold (T-FF; docs/evaluation.md)
    ... --grayscale --calibrate      # T-FF colour ablation: RGB vs grayscale AP and the AP drop (docs/colour.md)
    ... --perturb jpeg --level 50    # clean vs every image re-compressed at quality 50
    ... --perturb combined --protocol rine --reference_bugs   # RINE's protocol as published, bugs included
    ... --sweep blur                 # AP over the standard sigma levels: table + PNG/PDF line plot
    ... --format_audit               # a JPEG-vs-PNG classifier? stored vs all-PNG vs all-JPEG-95 (docs/your_data.md)
    ... --layout auto --dataset_dir data/WildRF   # any layout of forensics.data (auto: detected and described)

A plain evaluation also writes eval-groups_<crop>.csv/.json: AP, accuracy at 0.5 and at the best threshold
(the calibration gap) per generator, per real source, per file format and per image-size bucket
(forensics.analysis.breakdown).

Without --weights and --dataset_dir the embedded default (forensics.defaults) is used. With
--dataset_dir but no --weights, the detector's default release is loaded (see
`python -m forensics weights list`). Library: forensics.analysis.evaluate. Sharded under torchrun
(predictions gathered in input order, metrics computed once) and resumable with --resume: docs/distributed.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.breakdown import breakdown
from forensics.analysis.color_comparison import compare_rgb_gray
from forensics.analysis.format_audit import format_audit
from forensics.analysis.evaluate import CROP_MODES, evaluate_sets
from forensics.analysis.perturbation_study import evaluate_perturbations
from forensics.cli import run, setup_logging
from forensics.cli.layout_args import add_layout_args
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import resolve_inputs
from forensics.cli.sharding import add_resume_args, sharded_session
from forensics.data.perturb import ALIASES, PERTURBATIONS, PROTOCOLS, Perturbation, make, sweep


def build_parser() -> argparse.ArgumentParser:
    kinds = sorted([*PERTURBATIONS, *ALIASES])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    g = add_data_args(p, gan_default=None, bsize=32)
    add_layout_args(g)
    g = p.add_argument_group("evaluation")
    add_crop_arg(g, "center: CenterCrop (the references' default); none: full resolution (T-FF); ten: TenCrop, "
                    "logits averaged (RINE Synthbuster). Default: the detector's own policy",
                 extra=CROP_MODES, size_help="crop size (default: the detector's, 224)")
    g.add_argument("--calibrate", action="store_true",
                   help="also report accuracies at each set's G-mean threshold, calibrated on the RGB, unperturbed "
                        "predictions (T-FF; docs/evaluation.md)")
    g.add_argument("--inclusive_threshold", action="store_true",
                   help="calibrated accuracy with p >= t (consistent with roc_curve) instead of the reference's p > t")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--grayscale", action="store_true",
                      help="also evaluate grayscale images (ITU-R 601-2 luma x3, T-FF; docs/colour.md): both tables + "
                           "AP drop")
    mode.add_argument("--perturb", choices=kinds, metavar="KIND",
                      help=f"evaluate clean and perturbed images; KIND: {', '.join(kinds)}")
    mode.add_argument("--sweep", choices=kinds, metavar="KIND",
                      help="evaluate clean and each standard level of KIND: table + line plot")
    mode.add_argument("--format_audit", action="store_true",
                      help="format-shortcut audit: score as stored, then every image re-encoded to PNG, then to JPEG "
                           "95 (in memory); per set the AP/accuracy change with bootstrap CIs and a flag "
                           "(forensics.analysis.format_audit)")
    g.add_argument("--level", type=float, default=None,
                   help="fixed level for --perturb (blur sigma, jpeg quality, noise std, crop fraction, resize "
                        "scale); default: drawn per image from the reference's range")
    g.add_argument("--levels", type=float, nargs="+", default=None, help="levels for --sweep (default: standard)")
    g.add_argument("--protocol", choices=list(PROTOCOLS), default="always",
                   help="always: perturb every image (default); rine: perturb with p=0.5, then Resize(256,256) "
                        "before the crop (RINE; docs/evaluation.md)")
    g.add_argument("--reference_bugs", action="store_true",
                   help="reproduce RINE's perturbation bugs (blur sigma 4, JPEG quality ignored, crop H/W swap)")
    add_run_args(p, out_help="output folder (default: figures/evaluate/<detector>)")
    add_resume_args(p)
    return p


def output_stem(args: argparse.Namespace, mode: str, crop: str) -> str:
    """``<mode>_<crop>[_<blur_jpg>]``, e.g. ``eval_center_0.5``, ``sweep-blur_none``."""
    return "_".join(part for part in (mode, crop, args.blur_jpg) if part)


def run_eval(detector, sets, args, options) -> tuple[str, dict]:
    result = evaluate_sets(detector, sets, calibrate=args.calibrate, **options)
    groups = breakdown(result.predictions, {"detector": detector.name})
    text = (f"{result.format()}\n\n{result.format_table()}\n\nper generator, real source, format and size "
            f"(%; acc = balanced accuracy at 0.5, best = at the best threshold, gap = best - acc)\n{groups.format()}")
    return text, {"eval": result, "eval-groups": groups}


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


def run_format_audit(detector, sets, args, options) -> tuple[str, dict]:
    options = {k: v for k, v in options.items() if k != "inclusive"}
    audit = format_audit(detector, sets, seed=args.seed, **options)
    return f"format-shortcut audit (AP and accuracy in %)\n{audit.format()}", {"format-audit": audit}


MODES = {"format_audit": run_format_audit, "eval": run_eval, "grayscale": run_grayscale, "perturb": run_perturbations, "sweep": run_perturbations}


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
    with sharded_session(args) as run:
        return evaluate(args, run)


def evaluate(args: argparse.Namespace, run) -> int:
    inputs = resolve_inputs(args)
    detector, sets = inputs.detector, inputs.sets
    mode = next((m for m in ("grayscale", "perturb", "sweep", "format_audit") if getattr(args, m)), "eval")
    out_dir = args.out or Path("figures") / "evaluate" / inputs.label
    run.checkpoint_in(out_dir / ".resume")
    options = dict(crop=args.crop, crop_size=args.crop_size, batch_size=args.bsize,
                   inclusive=args.inclusive_threshold, num_workers=args.workers, progress=True)
    text, results = MODES[mode](detector, sets, args, options)
    if run.sharded:
        report = run.report()
        for result in results.values():
            for run_result in result.eval_results():
                run_result.settings["distributed"] = report
    if not run.is_main:
        return 0
    crop = args.crop or detector.config.preprocessing.crop
    written = [path for name, result in results.items()
               for path in result.write(out_dir, output_stem(args, name, crop)).values()]
    print(text)
    print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    run(main)
