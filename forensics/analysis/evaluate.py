"""Evaluate a detector on test sets: per-set accuracy / AP as the references print them, G-mean
calibrated thresholds, the grayscale (colour) ablation, ten-crop scoring and perturbation sweeps.

Specs followed:

- CNNDetection evaluation (docs/evaluation.md): every set scored separately, never resized,
  centre-crop 224 (``crop="center"``) or full resolution (``crop="none"``); ``acc`` = accuracy of
  ``p > 0.5``, ``r_acc``/``f_acc`` on reals/fakes, AP with fake as the positive class.
- T-FF (docs/evaluation.md, docs/colour.md): mean/std of P(fake) per class; the G-mean threshold calibrated per
  set on the unmasked RGB predictions and the accuracies at it; grayscale = ITU-R 601-2 luma x3 in
  the detector transform (``grayscale=True``); in the colour analysis the grayscale accuracies are
  read at the **RGB** threshold, and every set is calibrated (ProGAN included).
- RINE (docs/evaluation.md): ``{set}: {100 acc:.1f} / {100 ap:.1f}`` lines and a ``Mean`` line
  (unweighted over sets); TenCrop = logits of the 10 crops averaged, then the sigmoid; the
  perturbation protocol of :mod:`forensics.data.perturb`.

Deliberate differences, named:

- Calibration is available for every set (T-FF keeps 0.5 for ProGAN in the dropout analysis, docs/dropout.md;
  pass ``thresholds`` to impose any threshold). A set with a single class gets a NaN threshold.
- ``inclusive`` changes only the calibrated threshold's comparison (``p >= t`` instead of the
  reference's ``p > t``, metrics module docstring); accuracy at 0.5 is always ``p > 0.5``.
- The mean row is :func:`forensics.metrics.mean_row` (NaN-skipping); its counts are totals.
- Unreadable files are skipped and counted per set (``n_skipped``), never scored.
- The detector is built once for all sets (CNNDetection's ``eval.py`` rebuilds it per set).

This module scores sets (:func:`evaluate_sets`, :class:`EvalResult`); the RGB vs grayscale comparison lives in
:mod:`forensics.analysis.color_comparison`, the perturbation studies in :mod:`forensics.analysis.perturbation_study`
(both importable from here too).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import provenance
from ..data import ImageRecord
from ..data.color import ColorAblation
from ..data.perturb import Perturbation, PerturbedTransform, Protocol, get_protocol
from ..detectors import Detector
from ..detectors.preprocess import CropAveraging, build_ten_crop_transform
from ..errors import DatasetLayoutError, ForensicsError
from ..io import atomic_write_csv, atomic_write_json, json_safe
from ..metrics import accuracies, binary_metrics, gmean_threshold, mean_row
from .inference import Predictions, predict_records
from .result import AnalysisResult

log = logging.getLogger(__name__)

#: ``center``/``none``: the detector's own transform with that crop policy; ``ten``: TenCrop.
CROP_MODES: tuple[str, ...] = ("center", "none", "ten")
#: Columns of every per-set row (fractions, not %); counts; columns added by calibration.
METRIC_COLUMNS: tuple[str, ...] = ("acc", "ap", "r_acc", "f_acc", "y_real_mean", "y_real_std",
                                   "y_fake_mean", "y_fake_std")
COUNT_COLUMNS: tuple[str, ...] = ("n_real", "n_fake", "n_skipped")
CALIBRATED_COLUMNS: tuple[str, ...] = ("threshold", "acc_cal", "r_acc_cal", "f_acc_cal")
MEAN = "mean"


# ---------------------------------------------------------------------------- scoring
def resolve_ablation(grayscale: bool = False, ablation: str | None = None) -> str | None:
    """The colour ablation a run applies (``grayscale=True`` is ``ablation="grayscale"``; ``None``: RGB)."""
    if grayscale and ablation not in (None, "grayscale"):
        raise ValueError(f"grayscale=True contradicts ablation={ablation!r}")
    name = "grayscale" if grayscale else ablation
    if name is not None:
        ColorAblation(name)  # checks the name
    return name


def eval_transform(detector: Detector, crop: str | None = None, crop_size: int | None = None,
                   grayscale: bool = False, ablation: str | None = None) -> Callable:
    """The detector's eval transform for a crop mode (``None``: the detector's own policy), with
    the colour ablation ``ablation`` (:mod:`forensics.data.color`; ``grayscale=True`` = ``"grayscale"``,
    torchvision's ``Grayscale(3)`` as the reference) before normalisation."""
    if crop not in (None, *CROP_MODES):
        raise ValueError(f"crop must be one of {CROP_MODES} or None, got {crop!r}")
    name = resolve_ablation(grayscale, ablation)
    gray = name == "grayscale"
    op = ColorAblation(name) if name is not None and not gray else None
    if crop == "ten":
        pre = detector.config.preprocessing
        if crop_size is not None:
            pre = detector.config.with_preprocessing(crop_size=crop_size).preprocessing
        return build_ten_crop_transform(pre, grayscale=gray, pixel_op=op)
    return detector.transform(crop=crop, crop_size=crop_size, grayscale=gray, pixel_op=op)


def set_metrics(predictions: Predictions, threshold: float | None = None, inclusive: bool = False
                ) -> dict[str, float]:
    """One set's row: metrics at 0.5 (:func:`binary_metrics`), counts, and with ``threshold`` the
    accuracies at it (``*_cal``, ``p > t``, or ``p >= t`` with ``inclusive``)."""
    y, p = predictions.labels, predictions.probs
    m = binary_metrics(y, p, threshold=0.5)
    row = {k: m[k] for k in METRIC_COLUMNS}
    row.update(n_real=m["n_real"], n_fake=m["n_fake"], n_skipped=len(predictions.summary.skipped))
    if threshold is not None:
        row["threshold"] = float(threshold)
        row.update({f"{k}_cal": v for k, v in threshold_accuracies(y, p, threshold, inclusive).items()})
    return row


def threshold_accuracies(labels: np.ndarray, probs: np.ndarray, threshold: float, inclusive: bool = False
                         ) -> dict[str, float]:
    """``acc``, ``r_acc``, ``f_acc`` at ``threshold`` (:func:`forensics.metrics.accuracies`); all NaN when the
    threshold is NaN (a set without a calibrated threshold). Shared by the evaluation and the dropout rows."""
    if not math.isfinite(threshold):
        return dict.fromkeys(("acc", "r_acc", "f_acc"), float("nan"))
    return accuracies(labels, probs, threshold, inclusive)


def calibrated_threshold(name: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """G-mean threshold of one set's predictions (docs/evaluation.md); NaN, with a warning, for a set
    holding one class only."""
    y = np.asarray(labels)
    if (y == 0).any() and (y == 1).any():
        return gmean_threshold(y, probs)
    log.warning("%s: only one class was scored; no G-mean threshold (NaN)", name)
    return float("nan")


# ---------------------------------------------------------------------------- results
@dataclass
class EvalResult(AnalysisResult):
    """Per-set rows (fractions), the calibrated thresholds used, the run's settings and the
    per-image predictions. ``mean`` is the unweighted mean row over sets. ``settings`` (with the provenance) is
    its :attr:`record`."""

    rows: dict[str, dict[str, float]]
    thresholds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Predictions] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    @property
    def mean(self) -> dict[str, float]:
        metrics = {n: {k: v for k, v in r.items() if k not in COUNT_COLUMNS} for n, r in self.rows.items()}
        out = mean_row(metrics)
        out.update({k: int(sum(r[k] for r in self.rows.values())) for k in COUNT_COLUMNS})
        return out

    @property
    def columns(self) -> list[str]:
        calibrated = CALIBRATED_COLUMNS if self.thresholds else ()
        return [*METRIC_COLUMNS, *calibrated, *COUNT_COLUMNS]

    def to_frame(self):
        """One row per set plus ``mean``; index ``set``; fractions, not %."""
        import pandas as pd
        frame = pd.DataFrame.from_dict({**self.rows, MEAN: self.mean}, orient="index")[self.columns]
        frame.index.name = "set"
        return frame.astype({k: int for k in COUNT_COLUMNS})

    def predictions_frame(self):
        """Every scored image: set, path, label, logit, P(fake) (as :meth:`Predictions.to_frame`)."""
        import pandas as pd
        frames = [p.to_frame().assign(set=name) for name, p in self.predictions.items()]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame[["set", *[c for c in frame.columns if c != "set"]]] if len(frame) else frame

    def format(self) -> str:
        """The reference's lines: ``{set}: {100 acc:.1f} / {100 ap:.1f}``, then ``Mean: acc / ap``."""
        lines = [f"{name}: {100 * r['acc']:.1f} / {100 * r['ap']:.1f}" for name, r in self.rows.items()]
        mean = self.mean
        lines.append(f"Mean: {100 * mean['acc']:.1f} / {100 * mean['ap']:.1f}")
        return "\n".join(lines)

    def format_table(self) -> str:
        """Every column, in % (thresholds as fractions, counts as integers)."""
        return format_percent(self.to_frame())

    def skipped(self) -> list[tuple[str, str]]:
        return [item for p in self.predictions.values() for item in p.summary.skipped]

    def eval_results(self) -> list["EvalResult"]:
        """The evaluation runs this result holds (itself; a comparison or study: each of its runs)."""
        return [self]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": self.rows, "mean": self.mean, "thresholds": self.thresholds,
                "skipped": {name: p.summary.to_dict()["skipped"] for name, p in self.predictions.items()}}

    def write(self, out_dir: str | Path, stem: str = "eval", *, predictions: bool = True) -> dict[str, Path]:
        """``<stem>.csv`` (the table), ``<stem>.json`` (settings, rows, mean, thresholds, skipped
        files) and, with ``predictions``, ``<stem>-predictions.csv`` (per image); all atomic."""
        out = Path(out_dir)
        paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
        atomic_write_csv(paths["csv"], self.to_frame())
        atomic_write_json(paths["json"], json_safe(self.to_dict()))
        if predictions:
            paths["predictions"] = atomic_write_csv(out / f"{stem}-predictions.csv", self.predictions_frame(), index=False)
        return paths


def format_percent(frame) -> str:
    """A result frame as text: metric columns x100 with 1 decimal, thresholds 4 decimals."""
    shown = frame.copy()
    formats: dict[str, Callable] = {}
    for col in shown.columns:
        if col in COUNT_COLUMNS:
            formats[col] = "{:d}".format
        elif col.startswith("threshold"):
            formats[col] = "{:.4f}".format
        elif shown[col].dtype.kind == "f":
            shown[col] = 100 * shown[col]
            formats[col] = "{:.1f}".format
    return shown.to_string(formatters=formats, na_rep="nan")


# ---------------------------------------------------------------------------- evaluation
def evaluate_sets(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *, crop: str | None = None,
                  crop_size: int | None = None, batch_size: int = 32, grayscale: bool = False,
                  ablation: str | None = None, perturbation: Perturbation | None = None, protocol: str | Protocol = "always", seed: int = 0,
                  calibrate: bool = False, thresholds: Mapping[str, float] | None = None,
                  inclusive: bool = False, num_workers: int = 0, progress: bool = False) -> EvalResult:
    """Score every set and compute its row (see :func:`set_metrics`) and the mean row.

    ``crop``: ``center``/``none``/``ten`` (``None``: the detector's policy); ``crop_size``
    overrides its crop size. ``grayscale``: T-FF's colour ablation (docs/colour.md); ``ablation``: any
    colour ablation of :mod:`forensics.data.color` by name (``"grayscale"`` is the same as ``grayscale=True``).
    ``perturbation``: applied before the transform under ``protocol`` with per-image generators
    from ``seed`` (:class:`~forensics.data.perturb.PerturbedTransform`). ``batch_size`` counts
    images (a ten-crop batch runs ``10 * batch_size`` crops).

    Thresholds: ``thresholds`` (set -> threshold, e.g. ``baseline.thresholds`` of an RGB,
    unperturbed run) adds the accuracies at those thresholds; ``calibrate=True`` without
    ``thresholds`` calibrates each set on this run's own predictions (G-mean, T-FF; docs/evaluation.md), which is
    refused for a grayscale or perturbed run: their threshold must come from the RGB/unperturbed
    predictions of the same set (:func:`~forensics.analysis.color_comparison.compare_rgb_gray`,
    :func:`~forensics.analysis.perturbation_study.evaluate_perturbations`).
    """
    if not sets:
        raise ValueError("no test sets given")
    unlabelled = [name for name, records in sets.items() if any(r.label is None for r in records)]
    if unlabelled:
        raise DatasetLayoutError(f"sets with unlabelled images cannot be evaluated: {', '.join(unlabelled)}")
    own_calibration = calibrate and thresholds is None
    ablation = resolve_ablation(grayscale, ablation)
    if own_calibration and (ablation is not None or perturbation is not None):
        raise ValueError("a grayscale or perturbed run must use the thresholds calibrated on the RGB, unperturbed "
                         "predictions: run evaluate_sets(..., calibrate=True) first and pass "
                         "thresholds=baseline.thresholds (compare_rgb_gray / evaluate_perturbations do this)")
    missing = [name for name in sets if thresholds is not None and name not in thresholds]
    if missing:
        raise KeyError(f"no threshold given for set(s) {', '.join(missing)}")

    transform = eval_transform(detector, crop, crop_size, ablation=ablation)
    protocol = get_protocol(protocol)
    if perturbation is not None:
        transform = PerturbedTransform(perturbation, transform, seed=seed, protocol=protocol)
    model = CropAveraging(detector) if crop == "ten" else detector

    rows: dict[str, dict[str, float]] = {}
    used: dict[str, float] = {}
    preds: dict[str, Predictions] = {}
    for name, records in sets.items():
        p = predict_records(detector, records, batch_size=batch_size, transform=transform, num_workers=num_workers,
                            model=model,
                            progress=progress, desc=f"{detector.name} {name}")
        p.summary.log(log)
        if not p.records:
            raise ForensicsError(f"{name}: none of its {len(records)} images could be read")
        threshold = calibrated_threshold(name, p.labels, p.probs) if own_calibration else None
        if thresholds is not None:
            threshold = float(thresholds[name])
        rows[name] = set_metrics(p, threshold, inclusive)
        preds[name] = p
        if threshold is not None:
            used[name] = threshold
        log.info("%s: acc %.1f / ap %.1f (%d real, %d fake)", name, 100 * rows[name]["acc"], 100 * rows[name]["ap"],
                 rows[name]["n_real"], rows[name]["n_fake"])
    settings = {
        "detector": detector.name, "weights": detector.weights_source,
        "provenance": provenance.collect(detector, files=sets),
        "crop": crop or detector.config.preprocessing.crop,
        "crop_size": crop_size or detector.config.preprocessing.crop_size,
        "grayscale": ablation == "grayscale", "ablation": ablation, "perturbation": perturbation.label() if perturbation is not None else None,
        "protocol": protocol.name if perturbation is not None else None,
        "seed": seed if perturbation is not None else None,
        "threshold_source": ("own predictions (G-mean)" if own_calibration
                             else "given" if thresholds is not None else None),
        "inclusive_threshold": inclusive, "batch_size": batch_size,
    }
    return EvalResult(rows, used, settings, preds)
