"""The registry of data-set layouts (:data:`LAYOUTS`, one entry per layout), :func:`load_sets` (the
sets of a root in a named layout, or ``"auto"``) and :func:`detect_layout` / :func:`describe_sets`,
which say what ``--layout auto`` found and what it will read.

Layouts: ``forensynths`` (CNNDetection/ForenSynths), ``ufd_diffusion`` (UniversalFakeDetect's
diffusion sets), ``genimage``, ``wildrf``, ``synthbuster``, ``manifest`` (CSV), ``parquet`` (Hugging
Face shards), ``pairs`` (image + mask folders) and ``polygons`` (image folder + polygon JSON);
see each reader's module for its conventions.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import DatasetLayoutError
from .layout_options import LayoutOptions
from .layouts import UFD_DIFFUSION_REAL_FOLDERS, forensynths, genimage, list_sources, ufd_diffusion
from .images import is_image_file
from .listing import has_label_dirs, subdirs
from .readers import folders, manifest, pairs, parquet, polygons
from .records import ImageRecord, ParquetCell

log = logging.getLogger(__name__)

AUTO = "auto"

Names = Callable[[Path, LayoutOptions], list[str]]
Load = Callable[[Path, str, bool | None, int | None, LayoutOptions], list[ImageRecord]]


@dataclass(frozen=True)
class Layout:
    """A data-set layout: ``names(root, options)`` lists its sets, ``load(root, name, have_classes,
    cap, options)`` reads one (``cap`` = files per class folder and label; ``None`` = all);
    ``detect(root, options)`` says whether a root looks like it (``--layout auto``), ``refines`` names
    the layouts it is a special case of (a match of this one wins over theirs)."""

    names: Names
    load: Load
    detect: Callable[[Path, LayoutOptions], bool]
    refines: tuple[str, ...] = ()


def _dirs(root: Path) -> list[Path]:
    return subdirs(root) if root.is_dir() else []


def _ufd_names(root: Path, options: LayoutOptions) -> list[str]:
    found = [g for g in UFD_DIFFUSION_REAL_FOLDERS if (root / g / "1_fake").is_dir()]
    if not found:
        raise DatasetLayoutError(f"{root}: none of the UFD diffusion sets ({', '.join(UFD_DIFFUSION_REAL_FOLDERS)}) "
                                 "has a 1_fake folder here")
    return found


def _subfolders(root: Path, options: LayoutOptions) -> list[str]:
    names = [d.name for d in subdirs(Path(root))]
    if not names:
        raise DatasetLayoutError(f"{root}: no sub-folders (expected one per generator)")
    return names


def _is_forensynths(root: Path, options: LayoutOptions) -> bool:
    return any(has_label_dirs(d) or any(has_label_dirs(c) for c in _dirs(d)) for d in _dirs(root))


def _is_genimage(root: Path, options: LayoutOptions) -> bool:
    return any((s / "ai").is_dir() or (s / "nature").is_dir()
               for d in _dirs(root) for s in [*_dirs(d), *(x for c in _dirs(d) for x in _dirs(c))])


def _is_synthbuster(root: Path, options: LayoutOptions) -> bool:
    return options.real_dir is not None and root.is_dir() and not _is_forensynths(root, options) and any(
        f.is_file() for d in _dirs(root) for f in d.iterdir())


def _is_manifest(root: Path, options: LayoutOptions) -> bool:
    files = [root] if root.is_file() else sorted(root.glob("*.csv")) if root.is_dir() else []
    if len(files) != 1 or files[0].suffix.lower() != ".csv":
        return False
    with open(files[0], encoding="utf-8-sig") as fh:
        header = [c.strip() for c in fh.readline().split(",")]
    return all(c in header for c in manifest.REQUIRED_COLUMNS)


def _is_parquet(root: Path, options: LayoutOptions) -> bool:
    return root.suffix == ".parquet" if root.is_file() else root.is_dir() and any(
        True for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for _ in root.glob(pattern))


def _is_pairs(root: Path, options: LayoutOptions) -> bool:
    names = {d.name for d in _dirs(root)}
    return bool(names & set(pairs.MASK_DIRS) or options.mask_dir) and bool(names & set(pairs.IMAGE_DIRS)
                                                                          or options.image_dir)


def _is_polygons(root: Path, options: LayoutOptions) -> bool:
    """A polygon JSON beside an image folder (``images/`` or ``--image_dir``) or image files."""
    if not root.is_dir() or not (options.annotations is not None or len(list(root.glob("*.json"))) == 1):
        return False
    images = root / (options.image_dir or "images")
    return images.is_dir() or any(p.is_file() and is_image_file(p) for p in root.iterdir())


def _is_wildrf(root: Path, options: LayoutOptions) -> bool:
    return any(has_label_dirs(d) for d in _dirs(root / "test")) and (
        any(has_label_dirs(root / s) for s in folders.WILDRF_SPLITS) or not any(has_label_dirs(d) for d in _dirs(root)))


def _is_ufd(root: Path, options: LayoutOptions) -> bool:
    return any((root / g / "1_fake").is_dir() for g in UFD_DIFFUSION_REAL_FOLDERS)


def _set_name(root: Path) -> list[str]:
    return [root.name]


LAYOUTS: dict[str, Layout] = {
    "forensynths": Layout(lambda root, o: list_sources(root),
                          lambda root, name, classes, cap, o: forensynths(root, name, classes, cap, cap), _is_forensynths),
    "ufd_diffusion": Layout(_ufd_names, lambda root, name, classes, cap, o: ufd_diffusion(root, name, max_per_class=cap),
                            _is_ufd, refines=("forensynths",)),
    "genimage": Layout(_subfolders, lambda root, name, classes, cap, o: genimage(root, name, num_real=cap, num_fake=cap),
                       _is_genimage),
    "wildrf": Layout(lambda root, o: folders.wildrf_names(root),
                     lambda root, name, classes, cap, o: folders.wildrf(root, name, cap), _is_wildrf,
                     refines=("forensynths",)),
    "synthbuster": Layout(lambda root, o: folders.synthbuster_names(root, o.real_dir),
                          lambda root, name, classes, cap, o: folders.synthbuster(root, name, o.real_dir, cap),
                          _is_synthbuster),
    "manifest": Layout(lambda root, o: manifest.manifest_names(root),
                       lambda root, name, classes, cap, o: manifest.manifest(root, name, cap, o.labels), _is_manifest),
    "parquet": Layout(lambda root, o: parquet.parquet_names(root),
                      lambda root, name, classes, cap, o: parquet.parquet(
                          root, name, cap, o.labels, o.image_column, o.label_column, o.mask_column), _is_parquet),
    "pairs": Layout(lambda root, o: _set_name(root),
                    lambda root, name, classes, cap, o: pairs.pairs(root, o.image_dir, o.mask_dir, o.real_dir,
                                                                    o.mask_pattern, cap), _is_pairs,
                    refines=("synthbuster",)),
    "polygons": Layout(lambda root, o: _set_name(root),
                       lambda root, name, classes, cap, o: polygons.polygons(root, o.annotations, o.image_dir, cap),
                       _is_polygons, refines=("synthbuster",)),
}


def detect_layout(root: str | Path, options: LayoutOptions | None = None) -> str:
    """The one layout ``root`` looks like (each layout's ``detect``; a layout that ``refines`` another
    wins over it); :class:`DatasetLayoutError` when none or several match."""
    root, options = Path(root), options or LayoutOptions()
    if not root.exists():
        raise DatasetLayoutError(f"{root}: no such file or folder")
    found = [name for name, layout in LAYOUTS.items() if layout.detect(root, options)]
    refined = {base for name in found for base in LAYOUTS[name].refines}
    found = [name for name in found if name not in refined]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetLayoutError(f"{root}: no known layout recognised (known: {', '.join(LAYOUTS)}); pass --layout "
                                 "(synthbuster needs --real_dir)")
    raise DatasetLayoutError(f"{root}: ambiguous layout, it looks like {' and '.join(found)}; pass --layout NAME")


def describe_sets(layout: str, sets: Mapping[str, Sequence[ImageRecord]]) -> str:
    """What a run will read: the layout, each set's counts per class and its masks (given / missing
    among the fakes; Parquet mask cells are counted as given, null ones are found when read), and the
    entries the reader lists as skips (records with ``skip`` set), counted per reason."""
    lines = [f"layout {layout}: {len(sets)} set(s)"]
    for name, records in sets.items():
        skips = Counter(r.skip.partition(":")[0] for r in records if r.skip)
        records = [r for r in records if not r.skip]
        labels = Counter(r.label for r in records)
        cells = sum(isinstance(r.mask, ParquetCell) for r in records)
        masks = sum(r.mask is not None for r in records) - cells
        fakes_without = sum(r.mask is None and r.label == 1 for r in records)
        text = f"  {name}: {labels.get(0, 0)} real, {labels.get(1, 0)} fake"
        if labels.get(None):
            text += f", {labels[None]} unlabelled"
        if cells:
            text += f"; mask column: {cells} cells (null = no mask, found when read)"
        elif masks or any(r.label == 1 for r in records) and layout in ("pairs", "polygons"):
            text += f"; masks: {masks} given, {fakes_without} fake(s) without"
        sources = Counter(r.source for r in records)
        text += f"; sources: {', '.join(f'{s} ({n})' for s, n in sorted(sources.items())[:8])}"
        text += " ..." if len(sources) > 8 else ""
        lines.append(text + "".join(f"; {n} listed skip(s): {why}" for why, n in skips.items()))
    return "\n".join(lines)


def load_sets(root: str | Path, names: Sequence[str] | None = None, layout: str = "forensynths",
              have_classes: bool | None = None, num_instances: int | None = None,
              options: LayoutOptions | None = None) -> dict[str, list[ImageRecord]]:
    """Records of each named set under ``root`` (default: every set the layout finds, e.g.
    :func:`list_sources`). ``layout="auto"``: :func:`detect_layout`, and the layout found and what it
    reads (:func:`describe_sets`) are logged. ``have_classes`` applies to ForenSynths (``None``:
    detected per set); ``num_instances`` caps the files per class folder and label (T-FF's evaluation
    ignores its ``--num_instances``; here it is honoured). ``options``: :class:`LayoutOptions`."""
    root, options = Path(root), options or LayoutOptions()
    auto = layout == AUTO
    if auto:
        layout = detect_layout(root, options)
    if layout not in LAYOUTS:
        raise KeyError(f"unknown layout {layout!r}; known: {AUTO}, {', '.join(LAYOUTS)}")
    reader = LAYOUTS[layout]
    names = list(names) if names else reader.names(root, options)
    sets = {name: reader.load(root, name, have_classes, num_instances, options) for name in names}
    if auto:
        log.info("--layout auto: %s\n%s", root, describe_sets(layout, sets))
    return sets
