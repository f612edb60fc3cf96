"""``python -m forensics predict``: per-image P(fake) for files and folders, as CSV and a table."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..device import DEVICE_CHOICES
from .options import add_bsize_arg, add_crop_arg, add_option, parse_option

log = logging.getLogger("forensics.predict")


def add_parser(sub) -> None:
    from ..detectors import list_detectors
    p = sub.add_parser("predict", help="score images with a detector",
                       description="Score image files and folders with a registered detector; writes per-image "
                                   "P(fake) to CSV and prints a table. Unreadable files are skipped and listed. "
                                   "Under torchrun the files are sharded over the processes (docs/distributed.md).")
    p.add_argument("paths", nargs="+", type=Path,
                   help="image files and/or folders (searched recursively), or with --layout data-set roots")
    p.add_argument("--detector", required=True, choices=list_detectors(), help="registered detector")
    p.add_argument("--weights", default="default",
                   help="release tag (see `python -m forensics weights list`), checkpoint path, or 'default' "
                        "for the detector's default release (default: %(default)s)")
    p.add_argument("-o", "--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="detector option, e.g. -o backbone_weights=weights/clip/ViT-L-14.safetensors (repeatable)")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV output (default: %(default)s)")
    p.add_argument("--device", default="auto", help=f"{'|'.join(DEVICE_CHOICES)}[:N] (default: %(default)s)")
    add_bsize_arg(p, 32, help="batch size (default: 32)", dest="batch_size")
    add_crop_arg(p, "override the detector's crop policy (default: the detector's own)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default: 0)")
    add_option(p, "--max_rows", "--max-rows", type=int, default=50, help="rows of the printed table (default: 50)")
    from .layout_args import add_layout_args
    add_layout_args(p.add_argument_group("data layout"), default="files", extra=("files",))
    from .sharding import add_resume_args
    add_resume_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .sharding import sharded_session
    with sharded_session(args) as session:
        return predict(args, session)


def predict(args: argparse.Namespace, session) -> int:
    from ..analysis.inference import predict_records
    from ..data import collect
    from ..detectors import create
    from ..io import atomic_path, atomic_write_json

    sets = {"files": collect(args.paths)} if args.layout == "files" else layout_sets(args)
    records = [r for recs in sets.values() for r in recs]
    session.checkpoint_in(args.out.with_name(f".{args.out.name}.resume"))
    det = create(args.detector, weights=args.weights, device=args.device, **dict(args.option))
    preds = predict_records(det, records, batch_size=args.batch_size, transform=det.transform(crop=args.crop),
                            num_workers=args.workers)
    report = session.report() if session.sharded else None
    if not session.is_main:
        return 0
    preds.summary.log(log)
    frame = preds.to_frame()
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    if report is not None:  # a sharded run also says how it was split
        from .. import provenance
        atomic_write_json(args.out.with_suffix(".json"), {
            "detector": det.name, "distributed": report, "summary": preds.summary.to_dict(),
            "provenance": provenance.collect(det, files=records)})
    print(format_table(frame, args.max_rows))
    print(f"\n{len(frame)} images scored, {len(preds.summary.skipped)} skipped; CSV: {args.out}")
    groups = labelled_breakdown(sets, preds, det.name)
    if groups is not None:
        paths = groups.write(args.out.parent, f"{args.out.stem}-groups")
        print(f"\nper generator, real source, format and size of the labelled images (%; acc = balanced accuracy "
              f"at 0.5, best = at the best threshold, gap = best - acc)\n{groups.format()}\ngroups: {paths['csv']}")
    return 0


def labelled_breakdown(sets: dict, preds, detector: str):
    """The per-group table (:func:`forensics.analysis.breakdown.breakdown`) of the scored images whose label
    is known, per set; ``None`` when no scored image has a label."""
    import numpy as np

    from ..analysis.breakdown import breakdown
    from ..analysis.inference import Predictions
    set_of = {id(r): name for name, recs in sets.items() for r in recs}
    per_set: dict[str, tuple[list, list]] = {}
    for record, logit in zip(preds.records, preds.logits):
        if record.label in (0, 1):
            recs, logits = per_set.setdefault(set_of[id(record)], ([], []))
            recs.append(record)
            logits.append(logit)
    if not per_set:
        return None
    return breakdown({name: Predictions(recs, np.asarray(logits)) for name, (recs, logits) in per_set.items()},
                     {"detector": detector, "labelled": sum(len(r) for r, _ in per_set.values()),
                      "scored": len(preds.records)})


def layout_sets(args: argparse.Namespace) -> dict[str, list]:
    """Every set of every path read in ``--layout`` (``auto``: detected, and what is read is logged); a set of
    a second path with the same name is told apart by its path."""
    from ..data import load_sets
    from .layout_args import layout_options
    options = layout_options(args)
    sets: dict[str, list] = {}
    for path in args.paths:
        for name, records in load_sets(path, None, args.layout, None, None, options).items():
            sets[name if name not in sets else f"{path}/{name}"] = records
    return sets


def format_table(frame, max_rows: int) -> str:
    shown = frame.head(max_rows)
    width = max([len("path")] + [len(p) for p in shown["path"]])
    lines = [f"{'path':<{width}}  {'label':>5}  {'p_fake':>7}"]
    names = {-1: "?", 0: "real", 1: "fake"}
    lines += [f"{r.path:<{width}}  {names[int(r.label)]:>5}  {r.p_fake:7.4f}" for r in shown.itertuples()]
    if len(frame) > max_rows:
        lines.append(f"... ({len(frame) - max_rows} more rows in the CSV)")
    return "\n".join(lines)
