#!/usr/bin/env python
"""Findings over seeds: rebuild the result tables of docs/findings.md on the embedded default for several benchmark
seeds and training seeds, and summarise them as mean, sd and min-max with the per-seed rows kept.

    python analyses/seed_study.py                                   # benchmark seeds 0 1 x training seeds 0 1 2
    python analyses/seed_study.py --bench_seeds 0 --train_seeds 0 1 2 --parts properties dropout

Each (benchmark seed, training seed) run builds the benchmark with that seed and trains each default detector
it needs with that training seed (seed 0 = the embedded default; all cached under $FORENSICS_CACHE), then runs
the parts: properties (AP RGB / grayscale of the default ResNet-50), robust (the colour-robust ResNet-50,
800 steps), dropout (own FF-RS ranking, top-k / random-k / low-k masked), median (Mood's median test share),
color (median P(fake) drop under grayscale), rine (default RINE AP and TIE-vs-LRP Spearman), attribution
(analyses/attribution.py's embedded default: open-set metrics per CLIP block, partition and probes drawn with
the training seed; the CLIP stand-in stays fixed like released weights). A run's rows are written as soon
as each part finishes (OUT/runs/b<B>-s<S>.csv): a killed study resumes where it stopped.

Cost per run, measured on a quiet 2-core CPU (seed_study.json keeps the seconds of every part): properties
3.7-4.2 min (2.5 of them training), robust 8-9 min (800 steps of training), dropout 3 min, median and color
under 10 s each, rine 12-18 s, attribution 95-143 s (the features extracted once per benchmark seed): about
18 min per run, 1 h 50 min for the 6 default runs; other processes on the cores make it several times slower.
Writes OUT/seeds.csv (every run's rows), summary.csv (mean, sd, min, max, n), properties.csv (properties a, b,
c per run), summary.md (the README's tables) and seed_study.json (settings, seconds per part, benchmark
images_sha256 and checkpoint hashes per run, provenance).
Library: forensics.analysis.seed_study.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from forensics.analysis.seed_study import PARTS, run_study
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import describe
from forensics.cli.options import add_bsize_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench_seeds", type=int, nargs="+", default=[0, 1], help="benchmark seeds (default: 0 1)")
    p.add_argument("--train_seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="training seeds of every default detector (default: 0 1 2)")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                   help="what each run computes (default: all)")
    add_bsize_arg(p, 32)
    p.add_argument("--replicas", type=int, default=5, help="random-k replicas of the dropout part (default: 5)")
    p.add_argument("--topk", type=int, default=None, help="k maps (default: min(114, 1%% of the maps))")
    p.add_argument("--out", type=Path, default=Path("figures/seed_study"), help="output folder (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    study = run_study(args.bench_seeds, args.train_seeds, args.parts, args.out, batch_size=args.bsize,
                      replicas=args.replicas, topk=args.topk)
    paths = study.annotate(**describe(args)).write(args.out)
    print(paths["markdown"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
