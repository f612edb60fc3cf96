"""Open-set attribution metrics (docs/attribution.md), as fractions in [0, 1].

Notation: ``known_scores`` s_i of the known test samples (real + known generators), ``unknown_scores``
t_u of the held-out generators; a higher score means "more known" (maximum softmax probability,
or kNN similarity). Known samples are the positive class.

- :func:`auroc`: P(s > t) + ½ P(s = t) over all (known, unknown) pairs, the standard definition
  (the Mann-Whitney statistic, equal to ``sklearn.metrics.roc_auc_score``). ``ties="reference"``
  counts ties as failures (0), which is what the reference's merge-sort ROC computes exactly;
  with k = 1 kNN (every score 1.0) it gives 0 instead of 0.5.
- :func:`tnr_at_tpr`: the threshold keeps at least ``tpr`` of the knowns (score >= threshold);
  TNR = fraction of unknowns strictly below it.
- :func:`oscr`: open-set classification rate (Dhamija et al., NeurIPS 2018), the area under the
  curve (FPR(θ), CCR(θ)) with CCR(θ) = #{known, correctly classified, s >= θ} / |K| and
  FPR(θ) = #{unknown, t >= θ} / |U|, θ sweeping over all scores. The curve runs from (0, 0) to
  (1, accuracy); a tie between a known and an unknown score is a diagonal step (trapezoid), so
  OSCR = Σ_{i correct} Σ_u [s_i > t_u] + ½ [s_i = t_u] / (|K| |U|), and OSCR <= accuracy.
  :func:`oscr_reference` is the ARPL/POSE code the reference uses: the CCR count is off by one
  position against the FPR count, the curve is closed with an explicit (1, 1) point (so it
  credits an accuracy of 1 on the last segment) and ties depend on sort order (a stable sort here).
- :func:`closed_set`: accuracy, macro-F1, macro-recall, per-class recall and confusion matrix of
  the known test samples (scikit-learn).

Leaf module: imports numpy / scikit-learn only.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TIES = ("half", "reference")


def _scores(x: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty: open-set metrics need both known and unknown samples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite scores")
    return a


def pair_counts(known_scores: Sequence[float], unknown_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per known sample: how many unknown scores are strictly lower, and how many are equal."""
    s = _scores(known_scores, "known_scores")
    t = np.sort(_scores(unknown_scores, "unknown_scores"))
    lower = np.searchsorted(t, s, side="left")
    equal = np.searchsorted(t, s, side="right") - lower
    return lower, equal


def auroc(known_scores: Sequence[float], unknown_scores: Sequence[float], ties: str = "half") -> float:
    """Known-vs-unknown AUROC (knowns positive): P(s > t) + w P(s = t), w = ½ (``"half"``,
    standard) or 0 (``"reference"``: the reference's ROC construction)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    lower, equal = pair_counts(known_scores, unknown_scores)
    weight = 0.5 if ties == "half" else 0.0
    n_pairs = lower.size * len(np.asarray(unknown_scores).reshape(-1))
    return float((lower.sum() + weight * equal.sum()) / n_pairs)


def tnr_at_tpr(known_scores: Sequence[float], unknown_scores: Sequence[float], tpr: float = 0.95) -> float:
    """TNR of unknowns at the highest threshold that still accepts at least ``tpr`` of the knowns.

    Threshold θ = the ⌈tpr·|K|⌉-th largest known score; accepted: score >= θ; TNR = #{t < θ} / |U|.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    s = np.sort(_scores(known_scores, "known_scores"))[::-1]
    t = _scores(unknown_scores, "unknown_scores")
    need = int(np.ceil(tpr * s.size - 1e-9))
    threshold = s[max(need, 1) - 1]
    return float(np.mean(t < threshold))


def oscr(known_scores: Sequence[float], correct: Sequence[bool], unknown_scores: Sequence[float]) -> float:
    """Open-set classification rate: area under CCR vs FPR (see the module docstring); ties = ½."""
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    s = _scores(known_scores, "known_scores")
    if ok.shape != s.shape:
        raise ValueError(f"correct has {ok.size} entries for {s.size} known scores")
    lower, equal = pair_counts(s, unknown_scores)
    n_u = len(np.asarray(unknown_scores).reshape(-1))
    return float((lower[ok].sum() + 0.5 * equal[ok].sum()) / (s.size * n_u))


def oscr_reference(known_scores: Sequence[float], correct: Sequence[bool], unknown_scores: Sequence[float]) -> float:
    """OSCR as the reference computes it (ARPL ``compute_oscr``), kept for comparison."""
    s = _scores(known_scores, "known_scores")
    t = _scores(unknown_scores, "unknown_scores")
    ok = np.asarray(correct, dtype=float).reshape(-1)
    k_target = np.concatenate([ok, np.zeros(t.size)])
    u_target = np.concatenate([np.zeros(s.size), np.ones(t.size)])
    order = np.concatenate([s, t]).argsort(kind="stable")
    k_sorted, u_sorted = k_target[order], u_target[order]
    n = order.size
    ccr = np.zeros(n + 2)
    fpr = np.zeros(n + 2)
    k_tail = np.concatenate([np.cumsum(k_sorted[::-1])[::-1], [0.0]])  # k_tail[j] = sum(k_sorted[j:])
    u_tail = np.concatenate([np.cumsum(u_sorted[::-1])[::-1], [0.0]])
    cut = np.arange(n - 1)
    ccr[cut] = k_tail[cut + 1] / s.size
    fpr[cut] = u_tail[cut] / t.size
    ccr[n + 1] = fpr[n + 1] = 1.0
    roc = sorted(zip(fpr.tolist(), ccr.tolist()), reverse=True)
    return float(sum((roc[j][0] - roc[j + 1][0]) * (roc[j][1] + roc[j + 1][1]) / 2.0 for j in range(n + 1)))


def closed_set(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1, macro-recall, per-class recall and the confusion matrix (rows = true)."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    if y.size == 0:
        raise ValueError("closed-set metrics need at least one known sample")
    labels = list(range(n_classes))
    return {
        "accuracy": float(np.mean(y == p)),
        "macro_f1": float(f1_score(y, p, labels=labels, average="macro", zero_division=0)),
        "macro_recall": float(recall_score(y, p, labels=labels, average="macro", zero_division=0)),
        "recall": [float(r) for r in recall_score(y, p, labels=labels, average=None, zero_division=0)],
        "confusion": confusion_matrix(y, p, labels=labels).tolist(),
    }


def open_set(known_proba: np.ndarray, known_labels: Sequence[int], known_scores: Sequence[float],
             unknown_scores: Sequence[float], tpr: float = 0.95) -> dict[str, Any]:
    """Every metric of one evaluation: closed-set metrics of the argmax of ``known_proba`` and the
    open-set ones of the scores (``auroc``: ties ½; ``auroc_reference``: ties 0; ``oscr`` and
    ``oscr_reference``; ``tnr_at_tpr95`` for ``tpr`` = 0.95)."""
    proba = np.asarray(known_proba)
    y = np.asarray(known_labels, dtype=int)
    pred = proba.argmax(axis=1)
    out = closed_set(y, pred, proba.shape[1])
    correct = pred == y
    out.update({
        "auroc": auroc(known_scores, unknown_scores, "half"),
        "auroc_reference": auroc(known_scores, unknown_scores, "reference"),
        f"tnr_at_tpr{round(tpr * 100)}": tnr_at_tpr(known_scores, unknown_scores, tpr),
        "oscr": oscr(known_scores, correct, unknown_scores),
        "oscr_reference": oscr_reference(known_scores, correct, unknown_scores),
    })
    return out
