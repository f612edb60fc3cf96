"""Per-group answers of an evaluation: AP, accuracy at 0.5 and at the best threshold (the calibration
gap), per generator, per real source, per file format and per image-size bucket.

Groups of one set's scored images:

- ``generator``: the fakes of one ``source``; ``real_source``: the reals of one ``source``;
- ``format``: JPEG / PNG / WebP / other, from the file's header (not its suffix);
- ``size``: the image's shorter side, in the buckets of :data:`SIZE_BUCKETS`.

A group holding one class only (a generator, a real source, or e.g. "PNG" on a set whose reals are
all JPEG) is scored against **every** image of the other class of the same set (``pool``: ``vs all
reals`` / ``vs all fakes``), as per-generator AP is usually reported; a group with both classes is
scored on its own (``within``). On the pool: ``ap``; ``acc`` = balanced accuracy
(``(r_acc + f_acc) / 2``, so a small group is not swamped by a large other class) at 0.5;
``acc_best`` = the highest balanced accuracy over all thresholds (Youden's J point of the ROC curve,
``p >= t``), optimistic as UFD's "best threshold"; ``gap = acc_best - acc`` (the calibration gap);
``group_acc``: the accuracy of the group's own images at 0.5.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..data import ImageRecord
from ..io import atomic_write_csv, atomic_write_json, json_safe
from .inference import Predictions
from .result import AnalysisResult

#: Shorter side (pixels) -> bucket name: (upper bound inclusive, name).
SIZE_BUCKETS: tuple[tuple[float, str], ...] = ((256, "<=256"), (512, "257-512"), (1024, "513-1024"),
                                              (math.inf, ">1024"))
FORMAT_NAMES: dict[str, str] = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
GROUPINGS: tuple[str, ...] = ("generator", "real_source", "format", "size")
COLUMNS: tuple[str, ...] = ("set", "grouping", "group", "n_real", "n_fake", "pool", "ap", "acc", "acc_best",
                            "threshold_best", "gap", "group_acc")


def header_info(record: ImageRecord) -> tuple[str, int, int]:
    """``(format, width, height)`` of a record's image from its header only (``("other", 0, 0)`` when
    unreadable: such files were skipped by the scoring anyway). EXIF rotation is not applied (the
    shorter side is the same)."""
    from PIL import Image
    try:
        data = io.BytesIO(record.image.read()) if record.image is not None else record.path
        with Image.open(data) as im:
            return FORMAT_NAMES.get(im.format or "", "other"), im.size[0], im.size[1]
    except Exception:  # noqa: BLE001 - an unreadable header is reported as "other", never a crash
        return "other", 0, 0


def size_bucket(width: int, height: int) -> str:
    side = min(width, height)
    return next(name for bound, name in SIZE_BUCKETS if side <= bound)


def best_balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """``(threshold, balanced accuracy)`` at the ROC point maximising ``tpr - fpr`` (predict fake when
    ``p >= t``); NaN for a one-class input."""
    from sklearn.metrics import roc_curve
    if not ((labels == 0).any() and (labels == 1).any()):
        return float("nan"), float("nan")
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = int(np.argmax(tpr - fpr))
    t = float(thresholds[best])
    return (float(np.nextafter(probs.max(), np.inf)) if not np.isfinite(t) else t), float((tpr[best] + 1 - fpr[best]) / 2)


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    pred = probs > threshold
    parts = [float((pred[labels == c] == bool(c)).mean()) for c in (0, 1) if (labels == c).any()]
    return float(np.mean(parts)) if parts else float("nan")


def group_row(labels: np.ndarray, probs: np.ndarray, member: np.ndarray) -> dict[str, Any]:
    """One group's metrics (module docstring): ``member`` marks the group's images among the set's."""
    from sklearn.metrics import average_precision_score
    y = labels[member]
    has = {c: bool((y == c).any()) for c in (0, 1)}
    pool = member.copy()
    name = "within"
    for c in (0, 1):
        if not has[c]:
            pool |= labels == c
            name = f"vs all {'reals' if c == 0 else 'fakes'}"
    yp, pp = labels[pool], probs[pool]
    two = (yp == 0).any() and (yp == 1).any()
    acc = balanced_accuracy(yp, pp) if two else float("nan")
    t_best, acc_best = best_balanced_accuracy(yp, pp)
    return {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "pool": name,
            "ap": float(average_precision_score(yp, pp)) if two else float("nan"), "acc": acc,
            "acc_best": acc_best, "threshold_best": t_best, "gap": acc_best - acc,
            "group_acc": float(((probs[member] > 0.5) == (y == 1)).mean())}


def set_groups(name: str, predictions: Predictions, infos: list[tuple[str, int, int]] | None = None
               ) -> list[dict[str, Any]]:
    """Every group row of one set (``infos``: :func:`header_info` per scored record; read when None)."""
    records = predictions.records
    infos = infos if infos is not None else [header_info(r) for r in records]
    labels, probs = predictions.labels, predictions.probs
    keys = {
        "generator": [r.source if r.label == 1 else None for r in records],
        "real_source": [r.source if r.label == 0 else None for r in records],
        "format": [fmt for fmt, _, _ in infos],
        "size": [size_bucket(w, h) for _, w, h in infos],
    }
    rows = []
    for grouping in GROUPINGS:
        values = np.array(keys[grouping], dtype=object)
        for group in sorted({v for v in values if v is not None}, key=str):
            member = values == group
            rows.append({"set": name, "grouping": grouping, "group": group, **group_row(labels, probs, member)})
    return rows


@dataclass
class Breakdown(AnalysisResult):
    """The group rows of every set of an evaluation (:func:`breakdown`), as a table and files; ``settings`` is its
    :attr:`record`."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def format(self) -> str:
        """``set / grouping / group``: counts, AP, acc at 0.5 and at the best threshold, gap (in %)."""
        lines = [f"{'set':<14} {'grouping':<11} {'group':<22} {'real':>5} {'fake':>5}  {'AP':>5} {'acc':>5} "
                 f"{'best':>5} {'gap':>5}  pool"]
        for r in self.rows:
            vals = " ".join(f"{100 * r[k]:5.1f}" if np.isfinite(r[k]) else "  nan" for k in ("ap", "acc", "acc_best", "gap"))
            lines.append(f"{r['set'][:14]:<14} {r['grouping']:<11} {str(r['group'])[:22]:<22} {r['n_real']:>5} "
                         f"{r['n_fake']:>5}  {vals}  {r['pool']}")
        return "\n".join(lines)

    def eval_results(self) -> list:
        return []

    def write(self, out_dir: str | Path, stem: str = "groups") -> dict[str, Path]:
        """``<stem>.csv`` (one row per set, grouping and group) and ``<stem>.json`` (settings, rows); atomic."""
        out = Path(out_dir)
        paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
        atomic_write_csv(paths["csv"], self.to_frame(), index=False)
        atomic_write_json(paths["json"], json_safe({"settings": self.settings, "rows": self.rows}))
        return paths


def breakdown(predictions: Mapping[str, Predictions], settings: Mapping[str, Any] | None = None) -> Breakdown:
    """The per-group rows of every set's predictions (e.g. ``EvalResult.predictions``)."""
    rows = [row for name, p in predictions.items() if len(p.records) for row in set_groups(name, p)]
    return Breakdown(rows, dict(settings or {}))

