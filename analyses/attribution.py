#!/usr/bin/env python
"""Open-set origin attribution from frozen CLIP features (Cioni et al. 2024; docs/attribution.md):
train a probe per transformer block on real + known generators, report closed-set accuracy and how
well unknown generators are flagged.

    python analyses/attribution.py      # the embedded default (synthetic benchmark, random CLIP stand-in)
    python analyses/attribution.py --dataset_dir ./dataset/GenImage --split genimage:split1 \\
        --weights clip.vit_l14_openai --backbone ViT-L-14-quickgelu --resize 224 --blocks all --classifier logreg
    python analyses/attribution.py --dataset_dir DIR --split my_split.yaml --classifier knn --K 5

Splits: --split genimage:split1..5 (the reference's sliding windows), synthetic:split1..4, or a
YAML/JSON file with layout (genimage | families), known and unknown generator lists. Train / val /
test never share an image; hyper-parameters (C, or k) are swept per block on val, numbers are on
test (forensics.attribution.splits, .openset).

Embedded default (no --weights, no --dataset_dir): the synthetic benchmark's test families
(synthetic:split1: known tconv, tconv3, pshuffle; unknown nearest, bilinear, denoise; 400 images per
class) and forensics.defaults.default_clip_backbone('forensics-small-vit') (seeded random weights),
the 64 px images resized to its 224 px input; C swept one value per decade. See docs/attribution_results.md for what
random features do (the 56 px forensics-tiny-vit barely separates the families).

Writes under OUT (default figures/attribution/<split>/<backbone>-<site>-<classifier>, plus
-<knn_score>/-<select> when not the default): results.csv (per block, test metrics as fractions),
sweep.csv (every C/k on val), unknown_details.csv, summary.json, and metrics_vs_block, confusion,
score_histograms (.png, .pdf). Features are cached under $FORENSICS_CACHE/features (or --cache_dir),
keyed by backbone, site, preprocessing and files.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from forensics.attribution import DEFAULT_SPLIT, load_split, run_attribution
from forensics.attribution.run import EMBEDDED_BACKBONE, EMBEDDED_C_STEP, EMBEDDED_PER_CLASS, embedded_default
from forensics.attribution.classifiers import PROBES, KNNProbe
from forensics.attribution.features import NORMS, SITES, attribution_preprocessing
from forensics.attribution.openset import SELECT
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_run_args
from forensics.cli.inputs import record_run, uses_embedded_default
from forensics.cli.options import add_bsize_arg, add_option
from forensics.cli.sharding import sharded_session
from forensics.device import DEVICE_CHOICES


EXPLICIT_BACKBONE = "ViT-L-14-quickgelu"
EXPLICIT_WEIGHTS = "clip.vit_l14_openai"
REFERENCE_SAMPLES_PER_CLASS = 4000
RANDOM = "random"
REFERENCE_C_STEP = 45


def _fractions(text: str) -> tuple[float, float, float]:
    parts = [float(t) for t in text.replace(",", " ").split()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions train,val,test, got {text!r}")
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default=None,
                   help=f"open_clip model name (default: {EXPLICIT_BACKBONE} with --weights/--dataset_dir; "
                        f"embedded default: forensics.defaults.default_clip_backbone('{EMBEDDED_BACKBONE}'))")
    g.add_argument("--weights", default=None,
                   help=f"backbone weights: release tag or file (default with --dataset_dir: {EXPLICIT_WEIGHTS}), "
                        f"or '{RANDOM}': the embedded default's seeded random weights for --backbone")
    g.add_argument("--site", choices=SITES, default="block",
                   help="CLS token of: block = the block output before ln_post/proj (the reference; default), "
                        "ln_2 = RINE's per-block tokens, ln_1")
    g.add_argument("--device", default="auto", help=f"{'|'.join(DEVICE_CHOICES)}[:N] (default: %(default)s)")
    g.add_argument("--resize", type=int, default=None,
                   help="resize the short side to this before the centre crop (default: none; the reference "
                        "feeds 224x224 resizes)")
    g.add_argument("--norm", choices=list(NORMS), default="clip",
                   help="input normalisation: clip (default) or imagenet (the reference's [quirk])")
    g.add_argument("--cache_dir", type=Path, default=None, help="feature cache (default: $FORENSICS_CACHE/features)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset_dir", type=Path, default=None,
                   help="data root of the split's layout (embedded default: the benchmark's test/ folder)")
    g.add_argument("--split", default=None,
                   help=f"predefined split (genimage:split1..5, synthetic:split1..4) or a YAML/JSON file "
                        f"(default: genimage:split1 with --dataset_dir, {DEFAULT_SPLIT} embedded)")
    g.add_argument("--annotations", action="store_true",
                   help="read the split's images from the reference's annotation files under --dataset_dir "
                        "(<split>_{train,val,test}/annotations/*.txt, '<path>\\t<label>' lines) instead of the "
                        "generator folders")
    g.add_argument("--fractions", type=_fractions, default=(0.5, 0.2, 0.3), metavar="TRAIN,VAL,TEST",
                   help="image fractions per class (families layout; genimage: val,test of the val folder) "
                        "(default: 0.5,0.2,0.3)")
    add_option(g, "--num_instances", "--max_per_class", dest="max_per_class", type=int, default=None,
               metavar="NUM_INSTANCES", help=f"images per class (and part) drawn with --seed (default: {REFERENCE_SAMPLES_PER_CLASS}, "
                    f"the reference's samples_per_class; embedded default: {EMBEDDED_PER_CLASS})")
    add_bsize_arg(g, 64, help="images per feature batch (default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default: 0)")
    g = p.add_argument_group("probe")
    g.add_argument("--blocks", "-b", nargs="+", default=["all"],
                   help="0-based block indices (negative from the end) or 'all' (default); one run per block")
    g.add_argument("--classifier", choices=list(PROBES), default="logreg",
                   help="logreg (multinomial logistic regression; default) or knn (cosine)")
    g.add_argument("--select", choices=SELECT, default="auroc",
                   help="validation criterion of the sweep: auroc (the reference's criterion, ties 1/2; default), "
                        "auroc_reference (ties 0, as the reference computes it), oscr, or accuracy (closed-set, "
                        "uses no unknown images)")
    g.add_argument("--C", type=float, nargs="+", default=None, help="fixed C value(s) instead of the sweep")
    g.add_argument("--c_min", type=float, default=-6.0, help="log10 of the smallest C (default: %(default)s)")
    g.add_argument("--c_max", type=float, default=5.0, help="log10 of the largest C (default: %(default)s)")
    g.add_argument("--c_step", type=int, default=None,
                   help=f"number of C values (default: {REFERENCE_C_STEP}, the reference; embedded default: "
                        f"{EMBEDDED_C_STEP}, one per decade)")
    g.add_argument("--max_train_iters", type=int, default=1000, help="lbfgs iterations (default: %(default)s)")
    g.add_argument("--standardize", action="store_true",
                   help="z-score features with the training statistics before logreg (the reference does not)")
    g.add_argument("--K", type=int, nargs="+", default=None, help="fixed k value(s) instead of the sweep")
    g.add_argument("--k_min", type=int, default=1, help="smallest k (default: %(default)s)")
    g.add_argument("--k_max", type=int, default=20, help="largest k (default: %(default)s)")
    g.add_argument("--k_step", type=int, default=10, help="number of k values (default: %(default)s)")
    g.add_argument("--knn_score", choices=KNNProbe.scores, default="prob",
                   help="kNN open-set score: prob (max vote share, the reference) or similarity (mean cosine "
                        "similarity of the k neighbours)")
    add_run_args(p, out_help="output folder (default: figures/attribution/<split>/<backbone>-<site>-<classifier>)")
    return p


def resolve(args: argparse.Namespace):
    """``(backbone, data root, split, images per class, preprocessing or None)`` of the run."""
    from forensics.defaults import DEFAULT_CLIP_BACKBONE, default_clip_backbone
    if uses_embedded_default(args):
        backbone, root, spec, cap, pre = embedded_default(args.backbone, args.split)
        return backbone, root, spec, args.max_per_class or cap, pre
    from forensics.detectors.clip_backbone import ClipVisionBackbone
    if args.weights == RANDOM:
        backbone = default_clip_backbone(args.backbone or DEFAULT_CLIP_BACKBONE)
    else:
        backbone = ClipVisionBackbone(args.backbone or EXPLICIT_BACKBONE, weights=args.weights or EXPLICIT_WEIGHTS)
    if args.dataset_dir is None:  # a chosen backbone on the embedded default's data
        _, root, spec, cap, pre = embedded_default(split=args.split, backbone=backbone)
        return backbone, root, spec, args.max_per_class or cap, pre
    spec = load_split(args.split or "genimage:split1")
    if args.annotations:
        spec = dataclasses.replace(spec, layout="annotations")
    return backbone, args.dataset_dir, spec, args.max_per_class or REFERENCE_SAMPLES_PER_CLASS, None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with sharded_session(args) as session:  # under torchrun the feature extraction is sharded
        return attribution(args, session)


def attribution(args: argparse.Namespace, session) -> int:
    backbone, root, spec, cap, pre = resolve(args)
    if pre is None or args.resize is not None or args.norm != "clip":
        pre = attribution_preprocessing(backbone, resize=args.resize or (pre.resize if pre else None),
                                        norm=args.norm)
    if args.c_step is None:
        args.c_step = EMBEDDED_C_STEP if uses_embedded_default(args) else REFERENCE_C_STEP
    params = args.C if args.classifier == "logreg" else args.K
    report = run_attribution(
        backbone, root, spec, blocks=" ".join(args.blocks), site=args.site, classifier=args.classifier,
        params=params, select=args.select, seed=args.seed, fractions=args.fractions, max_per_class=cap,
        probe_options={"standardize": args.standardize, "max_iter": args.max_train_iters, "seed": args.seed,
                       "score": args.knn_score},
        grid_options={k: getattr(args, k) for k in ("c_min", "c_max", "c_step", "k_min", "k_max", "k_step")},
        preprocessing=pre, cache_dir=args.cache_dir, batch_size=args.bsize, device=args.device,
        num_workers=args.workers)
    record_run(report, args, session=session)  # the report's settings have the provenance already
    if not session.is_main:
        return 0
    variant = "".join(f"-{v}" for v, default in ((args.knn_score, "prob"), (args.select, "auroc"))
                      if v != default)
    out = args.out or (Path("figures/attribution") / spec.name.replace(":", "_")
                       / f"{backbone.model_name}-{args.site}-{args.classifier}{variant}")
    paths = report.write(out)
    print(f"Open-set attribution, {spec.name} (known: real, {', '.join(spec.known)}; unknown: "
          f"{', '.join(spec.unknown)}), {args.classifier} on {backbone.model_name} {args.site} CLS tokens; "
          f"test metrics in %, * = best validation {args.select}")
    print(report.format_table())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
