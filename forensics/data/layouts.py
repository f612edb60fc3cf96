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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import DatasetLayoutError
from .images import is_candidate_file

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

REAL_DIR = "0_real"
FAKE_DIR = "1_fake"
LABEL_DIRS: dict[str, int] = {REAL_DIR: 0, FAKE_DIR: 1}

#: UFD ``diffusion_datasets/``: the shared folder (under the root) whose ``0_real`` holds the reals
#: of each generator's ``<gen>/1_fake`` (``dataset_paths.py`` of the UFD release).
UFD_DIFFUSION_REAL_FOLDERS: dict[str, str] = {
    "guided": "imagenet",
    "ldm_200": "laion", "ldm_200_cfg": "laion", "ldm_100": "laion",
    "glide_100_27": "laion", "glide_50_27": "laion", "glide_100_10": "laion",
    "dalle": "laion",
}


@dataclass(frozen=True)
class ImageRecord:
    """One image file to score: where it is and what is known about it."""

    path: Path
    label: int | None  # 0 real, 1 fake, None unknown
    source: str  # generator / test-set name
    category: str = ""  # class folder (e.g. LSUN "car"), or "" for flat sets


# ---------------------------------------------------------------------------- listing helpers
def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder}: {what} is not a folder" if folder.exists()
                                 else f"{folder}: no such folder ({what})")


def _list_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Candidate image files in ``folder`` (sorted by relative path); raises if there are none."""
    _require_dir(folder, "image folder")
    walker = folder.rglob("*") if recursive else folder.iterdir()
    # Everything but folders: a broken link or special file is kept and reported when decoded.
    files = sorted((p for p in walker if not p.is_dir() and is_candidate_file(p)
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise DatasetLayoutError(f"{folder}: no image files (the folder is empty or holds only "
                                 "hidden/non-image files)")
    return files


def _cap(files: list[Path], n: int | None) -> list[Path]:
    if n is not None and n < 0:
        raise ValueError(f"a file cap must be >= 0 or None, got {n}")
    return files if n is None else files[:n]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_label_dirs(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in LABEL_DIRS)


def _label_records(folder: Path, label_dir: str, label: int, cap: int | None, source: str,
                   category: str = "", recursive: bool = False, cap_name: str = "") -> list[ImageRecord]:
    """Records of ``folder/label_dir`` (first ``cap`` files); ``cap == 0`` skips it entirely.
    ``cap_name`` (the caller's argument for ``cap``) makes the missing-folder message actionable."""
    if cap == 0:
        return []
    label_folder = folder / label_dir
    if not label_folder.is_dir():
        side = "real" if label == 0 else "fake"
        raise DatasetLayoutError(f"{label_folder}: no such folder (it should hold the {side} images)"
                                 + (f"; pass {cap_name}=0 to read the other side only" if cap_name else ""))
    files = _cap(_list_files(label_folder, recursive=recursive), cap)
    return [ImageRecord(p, label, source, category) for p in files]


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
    _require_dir(folder, "generator folder")
    source = gen if gen is not None else folder.name
    classes = _class_dirs(folder, have_classes)
    records: list[ImageRecord] = []
    sides = ((REAL_DIR, 0, num_real, "num_real"), (FAKE_DIR, 1, num_fake, "num_fake"))
    for label_dir, label, cap, cap_name in sides:
        for cls in classes:
            records += _label_records(cls, label_dir, label, cap, source,
                                      category=cls.name if cls != folder else "", cap_name=cap_name)
    if not records:
        raise DatasetLayoutError(f"{folder}: no images selected (num_real={num_real}, num_fake={num_fake})")
    return records


def _class_dirs(folder: Path, have_classes: bool | None) -> list[Path]:
    """The folders that hold ``0_real``/``1_fake``: ``[folder]`` when flat, else its class folders."""
    flat = _has_label_dirs(folder)
    subdirs = [d for d in _subdirs(folder) if d.name not in LABEL_DIRS]
    classes = [d for d in subdirs if _has_label_dirs(d)]
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
        for d in subdirs:
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
    _require_dir(root, "test-set root")
    sources = [d.name for d in _subdirs(root)
               if _has_label_dirs(d) or any(_has_label_dirs(c) for c in _subdirs(d))]
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
    _require_dir(root, "diffusion_datasets root")
    if real_folder is None:
        if gen not in UFD_DIFFUSION_REAL_FOLDERS:
            raise DatasetLayoutError(f"{root}: no known real folder for generator {gen!r} (known: "
                                     f"{', '.join(UFD_DIFFUSION_REAL_FOLDERS)}); pass real_folder")
        real_folder = UFD_DIFFUSION_REAL_FOLDERS[gen]
    real_dir = root / real_folder  # an absolute real_folder replaces root
    return (_label_records(real_dir, REAL_DIR, 0, max_per_class, gen, recursive=True)
            + _label_records(root / gen, FAKE_DIR, 1, max_per_class, gen, recursive=True))


# ---------------------------------------------------------------------------- GenImage
def genimage(root: PathLike, gen: str, split: str = "val", num_real: int | None = None,
             num_fake: int | None = None) -> list[ImageRecord]:
    """GenImage: ``<root>/<gen>/<split>/{nature,ai}`` (nature = 0 real, ai = 1 fake).

    The public download nests one more folder (``ADM/imagenet_ai_0508_adm/val/ai``); when
    ``<gen>/<split>`` is missing and exactly one ``<gen>/*/<split>`` exists, that one is used.
    Caps keep the first N files of each side in sorted order.
    """
    gen_dir = Path(root) / gen
    _require_dir(gen_dir, "GenImage generator folder")
    split_dir = gen_dir / split
    if not split_dir.is_dir():
        nested = [d / split for d in _subdirs(gen_dir) if (d / split).is_dir()]
        if len(nested) != 1:
            found = f"several: {', '.join(str(n) for n in nested)}" if nested else "none"
            raise DatasetLayoutError(f"{gen_dir}: expected {gen_dir}/{split}/{{nature,ai}} or exactly one "
                                     f"{gen_dir}/*/{split}/ ({found})")
        split_dir = nested[0]
    return (_label_records(split_dir, "nature", 0, num_real, gen, cap_name="num_real")
            + _label_records(split_dir, "ai", 1, num_fake, gen, cap_name="num_fake"))


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
    for p in _list_files(root, recursive=recursive):
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


# ---------------------------------------------------------------------------- sets of a benchmark
@dataclass(frozen=True)
class Layout:
    """A benchmark folder layout: ``names(root)`` lists its sets, ``load(root, name, have_classes,
    cap)`` reads one (``cap`` = files per class folder; ``None`` = all)."""

    names: Callable[[Path], list[str]]
    load: Callable[[Path, str, bool | None, int | None], list[ImageRecord]]


def _ufd_names(root: Path) -> list[str]:
    found = [g for g in UFD_DIFFUSION_REAL_FOLDERS if (root / g / "1_fake").is_dir()]
    if not found:
        raise DatasetLayoutError(f"{root}: none of the UFD diffusion sets ({', '.join(UFD_DIFFUSION_REAL_FOLDERS)}) "
                                 "has a 1_fake folder here")
    return found


def _subfolders(root: Path) -> list[str]:
    names = [d.name for d in _subdirs(Path(root))]
    if not names:
        raise DatasetLayoutError(f"{root}: no sub-folders (expected one per generator)")
    return names


LAYOUTS: dict[str, Layout] = {
    "forensynths": Layout(list_sources, lambda root, name, classes, cap: forensynths(root, name, classes, cap, cap)),
    "ufd_diffusion": Layout(_ufd_names, lambda root, name, classes, cap: ufd_diffusion(root, name, max_per_class=cap)),
    "genimage": Layout(_subfolders, lambda root, name, classes, cap: genimage(root, name, num_real=cap, num_fake=cap)),
}


def load_sets(root: str | Path, names: Sequence[str] | None = None, layout: str = "forensynths",
              have_classes: bool | None = None, num_instances: int | None = None
              ) -> dict[str, list[ImageRecord]]:
    """Records of each named set under ``root`` (default: every set the layout finds, e.g.
    :func:`list_sources`). ``have_classes`` applies to ForenSynths (``None``: detected per set);
    ``num_instances`` caps the files per class folder (T-FF's evaluation ignores its
    ``--num_instances``; here it is honoured)."""
    if layout not in LAYOUTS:
        raise KeyError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    reader, root = LAYOUTS[layout], Path(root)
    names = list(names) if names else reader.names(root)
    return {name: reader.load(root, name, have_classes, num_instances) for name in names}
