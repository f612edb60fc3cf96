"""Folder conventions of two more benchmarks: Synthbuster and WildRF.

- **Synthbuster** (Bammey 2023): ``<root>/<generator>/*`` (``dalle2``, ``dalle3``, ``midjourney-v5``,
  ``stable-diffusion-2``, ``firefly``, ``glide``...) holds the fakes; the reals (RAISE-1k) are
  downloaded separately and given as ``real_dir``. Every set = the reals + one generator's fakes.
  The release ships scripts and lists beside the images (``.txt``, ``.py``, ``.csv``): they are
  ignored and counted in the log.
- **WildRF** (Park & Owens 2024, "Community Forensics"/WildRF): ``<root>/{train,val}/{0_real,1_fake}``
  and ``<root>/test/<platform>/{0_real,1_fake}``; the sets are ``train``, ``val`` and each platform
  (``reddit``, ``twitter``, ``facebook``).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DatasetLayoutError
from ..listing import (FAKE_DIR, REAL_DIR, cap_files, has_label_dirs, ignored_files, label_records, list_files,
                       report_ignored, require_dir, subdirs)
from ..records import ImageRecord

WILDRF_SPLITS: tuple[str, ...] = ("train", "val")
WILDRF_TEST = "test"


# ---------------------------------------------------------------------------- Synthbuster
def _real_dir(root: Path, real_dir: Path | None) -> Path:
    if real_dir is None:
        raise DatasetLayoutError(f"{root}: Synthbuster's reals (RAISE) are in a separate folder: pass --real_dir")
    return root / real_dir  # an absolute real_dir replaces root


def synthbuster_names(root: Path, real_dir: Path | None = None) -> list[str]:
    """The generator folders of ``root`` (the real folder excluded when it lies inside it)."""
    require_dir(root, "Synthbuster root")
    real = _real_dir(root, real_dir).resolve()
    names = [d.name for d in subdirs(root) if d.resolve() != real]
    if not names:
        raise DatasetLayoutError(f"{root}: no generator folder (expected <root>/<generator>/*)")
    return names


def synthbuster(root: Path, gen: str, real_dir: Path | None = None, cap: int | None = None) -> list[ImageRecord]:
    """Reals of ``real_dir`` (recursive; source = its folder name) then the fakes of ``<root>/<gen>``
    (source = ``gen``); ``cap`` keeps the first N of each side in sorted order."""
    root = Path(root)
    real = _real_dir(root, real_dir)
    fake = root / gen
    out: list[ImageRecord] = []
    for folder, label, source, recursive in ((real, 0, real.name, True), (fake, 1, gen, False)):
        require_dir(folder, "real folder" if label == 0 else "generator folder")
        report_ignored(folder, ignored_files(folder, recursive))
        out += [ImageRecord(p, label, source) for p in cap_files(list_files(folder, recursive), cap)]
    return out


# ---------------------------------------------------------------------------- WildRF
def wildrf_names(root: Path) -> list[str]:
    """``train``/``val`` where present, then the platforms under ``test/`` that hold 0_real/1_fake."""
    require_dir(root, "WildRF root")
    names = [s for s in WILDRF_SPLITS if has_label_dirs(root / s)]
    test = root / WILDRF_TEST
    names += [d.name for d in subdirs(test) if has_label_dirs(d)] if test.is_dir() else []
    if not names:
        raise DatasetLayoutError(f"{root}: no WildRF split (expected {{train,val}}/{{0_real,1_fake}} or "
                                 "test/<platform>/{0_real,1_fake})")
    return names


def wildrf(root: Path, name: str, cap: int | None = None) -> list[ImageRecord]:
    """One WildRF set: ``train``/``val``, or a test platform (``reddit``, ``twitter``, ``facebook``);
    source = the set's name for both classes."""
    root = Path(root)
    folder = root / name if name in WILDRF_SPLITS else root / WILDRF_TEST / name
    require_dir(folder, f"WildRF set {name!r}")
    return (label_records(folder, REAL_DIR, 0, cap, name, cap_name="num_instances")
            + label_records(folder, FAKE_DIR, 1, cap, name, cap_name="num_instances"))
