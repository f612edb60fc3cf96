"""Localisation sets shipped as an image folder and a mask folder (CocoGlide, AutoSplice): each
image's mask is found by name, ``mask_dir / mask_pattern.format(stem=..., name=..., suffix=...)``
(``{stem}.png``, ``{stem}_mask.png``, ``{stem}_gt.png``), never by sort order; the reals come from a
separate folder and get all-zero masks when masks are used.

Default folders (relative to the root): images in the first of :data:`IMAGE_DIRS` that exists,
masks in the first of :data:`MASK_DIRS`, reals in the first of :data:`REAL_DIRS` (none: fakes only).
Images without a mask are logged with their names and kept (scoring needs no mask; a run that needs
masks lists each one as skipped). Mask files that match no image are logged and returned after the
images as *listed skips* (records with ``skip`` set, reason :data:`NO_IMAGE`: never decoded, counted in
the run's :class:`~forensics.data.RunSummary`), as the polygons layout does with its unmatched keys.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ...errors import DatasetLayoutError
from ..listing import cap_files, list_files, require_dir
from ..records import ImageRecord

log = logging.getLogger(__name__)

IMAGE_DIRS: tuple[str, ...] = ("fake", "fakes", "tampered", "manipulated", "images", "image")
MASK_DIRS: tuple[str, ...] = ("mask", "masks", "gt", "groundtruth", "ground_truth")
REAL_DIRS: tuple[str, ...] = ("real", "reals", "authentic", "original", "pristine")
#: Skip reason of a mask file that matches no image (the mask's name follows the colon).
NO_IMAGE = "mask without an image"


def find_dir(root: Path, given: Path | None, candidates: tuple[str, ...], what: str, required: bool = True
             ) -> Path | None:
    """``root / given`` (must exist), else the first of ``candidates`` under ``root``."""
    if given is not None:
        folder = root / given
        require_dir(folder, what)
        return folder
    found = next((root / c for c in candidates if (root / c).is_dir()), None)
    if found is None and required:
        raise DatasetLayoutError(f"{root}: no {what} (looked for {', '.join(candidates)}); pass its folder")
    return found


def mask_name(image: Path, pattern: str) -> str:
    return pattern.format(stem=image.stem, name=image.name, suffix=image.suffix)


def pairs(root: Path, image_dir: Path | None = None, mask_dir: Path | None = None, real_dir: Path | None = None,
          mask_pattern: str = "{stem}.png", cap: int | None = None) -> list[ImageRecord]:
    """Reals (no mask; source = their folder's name) then the images with their masks matched by
    name (source = the root's name); ``cap`` keeps the first N of each side."""
    root = Path(root)
    require_dir(root, "data-set root")
    images_dir = find_dir(root, image_dir, IMAGE_DIRS, "image folder")
    masks_dir = find_dir(root, mask_dir, MASK_DIRS, "mask folder")
    reals_dir = find_dir(root, real_dir, REAL_DIRS, "real folder", required=False)
    images = cap_files(list_files(images_dir, recursive=True), cap)
    expected = {img: masks_dir / img.parent.relative_to(images_dir) / mask_name(img, mask_pattern) for img in images}
    missing = [img for img, m in expected.items() if not m.is_file()]
    if len(missing) == len(images):
        raise DatasetLayoutError(f"{masks_dir}: no mask matches any image of {images_dir} with the pattern "
                                 f"{mask_pattern!r} (e.g. {expected[images[0]].name} for {images[0].name}); "
                                 "pass --mask_pattern")
    if missing:
        log.warning("%s: %d image(s) without a mask (%s): %s", images_dir, len(missing), mask_pattern,
                    ", ".join(p.name for p in missing[:10]) + (" ..." if len(missing) > 10 else ""))
    orphans: list[Path] = []
    if cap is None:
        used = {m.resolve() for m in expected.values()}
        orphans = [m for m in list_files(masks_dir, recursive=True) if m.resolve() not in used]
        if orphans:
            log.warning("%s: %d mask(s) match no image (%s): %s", masks_dir, len(orphans), mask_pattern,
                        ", ".join(p.name for p in orphans[:10]) + (" ..." if len(orphans) > 10 else ""))
    reals = cap_files(list_files(reals_dir, recursive=True), cap) if reals_dir is not None else []
    return ([ImageRecord(p, 0, reals_dir.name) for p in reals]
            + [ImageRecord(p, 1, root.name, mask=m if m.is_file() else None) for p, m in expected.items()]
            + [ImageRecord(m, 1, "unmatched", skip=f"{NO_IMAGE}: {m.name}") for m in orphans])
