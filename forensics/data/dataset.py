"""A torch ``Dataset`` over :class:`ImageRecord` lists that never drops a file silently.

Bad files (unreadable, truncated, too large...) do not raise inside the data loader: the sample
carries the reason instead, :func:`collate` moves it to ``Batch.skipped``, and a
:class:`RunSummary` accumulated over the batches lists every skipped file for the caller to log
and write. :func:`iter_batches` batches images of different sizes (no-crop evaluation) by grouping
consecutive images of equal size, in dataset order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypedDict

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_tensor

from ..errors import ImageReadError
from .images import DEFAULT_MAX_PIXELS, load_rgb, load_rgb_bytes
from .masks import MaskTransform, load_mask
from .records import ImageRecord

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]
UNKNOWN_LABEL = -1


class Sample(TypedDict):
    """One item of :class:`ImageDataset`: ``image`` is None exactly when ``error`` is set."""

    image: torch.Tensor | None
    label: int  # 0 real, 1 fake, -1 unknown
    index: int  # position in the dataset's records
    path: str
    error: str | None
    mask: torch.Tensor | None  # with masks=True: uint8 0/1, the image's geometry (else None)


def read_image(record: ImageRecord, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``record``'s image: its file, or the Parquet cell it names (:func:`load_rgb`'s rules)."""
    if record.image is None:
        return load_rgb(record.path, max_pixels=max_pixels)
    try:
        data = record.image.read()
    except Exception as exc:  # pyarrow / file errors on one row: that row is skipped, not the run
        raise ImageReadError(f"{record.ref}: unreadable Parquet row ({type(exc).__name__}: {exc})") from exc
    return load_rgb_bytes(data, record.ref, max_pixels=max_pixels)


class ImageDataset(Dataset):
    """Decodes ``records[i]`` with :func:`load_rgb` and applies ``transform`` (PIL RGB -> tensor,
    e.g. ``detector.transform()``; ``None`` = ``to_tensor``, values in [0, 1]).

    ``__getitem__`` never raises for a bad file: the sample's ``error`` holds the reason. An
    exception raised by ``transform`` on a readable image is a bug, not a bad file, and propagates
    (with a note naming the file).

    ``masks=True``: each sample also carries the record's mask (:func:`~forensics.data.masks.load_mask`:
    reals without one get zeros) through the transform's geometry (:class:`~forensics.data.masks.MaskTransform`,
    nearest neighbour), aligned pixel for pixel with the image tensor; a fake without a mask, an
    unreadable mask or one of another size (without ``mask_resize``) makes the sample a skip.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Transform | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, masks: bool = False, mask_resize: bool = False):
        self.records = list(records)
        self.transform = transform if transform is not None else to_tensor
        self.max_pixels = max_pixels
        self.mask_transform = MaskTransform(self.transform) if masks else None
        self.mask_resize = mask_resize

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        label = UNKNOWN_LABEL if rec.label is None else int(rec.label)
        sample: Sample = {"image": None, "label": label, "index": index, "path": rec.ref, "error": None,
                          "mask": None}
        if rec.skip:  # met by the reader, nothing to decode: a listed skip
            sample["error"] = rec.skip
            return sample
        try:
            image = read_image(rec, self.max_pixels)
            mask = load_mask(rec, image.size, self.mask_resize) if self.mask_transform is not None else None
        except ImageReadError as exc:  # MaskError included
            sample["error"] = _reason(exc, sample["path"])
            return sample
        if mask is not None:
            sample["mask"] = self.mask_transform(mask)
        try:
            sample["image"] = self.transform(image)
        except Exception as exc:
            exc.add_note(f"while transforming {rec.path}")
            raise
        return sample


def _reason(exc: ImageReadError, path: str) -> str:
    """The error message without its leading ``"<path>: "`` (the path is kept alongside)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


@dataclass
class Batch:
    """The readable images of a group of samples, plus the files that were skipped.

    ``images`` is ``[N, C, H, W]`` or None when every sample was skipped (``N == 0``); ``labels``
    (``int64``, -1 = unknown), ``indices`` and ``paths`` follow ``images``. ``skipped`` holds
    ``(path, reason)`` in dataset order. ``masks``: ``[N, H, W]`` uint8 (or ``[N, n_crops, H, W]``),
    aligned with ``images``, when the dataset reads masks; else None.
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    indices: list[int]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)


def collate(batch: Sequence[Sample]) -> Batch:
    """Stack the good samples of ``batch`` (all images must have one shape) and list the others."""
    good = [s for s in batch if s["error"] is None]
    skipped = [(s["path"], s["error"]) for s in batch if s["error"] is not None]
    shapes = {tuple(s["image"].shape) for s in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch have different shapes {sorted(shapes)} (e.g. {good[0]['path']}); "
                         "use iter_batches, which groups equal sizes, or a cropping transform")
    return Batch(images=torch.stack([s["image"] for s in good]) if good else None,
                 labels=torch.tensor([s["label"] for s in good], dtype=torch.int64),
                 indices=[s["index"] for s in good],
                 paths=[s["path"] for s in good],
                 skipped=skipped,
                 masks=torch.stack([s["mask"] for s in good]) if good and good[0].get("mask") is not None else None)


def _single(sample: Sample) -> Sample:
    """Identity collate for the per-item loader (module level so worker processes can pickle it)."""
    return sample


def iter_batches(dataset: Dataset, batch_size: int, num_workers: int = 0, **loader_kwargs: Any
                 ) -> Iterator[Batch]:
    """Batches of up to ``batch_size`` readable images, in dataset order, for images of any sizes.

    Samples are loaded one by one through a ``DataLoader`` (``num_workers`` processes, order kept)
    and grouped: a batch is emitted when it is full or when the next image's shape differs, so a
    set whose images share a size is batched normally and a mixed set still runs without cropping.
    Skipped files are attached to the batch being filled when they are met; a batch may therefore
    hold only skipped files (``len(batch) == 0``). Pass every batch to :meth:`RunSummary.add`.
    ``loader_kwargs`` go to the ``DataLoader`` (e.g. ``pin_memory``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                        collate_fn=_single, **loader_kwargs)
    pending: list[Sample] = []
    shape: tuple[int, ...] | None = None
    count = 0
    for sample in loader:
        if sample["error"] is None:
            if count and (count == batch_size or tuple(sample["image"].shape) != shape):
                yield collate(pending)
                pending, count = [], 0
            shape = tuple(sample["image"].shape)
            count += 1
        pending.append(sample)
    if pending:
        yield collate(pending)


@dataclass
class RunSummary:
    """What a run did with its inputs: ``total`` files met, ``used`` images scored, and every
    ``skipped`` file with its reason. Nothing is dropped silently: log it and write it out."""

    total: int = 0
    used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, batch: Batch) -> Batch:
        """Count ``batch`` (returned unchanged, so ``for b in batches: summary.add(b)`` chains)."""
        self.total += len(batch) + len(batch.skipped)
        self.used += len(batch)
        self.skipped.extend(batch.skipped)
        return batch

    def log(self, logger: logging.Logger | None = None) -> None:
        """One warning per skipped file, then a count line (a warning if anything was skipped)."""
        logger = logger or log
        for path, reason in self.skipped:
            logger.warning("skipped %s: %s", path, reason)
        level = logging.WARNING if self.skipped else logging.INFO
        logger.log(level, "used %d of %d images; skipped %d file(s) (unreadable, or listed by the reader)",
                   self.used, self.total, len(self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "used": self.used, "num_skipped": len(self.skipped),
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}
