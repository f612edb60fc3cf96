"""Run a detector over a list of image records: batched, any device, bad files listed not dropped.

:func:`predict_records` scores images; :func:`collect_activations` records reduced feature-map
activations (e.g. spatial maxima) in the same way; both through the shared batch loop
:func:`forensics.distributed.collect_rows` (sharded under ``torchrun``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .. import distributed
from ..data import ImageRecord, RunSummary
from ..detectors import Detector

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-image outputs of one detector run. ``records`` are the images actually scored (in input
    order); ``summary`` lists every skipped file with its reason."""

    records: list[ImageRecord]
    logits: np.ndarray
    summary: RunSummary = field(default_factory=RunSummary)

    @property
    def probs(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if r.label is None else r.label for r in self.records], dtype=int)

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({
            "path": [r.ref for r in self.records],
            "source": [r.source for r in self.records],
            "category": [r.category for r in self.records],
            "label": self.labels,
            "logit": self.logits.astype(np.float64),
            "p_fake": self.probs,
        })


def predict_records(detector: Detector, records: Sequence[ImageRecord], *, batch_size: int = 32,
                    transform: Callable | None = None, num_workers: int = 0, progress: bool = True,
                    desc: str | None = None, model: Callable[[torch.Tensor], torch.Tensor] | None = None
                    ) -> Predictions:
    """Score ``records`` with ``detector`` (on the detector's device) using its eval transform
    (or ``transform``). ``model``: what scores the batches instead of the detector itself, e.g. a
    :class:`~forensics.detectors.preprocess.CropAveraging` wrapper of it. Images of different sizes
    (no-crop evaluation) are batched by runs of equal size. Unreadable files are skipped and listed
    in the returned summary. Inside a :func:`forensics.distributed.session` (``torchrun``) the records are
    sharded over the ranks and the logits gathered back in input order (docs/distributed.md)."""
    records = list(records)
    device = detector.device
    score = model if model is not None else detector
    label = desc or f"predict {detector.name}"
    with torch.inference_mode():
        indices, rows, summary = distributed.collect_rows(
            records, lambda batch: {"logits": score(batch.images.to(device)).float()}, ("logits",),
            transform=transform or detector.transform(), batch_size=batch_size, num_workers=num_workers,
            label=label, progress=label if progress else None)
    logits = rows["logits"]
    out = logits.numpy() if logits is not None else np.zeros(0, dtype=np.float32)
    return Predictions([records[i] for i in indices], out, summary)


@dataclass
class Activations:
    """Per-image reduced activations of chosen feature maps: ``values[i, j]`` is image
    ``records[i]``'s value of ``keys[j]`` (e.g. its spatial max); skipped files in ``summary``."""

    records: list[ImageRecord]
    keys: list
    values: np.ndarray
    summary: RunSummary = field(default_factory=RunSummary)

    def column(self, key) -> np.ndarray:
        """The values of one feature map (a key or its string), one per image."""
        return self.values[:, [str(k) for k in self.keys].index(str(key))]


def collect_activations(detector: Detector, records: Sequence[ImageRecord], keys: Sequence, *,
                        point: str = "pre_bn", reduce: str | Callable = "spatial_max", batch_size: int = 32,
                        transform: Callable | None = None, num_workers: int = 0, progress: bool = True,
                        desc: str | None = None) -> Activations:
    """One pass of ``records`` through ``detector`` recording every key of ``keys`` at ``point``
    reduced by ``reduce`` (default the spatial max, T-FF's ``AdaptiveMaxPool2d(1)``; docs/patches.md).
    (Not :func:`forensics.detectors.probes.record_activations`, the hook context this pass uses per batch.)
    All keys are recorded in the same pass (the reference reloads the model and reruns the data per
    key). Unreadable files are skipped and listed in ``summary``."""
    keys = detector.check_keys(keys)
    records = list(records)

    def step(batch):
        detector(batch.images.to(detector.device))
        return {"values": torch.stack([rec.key(k).reshape(len(batch.indices)) for k in keys], dim=1).double()}

    label = desc or f"activations {detector.name}"
    with torch.inference_mode(), detector.record(keys, point=point, reduce=reduce) as rec:
        indices, rows, summary = distributed.collect_rows(
            records, step, ("values",), transform=transform or detector.transform(), batch_size=batch_size,
            num_workers=num_workers, label=label, progress=label if progress else None)
    values = rows["values"].numpy() if rows["values"] is not None else np.zeros((0, len(keys)))
    return Activations([records[i] for i in indices], list(keys), values, summary)
