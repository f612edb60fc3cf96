"""``python -m forensics report [FOLDER]``: one self-contained HTML page of every run under an output
folder (:mod:`forensics.report`; docs/report.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..report import REPORT_NAME, Options, write_report


def add_parser(subparsers) -> None:
    defaults = Options()
    p = subparsers.add_parser(
        "report", help="write one self-contained HTML page of every analysis run under a folder",
        description="Find every analysis run under FOLDER (from its summary JSON) and write one self-contained "
                    f"HTML page (images embedded, no network): per run its command, detector and weights, "
                    f"provenance, key table and figures, with an index; what could not be read is listed as "
                    f"skipped. Written atomically to FOLDER/{REPORT_NAME} unless --out is given.")
    p.add_argument("folder", nargs="?", type=Path, default=Path("figures"),
                   help="output folder to report on (default: figures)")
    p.add_argument("--out", type=Path, default=None, help=f"the page to write (default: FOLDER/{REPORT_NAME})")
    p.add_argument("--max_figures", type=int, default=defaults.max_figures,
                   help=f"figures embedded per run; the rest are linked (default: {defaults.max_figures})")
    p.add_argument("--thumb_size", type=int, default=defaults.max_side,
                   help=f"figures larger than this many pixels are embedded as thumbnails (default: {defaults.max_side})")
    p.add_argument("--max_rows", type=int, default=defaults.max_rows,
                   help=f"rows of each run's key table shown (default: {defaults.max_rows})")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.folder, args.out, Options(max_figures=args.max_figures, max_side=args.thumb_size,
                                                       max_rows=args.max_rows))
    print(path)
    return 0
