"""A CSV manifest: one row per image, columns ``path,label`` and optionally ``mask``, ``source``
(the generator, or the real source) and ``split``.

Paths (image and mask) are relative to the CSV's folder (absolute ones are kept); labels are 0/1 or
``real``/``fake`` (any case), or the values of a ``label_map``; any other value is an error naming
the row. An empty ``mask`` = no mask. Sets: one per ``split`` value (in order of appearance), or one
set named after the CSV without a ``split`` column. ``source`` defaults to the image's folder name.
A listed file that does not exist is kept and reported as skipped when it is read.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Mapping

from ...errors import DatasetLayoutError
from ..layout_options import DEFAULT_LABELS, parse_label
from ..records import ImageRecord

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask", "source", "split")


def manifest_file(root: Path) -> Path:
    """``root`` itself when it is a file, else the only ``*.csv`` directly inside it."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: no such manifest file or folder")
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DatasetLayoutError(f"{root}: expected exactly one manifest *.csv here, found "
                                 f"{len(found)}{': ' + ', '.join(p.name for p in found) if found else ''}; "
                                 "pass the CSV itself as --dataset_dir")
    return found[0]


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of the CSV, after checking its header (streamed, not held in memory)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetLayoutError(f"{path}: missing column(s) {', '.join(missing)} (found: "
                                     f"{', '.join(columns) or 'no header'}; expected path,label[,mask,source,split])")
        reader.fieldnames = columns
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def manifest_names(root: Path) -> list[str]:
    path = manifest_file(root)
    splits: dict[str, None] = {}
    for _, row in _rows(path):
        splits.setdefault(row.get("split") or path.stem)
    if not splits:
        raise DatasetLayoutError(f"{path}: the manifest lists no image")
    return list(splits)


def manifest(root: Path, name: str | None = None, cap: int | None = None,
             labels: Mapping[str, int] = DEFAULT_LABELS) -> list[ImageRecord]:
    """The rows of set ``name`` (a ``split`` value, or the CSV's stem; ``None``: every row), reals
    first; ``cap`` keeps the first N rows of each label."""
    path = manifest_file(root)
    base = path.parent
    sides: dict[int, list[ImageRecord]] = {0: [], 1: []}
    for line, row in _rows(path):
        if name is not None and (row.get("split") or path.stem) != name:
            continue
        if not row["path"]:
            raise DatasetLayoutError(f"{path}: line {line}: empty path")
        label = parse_label(row["label"], labels)
        if label is None:
            raise DatasetLayoutError(f"{path}: line {line}: label {row['label']!r} is not one of "
                                     f"{', '.join(sorted(labels))} (pass --label_map to map other values)")
        image = base / row["path"]
        if cap is not None and len(sides[label]) >= cap:
            continue
        mask = base / row["mask"] if row.get("mask") else None
        sides[label].append(ImageRecord(image, label, row.get("source") or image.parent.name, mask=mask))
    if not sides[0] and not sides[1]:
        raise DatasetLayoutError(f"{path}: no row of set {name!r}")
    return sides[0] + sides[1]
