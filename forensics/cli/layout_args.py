"""``--layout`` and the options of the layouts that need more than a root folder, declared once for
every command that reads a data set, and their :class:`~forensics.data.LayoutOptions`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.layout_options import LayoutOptions, parse_label_map


def _label_map(text: str) -> dict[str, int]:
    try:
        return parse_label_map(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_layout_args(group: argparse._ActionsContainer, default: str = "forensynths", extra: tuple[str, ...] = ()
                    ) -> None:
    """``--layout`` (every registered layout, ``auto``, and ``extra`` choices) and the layout options."""
    from ..data import AUTO, LAYOUTS
    choices = [*extra, AUTO, *LAYOUTS]
    group.add_argument("--layout", choices=choices, default=default,
                       help="layout of --dataset_dir (auto: detect it and say what will be read; default: "
                            "%(default)s)")
    group.add_argument("--real_dir", type=Path, default=None,
                       help="folder of the reals (synthbuster: the RAISE images, required; pairs: default real/)")
    group.add_argument("--image_dir", type=Path, default=None, help="pairs/polygons: image folder (default: looked up)")
    group.add_argument("--mask_dir", type=Path, default=None, help="pairs: mask folder (default: mask/, masks/, gt/...)")
    group.add_argument("--mask_pattern", default="{stem}.png",
                       help="pairs: a mask's file name from its image's {stem}/{name}/{suffix}, e.g. '{stem}_mask.png' "
                            "(default: %(default)s)")
    group.add_argument("--annotations", type=Path, default=None, help="polygons: the JSON file (default: the only *.json)")
    group.add_argument("--label_map", type=_label_map, default=None, metavar="V=real|fake,...",
                       help="manifest/parquet: label values to real/fake, e.g. '0=real,1=fake,2=fake' (SID-Set)")
    group.add_argument("--image_column", default=None, help="parquet: image column (default: image)")
    group.add_argument("--label_column", default="label", help="parquet: label column (default: %(default)s)")
    group.add_argument("--mask_column", default=None, help="parquet: mask column (default: mask when present)")
    group.add_argument("--mask_resize", action="store_true",
                       help="resize a mask whose size differs from its image's (nearest) instead of skipping the image")


def layout_options(args: argparse.Namespace) -> LayoutOptions:
    """The :class:`LayoutOptions` of parsed :func:`add_layout_args` arguments (``ValueError`` for a bad pattern)."""
    return LayoutOptions(real_dir=args.real_dir, image_dir=args.image_dir, mask_dir=args.mask_dir,
                         mask_pattern=args.mask_pattern, annotations=args.annotations, label_map=args.label_map,
                         image_column=args.image_column, label_column=args.label_column, mask_column=args.mask_column)
