#!/usr/bin/env python
"""Train a detector: ``python analyses/train.py --detector {resnet50,efb0,rine,ufd} [trainer options]``.

Each detector's trainer (``forensics.train``) has its own options (a dataclass; the same run from Python:
``get_trainer(detector).run(<its options>)``); see
``python analyses/train.py --detector resnet50 --help``. The final checkpoint loads through
``forensics.detectors.create(<detector>, weights=<path>)``.
"""
from __future__ import annotations

import argparse
import sys

from forensics.cli import run, setup_logging
from forensics.cli.train_args import add_trainer_arguments
from forensics.train import get_trainer, list_trainers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--detector", choices=list_trainers())
    known, _ = pre.parse_known_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", required=True, choices=list_trainers(), help="which detector to train")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if known.detector:
        spec = get_trainer(known.detector)
        parser.description = f"{__doc__}\n{known.detector}: {spec.description}"
        add_trainer_arguments(parser, spec.options)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    spec = get_trainer(args.detector)
    path = spec.run(spec.options.from_args(args))
    print(f"final checkpoint: {path}")
    return 0


if __name__ == "__main__":
    run(main)
