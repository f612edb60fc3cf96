#!/usr/bin/env python
"""The feature space of a detector: t-SNE of its penultimate features, coloured by label and by source.

    python analyses/embed.py                  # the embedded default (every family of its benchmark's test split)
    python analyses/embed.py --arch resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 \\
        --dataset_dir /mnt/data/CNN_synth_testset --gan_name progan stylegan2 biggan --max_images 2000
    python analyses/embed.py --arch rine --weights rine.2class --dataset_dir /mnt/data/synthbuster \\
        --layout synthbuster --real_dir /mnt/data/raise --block 0,11,23    # CLS tokens of three blocks

Features: by default the input of the detector's head (ResNet-50 / EfB0: the pooled vector before the fc;
UFD: the CLIP embedding; RINE: the last block's ln_2 CLS token); with --block (rine/ufd) the CLS token of each
chosen block at --site, one map per block. At most --max_images images are projected, split evenly over real /
fake (drawn with --seed; the kept and dropped counts are printed and written). Wider features are reduced by
PCA to --pca_dims first, then t-SNE (scikit-learn, seeded, --perplexity). Writes under OUT/<detector>/<features>/:
embed.csv (path, set, source, category, label, view, x, y), embed-views.csv (per view: dims, PCA, perplexity,
kNN accuracy and silhouette of real vs fake in 2-D and in feature space), embed.json (settings, sampling,
skipped files, provenance; shown by `python -m forensics report`) and embed-label.{png,pdf},
embed-source.{png,pdf}. Library: forensics.analysis.embed (docs/embed.md). Sharded under torchrun.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from forensics.analysis.embed import SITES, embed
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_crop_arg, add_data_args, add_detector_args, add_run_args
from forensics.cli.inputs import record_run, resolve_inputs
from forensics.cli.layout_args import add_layout_args
from forensics.cli.sharding import add_resume_args, sharded_session


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_detector_args(p)
    g = add_data_args(p, gan_default=None, bsize=32, per_label=False)
    add_layout_args(g)
    g = p.add_argument_group("embedding")
    g.add_argument("--max_images", type=int, default=2000,
                   help="images projected at most, split evenly over the classes, drawn with --seed (0: all; "
                        "default: %(default)s)")
    g.add_argument("--block", default=None, metavar="B[,B...]|all",
                   help="rine/ufd: the CLS token of these blocks (negative from the end), one map each "
                        "(default: the features before the head)")
    g.add_argument("--site", choices=SITES, default=None,
                   help="rine/ufd: where in a block the CLS token is taken (default with --block: ln_2, what RINE reads)")
    g.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default: %(default)s)")
    g.add_argument("--pca_dims", type=int, default=50,
                   help="PCA to this many dims first where the features are wider (0: no PCA; default: %(default)s)")
    add_crop_arg(g)
    add_run_args(p, out_help="output root (default: figures/embed)")
    add_resume_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with sharded_session(args) as session:
        return embed_main(args, session)


def embed_main(args: argparse.Namespace, session) -> int:
    torch.manual_seed(args.seed)
    out_root = args.out or Path("figures/embed")
    session.checkpoint_in(out_root / ".resume")
    inputs = resolve_inputs(args)
    detector, label, sets = inputs.detector, inputs.label, inputs.sets
    result = embed(detector, sets, max_images=args.max_images, seed=args.seed, perplexity=args.perplexity,
                   pca_dims=args.pca_dims, blocks=args.block, site=args.site, batch_size=args.bsize,
                   transform=detector.transform(crop=args.crop), num_workers=args.workers)
    if not session.is_main:
        return 0
    tag = "head" if args.block is None and args.site is None else f"blocks_{args.site or 'ln_2'}"
    out = out_root / label / tag
    records = [r for recs in sets.values() for r in recs]
    record_run(result, args, detector, files=records, session=session, detector=label,
               weights=detector.weights_source)
    names = ", ".join(sets) if len(sets) <= 4 else f"{len(sets)} sets"
    paths = result.write(out, title=f"{label}: feature space ({names})")
    print(f"t-SNE of {label}'s features ({result.settings['features']}) on {names}")
    print(result.format())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
