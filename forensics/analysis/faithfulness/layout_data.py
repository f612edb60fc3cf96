"""The fakes of a data set read in any registered layout (``analyses/faithfulness.py --layout``), with
their masks, for the faithfulness run (docs/faithfulness.md, "Your own data set").

The layout's reader matches each mask to its image by name or key (a manifest's ``mask`` column, a
Parquet mask cell, ``pairs``' mask pattern, ``polygons``' JSON key; never by sort order).
:func:`partition` keeps the fakes that have a mask and counts everything else: reals (no manipulation to
localise), unlabelled images, fakes without a mask and the entries the reader itself listed as skips
(``ImageRecord.skip``, e.g. polygons' images without a key and keys without an image).
:func:`read_fakes` reads the kept fakes through the detector's transform with their masks carried
through the same geometry (:class:`~forensics.data.ImageDataset` with ``masks=True``), scores each
one, and holds in memory only the images it will score: the first ``limit`` the detector calls fake
(``all_fakes``: the first ``limit``), so memory does not grow with the size of the set. Unreadable
images and masks (and masks of another size without ``mask_resize``) are listed skips; a null Parquet
mask cell, found only when read, counts as a fake without a mask.

These sets have no *bases* (untouched originals), so the mask-validity check cannot run: the masks are
taken on trust (:data:`TRUST`), and the run says so.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ...data import ImageDataset, ImageRecord, RunSummary, iter_batches
from ...detectors import Detector
from ...errors import ForensicsError
from ...explain.figures import to_uint8
from .run import ImageSet, Selection

log = logging.getLogger(__name__)

#: How a skip reads when a fake's mask reference turns out empty when read (a null Parquet mask cell).
NO_MASK = "no mask for this"

#: What a run without bases says about its ground truth (printed and in summary.json).
TRUST = ("masks taken on trust: this data set has no bases (untouched originals of the fakes), so the "
         "mask-validity check cannot run and the masks are not proven to carry the detector's evidence; "
         "localisation measures agreement with the masks")


@dataclass
class DataCounts:
    """What a layout run kept and dropped, from the reader's records to the images read."""

    layout: str
    set: str
    records: int = 0
    reals_dropped: int = 0
    unlabelled_dropped: int = 0
    fakes: int = 0
    fakes_without_mask_dropped: int = 0
    reader_skips: dict[str, int] = field(default_factory=dict)
    unreadable_skipped: int = 0
    fakes_read: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "set": self.set, "records": self.records,
                "reals_dropped": self.reals_dropped, "unlabelled_dropped": self.unlabelled_dropped,
                "fakes": self.fakes, "fakes_without_mask_dropped": self.fakes_without_mask_dropped,
                "reader_skips": dict(self.reader_skips), "unreadable_skipped": self.unreadable_skipped,
                "fakes_read": self.fakes_read, "masks_matched_by": "the layout's reader (name or key, never order)",
                "ground_truth": TRUST}

    def lines(self) -> list[str]:
        skips = "".join(f", {n} listed by the reader as '{why}'" for why, n in self.reader_skips.items())
        return [f"Data ({self.layout} layout, set {self.set}): {self.records} entries; dropped {self.reals_dropped} "
                f"real(s) (nothing to localise), {self.unlabelled_dropped} unlabelled, "
                f"{self.fakes_without_mask_dropped} of {self.fakes} fake(s) without a mask{skips}; "
                f"{self.unreadable_skipped} fake(s) skipped as unreadable (image or mask); {self.fakes_read} fakes "
                "with masks read.",
                f"Ground truth: {TRUST}."]


def partition(records: Sequence[ImageRecord], layout: str, name: str) -> tuple[list[ImageRecord], DataCounts,
                                                                            list[tuple[str, str]]]:
    """``(fakes with a mask, counts, the reader's listed skips as (path, reason))``."""
    counts = DataCounts(layout, name, records=len(records))
    listed = [(r.ref, r.skip) for r in records if r.skip]
    counts.reader_skips = dict(Counter(why.partition(":")[0] for _, why in listed))
    entries = [r for r in records if not r.skip]
    counts.reals_dropped = sum(r.label == 0 for r in entries)
    counts.unlabelled_dropped = sum(r.label is None for r in entries)
    fakes = [r for r in entries if r.label == 1]
    counts.fakes = len(fakes)
    kept = [r for r in fakes if r.mask is not None]
    counts.fakes_without_mask_dropped = len(fakes) - len(kept)
    return kept, counts, listed


@torch.no_grad()
def read_fakes(detector: Detector, records: Sequence[ImageRecord], *, crop: str | None = None,
               batch_size: int = 16, mask_resize: bool = False, limit: int | None = None, threshold: float = 0.0,
               all_fakes: bool = False) -> tuple[ImageSet, Selection, RunSummary, list[ImageRecord]]:
    """Read ``records`` (fakes with masks) and keep the images to score (module docstring):
    ``(images, selection counts, what was read and skipped, the records read)``."""
    detector.eval()
    dataset = ImageDataset(list(records), detector.transform(crop=crop), masks=True, mask_resize=mask_resize)
    pre = detector.config.preprocessing
    summary = RunSummary()
    xs, masks, shown, paths, read = [], [], [], [], []
    called = scored = 0
    for batch in iter_batches(dataset, batch_size=batch_size):
        summary.add(batch)
        if not len(batch):
            continue
        if batch.masks.dim() != 3:
            raise ForensicsError("a multi-crop transform gives several crops per image: use --crop none or center")
        read += [dataset.records[i] for i in batch.indices]
        fake = detector(batch.images.to(detector.device)).float().cpu().numpy().reshape(-1) >= threshold
        called += int(fake.sum())
        for j in np.flatnonzero(np.ones_like(fake) if all_fakes else fake):
            if limit is not None and len(paths) >= limit:
                break
            xs.append(batch.images[j])
            masks.append(batch.masks[j].numpy().astype(bool))
            shown.append(to_uint8(batch.images[j:j + 1], pre.mean, pre.std)[0])
            paths.append(batch.paths[j])
            scored += int(fake[j])
    selection = Selection(threshold, len(read), called, None, called, scored, False, all_fakes)
    log.info("%s: %s", detector.name, selection.line())
    if not called:
        raise ForensicsError(f"{detector.name}: no fake to score ({selection.line()}; {len(summary.skipped)} skipped)")
    sizes = sorted({tuple(x.shape[1:]) for x in xs})
    if len(sizes) > 1:
        raise ForensicsError(f"images of several sizes {sizes}: use a cropping transform (--crop center) or "
                             "evaluate one size at a time")
    summary.used = len(paths)
    data = ImageSet(torch.stack(xs), np.stack(masks), np.stack(shown), paths, summary)
    return data, selection, summary, read


def load_layout_fakes(detector: Detector, records: Sequence[ImageRecord], layout: str, name: str, **read_kwargs: Any
                      ) -> tuple[ImageSet, Selection, DataCounts, list[ImageRecord]]:
    """:func:`partition` then :func:`read_fakes` (``read_kwargs``): ``(images to score, selection, counts,
    records read)``; the reader's listed skips come first in the images' ``summary.skipped``."""
    kept, counts, listed = partition(records, layout, name)
    if not kept:
        raise ForensicsError(f"no fake with a mask to score in set {name!r} ({layout} layout): "
                             + " ".join(counts.lines()[:1]))
    data, selection, summary, read = read_fakes(detector, kept, **read_kwargs)
    null = sum(why.startswith(NO_MASK) for _, why in summary.skipped)   # a null Parquet mask cell, found when read
    counts.fakes_without_mask_dropped += null
    counts.unreadable_skipped, counts.fakes_read = len(summary.skipped) - null, len(read)
    summary.total += len(listed)
    summary.skipped[:0] = listed
    return data, selection, counts, read
