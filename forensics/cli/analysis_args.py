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
from dataclasses import dataclass
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


def uses_embedded_default(args: argparse.Namespace) -> bool:
    return getattr(args, "weights", None) is None and getattr(args, "dataset_dir", None) is None


def resolve_detector(args: argparse.Namespace, **create_kwargs: Any):
    """The detector named by ``--detector/--weights/-o/--device`` (``--weights`` absent: its default release)."""
    from ..detectors import create
    require_explicit(args, "detector")
    return create(args.detector, weights=args.weights or "default", device=args.device,
                  **{**dict(args.option), **create_kwargs})


def embedded_default_name(args: argparse.Namespace) -> str:
    """The embedded-default detector a run without --weights/--dataset_dir uses: ``--recipe``, else
    ``--detector``, else ``resnet50``."""
    return getattr(args, "recipe", None) or args.detector or "resnet50"


def output_name(args: argparse.Namespace, detector: Any) -> str:
    """Folder name of a run's outputs: the embedded-default name (``resnet50_cr`` is not ``resnet50``)
    or the detector's registry name."""
    return embedded_default_name(args) if uses_embedded_default(args) else detector.name


def embedded_default(args: argparse.Namespace):
    """``(detector, benchmark)`` of the embedded default (``--recipe``, else ``--detector``, else
    resnet50), moved to ``--device`` (see forensics.defaults)."""
    from ..defaults import default_detector_and_data
    name = embedded_default_name(args)
    if name not in default_detector_names():
        raise SystemExit(f"error: no embedded-default detector {name!r}; choose from "
                         f"{', '.join(default_detector_names())} (or give --weights and --dataset_dir)")
    return default_detector_and_data(detector=name, device=args.device)


def describe(args: argparse.Namespace) -> Mapping[str, Any]:
    """The run's arguments as JSON-friendly data (for summaries)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not callable(v)}


def require_explicit(args: argparse.Namespace, *needed: str) -> None:
    """Stop with a usage error when a run on the user's own data lacks one of ``needed`` (option names without
    dashes): the message names the options given that make it such a run and the ones missing."""
    given = [f"--{name}" for name in ("weights", "dataset_dir") if getattr(args, name, None) is not None]
    missing = [f"--{name}" for name in needed if not getattr(args, name, None)]
    if missing:
        raise SystemExit(f"error: {' and '.join(given)} given: a run on your own detector/data also needs "
                         f"{' and '.join(missing)} (or give neither --weights nor --dataset_dir for the embedded default)")


def resolve_set(args: argparse.Namespace, default_set: str = "test") -> tuple[Any, Path, str, bool | None, Any]:
    """``(detector, root, set name, have_classes, bench or None)`` of a single-set analysis.

    Explicit: ``--detector/--weights`` with ``--dataset_dir`` and the first ``--gan_name``. Embedded
    default: ``default_set="test"`` gives the training family's test set (flat), ``"val"`` the
    validation split (class folders), as T-FF ranks on ProGAN val.
    """
    if uses_embedded_default(args):
        detector, bench = embedded_default(args)
        if default_set == "val":
            return detector, bench.root, (args.gan_name or ["val"])[0], True, bench
        return detector, bench.test_root, (args.gan_name or [bench.train_family])[0], False, bench
    require_explicit(args, "dataset_dir", "gan_name")
    return resolve_detector(args), args.dataset_dir, args.gan_name[0], args.have_classes, None


@dataclass(frozen=True)
class HeatmapSet:
    """What a heatmap CLI explains (``analyses/explain.py``, ``gradcam.py``, ``lrp_heatmaps.py``): the
    detector, the set (``root``, ``gan``, ``have_classes``), the ``crop`` and the output folder ``out``."""

    detector: Any
    root: Path
    gan: str
    have_classes: bool | None
    crop: str | None
    out: Path


def resolve_heatmap_set(args: argparse.Namespace, default_out: str) -> HeatmapSet:
    """:func:`resolve_set`'s test set; ``--crop``, else full images for the embedded default (its 64x64
    images are explained whole), else the detector's policy; ``out`` = ``OUT/<detector>/<set>`` with
    ``OUT`` = ``--out`` or ``default_out``."""
    detector, root, gan, have_classes, bench = resolve_set(args, "test")
    crop = args.crop or ("none" if bench is not None else None)
    out = (args.out or Path(default_out)) / output_name(args, detector) / gan
    return HeatmapSet(detector, root, gan, have_classes, crop, out)


def add_heatmap_args(group: argparse._ArgumentGroup) -> None:
    """``--max_images`` and ``--crop`` of the per-image heatmap CLIs (gradcam, lrp_heatmaps)."""
    group.add_argument("--max_images", type=int, default=8, help="explain the first N fakes (default: %(default)s)")
    add_crop_arg(group)


def resolve_test_sets(args: argparse.Namespace, layout: str = "forensynths") -> tuple[Any, str, dict, Any]:
    """``(detector, label, sets, bench or None)`` of a multi-set analysis: explicit ``--detector/
    --weights/--dataset_dir/--gan_name`` (every set under the root when no ``--gan_name``), or the
    embedded default (``--recipe``; every family of the benchmark's test split, flat folders).
    ``label`` is the recipe name for the embedded default, else the detector's name."""
    from ..data import load_sets
    num = getattr(args, "num_instances", None)
    if uses_embedded_default(args):
        detector, bench = embedded_default(args)
        label = embedded_default_name(args)
        return detector, label, load_sets(bench.test_root, args.gan_name, "forensynths", False, num), bench
    require_explicit(args, "dataset_dir")
    detector = resolve_detector(args)
    from .layout_args import layout_options
    options = layout_options(args) if hasattr(args, "mask_pattern") else None
    return detector, detector.name, load_sets(args.dataset_dir, args.gan_name, layout, args.have_classes, num,
                                              options), None


def add_topk_args(group: argparse._ArgumentGroup) -> None:
    """``--fmap_csv`` and ``--topk`` of the analyses that work on the top-k maps of an FF-RS ranking."""
    group.add_argument("--fmap_csv", type=Path, default=None,
                       help="FF-RS fake CSV (key,mean_relevance) whose first --topk maps are analysed (required with "
                            "--weights; embedded default: figures/rank_fmaps/<recipe>/val_default/val-fake.csv, "
                            "computed there as `python analyses/rank_fmaps.py` does when missing)")
    group.add_argument("--topk", type=int, default=None,
                       help="number of top maps (default: 114, the reference's R50 k; embedded default: "
                            "min(114, 1%% of the maps))")


def resolve_fake_sets(args: argparse.Namespace, cap: int | None = None) -> tuple[Any, str, dict, Any]:
    """``(detector, label, {set: fake records}, bench or None)`` for analyses of fake images only
    (docs/patches.md, docs/median_test.md): ``--gan_name`` sets under ``--dataset_dir`` (``cap`` fakes per class folder;
    ``None``: all), or with the embedded default the test fakes of the benchmark's training family
    (or ``--gan_name``)."""
    from ..data import forensynths
    if uses_embedded_default(args):
        detector, bench = embedded_default(args)
        label = embedded_default_name(args)
        names = args.gan_name or [bench.train_family]
        return detector, label, {g: forensynths(bench.test_root, g, False, 0, cap) for g in names}, bench
    require_explicit(args, "dataset_dir", "gan_name")
    detector = resolve_detector(args)
    return (detector, detector.name,
            {g: forensynths(args.dataset_dir, g, args.have_classes, 0, cap) for g in args.gan_name}, None)


def resolve_topk(args: argparse.Namespace, detector, label: str, bench) -> tuple[Path, list, int]:
    """``(csv path, top-k keys, k)`` from ``--fmap_csv/--topk`` (embedded default: the recipe's own
    FF-RS ranking, :func:`forensics.analysis.ffrs_outputs.embedded_ranking_csv`), checked against the detector."""
    from ..analysis.ffrs_outputs import REFERENCE_K, default_k, embedded_ranking_csv
    from ..analysis.fmap_ranking import read_ranking_csv, topk
    if bench is None:
        require_explicit(args, "fmap_csv")
    path = args.fmap_csv or embedded_ranking_csv(detector, bench, name=label, seed=args.seed)
    ranking = read_ranking_csv(path)
    k = args.topk if args.topk is not None else (default_k(len(ranking)) if bench is not None else REFERENCE_K)
    keys = topk(ranking, k)
    detector.check_keys(keys)
    return Path(path), keys, k
