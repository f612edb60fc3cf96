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
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import provenance
from ..data import ImageRecord
from ..data.color import DEFAULT_ABLATION, ColorAblation
from ..data.perturb import Perturbation, PerturbedTransform, Protocol, get_protocol, sweep
from ..detectors import Detector
from ..detectors.preprocess import CropAveraging, build_ten_crop_transform
from ..errors import DatasetLayoutError, ForensicsError
from ..io import atomic_path, atomic_write_csv, atomic_write_json, json_safe
from ..metrics import accuracies, binary_metrics, gmean_threshold, mean_row
from .inference import Predictions, predict_records

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
        cal = (accuracies(y, p, threshold, inclusive) if math.isfinite(threshold)
               else dict.fromkeys(("acc", "r_acc", "f_acc"), float("nan")))
        row["threshold"] = float(threshold)
        row.update({f"{k}_cal": v for k, v in cal.items()})
    return row


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
class EvalResult:
    """Per-set rows (fractions), the calibrated thresholds used, the run's settings and the
    per-image predictions. ``mean`` is the unweighted mean row over sets."""

    rows: dict[str, dict[str, float]]
    thresholds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Predictions] = field(default_factory=dict)

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

    def write(self, out_dir: str | Path, stem: str, predictions: bool = True) -> dict[str, Path]:
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
    predictions of the same set (:func:`compare_rgb_gray`, :func:`evaluate_perturbations`).
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


# ---------------------------------------------------------------------------- colour ablation
@dataclass
class ColourComparison:
    """RGB vs colour-ablated runs of the same sets (T-FF; docs/colour.md; ``gray`` holds the ablated run,
    grayscale by default, any :mod:`forensics.data.color` ablation otherwise); the ablated
    accuracies are read at the RGB thresholds. ``ap_drop`` = RGB AP - ablated AP (fractions).
    Columns are suffixed ``_gray`` for grayscale and ``_<ablation>`` for another ablation."""

    rgb: EvalResult
    gray: EvalResult
    ablation: str = DEFAULT_ABLATION

    @property
    def suffix(self) -> str:
        return "gray" if self.ablation == "grayscale" else self.ablation

    def to_frame(self):
        import pandas as pd
        rgb, gray, sfx = self.rgb.to_frame(), self.gray.to_frame(), self.suffix
        frame = pd.DataFrame({"ap_rgb": rgb["ap"], f"ap_{sfx}": gray["ap"], "ap_drop": rgb["ap"] - gray["ap"],
                              "acc_rgb": rgb["acc"], f"acc_{sfx}": gray["acc"]})
        for col in ("r_acc_cal", "f_acc_cal", "acc_cal"):
            if col in rgb.columns:
                frame[f"{col}_rgb"], frame[f"{col}_{sfx}"] = rgb[col], gray[col]
        if "threshold" in rgb.columns:
            frame["threshold"] = rgb["threshold"]
        return frame

    def eval_results(self) -> list[EvalResult]:
        return [self.rgb, self.gray]

    @property
    def ap_drop(self) -> dict[str, float]:
        return self.to_frame()["ap_drop"].to_dict()

    def format(self) -> str:
        """``{set}: AP {rgb:.1f} -> {gray:.1f} (drop {drop:.1f})`` per set and for the mean, in %."""
        frame = self.to_frame()
        ablated = frame[f"ap_{self.suffix}"]
        return "\n".join(f"{'Mean' if name == MEAN else name}: AP {100 * r.ap_rgb:.1f} -> {100 * ablated[name]:.1f} "
                          f"(drop {100 * r.ap_drop:.1f})" for name, r in frame.iterrows())

    def format_table(self) -> str:
        return format_percent(self.to_frame())

    def write(self, out_dir: str | Path, stem: str) -> dict[str, Path]:
        """``<stem>-rgb.*``, ``<stem>-gray.*`` (``<stem>-<ablation>.*`` for another ablation; as
        :meth:`EvalResult.write`) and ``<stem>-ap-drop.csv``."""
        paths = {f"rgb_{k}": v for k, v in self.rgb.write(out_dir, f"{stem}-rgb").items()}
        paths.update({f"gray_{k}": v for k, v in self.gray.write(out_dir, f"{stem}-{self.suffix}").items()})
        paths["csv"] = atomic_write_csv(Path(out_dir) / f"{stem}-ap-drop.csv", self.to_frame())
        return paths


def compare_rgb_gray(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *, calibrate: bool = True,
                     ablation: str = DEFAULT_ABLATION, rgb: EvalResult | None = None,
                     **options: Any) -> ColourComparison:
    """Evaluate ``sets`` on RGB and on grayscale images (T-FF; docs/colour.md): thresholds (with
    ``calibrate``, the default there) are G-mean calibrated on the RGB predictions of each set and
    reused for grayscale. ``ablation``: another colour ablation of :mod:`forensics.data.color`
    instead of grayscale; ``rgb``: an RGB run of the same sets already computed (reused). ``options``
    go to :func:`evaluate_sets` (crop, batch_size, ...). The colour analysis built on this is
    :mod:`forensics.analysis.color`."""
    if rgb is None:
        rgb = evaluate_sets(detector, sets, calibrate=calibrate, **options)
    elif calibrate and not rgb.thresholds:
        raise ValueError("calibrate=True needs an RGB run made with calibrate=True")
    gray = evaluate_sets(detector, sets, ablation=ablation, thresholds=rgb.thresholds if calibrate else None,
                         **options)
    return ColourComparison(rgb, gray, ablation)


# ---------------------------------------------------------------------------- perturbations
CLEAN = "clean"


@dataclass
class PerturbationStudy:
    """A clean baseline and one run per perturbation, on the same sets (thresholds, when
    calibrated, from the baseline)."""

    baseline: EvalResult
    runs: list[tuple[Perturbation, EvalResult]]

    def conditions(self) -> list[tuple[str, Perturbation | None, EvalResult]]:
        return [(CLEAN, None, self.baseline)] + [(p.label(), p, r) for p, r in self.runs]

    def eval_results(self) -> list[EvalResult]:
        return [result for _, _, result in self.conditions()]

    def to_frame(self):
        """Long format: one row per (condition, set) incl. each condition's mean row; ``level`` is
        NaN for the clean baseline and for randomly drawn levels."""
        import pandas as pd
        frames = []
        for label, pert, result in self.conditions():
            level = pert.level if pert is not None and pert.level is not None else float("nan")
            frames.append(result.to_frame().reset_index().assign(
                condition=label, kind=pert.kind if pert is not None else CLEAN, level=float(level)))
        frame = pd.concat(frames, ignore_index=True)
        first = ["condition", "kind", "level", "set"]
        return frame[first + [c for c in frame.columns if c not in first]]

    def table(self, metric: str = "ap"):
        """Conditions x sets (plus ``mean``) of one metric (fractions): the k-vs-AP-style table."""
        import pandas as pd
        table = pd.DataFrame({label: result.to_frame()[metric] for label, _, result in self.conditions()}).T
        table.index.name = "condition"
        return table

    def format(self, metric: str = "ap") -> str:
        return format_percent(self.table(metric))

    def plot(self, path: str | Path, metric: str = "ap") -> list[Path]:
        """Line plot of ``metric`` (%) against the level, one thin line per set and a thick mean,
        the clean baseline's mean dashed; written as ``<path>.png`` and ``<path>.pdf`` (atomic).
        Only fixed-level runs of one kind are plotted."""
        from matplotlib.figure import Figure
        runs = [(p, r) for p, r in self.runs if p.level is not None]
        kinds = {p.kind for p, _ in runs}
        if len(kinds) != 1:
            raise ValueError(f"plot needs fixed-level runs of one kind, got {sorted(kinds) or 'none'}")
        runs.sort(key=lambda pr: pr[0].level)
        levels = [p.level for p, _ in runs]
        fig = Figure(figsize=(6, 4), constrained_layout=True)
        ax = fig.add_subplot()
        for name in self.baseline.rows:
            ax.plot(levels, [100 * r.rows[name][metric] for _, r in runs], marker="o", lw=1, alpha=0.6, label=name)
        ax.plot(levels, [100 * r.mean[metric] for _, r in runs], marker="s", lw=2.5, color="black", label="mean")
        ax.axhline(100 * self.baseline.mean[metric], ls="--", color="gray", label="clean mean")
        ax.set_xlabel(f"{runs[0][0].kind} {runs[0][0].parameter}")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        out = []
        for suffix in (".png", ".pdf"):
            target = Path(str(path) + suffix)
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=150)
            out.append(target)
        return out

    def write(self, out_dir: str | Path, stem: str, plot: bool = True) -> dict[str, Path]:
        """``<stem>.csv`` (long), ``<stem>-ap.csv`` (table), ``<stem>.json`` and, with ``plot`` and
        fixed levels of one kind, ``<stem>-ap.png/.pdf``."""
        out = Path(out_dir)
        paths = {"csv": atomic_write_csv(out / f"{stem}.csv", self.to_frame(), index=False),
                 "table": atomic_write_csv(out / f"{stem}-ap.csv", self.table("ap"))}
        atomic_write_json(out / f"{stem}.json", json_safe(
            {label: result.to_dict() for label, _, result in self.conditions()}))
        paths["json"] = out / f"{stem}.json"
        fixed = {p.kind for p, _ in self.runs if p.level is not None}
        if plot and len(fixed) == 1:
            paths["png"], paths["pdf"] = self.plot(out / f"{stem}-ap")
        return paths


def evaluate_perturbations(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]],
                           perturbations: Iterable[Perturbation], *, calibrate: bool = False,
                           baseline: EvalResult | None = None, **options: Any) -> PerturbationStudy:
    """A clean baseline (or ``baseline``, already computed) and one :func:`evaluate_sets` run per
    perturbation; with ``calibrate`` every run is read at the baseline's G-mean thresholds.
    ``options`` go to :func:`evaluate_sets` (crop, protocol, seed, batch_size, ...)."""
    clean = {k: v for k, v in options.items() if k not in ("protocol", "seed")}
    if baseline is None:
        baseline = evaluate_sets(detector, sets, calibrate=calibrate, **clean)
    if calibrate and not baseline.thresholds:
        raise ValueError("calibrate=True needs a calibrated baseline (evaluate_sets(..., calibrate=True))")
    thresholds = baseline.thresholds if calibrate else None
    runs = []
    for pert in perturbations:
        log.info("perturbation %s", pert.label())
        runs.append((pert, evaluate_sets(detector, sets, perturbation=pert, thresholds=thresholds, **options)))
    return PerturbationStudy(baseline, runs)


def evaluate_sweep(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], kind: str,
                   levels: Sequence[float] | None = None, *, reference_bugs: bool = False,
                   **options: Any) -> PerturbationStudy:
    """:func:`evaluate_perturbations` over the fixed levels of ``kind`` (default: its standard
    levels, :data:`forensics.data.perturb.SWEEP_LEVELS`)."""
    return evaluate_perturbations(detector, sets, sweep(kind, levels, reference_bugs=reference_bugs), **options)
