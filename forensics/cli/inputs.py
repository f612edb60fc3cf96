"""What an analysis command runs on, resolved once for every ``analyses/*.py`` script: the embedded default
(no ``--weights`` and no ``--dataset_dir``: a detector the project trains itself and its synthetic benchmark,
forensics.defaults) or the user's detector and data (``--detector/--weights/-o/--device`` and
``--dataset_dir/--gan_name/--layout``), as one :class:`RunInputs` (docs/adding_an_analysis.md).

:func:`resolve_inputs` is the one entry; the analyses differ only in the part of the data they read, which they
say with its keywords (which split of the benchmark, one set or many, capped per class folder or per label).
:func:`record_run` adds what every summary records about the run to an analysis result.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import provenance
from ..data import forensynths, load_sets
from .analysis_args import default_detector_names, describe
from .layout_args import layout_options

#: Which sets a run on the embedded default reads when no ``--gan_name`` is given (see :func:`resolve_inputs`).
DEFAULT_SETS = ("every", "families", "train_family")


def uses_embedded_default(args: argparse.Namespace) -> bool:
    """No ``--weights`` and no ``--dataset_dir``: the run uses the embedded default."""
    return getattr(args, "weights", None) is None and getattr(args, "dataset_dir", None) is None


def require_explicit(args: argparse.Namespace, *needed: str) -> None:
    """Stop with a usage error when a run on the user's own data lacks one of ``needed`` (option names without
    dashes): the message names the options given that make it such a run and the ones missing."""
    given = [f"--{name}" for name in ("weights", "dataset_dir") if getattr(args, name, None) is not None]
    missing = [f"--{name}" for name in needed if not getattr(args, name, None)]
    if missing:
        raise SystemExit(f"error: {' and '.join(given)} given: a run on your own detector/data also needs "
                         f"{' and '.join(missing)} (or give neither --weights nor --dataset_dir for the embedded default)")


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


@dataclass(frozen=True)
class RunInputs:
    """What an analysis runs on: the ``detector`` (on ``--device``), its output folder name ``label`` (the
    embedded-default recipe, e.g. ``resnet50_cr``, or the detector's registry name), the image records of each
    set (``sets``: name -> records, in the order read), the data ``root`` and ``have_classes`` as read, and the
    embedded default's benchmark (``bench``; ``None`` on the user's data)."""

    detector: Any
    label: str
    sets: dict[str, list]
    root: Path
    have_classes: bool | None
    bench: Any = None

    @property
    def embedded(self) -> bool:
        return self.bench is not None

    @property
    def set_name(self) -> str:
        """The first (for a single-set analysis: the only) set's name."""
        return next(iter(self.sets))

    @property
    def records(self) -> list:
        """Every set's records, in order."""
        return [r for recs in self.sets.values() for r in recs]


def resolve_inputs(args: argparse.Namespace, *, split: str = "test", single: bool = False,
                   default_sets: str = "every", per_label: tuple[int | None, int | None] | bool = False,
                   need: tuple[str, ...] = ()) -> RunInputs:
    """The detector and data of a run, from parsed ``add_detector_args``/``add_data_args`` (and, where the command
    has them, ``add_layout_args``) arguments.

    Embedded default: the benchmark's ``split`` (``"test"``: flat ``<family>/{0_real,1_fake}`` folders; ``"val"``:
    the validation split with class folders, whose one set is ``val``); with no ``--gan_name`` its sets are
    ``default_sets``: ``every`` set found, the benchmark's ``families`` in its own order, or its ``train_family``.
    User's data: ``--detector`` (``--weights``, default release when absent) and ``--dataset_dir`` are required,
    ``--gan_name`` too for a ``single``-set analysis (only the first is read); the sets are read in ``--layout``
    (ForenSynths folders when the command has no ``--layout``), every set found without ``--gan_name``. ``need``
    names further options a run on the user's data requires (e.g. ``fmap_csv``).

    Records: capped by ``--num_instances`` per class folder and label; ``per_label=True`` reads ForenSynths sets
    capped by ``--num_real``/``--num_fake`` (T-FF's per-class caps) and ``per_label=(num_real, num_fake)`` with
    these caps (``0`` skips that side).
    """
    if uses_embedded_default(args):
        detector, bench = embedded_default(args)
        label = embedded_default_name(args)
        if split == "val":
            root, have_classes, defaults = bench.root, True, ["val"]
        else:
            root, have_classes = bench.test_root, False
            defaults = {"every": None, "families": bench.families, "train_family": [bench.train_family]}[default_sets]
        layout, options = "forensynths", None
    else:
        require_explicit(args, "detector", "dataset_dir", *(("gan_name",) if single else ()), *need)
        detector = resolve_detector(args)
        label, bench, root, have_classes, defaults = detector.name, None, Path(args.dataset_dir), args.have_classes, None
        layout = getattr(args, "layout", "forensynths")
        options = layout_options(args) if hasattr(args, "mask_pattern") else None
    names = args.gan_name or defaults
    if single:
        names = [names[0]]
    if per_label:
        caps = (args.num_real, args.num_fake) if per_label is True else per_label
        sets = {name: forensynths(root, name, have_classes, *caps) for name in names}
    else:
        sets = load_sets(root, names, layout, have_classes, getattr(args, "num_instances", None), options)
    return RunInputs(detector, label, sets, root, have_classes, bench)


def record_run(result, args: argparse.Namespace, model: Any = None, /, *, files: Any = None, session: Any = None,
               **entries: Any):
    """Annotate an analysis result with what every summary records about its run, in this order: the
    arguments (``args``), ``entries`` (e.g. ``weights=``, ``detector=``), the provenance of ``model`` (the
    detector or backbone) and ``files`` (unless the analysis recorded it already) and, under torchrun, the
    ``session``'s layout; returns the result."""
    result.annotate(args=describe(args), **entries)
    if "provenance" not in result.record:
        result.annotate(provenance=provenance.collect(model, files=files))
    if session is not None and session.sharded:
        result.annotate(distributed=session.report())
    return result


@dataclass(frozen=True)
class HeatmapSet:
    """What a heatmap CLI explains (``analyses/explain.py``, ``gradcam.py``, ``lrp_heatmaps.py``): the
    detector, the set (``root``, ``gan``, ``have_classes``), its ``records``, the ``crop`` and the output
    folder ``out``."""

    detector: Any
    root: Path
    gan: str
    have_classes: bool | None
    records: list
    crop: str | None
    out: Path


def resolve_heatmap_set(args: argparse.Namespace, default_out: str,
                        per_label: tuple[int | None, int | None] | bool = True) -> HeatmapSet:
    """:func:`resolve_inputs`' single test set (``per_label``: caps per class folder, default ``--num_real``/
    ``--num_fake``); ``--crop``, else
    full images for the embedded default (its 64x64 images are explained whole), else the detector's policy;
    ``out`` = ``OUT/<detector>/<set>`` with ``OUT`` = ``--out`` or ``default_out``."""
    inputs = resolve_inputs(args, single=True, default_sets="train_family", per_label=per_label)
    crop = args.crop or ("none" if inputs.embedded else None)
    out = (args.out or Path(default_out)) / inputs.label / inputs.set_name
    return HeatmapSet(inputs.detector, inputs.root, inputs.set_name, inputs.have_classes, inputs.records, crop, out)


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
