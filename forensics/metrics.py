"""Detection metrics as the reference code computes them (a leaf: imports nothing of the project).

Conventions (CNNDetection ``validate``, T-FF ``utils/general.py``): label 1 = fake = positive,
``p = sigmoid(logit) = P(fake)``; an image is called fake when ``p > threshold`` (real accuracy =
mean of ``p <= threshold`` over reals). AP is scikit-learn's ``average_precision_score``.

The G-mean calibrated threshold (T-FF; docs/evaluation.md) is the ROC threshold maximising
``sqrt(TPR * (1 - FPR))``. [quirk] roc_curve's threshold means ``p >= t`` is positive but the
reference then scores accuracy with ``p > t``; that is the default here (``inclusive=False``),
``inclusive=True`` gives the consistent ``p >= t``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_curve


def _arrays(y_true: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y, s


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """AP with fake as the positive class; NaN when only one class is present."""
    y, s = _arrays(y_true, scores)
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    return float(average_precision_score(y, s))


def predicted_fake(scores: np.ndarray, threshold: float, inclusive: bool = False) -> np.ndarray:
    return scores >= threshold if inclusive else scores > threshold


def accuracies(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5,
               inclusive: bool = False) -> dict[str, float]:
    """Overall, real and fake accuracy at ``threshold`` (NaN for a class with no images)."""
    y, s = _arrays(y_true, scores)
    fake = predicted_fake(s, threshold, inclusive)
    correct = fake == (y == 1)

    def mean(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")
    return {"acc": mean(np.ones_like(y, dtype=bool)), "r_acc": mean(y == 0), "f_acc": mean(y == 1)}


def gmean_threshold(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """ROC threshold maximising the G-mean sqrt(TPR * (1 - FPR)) (first maximum, as numpy argmax)."""
    y, s = _arrays(y_true, scores)
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("G-mean calibration needs both real and fake images")
    fpr, tpr, thresholds = roc_curve(y, s)
    gmeans = np.sqrt(tpr * (1.0 - fpr))
    best = int(np.argmax(gmeans))
    t = float(thresholds[best])
    return float(np.nextafter(s.max(), np.inf)) if not np.isfinite(t) else t


def oracle_threshold(y_true: Sequence[int], scores: Sequence[float], reference: bool = True) -> float:
    """UFD's "best threshold" (computed on the test set itself, so optimistic): the midpoint when the
    classes separate, else the score with the highest accuracy (predict fake when ``s >= t``; ties go
    to the later candidate in the reference's order, reals first then fakes)."""
    y, s = _arrays(y_true, scores)
    real, fake = s[y == 0], s[y == 1]
    if real.size and fake.size and real.max() <= fake.min():
        return float((real.max() + fake.min()) / 2)
    order = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)]) if reference else np.arange(len(s))
    best_t, best_acc = float(s[order[0]]), -1.0
    for t in s[order]:
        acc = float(((s >= t) == (y == 1)).mean())
        if acc >= best_acc:
            best_t, best_acc = float(t), acc
    return best_t


def score_stats(y_true: Sequence[int], scores: Sequence[float]) -> dict[str, float]:
    """Mean and std of P(fake) for reals and for fakes (numpy std, ddof=0, as the reference)."""
    y, s = _arrays(y_true, scores)
    out = {}
    for name, label in (("real", 0), ("fake", 1)):
        v = s[y == label]
        out[f"y_{name}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"y_{name}_std"] = float(v.std()) if v.size else float("nan")
    return out


def binary_metrics(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5,
                   inclusive: bool = False) -> dict[str, float]:
    """AP, accuracies at ``threshold``, score statistics and counts in one dict (fractions, not %)."""
    y, s = _arrays(y_true, scores)
    return {"ap": average_precision(y, s), **accuracies(y, s, threshold, inclusive), **score_stats(y, s),
            "threshold": float(threshold), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}


def mean_row(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over test sets of every numeric column (the reference's "mean" row)."""
    keys = [k for k in next(iter(rows.values())) if k not in ("n_real", "n_fake")]
    return {k: float(np.nanmean([r[k] for r in rows.values()])) for k in keys}
