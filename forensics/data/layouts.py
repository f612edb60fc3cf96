"""Readers for the folder layouts of the benchmarks: they list files, they never decode them.

Every reader returns a sorted, deterministic ``list[ImageRecord]``; reals come before fakes, as in
the reference loaders. Labels: 0 real, 1 fake, ``None`` unknown.

File selection: the files directly inside a label folder (recursively for UFD's diffusion sets and
for plain folders), minus hidden files and files whose suffix is clearly not an image (see
:func:`~forensics.data.images.is_candidate_file`). Anything else is kept, so an unreadable file is
reported when it is decoded instead of being dropped silently. An empty label folder, or one with
no candidate files, raises :class:`~forensics.errors.DatasetLayoutError` naming it.

Deliberate differences from the references:

- ForenSynths class folders are taken in sorted order (the T-FF reference uses unsorted
  ``os.listdir``, i.e. filesystem order); files are ``sorted`` as in the reference, but non-image
  files are removed *before* the per-class cap ``[:N]`` (the reference caps the raw listing).
- A ``have_classes`` that does not match the folder raises a clear error (the reference crashes).
- UFD's evaluation shuffles (seed 0) before keeping ``max_sample`` files per side, and silently
  falls back to 100 when a side has fewer; :func:`ufd_diffusion` keeps the first ``max_per_class``
  files in sorted order and never changes the cap.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from ..errors import DatasetLayoutError
from .listing import (FAKE_DIR, LABEL_DIRS, REAL_DIR, cap_files, has_label_dirs, label_records, list_files,
                      require_dir, subdirs)
from .records import ImageRecord

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: UFD ``diffusion_datasets/``: the shared folder (under the root) whose ``0_real`` holds the reals
#: of each generator's ``<gen>/1_fake`` (``dataset_paths.py`` of the UFD release).
UFD_DIFFUSION_REAL_FOLDERS: dict[str, str] = {
    "guided": "imagenet",
    "ldm_200": "laion", "ldm_200_cfg": "laion", "ldm_100": "laion",
    "glide_100_27": "laion", "glide_50_27": "laion", "glide_100_10": "laion",
    "dalle": "laion",
}


# ---------------------------------------------------------------------------- ForenSynths
def forensynths(root: PathLike, gen: str | None = None, have_classes: bool | None = None,
                num_real: int | None = None, num_fake: int | None = None) -> list[ImageRecord]:
    """A ForenSynths/CNNDetection-style set: ``<root>/<gen>/<class>/{0_real,1_fake}/*`` (class
    sub-folders: progan, stylegan, stylegan2, cyclegan) or ``<root>/<gen>/{0_real,1_fake}/*`` (flat:
    biggan, stargan, gaugan, ...). ``gen=None``: ``root`` itself is the generator folder.

    ``have_classes=None`` detects the layout; ``True``/``False`` forces it and raises
    :class:`DatasetLayoutError` if the folder does not match. ``num_real``/``num_fake`` cap the files
    taken **per class folder** (``sorted(files)[:N]``, as the reference); ``0`` skips that side, and
    then its folders need not exist. Classes are visited in sorted order; all reals come first.
    """
    folder = Path(root) / gen if gen is not None else Path(root)
    require_dir(folder, "generator folder")
    source = gen if gen is not None else folder.name
    classes = _class_dirs(folder, have_classes)
    records: list[ImageRecord] = []
    sides = ((REAL_DIR, 0, num_real, "num_real"), (FAKE_DIR, 1, num_fake, "num_fake"))
    for label_dir, label, cap, cap_name in sides:
        for cls in classes:
            records += label_records(cls, label_dir, label, cap, source,
                                      category=cls.name if cls != folder else "", cap_name=cap_name)
    if not records:
        raise DatasetLayoutError(f"{folder}: no images selected (num_real={num_real}, num_fake={num_fake})")
    return records


def _class_dirs(folder: Path, have_classes: bool | None) -> list[Path]:
    """The folders that hold ``0_real``/``1_fake``: ``[folder]`` when flat, else its class folders."""
    flat = has_label_dirs(folder)
    inner = [d for d in subdirs(folder) if d.name not in LABEL_DIRS]
    classes = [d for d in inner if has_label_dirs(d)]
    hint = f"expected {folder}/{{0_real,1_fake}} (flat) or {folder}/<class>/{{0_real,1_fake}} (classes)"
    if have_classes is None:
        if flat and classes:
            raise DatasetLayoutError(f"{folder}: ambiguous layout, it has 0_real/1_fake directly and in class "
                                     f"folders ({', '.join(d.name for d in classes[:5])}); pass have_classes")
        if not flat and not classes:
            raise DatasetLayoutError(f"{folder}: no 0_real/1_fake folders found; {hint}")
        have_classes = not flat
    if have_classes:
        if not classes:
            why = ("it has 0_real/1_fake directly, i.e. a flat set: pass have_classes=False (the reference "
                   "crashes here)") if flat else f"no class folder holds 0_real/1_fake; {hint}"
            raise DatasetLayoutError(f"{folder}: have_classes=True but {why}")
        for d in inner:
            if d not in classes:
                log.warning("%s: ignoring sub-folder %s, which holds no 0_real/1_fake", folder, d.name)
        return classes
    if not flat:
        why = (f"it has class folders ({', '.join(d.name for d in classes[:5])}): pass have_classes=True"
               if classes else f"no 0_real/1_fake folder; {hint}")
        raise DatasetLayoutError(f"{folder}: have_classes=False but {why}")
    return [folder]


def list_sources(root: PathLike) -> list[str]:
    """Generator folders of a ForenSynths-style test root: the sub-folders of ``root`` holding
    ``0_real``/``1_fake`` directly or inside a class folder, sorted by name."""
    root = Path(root)
    require_dir(root, "test-set root")
    sources = [d.name for d in subdirs(root)
               if has_label_dirs(d) or any(has_label_dirs(c) for c in subdirs(d))]
    if not sources:
        raise DatasetLayoutError(f"{root}: no generator folder with 0_real/1_fake (at depth 1 or 2) inside")
    return sources


# ---------------------------------------------------------------------------- UFD diffusion sets
def ufd_diffusion(root: PathLike, gen: str, real_folder: PathLike | None = None,
                  max_per_class: int | None = None) -> list[ImageRecord]:
    """UFD's ``diffusion_datasets/`` layout: fakes from ``<root>/<gen>/1_fake``, reals from a shared
    folder's ``0_real`` (``imagenet`` for ``guided``, ``laion`` for ldm_*/glide_*/dalle; see
    :data:`UFD_DIFFUSION_REAL_FOLDERS`). ``real_folder`` overrides it (relative to ``root`` or
    absolute; its ``0_real`` is used). Files are listed recursively, as UFD does;
    ``max_per_class`` keeps the first N of each side in sorted order.
    """
    root = Path(root)
    require_dir(root, "diffusion_datasets root")
    if real_folder is None:
        if gen not in UFD_DIFFUSION_REAL_FOLDERS:
            raise DatasetLayoutError(f"{root}: no known real folder for generator {gen!r} (known: "
                                     f"{', '.join(UFD_DIFFUSION_REAL_FOLDERS)}); pass real_folder")
        real_folder = UFD_DIFFUSION_REAL_FOLDERS[gen]
    real_dir = root / real_folder  # an absolute real_folder replaces root
    return (label_records(real_dir, REAL_DIR, 0, max_per_class, gen, recursive=True)
            + label_records(root / gen, FAKE_DIR, 1, max_per_class, gen, recursive=True))


# ---------------------------------------------------------------------------- GenImage
def genimage(root: PathLike, gen: str, split: str = "val", num_real: int | None = None,
             num_fake: int | None = None) -> list[ImageRecord]:
    """GenImage: ``<root>/<gen>/<split>/{nature,ai}`` (nature = 0 real, ai = 1 fake).

    The public download nests one more folder (``ADM/imagenet_ai_0508_adm/val/ai``); when
    ``<gen>/<split>`` is missing and exactly one ``<gen>/*/<split>`` exists, that one is used.
    Caps keep the first N files of each side in sorted order.
    """
    gen_dir = Path(root) / gen
    require_dir(gen_dir, "GenImage generator folder")
    split_dir = gen_dir / split
    if not split_dir.is_dir():
        nested = [d / split for d in subdirs(gen_dir) if (d / split).is_dir()]
        if len(nested) != 1:
            found = f"several: {', '.join(str(n) for n in nested)}" if nested else "none"
            raise DatasetLayoutError(f"{gen_dir}: expected {gen_dir}/{split}/{{nature,ai}} or exactly one "
                                     f"{gen_dir}/*/{split}/ ({found})")
        split_dir = nested[0]
    return (label_records(split_dir, "nature", 0, num_real, gen, cap_name="num_real")
            + label_records(split_dir, "ai", 1, num_fake, gen, cap_name="num_fake"))


# ---------------------------------------------------------------------------- plain folders / CLI inputs
def label_from_path(path: PathLike) -> int | None:
    """0/1 when a component of ``path`` is ``0_real``/``1_fake`` (the innermost one wins), else None."""
    for part in reversed(Path(path).parts[:-1]):
        if part in LABEL_DIRS:
            return LABEL_DIRS[part]
    return None


def plain_folder(root: PathLike, recursive: bool = True) -> list[ImageRecord]:
    """Every candidate image file under ``root`` (sorted by relative path). The label comes from a
    ``0_real``/``1_fake`` component of the full path (so ``.../car/0_real`` itself works), else None;
    ``source`` is ``root``'s name; ``category`` is the file's folder relative to ``root`` with the
    label component removed (``""`` at the top)."""
    root = Path(root)
    source = root.resolve().name
    records = []
    for p in list_files(root, recursive=recursive):
        rel_dirs = [part for part in p.relative_to(root).parts[:-1] if part not in LABEL_DIRS]
        records.append(ImageRecord(p, label_from_path(p.absolute()), source, "/".join(rel_dirs)))
    return records


def collect(paths: Iterable[PathLike]) -> list[ImageRecord]:
    """Records for a CLI's mix of files and folders: each file is kept as given (in order, whatever
    its name), each folder expands to :func:`plain_folder` (recursive). A path that does not exist
    raises :class:`DatasetLayoutError`."""
    records: list[ImageRecord] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            records += plain_folder(p)
        elif p.exists():
            records.append(ImageRecord(p, label_from_path(p.absolute()), p.absolute().parent.name))
        else:
            raise DatasetLayoutError(f"{p}: no such file or folder")
    if not records:
        raise DatasetLayoutError("no input files or folders were given")
    return records
