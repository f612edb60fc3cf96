"""Listing helpers shared by the layout readers: folders, candidate files, per-label records.

Nothing here decodes a file. Every helper raises :class:`~forensics.errors.DatasetLayoutError`
naming the folder when it is missing or holds no candidate image file.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..errors import DatasetLayoutError
from .images import is_candidate_file
from .records import ImageRecord

log = logging.getLogger(__name__)

REAL_DIR = "0_real"
FAKE_DIR = "1_fake"
LABEL_DIRS: dict[str, int] = {REAL_DIR: 0, FAKE_DIR: 1}


# ---------------------------------------------------------------------------- listing helpers
def require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder}: {what} is not a folder" if folder.exists()
                                 else f"{folder}: no such folder ({what})")


def list_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Candidate image files in ``folder`` (sorted by relative path); raises if there are none."""
    require_dir(folder, "image folder")
    walker = folder.rglob("*") if recursive else folder.iterdir()
    # Everything but folders: a broken link or special file is kept and reported when decoded.
    files = sorted((p for p in walker if not p.is_dir() and is_candidate_file(p)
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise DatasetLayoutError(f"{folder}: no image files (the folder is empty or holds only "
                                 "hidden/non-image files)")
    return files


def cap_files(files: list[Path], n: int | None) -> list[Path]:
    if n is not None and n < 0:
        raise ValueError(f"a file cap must be >= 0 or None, got {n}")
    return files if n is None else files[:n]


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_label_dirs(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in LABEL_DIRS)


def label_records(folder: Path, label_dir: str, label: int, cap: int | None, source: str,
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
    files = cap_files(list_files(label_folder, recursive=recursive), cap)
    return [ImageRecord(p, label, source, category) for p in files]




def ignored_files(folder: Path, recursive: bool = False) -> Counter:
    """Suffix -> count of the non-image files (``.txt``, ``.py``, ``.csv``...) a reader ignores in
    ``folder`` (hidden files not counted), for the reader to report."""
    walker = folder.rglob("*") if recursive else folder.iterdir()
    return Counter(p.suffix.lower() or p.name for p in walker
                   if p.is_file() and not p.name.startswith(".") and not is_candidate_file(p))


def report_ignored(folder: Path, counts: Counter) -> None:
    if counts:
        log.info("%s: ignored %d non-image file(s) (%s)", folder, sum(counts.values()),
                 ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
