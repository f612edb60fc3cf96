"""``python -m forensics app``: the explorer, a local web page (Gradio) that runs every detector and explainer
on your own images (:mod:`forensics.app`; docs/app.md). Needs the ``app`` extra
(``pip install .[app]``). Serves on 127.0.0.1 unless ``--host`` says otherwise; no share link unless
``--share``; no analytics."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..data import LAYOUTS
from ..device import DEVICE_CHOICES
from .analysis_args import parse_have_classes

log = logging.getLogger("forensics.app")

#: Gradio's telemetry switch, set before Gradio is imported.
ANALYTICS_ENV = "GRADIO_ANALYTICS_ENABLED"


def add_parser(sub) -> None:
    from ..detectors import list_detectors
    p = sub.add_parser("app", help="serve the interactive explorer (a local web page)",
                       description="Serve the explorer: upload images (or pick them from --dataset_dir), choose "
                                   "detectors and explanation methods, press Explain; per image each detector's "
                                   "verdict, a detector x method grid of heatmaps, RINE's TIE block importances and "
                                   "a download of the maps (safetensors) and figures (PNG). Offline: no analytics, "
                                   "no external fonts or scripts.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s; 0: a free one)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--dataset_dir", type=Path, default=None,
                   help="a data-set folder whose images the page offers to pick (any layout of forensics.data)")
    p.add_argument("--layout", choices=list(LAYOUTS), default="forensynths",
                   help="layout of --dataset_dir (default: %(default)s)")
    p.add_argument("--have_classes", type=parse_have_classes, default=None, metavar="{auto,1,0}",
                   help="--dataset_dir sets have class sub-folders: auto (detect, default), 1, 0")
    p.add_argument("--num_instances", type=int, default=50,
                   help="images offered per class folder and label of --dataset_dir (default: %(default)s)")
    p.add_argument("--detector", choices=list_detectors(), default=None,
                   help="add a detector with --weights to the choices (the embedded defaults and the releases on "
                        "disk are always offered)")
    p.add_argument("--weights", default=None, help="release tag or checkpoint path of --detector")
    p.add_argument("--device", default="auto", help=f"{'|'.join(DEVICE_CHOICES)}[:N] (default: %(default)s)")
    p.add_argument("--max_file_size", default="50mb", help="largest upload Gradio accepts (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ[ANALYTICS_ENV] = "False"
    if (args.detector is None) != (args.weights is None):
        raise SystemExit("error: --detector and --weights go together")
    try:
        from ..app.ui import THEME, Explorer, build
    except ImportError as exc:
        raise SystemExit(f"error: the explorer needs Gradio ({exc}); install the extra: pip install .[app]") from None
    from ..app.sources import DetectorSource, available_sources, dataset_records
    from ..device import resolve_device
    extra = [] if args.detector is None else [DetectorSource(f"{args.detector} {args.weights}", args.detector,
                                                             weights=args.weights)]
    dataset = (dataset_records(args.dataset_dir, args.layout, args.have_classes, args.num_instances)
               if args.dataset_dir is not None else {})
    explorer = Explorer(available_sources(extra), dataset, device=str(resolve_device(args.device)))
    page = build(explorer)
    page.queue().launch(server_name=args.host, server_port=args.port or None, share=args.share,
                        max_file_size=args.max_file_size, theme=THEME, footer_links=[], quiet=False,
                        ssr_mode=False, mcp_server=False, pwa=False)
    return 0
