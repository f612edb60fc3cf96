#!/usr/bin/env python
"""RINE's TIE block importances softmax(alpha) (docs/tie.md) of one or more heads.

    python analyses/tie_importance.py                  # the embedded default RINE (trained on the benchmark)
    python analyses/tie_importance.py --weights rine.2class          # the official 2-class head (release tag)
    python analyses/tie_importance.py --weights weights/rine/model_2class_trainable.pth \\
        --label 2-class

Heads: official files (model_*_trainable.pth), project-trained heads (same format) or any RINE detector
checkpoint with ``rine_head.alpha``; only ``alpha`` is read. Writes under OUT/: per head tie-<label>.csv
(block, mean_importance, winner_fraction), tie-<label>-matrix.csv (A, blocks x proj_dim), the heatmap and
mean-importance bars (PNG, PDF), importance.{png,pdf} (the reference's winner histogram, grouped bars for
several heads with the same block count) and tie.json (per-head stats and provenance). Library:
forensics.analysis.tie.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from forensics import provenance
from forensics.analysis.tie import summarize_heads
from forensics.cli import run, setup_logging
from forensics.cli.analysis_args import add_run_args

log = logging.getLogger("forensics.tie_importance")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("heads")
    g.add_argument("--weights", nargs="+", default=None, metavar="HEAD",
                   help="RINE head file(s) or release tag(s) (default: the embedded default RINE)")
    g.add_argument("--label", nargs="+", default=None, help="one label per head (default: the file stem)")
    add_run_args(p, out_help="output folder (default: figures/tie_importance)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from forensics import weights as weight_registry
    if args.weights is None:
        from forensics.defaults import default_checkpoint
        paths = [default_checkpoint("rine")]
        log.info("no --weights given: embedded default = the default RINE head %s", paths[0])
        labels = args.label or ["default RINE"]
    else:
        paths = [weight_registry.resolve(w) for w in args.weights]
        labels = args.label or [Path(w).stem for w in args.weights]
    if len(labels) != len(paths):
        raise SystemExit(f"error: {len(labels)} --label for {len(paths)} heads")
    report = summarize_heads(paths, labels)
    report.annotate(provenance=provenance.collect(weights=paths))
    written = report.write(args.out or Path("figures/tie_importance"))
    for s in report.heads:
        st = s.stats()
        print(f"{s.label}: {s.blocks} blocks x {st['proj_dim']} channels; mean importance "
              f"{st['mean_importance_min']:.3f}-{st['mean_importance_max']:.3f} (uniform {st['uniform']:.3f}); "
              f"channel max weight mean {st['channel_max_mean']:.2f} ({st['channel_max_min']:.2f}-"
              f"{st['channel_max_max']:.2f})")
        print("  winner fraction per block: " + " ".join(f"{b}:{v:.3f}" for b, v in
                                                         enumerate(s.winners, 1)))
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    run(main)
