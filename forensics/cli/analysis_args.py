"""Arguments shared by the ``analyses/*.py`` scripts, with the reference's names (T-FF's scripts), and
how they resolve to a detector and data, including the project's embedded default.

Reference names kept: ``--arch --blur_jpg --bsize --dataset_dir --gan_name --have_classes
--num_real --num_fake --num_instances --topk``; added everywhere: ``--weights --device --seed --out``.
``--have_classes`` accepts auto/1/0/True/False (the reference's ``type=bool`` made "False" true;
not reproduced).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Mapping

from ..device import DEVICE_CHOICES
from .options import add_bsize_arg, add_crop_arg, add_option, parse_option

log = logging.getLogger(__name__)

_BOOLS = {"auto": None, "none": None, "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_have_classes(text: str) -> bool | None:
    """``auto``/``1``/``0``/``True``/``False``/``yes``/``no`` (any case) -> None/True/False."""
    key = str(text).strip().lower()
    if key not in _BOOLS:
        raise argparse.ArgumentTypeError(f"expected auto, 1/0 or True/False, got {text!r}")
    return _BOOLS[key]


def parse_method_option(text: str) -> tuple[str, str, object]:
    """``METHOD:KEY=VALUE`` (an explainer's option, ``-x``) -> (method, key, value)."""
    method, sep, rest = text.partition(":")
    if not sep or not method:
        raise argparse.ArgumentTypeError(f"expected METHOD:KEY=VALUE, got {text!r}")
    return (method, *parse_option(rest))


def chosen_methods(detector_name: str, available: list[str], requested: list[str] | None,
                   method_options: list[tuple[str, str, object]]) -> tuple[list[str], dict[str, dict]]:
    """The explainer methods a CLI runs (``requested``, default every one ``available`` on the detector;
    an unavailable one exits naming the choices) and their ``-x METHOD:KEY=VALUE`` options per method."""
    methods = requested or available
    missing = [m for m in methods if m not in available]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not defined on {detector_name}; available: "
                         f"{', '.join(available)}")
    options: dict[str, dict] = {}
    for method, key, value in method_options:
        options.setdefault(method, {})[key] = value
    return methods, options


def add_detector_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    from ..detectors import list_detectors
    g = parser.add_argument_group("detector")
    add_option(g, "--detector", "--arch", dest="detector", choices=list_detectors(),
               help="registered detector (--arch: the reference's name); default with no --weights and no "
                    "--dataset_dir: the embedded default")
    g.add_argument("--weights", help="checkpoint path or release tag (default with --dataset_dir: the detector's "
                                     "default release)")
    g.add_argument("-o", "--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="detector option, e.g. -o backbone_weights=weights/clip/ViT-L-14.safetensors (repeatable)")
    g.add_argument("--blur_jpg", default="", help="training-augmentation tag of the weights (e.g. 0.5); used in "
                                                  "output names only, as T-FF")
    g.add_argument("--device", default="auto", help=f"{'|'.join(DEVICE_CHOICES)}[:N] (default: %(default)s)")
    g.add_argument("--recipe", metavar="NAME", default=None,
                   help="embedded default only (no --weights/--dataset_dir): which default detector "
                        f"({', '.join(default_detector_names())}; *_cr are the colour-robust ones; "
                        "default: --detector, else resnet50)")
    return g


def default_detector_names() -> list[str]:
    """Names of the embedded-default detectors (``forensics.defaults.DEFAULT_RECIPES``)."""
    from ..defaults import DEFAULT_RECIPES
    return list(DEFAULT_RECIPES)


def add_data_args(parser: argparse.ArgumentParser, *, gan_default: list[str] | str | None = None,
                  bsize: int = 16, per_label: bool = False, num_instances: tuple[int | None, str] | None = None
                  ) -> argparse._ArgumentGroup:
    """``--dataset_dir --gan_name --have_classes --bsize`` and either ``--num_real/--num_fake``
    (``per_label``) or ``--num_instances`` (caps per class folder and label; default: all;
    ``num_instances=(default, help)`` gives it another default and meaning)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset_dir", type=Path, help="root holding one folder per generator / set")
    g.add_argument("--gan_name", nargs="+", metavar="SET", default=gan_default,
                   help="set(s) under --dataset_dir (default: %(default)s)")
    g.add_argument("--have_classes", type=parse_have_classes, default=None, metavar="{auto,1,0}",
                   help="sets have class sub-folders: auto (detect, default), 1/True, 0/False")
    if per_label:
        g.add_argument("--num_real", type=int, default=None, help="real images per class folder (default: all)")
        g.add_argument("--num_fake", type=int, default=None, help="fake images per class folder (default: all)")
    else:
        default, text = num_instances or (None, "at most this many images per class folder and label (default: all)")
        g.add_argument("--num_instances", type=int, default=default, help=text)
    add_bsize_arg(g, bsize)
    g.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default: 0)")
    return g


def add_run_args(parser: argparse.ArgumentParser, out_help: str) -> argparse._ArgumentGroup:
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seed of everything random (default: %(default)s)")
    g.add_argument("--out", type=Path, default=None, help=out_help)
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return g


def describe(args: argparse.Namespace) -> Mapping[str, Any]:
    """The run's arguments as JSON-friendly data (for summaries)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not callable(v)}


def add_heatmap_args(group: argparse._ArgumentGroup) -> None:
    """``--max_images`` and ``--crop`` of the per-image heatmap CLIs (gradcam, lrp_heatmaps)."""
    group.add_argument("--max_images", type=int, default=8, help="explain the first N fakes (default: %(default)s)")
    add_crop_arg(group)


def add_topk_args(group: argparse._ArgumentGroup) -> None:
    """``--fmap_csv`` and ``--topk`` of the analyses that work on the top-k maps of an FF-RS ranking."""
    group.add_argument("--fmap_csv", type=Path, default=None,
                       help="FF-RS fake CSV (key,mean_relevance) whose first --topk maps are analysed (required with "
                            "--weights; embedded default: figures/rank_fmaps/<recipe>/val_default/val-fake.csv, "
                            "computed there as `python analyses/rank_fmaps.py` does when missing)")
    group.add_argument("--topk", type=int, default=None,
                       help="number of top maps (default: 114, the reference's R50 k; embedded default: "
                            "min(114, 1%% of the maps))")
