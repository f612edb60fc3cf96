"""Localisation sets annotated with polygons (X-AIGD): an image folder and a JSON file mapping each
image key to a list of ``{"points": [[x, y], ...], "category": ...}``; the masks are rasterised at
each image's size with ``cv2.fillPoly`` when the image is read (:class:`~forensics.data.records.Polygons`).

Keys are matched to images by name, never by order: the image's path relative to the image folder,
else its file name, else its stem. An image with at least one polygon is a fake (label 1); a key
with an empty list is a real (label 0). Images without a key and keys without an image are logged
with their names and returned after the reals and fakes as *listed skips* (records with ``skip`` set:
never decoded, counted in the run's :class:`~forensics.data.RunSummary` with the reasons
:data:`NO_KEY` and :data:`NO_IMAGE`; a key's skip record points at the JSON file). Their label only
keeps the label checks that run before reading (evaluation refuses unlabelled sets) from refusing the
set: a key's is its entry's, an image without a key gets 0 (no region annotated); neither is scored.
:func:`unmatched` counts them. A malformed entry is an error naming its key.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

from ...errors import DatasetLayoutError
from ..listing import cap_files, list_files, require_dir
from ..records import ImageRecord, Polygons

log = logging.getLogger(__name__)

#: Skip reasons of the entries that cannot be matched: an image whose key is not in the JSON, a key
#: of the JSON with no image (the key follows the colon).
NO_KEY = "image without an annotation key"
NO_IMAGE = "annotation key without an image"


def annotations_file(root: Path, given: Path | None) -> Path:
    if given is not None:
        path = root / given
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: no such annotations file")
        return path
    found = sorted(root.glob("*.json"))
    if len(found) != 1:
        raise DatasetLayoutError(f"{root}: expected one polygons *.json here, found {len(found)}; pass --annotations")
    return found[0]


def _polygons(key: str, entry: Any) -> Polygons:
    if not isinstance(entry, list):
        raise DatasetLayoutError(f"annotations of {key!r}: expected a list of {{points, category}}, got "
                                 f"{type(entry).__name__}")
    points, cats = [], []
    for item in entry:
        pts = item.get("points") if isinstance(item, dict) else None
        if not isinstance(pts, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pts):
            raise DatasetLayoutError(f"annotations of {key!r}: every polygon needs \"points\": [[x, y], ...], got {item!r}"[:300])
        points.append(tuple((float(x), float(y)) for x, y in pts))
        cats.append(str(item.get("category", "")))
    return Polygons(tuple(points), tuple(cats))


def polygons(root: Path, annotations: Path | None = None, image_dir: Path | None = None, cap: int | None = None
             ) -> list[ImageRecord]:
    """Reals (empty annotation lists) then fakes, each with its :class:`Polygons` mask; source = the
    first polygon's category (fakes) or ``real``."""
    root = Path(root)
    require_dir(root, "data-set root")
    path = annotations_file(root, annotations)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"{path}: expected an object mapping image keys to polygon lists")
    folder = root / image_dir if image_dir is not None else (root / "images" if (root / "images").is_dir() else root)
    used: set[str] = set()
    sides: dict[int, list[ImageRecord]] = {0: [], 1: []}
    unannotated = []
    for img in list_files(folder, recursive=True):
        key = next((k for k in (img.relative_to(folder).as_posix(), img.name, img.stem) if k in data), None)
        if key is None:
            unannotated.append(img)
            continue
        used.add(key)
        mask = _polygons(key, data[key])
        label = 1 if mask.points else 0
        source = (mask.categories[0] or "fake") if label else "real"
        sides[label].append(ImageRecord(img, label, source, mask=mask))
    orphans = [k for k in data if k not in used]
    for what, names in (("image(s) without annotations", [p.name for p in unannotated]),
                        ("annotation key(s) without an image", orphans)):
        if names:
            log.warning("%s: %d %s: %s", path, len(names), what, ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    records = cap_files(sides[0], cap) + cap_files(sides[1], cap)
    if not records:
        raise DatasetLayoutError(f"{path}: no annotated image found in {folder}")
    return (records + [ImageRecord(img, 0, "unannotated", skip=f"{NO_KEY} in {path.name}") for img in unannotated]
            + [ImageRecord(path, 1 if _polygons(key, data[key]).points else 0, "unannotated",
                           skip=f"{NO_IMAGE}: {key}") for key in orphans])


def unmatched(records: Iterable[ImageRecord]) -> dict[str, int]:
    """How many images had no key (``images_without_key``) and keys no image (``keys_without_image``)
    among ``records`` (what :func:`polygons` returns)."""
    skips = [r.skip for r in records if r.skip]
    return {"images_without_key": sum(s.startswith(NO_KEY) for s in skips),
            "keys_without_image": sum(s.startswith(NO_IMAGE) for s in skips)}
