#!/usr/bin/env python
"""Feature-map dropout sensitivity (T-FF, docs/dropout.md): zero the top-k / random-k / low-k feature maps of an FF-RS
ranking and report AP and calibrated Real/GAN accuracies per test set.

    python analyses/sensitivity.py           # the embedded default (synthetic benchmark + its ResNet-50)
    python analyses/sensitivity.py --arch resnet50 --blur_jpg 0.5 --bsize 256 --dataset_dir /mnt/data/test \\
        --gan_name progan stylegan2 biggan --topk 114 --weights weights/resnet50/blur_jpg_prob0.5.pth \\
        --fmap_csv figures/rank_fmaps/resnet50/progan_val_0.5/progan_val-fake.csv

Each batch is decoded once and run through the unmasked model and every masked variant. The threshold
is 0.5 for --fixed_threshold_sets (default: progan; the embedded default: the benchmark's training
family) and otherwise the G-mean threshold calibrated on the unmasked predictions, reused for every
variant. Random-k: --replicas seeded draws outside the top-k, their P(fake) averaged per image
(--per_replica: mean of the replicas' metrics instead).

With no --weights/--dataset_dir: every family of the synthetic benchmark's test split (flat folders),
k = min(114, 1% of the maps) unless --topk, and the FF-RS CSV written by `python analyses/rank_fmaps.py`
(figures/rank_fmaps/<detector>/val_default/val-fake.csv), computed and written there if missing.

Writes under OUT/<arch>/<blur_jpg or default>/: dropout.csv (tidy: set, variant, metric), dropout-table.csv
(the README's table, %), dropout.json, per set <gan>_<blur_jpg>/<gan>-AP-#N-samples-no-crop.csv and
<gan>-CALIBRATED_ACC-#N-samples-no-crop.csv (percent; the threshold column is NOT x100, unlike the
reference), and with --sweep_k k_vs_ap.{csv,json,png,pdf}. --layout reads --dataset_dir in any registered
layout (manifest, parquet, synthbuster, ...; auto detects it); --gan_name names its sets (default: every set).
Library: forensics.analysis.dropout. Sharded under torchrun and resumable with --resume (docs/distributed.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.dropout import RANDOM_MODES, dropout_analysis, feature_map_sets, sweep_k
from forensics.analysis.ffrs_outputs import REFERENCE_K, default_k, embedded_ranking_csv
from forensics.analysis.fmap_ranking import read_ranking_csv
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args, describe
from forensics.cli.inputs import resolve_inputs
from forensics.cli.layout_args import add_layout_args
from forensics.cli.sharding import add_resume_args, sharded_session
from forensics.detectors import POINTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    add_layout_args(add_data_args(p, gan_default=None, bsize=16, per_label=False))
    g = p.add_argument_group("dropout")
    g.add_argument("--fmap_csv", type=Path, default=None,
                   help="FF-RS fake CSV (key,mean_relevance) to take the sets from (required with --dataset_dir; "
                        "embedded default: figures/rank_fmaps/<detector>/val_default/val-fake.csv)")
    g.add_argument("--topk", type=int, default=None,
                   help=f"k maps per set (default: {REFERENCE_K}, the reference's R50 k; embedded default: "
                        f"min({REFERENCE_K}, 1%% of the maps))")
    g.add_argument("--point", choices=POINTS, default="pre_bn",
                   help="where maps are zeroed: pre_bn (raw conv output, the reference; default) or post_bn")
    g.add_argument("--replicas", type=int, default=5, help="random-k replicas (default: %(default)s)")
    g.add_argument("--random_mode", choices=RANDOM_MODES, default="without_replacement",
                   help="random-k sampler: without_replacement (default) or reference (with replacement, "
                        "de-duplicated, seeded shuffle standing in for set order)")
    g.add_argument("--per_replica", action="store_true",
                   help="random-k metrics = mean (std) of the replicas' metrics instead of the metrics of the "
                        "per-image mean P(fake) (the reference)")
    g.add_argument("--fixed_threshold_sets", nargs="+", metavar="SET", default=None,
                   help="sets scored at threshold 0.5 (default: progan; embedded default: the training family); "
                        "the others at the G-mean threshold of the unmasked model")
    g.add_argument("--sweep_k", type=int, nargs="+", metavar="K", default=None,
                   help="also compute AP of top-k/random-k/low-k masking for these k (one pass) and plot it")
    g.add_argument("--sweep_set", default=None, help="set of the k sweep (default: the first test set)")
    add_crop_arg(g, default="none")
    add_run_args(p, out_help="output root (default: figures/sensitivity)")
    add_resume_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with sharded_session(args) as run:
        return sensitivity(args, run)


def sensitivity(args: argparse.Namespace, run) -> int:
    run.checkpoint_in((args.out or Path("figures/sensitivity")) / ".resume")
    inputs = resolve_inputs(args, default_sets="families", need=("fmap_csv",))
    detector, sets, bench = inputs.detector, inputs.sets, inputs.bench
    if inputs.embedded:
        fixed = args.fixed_threshold_sets or [bench.train_family]
        csv_path = args.fmap_csv or embedded_ranking_csv(detector, bench, name=inputs.label,
                                                         seed=args.seed, batch_size=args.bsize)
        ranking = read_ranking_csv(csv_path)
        k = args.topk if args.topk is not None else default_k(len(ranking))
    else:
        fixed = args.fixed_threshold_sets or ["progan"]
        csv_path, ranking = args.fmap_csv, read_ranking_csv(args.fmap_csv)
        k = args.topk if args.topk is not None else REFERENCE_K
    detector.check_keys(key for key, _ in ranking)
    fmap_sets = feature_map_sets(ranking, k, replicas=args.replicas, seed=args.seed, random_mode=args.random_mode)
    result = dropout_analysis(detector, sets, fmap_sets, point=args.point, fixed_threshold_sets=fixed,
                              per_replica=args.per_replica, crop=args.crop, batch_size=args.bsize,
                              num_workers=args.workers)
    result.annotate(fmap_csv=str(csv_path), args=describe(args))
    tag = args.blur_jpg or "default"
    out = (args.out or Path("figures/sensitivity")) / inputs.label / tag
    sweep = None
    if args.sweep_k:
        name = args.sweep_set or next(iter(sets))
        if name not in sets:
            raise SystemExit(f"error: --sweep_set {name!r} is not one of the test sets {list(sets)}")
        sweep = sweep_k(detector, sets[name], ranking, args.sweep_k, replicas=args.replicas, seed=args.seed,
                        random_mode=args.random_mode, point=args.point, crop=args.crop, batch_size=args.bsize,
                        num_workers=args.workers)
        sweep.annotate(set=name, fmap_csv=str(csv_path), args=describe(args))
    if run.sharded:
        result.annotate(distributed=run.report())
    if not run.is_main:
        return 0
    paths = result.write(out, tag=tag, crop=args.crop)
    if sweep is not None:
        paths.update({f"sweep_{key}": p for key, p in sweep.write(
            out, title=f"{detector.name} on {name}: AP vs masked maps ({args.point})").items()})
    print(f"Feature-map dropout of {detector.name}, k = {k} ({args.point} masking, {args.replicas} random "
          f"replica(s), {'per-replica mean' if args.per_replica else 'ensemble'}); Real/GAN at the calibrated "
          f"threshold (0.5 for {', '.join(fixed)}), in %")
    print(result.format_table())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
