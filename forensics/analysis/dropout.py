"""Feature-map dropout sensitivity (T-FF; docs/dropout.md): zero the top-k / random-k / low-k feature maps of
an FF-RS ranking and measure how much a detector's AP and calibrated accuracies fall.

Feature-map sets (docs/dropout.md), from the FF-RS ranking of the fakes (the ``*-fake.csv``):

- top-k = the k highest omega; low-k = the k lowest (:func:`forensics.analysis.fmap_ranking.topk`/``lowk``);
- random-k = k maps drawn outside the top-k, ``replicas`` times (default 5), from
  ``numpy.random.default_rng(seed)`` (:func:`random_k`). ``random_mode="without_replacement"``
  (default) draws k distinct maps uniformly from the maps outside the top-k. ``"reference"``
  follows the reference's sampler (docs/dropout.md): draw len(all) indices with replacement, de-duplicate
  (~63 % unique), walk them "in set order", skip top-k members, keep the first k. The reference's
  set order is CPython's hash order of key strings, randomised per process and unseeded; here it is
  emulated by a seeded shuffle of the unique draws, so runs are repeatable.

Masking (docs/dropout.md): each variant's keys are zeroed with :meth:`Detector.mask` at ``point``
(``pre_bn``, the reference's raw conv output, default; ``post_bn`` is the principled variant of
docs/dropout.md). Any :class:`Detector` works (ResNet-50, EfB0, RINE's ``blocks.<b>`` keys).

One pass (:func:`score_variants`): every batch is decoded and transformed once, then run through the
unmasked model and every masked variant (top-k, low-k, each random replica; or every k of a sweep)
before the next batch is read. The reference builds one deep copy per variant and re-reads the data
for each.

Metrics (docs/dropout.md), per test set, on ``p = sigmoid(logit)``: AP (fake positive) and the
real/fake/overall accuracies at the set's threshold: 0.5 for the sets in ``fixed_threshold_sets``
(the reference: ``progan`` only), otherwise the G-mean threshold calibrated on the UNMASKED model's
predictions of that set (:func:`forensics.metrics.gmean_threshold`), reused for every masked
variant. Accuracy is ``p > t`` as the reference (``inclusive=True``: ``p >= t``). Random-k: the
replicas' P(fake) are averaged per image and the metrics computed on that ensemble (the reference,
default); ``per_replica=True`` reports instead the mean (and std, ddof=0) of the replicas' metrics.
Both are always computed and stored (:attr:`DropoutResult.replica_rows`).

Outputs (docs/dropout.md; :meth:`DropoutResult.write`): a tidy table (set x variant x metric), JSON,
and per set the reference's ``<gan>-AP-#<N>-samples-no-crop.csv`` and
``<gan>-CALIBRATED_ACC-#<N>-samples-no-crop.csv``, metrics in percent.

Deliberate differences from the reference, named:

- The threshold column ``original_threshold_calibrated`` is written as a fraction; the reference
  multiplies it by 100 too (a quirk: it is a probability, docs/dropout.md).
- The AP CSV is named ``...-no-crop.csv`` (the reference's says ``crop`` although nothing is
  cropped); with ``crop="center"`` both files end in ``-center-crop.csv``.
- N in the file names is the number of images scored in the set (the reference: the first class
  loader's size when it has class folders).
- Random-k is seeded (reference: unseeded) and, by default, sampled without replacement.
- Unreadable files are skipped and listed (``summaries``), never scored.
- :func:`sweep_k` evaluates many k in one pass, with AP only (the reference's ``find_topk.py``,
  docs/dropout.md, evaluates one k per run, at 0.5 on ``num_instances`` images per class).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .. import distributed, provenance
from ..data import ImageRecord, RunSummary
from ..detectors import Detector, FeatureMapKey
from ..errors import ForensicsError
from ..io import atomic_write_csv, atomic_write_json, json_safe
from ..plots import save_figure
from ..metrics import binary_metrics
from .evaluate import calibrated_threshold, eval_transform, threshold_accuracies
from .dropout_sets import RANDOM_MODES, FeatureMapSets, feature_map_sets, random_k, replica_name
from .fmap_ranking import Ranking
from .inference import Predictions
from .result import AnalysisResult

log = logging.getLogger(__name__)

# The feature-map sets live in .dropout_sets; they are part of this module's interface too.
__all__ = ["RANDOM_MODES", "VARIANTS", "METRICS", "ORIGINAL", "FeatureMapSets", "feature_map_sets", "random_k",
           "replica_name", "score_variants", "variant_metrics", "base_threshold", "DropoutResult",
           "dropout_analysis", "KSweep", "sweep_k"]

#: Variants of the main analysis, in the reference's column order.
VARIANTS: tuple[str, ...] = ("original", "topk", "randomk", "lowk")
ORIGINAL = "original"
#: Metric columns of one (set, variant) row: at 0.5, the threshold used, and at that threshold.
METRICS: tuple[str, ...] = ("ap", "acc", "r_acc", "f_acc", "threshold", "acc_cal", "r_acc_cal", "f_acc_cal")
_CAL = ("r_acc", "f_acc", "acc")  # the reference's column order in the CALIBRATED_ACC CSV


# ---------------------------------------------------------------------------- one-pass scoring
def score_variants(detector: Detector, records: Sequence[ImageRecord], variants: Mapping[str, Sequence[FeatureMapKey]],
                   *, point: str = "pre_bn", batch_size: int = 32, transform: Callable | None = None,
                   num_workers: int = 0, progress: bool = False, desc: str | None = None
                   ) -> tuple[dict[str, Predictions], RunSummary]:
    """Score ``records`` with the unmasked detector (``"original"``) and each masked variant in ONE
    pass: each batch is decoded and transformed once, then run through every model (each masked
    forward inside :meth:`Detector.mask`) before the next batch. Returns ``{variant: Predictions}``
    (same images, same order) and the run's summary of skipped files."""
    if ORIGINAL in variants:
        raise ValueError(f"{ORIGINAL!r} is the unmasked model; name the masked variants otherwise")
    checked = {name: detector.check_keys(keys) for name, keys in variants.items()}
    records = list(records)
    run = distributed.current()
    shard = run.shard(records, block=batch_size, label=desc or f"dropout {detector.name}",
                      state={"indices": [], "logits": {name: [] for name in (ORIGINAL, *checked)}})
    device = detector.device
    was_training = detector.training
    detector.eval()
    try:
        with torch.inference_mode():
            for batch in shard.batches(transform or detector.transform(), batch_size, num_workers=num_workers,
                                       progress=(desc or f"dropout {detector.name}") if progress else None):
                if batch.images is not None and len(batch.indices):
                    images = batch.images.to(device)
                    logits = shard.state["logits"]
                    logits[ORIGINAL].append(detector(images).float().cpu())
                    for name, keys in checked.items():
                        with detector.mask(keys, point=point):
                            logits[name].append(detector(images).float().cpu())
                    shard.state["indices"].extend(batch.indices)
    finally:
        detector.train(was_training)
    summary = shard.finish()
    empty = np.zeros(0, dtype=np.float32)
    stacked = {name: torch.cat(v).numpy() if v else empty for name, v in shard.state["logits"].items()}
    indices = shard.state["indices"]
    if run.sharded:
        indices, rows = run.gather_rows(indices, list(np.stack(list(stacked.values()), axis=1)))
        table = np.array(rows, dtype=np.float32).reshape(len(rows), len(stacked))
        stacked = {name: table[:, j] for j, name in enumerate(stacked)}
    used = [records[i] for i in indices]
    preds = {name: Predictions(list(used), v, summary) for name, v in stacked.items()}
    return preds, summary


# ---------------------------------------------------------------------------- metrics
def variant_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, inclusive: bool = False
                    ) -> dict[str, float]:
    """One (set, variant) row (fractions): AP and accuracies at 0.5, the ``threshold`` used, and the
    accuracies at it (``*_cal``; NaN when the threshold is NaN)."""
    m = binary_metrics(labels, probs, threshold=0.5)
    row = {"ap": m["ap"], "acc": m["acc"], "r_acc": m["r_acc"], "f_acc": m["f_acc"], "threshold": float(threshold)}
    cal = threshold_accuracies(labels, probs, threshold, inclusive)
    row.update({f"{key}_cal": cal[key] for key in _CAL})
    return row


def base_threshold(name: str, labels: np.ndarray, probs: np.ndarray, fixed: bool) -> float:
    """The set's threshold (docs/dropout.md): 0.5 if ``fixed``, else G-mean on the unmasked ``probs``
    (NaN, with a warning, for a set holding one class only)."""
    return 0.5 if fixed else calibrated_threshold(name, labels, probs)


def _mean_std(rows: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    stack = {key: np.array([r[key] for r in rows], dtype=np.float64) for key in METRICS}
    return ({key: float(v.mean()) for key, v in stack.items()}, {key: float(v.std()) for key, v in stack.items()})


@dataclass
class DropoutResult(AnalysisResult):
    """Outcome of :func:`dropout_analysis` (fractions, not %).

    ``rows[set][variant]``: :data:`METRICS` for ``original``, ``topk``, ``randomk`` (ensemble, or
    the replica mean with ``per_replica``) and ``lowk``; ``randomk_std[set]``: std over replicas
    (only with ``per_replica``); ``replica_rows[set]``: every replica's own row; ``thresholds``:
    the threshold of each set; ``predictions[set][variant]``: per-image outputs (``original``,
    ``topk``, ``lowk``, ``randomk#r``); ``summaries``: skipped files per set; ``settings``: how it was run,
    with the provenance, and :attr:`record` (its annotations land there)."""

    sets: FeatureMapSets
    rows: dict[str, dict[str, dict[str, float]]]
    replica_rows: dict[str, list[dict[str, float]]]
    randomk_std: dict[str, dict[str, float]]
    thresholds: dict[str, float]
    predictions: dict[str, dict[str, Predictions]] = field(repr=False, default_factory=dict)
    summaries: dict[str, RunSummary] = field(repr=False, default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    def counts(self, name: str) -> int:
        """Images scored in set ``name`` (the N of the reference's file names)."""
        return len(self.predictions[name][ORIGINAL].records)

    def to_frame(self):
        """Tidy table: one row per (set, variant, metric) with ``value`` and ``std`` (NaN except
        random-k with ``per_replica``); fractions."""
        import pandas as pd
        records = []
        for name, variants in self.rows.items():
            for variant, row in variants.items():
                std = self.randomk_std.get(name, {}) if variant == "randomk" else {}
                records += [{"set": name, "variant": variant, "metric": metric, "value": value,
                             "std": std.get(metric, float("nan"))} for metric, value in row.items()]
        return pd.DataFrame.from_records(records, columns=["set", "variant", "metric", "value", "std"])

    def reference_rows(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The reference's AP row and CALIBRATED_ACC row of set ``name`` (docs/dropout.md): metrics in
        percent, ``original_threshold_calibrated`` as a fraction (the reference: x100)."""
        rows, label = self.rows[name], f"{name}/{self.sets.k}"
        ap: dict[str, Any] = {"gan_name/topk": label, "original_ap": 100 * rows[ORIGINAL]["ap"]}
        ap.update({f"{v}_masked_ap": 100 * rows[v]["ap"] for v in VARIANTS[1:]})
        acc: dict[str, Any] = {"gan_name/topk": label, "original_threshold_calibrated": self.thresholds[name]}
        for v in VARIANTS:
            prefix = v if v == ORIGINAL else f"{v}_masked"
            acc.update({f"{prefix}_{m}_calibrated": 100 * rows[v][f"{m}_cal"] for m in _CAL})
        return ap, acc

    def table(self):
        """The README's table (docs/dropout.md), in %: per set base / top-k / random-k / low-k AP, Real
        and GAN (the calibrated real and fake accuracies)."""
        import pandas as pd
        labels = {ORIGINAL: "base", "topk": "top-k", "randomk": "rand-k", "lowk": "low-k"}
        data = {name: {f"{labels[v]} {col}": 100 * rows[v][metric] for v in VARIANTS
                       for col, metric in (("AP", "ap"), ("Real", "r_acc_cal"), ("GAN", "f_acc_cal"))}
                for name, rows in self.rows.items()}
        frame = pd.DataFrame.from_dict(data, orient="index")
        frame.index.name = "set"
        return frame

    def format_table(self) -> str:
        return self.table().to_string(float_format="{:.1f}".format, na_rep="nan")

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "feature_map_sets": self.sets.to_dict(), "thresholds": self.thresholds,
                "rows": self.rows, "randomk_std": self.randomk_std, "replica_rows": self.replica_rows,
                "counts": {name: self.counts(name) for name in self.rows},
                "skipped": {name: s.to_dict()["skipped"] for name, s in self.summaries.items()}}

    def write(self, out_dir: str | Path, *, tag: str = "default", crop: str = "none") -> dict[str, Path]:
        """Write, atomically, ``dropout.csv`` (tidy table), ``dropout-table.csv`` (README table, %),
        ``dropout.json`` and per set, under ``<gan>_<tag>/`` (the reference's ``<gan>_<B>/``), the
        reference's AP and CALIBRATED_ACC CSVs (see the module docstring for their naming)."""
        import pandas as pd
        out = Path(out_dir)
        suffix = "no-crop" if crop == "none" else f"{crop}-crop"
        paths = {"tidy": atomic_write_csv(out / "dropout.csv", self.to_frame(), index=False),
                 "table": atomic_write_csv(out / "dropout-table.csv", self.table()),
                 "json": atomic_write_json(out / "dropout.json", json_safe(self.to_dict()))}
        for name in self.rows:
            ap, acc = self.reference_rows(name)
            folder, n = out / f"{name}_{tag}", self.counts(name)
            paths[f"{name}_ap"] = atomic_write_csv(folder / f"{name}-AP-#{n}-samples-{suffix}.csv", pd.DataFrame([ap]), index=False)
            paths[f"{name}_acc"] = atomic_write_csv(folder / f"{name}-CALIBRATED_ACC-#{n}-samples-{suffix}.csv", pd.DataFrame([acc]), index=False)
        return paths


def dropout_analysis(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], fmap_sets: FeatureMapSets, *,
                     point: str = "pre_bn", fixed_threshold_sets: Sequence[str] = ("progan",),
                     per_replica: bool = False, inclusive: bool = False, crop: str | None = "none",
                     crop_size: int | None = None, transform: Callable | None = None, batch_size: int = 32,
                     num_workers: int = 0, progress: bool = False) -> DropoutResult:
    """Feature-map dropout on every test set (docs/dropout.md): one pass per set (:func:`score_variants`),
    the set's threshold from the unmasked predictions (:func:`base_threshold`; 0.5 for
    ``fixed_threshold_sets``) reused for every variant, random-k as the per-image ensemble average
    of the replicas' P(fake) (or, with ``per_replica``, the mean of the replicas' metrics).

    ``crop``/``crop_size``: the detector's eval transform (``none`` = full resolution, as the
    reference); ``transform`` overrides it."""
    if not sets:
        raise ValueError("no test sets given")
    transform = transform or eval_transform(detector, crop, crop_size)
    variants = fmap_sets.variants()
    replicas = [replica_name(r) for r in range(len(fmap_sets.randomk))]
    fixed = set(fixed_threshold_sets)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    replica_rows: dict[str, list[dict[str, float]]] = {}
    stds: dict[str, dict[str, float]] = {}
    thresholds: dict[str, float] = {}
    all_preds: dict[str, dict[str, Predictions]] = {}
    summaries: dict[str, RunSummary] = {}
    for name, records in sets.items():
        preds, summary = score_variants(detector, records, variants, point=point, batch_size=batch_size,
                                        transform=transform, num_workers=num_workers, progress=progress,
                                        desc=f"dropout {detector.name} {name}")
        summary.log(log)
        if not summary.used:
            raise ForensicsError(f"{name}: none of its {len(records)} images could be read")
        y = preds[ORIGINAL].labels
        t = base_threshold(name, y, preds[ORIGINAL].probs, name in fixed)
        per = [variant_metrics(y, preds[r].probs, t, inclusive) for r in replicas]
        ensemble = variant_metrics(y, np.mean([preds[r].probs for r in replicas], axis=0), t, inclusive)
        mean, std = _mean_std(per)
        rows[name] = {v: variant_metrics(y, preds[v].probs, t, inclusive) for v in (ORIGINAL, "topk")}
        rows[name]["randomk"] = mean if per_replica else ensemble
        rows[name]["lowk"] = variant_metrics(y, preds["lowk"].probs, t, inclusive)
        if per_replica:
            stds[name] = std
        replica_rows[name], thresholds[name] = per, t
        all_preds[name], summaries[name] = preds, summary
        r = rows[name]
        log.info("%s (thr %.4f): AP base %.1f, top-%d %.1f, random-%d %.1f, low-%d %.1f", name, t,
                 100 * r[ORIGINAL]["ap"], fmap_sets.k, 100 * r["topk"]["ap"], fmap_sets.k, 100 * r["randomk"]["ap"],
                 fmap_sets.k, 100 * r["lowk"]["ap"])
    settings = {"detector": detector.name, "weights": detector.weights_source,
                "provenance": provenance.collect(detector, files=sets), "point": point, "k": fmap_sets.k,
                "replicas": len(replicas), "random_mode": fmap_sets.random_mode, "seed": fmap_sets.seed,
                "randomk_aggregate": "per_replica_mean" if per_replica else "ensemble_probability_mean",
                "fixed_threshold_sets": sorted(fixed), "threshold_source": "G-mean on the unmasked predictions",
                "inclusive_threshold": inclusive, "crop": crop, "crop_size": crop_size, "batch_size": batch_size,
                "transform": repr(transform)}
    return DropoutResult(fmap_sets, rows, replica_rows, stds, thresholds, all_preds, summaries, settings)


# ---------------------------------------------------------------------------- k sweep
@dataclass
class KSweep(AnalysisResult):
    """AP (fractions) of top-k / random-k (ensemble of the replicas) / low-k masking for each k,
    and the unmasked AP (docs/dropout.md); ``settings`` is its :attr:`record`."""

    ks: list[int]
    ap: dict[str, list[float]]
    baseline_ap: float
    settings: dict[str, Any] = field(default_factory=dict)
    sets: dict[int, FeatureMapSets] = field(repr=False, default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    def to_frame(self):
        import pandas as pd
        frame = pd.DataFrame({"k": self.ks, **{f"{v}_masked_ap": vals for v, vals in self.ap.items()}})
        return frame.assign(original_ap=self.baseline_ap)

    def plot(self, stem: str | Path, title: str | None = None) -> list[Path]:
        """AP (%) against k for the three variants, the unmasked AP dashed; written as
        ``<stem>.png`` and ``<stem>.pdf`` (atomic)."""
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6, 4), constrained_layout=True)
        ax = fig.add_subplot()
        for variant, label in (("topk", "top-k"), ("randomk", "random-k"), ("lowk", "low-k")):
            ax.plot(self.ks, [100 * v for v in self.ap[variant]], marker="o", label=f"{label} masked")
        ax.axhline(100 * self.baseline_ap, ls="--", color="gray", label="unmasked")
        ax.set_xlabel("k (feature maps masked)")
        ax.set_ylabel("AP (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        if title:
            ax.set_title(title)
        return save_figure(fig, Path(f"{stem}.png"))

    def write(self, out_dir: str | Path, *, stem: str = "k_vs_ap", title: str | None = None) -> dict[str, Path]:
        """``<stem>.csv`` (fractions), ``<stem>.json`` and the plot (PNG, PDF); atomic."""
        out = Path(out_dir)
        paths = {"csv": atomic_write_csv(out / f"{stem}.csv", self.to_frame(), index=False),
                 "json": atomic_write_json(out / f"{stem}.json", json_safe(
                     {"settings": self.settings, "ks": self.ks, "ap": self.ap, "original_ap": self.baseline_ap,
                      "sets": {k: s.to_dict() for k, s in self.sets.items()}}))}
        png, pdf = self.plot(out / stem, title)
        paths.update(plot_png=png, plot_pdf=pdf)
        return paths


def sweep_k(detector: Detector, records: Sequence[ImageRecord], ranking: Ranking, ks: Sequence[int], *,
            replicas: int = 1, seed: int = 0, random_mode: str = "without_replacement", point: str = "pre_bn",
            crop: str | None = "none", crop_size: int | None = None, transform: Callable | None = None,
            batch_size: int = 32, num_workers: int = 0, progress: bool = False) -> KSweep:
    """AP of top-k, random-k and low-k masking for every k of ``ks``, in ONE pass over ``records``
    (every k's variants share each decoded batch; docs/dropout.md). Random-k at each k:
    :func:`feature_map_sets` with ``seed``, ``replicas`` replicas averaged per image (default 1)."""
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("no k given")
    fmap_sets = {k: feature_map_sets(ranking, k, replicas=replicas, seed=seed, random_mode=random_mode) for k in ks}
    variants: dict[str, list[FeatureMapKey]] = {}
    for k, s in fmap_sets.items():
        variants[f"topk@{k}"], variants[f"lowk@{k}"] = s.topk, s.lowk
        variants.update({replica_name(r, k): keys for r, keys in enumerate(s.randomk)})
    preds, summary = score_variants(detector, records, variants, point=point, batch_size=batch_size,
                                    transform=transform or eval_transform(detector, crop, crop_size),
                                    num_workers=num_workers, progress=progress, desc=f"k sweep {detector.name}")
    summary.log(log)
    if not summary.used:
        raise ForensicsError(f"none of the {len(records)} images could be read")
    y = preds[ORIGINAL].labels

    def ap(probs: np.ndarray) -> float:
        return binary_metrics(y, probs)["ap"]
    out = {"topk": [ap(preds[f"topk@{k}"].probs) for k in ks],
           "randomk": [ap(np.mean([preds[replica_name(r, k)].probs for r in range(replicas)], axis=0)) for k in ks],
           "lowk": [ap(preds[f"lowk@{k}"].probs) for k in ks]}
    settings = {"detector": detector.name, "weights": detector.weights_source, "point": point, "replicas": replicas,
                "seed": seed, "random_mode": random_mode, "crop": crop, "n_images": summary.used,
                "n_skipped": len(summary.skipped)}
    return KSweep(ks, out, ap(preds[ORIGINAL].probs), settings, fmap_sets)
