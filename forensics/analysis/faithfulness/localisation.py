"""Localisation of a heatmap against a ground-truth mask of the manipulated region.

Per image (``heat`` ``[H, W]``, ``mask`` bool ``[H, W]``; batched over a leading axis):

- **relevance mass accuracy** (Arras et al., Information Fusion 2022): the share of the positive
  relevance that falls inside the mask, ``sum(h+ in mask) / sum(h+)``;
- **relevance rank accuracy** (ibid.): of the ``K = |mask|`` highest-relevance pixels, the share
  inside the mask;
- **pointing game** (Zhang et al., IJCV 2018): 1 if a pixel of maximal relevance lies in the mask;
- **AUROC** of the heatmap as a per-pixel predictor of the mask (scikit-learn).

- **pixel IoU, precision, recall, F1** of the heatmap binarised at its ``k`` highest pixels, as
  localisation benchmarks report them (IMDL-BenCo, X-AIGD): ``k`` = the mask's area by default (then
  precision = recall = F1 = rank accuracy, and IoU = r / (2 - r)), or the top ``1 - q`` fraction of the
  pixels with ``quantile=q``.

A heatmap that knows nothing about the mask scores the mask's area fraction on mass/rank accuracy and
the pointing game (in expectation), 0.5 on AUROC, and the matching values on the overlap scores:
:func:`chance_levels`. Definitions follow Quantus 0.6
(``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``PointingGame``, ``AUC``) on non-negative maps;
an optional test checks them against it.
"""
from __future__ import annotations

import numpy as np

METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game", "auroc", "iou", "precision", "recall", "f1")
OVERLAP = ("iou", "precision", "recall", "f1")


def _flat(heat, mask) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(heat, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if h.shape != m.shape:
        raise ValueError(f"heatmap shape {h.shape} differs from mask shape {m.shape}")
    if h.ndim == 2:
        h, m = h[None], m[None]
    return h.reshape(h.shape[0], -1), m.reshape(m.shape[0], -1)


def mass_accuracy(heat, mask) -> np.ndarray:
    """Share of the positive relevance inside the mask, per image (NaN: no positive relevance or empty mask)."""
    h, m = _flat(heat, mask)
    pos = np.clip(h, 0, None)
    total = pos.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pos * m).sum(1) / total
    out[(total <= 0) | ~m.any(1)] = np.nan
    return out


def rank_accuracy(heat, mask) -> np.ndarray:
    """Share of the ``|mask|`` highest-relevance pixels inside the mask (stable order on ties)."""
    h, m = _flat(heat, mask)
    out = np.full(h.shape[0], np.nan)
    for i in range(h.shape[0]):
        k = int(m[i].sum())
        if k:
            top = np.argsort(-h[i], kind="stable")[:k]
            out[i] = m[i, top].mean()
    return out


def pointing_game(heat, mask) -> np.ndarray:
    """1.0 if a pixel of maximal relevance lies in the mask, else 0.0 (ties: any of them)."""
    h, m = _flat(heat, mask)
    hit = ((h == h.max(1, keepdims=True)) & m).any(1).astype(np.float64)
    hit[~m.any(1)] = np.nan
    return hit


def auroc(heat, mask) -> np.ndarray:
    """Area under the ROC curve of the heatmap as a detector of the mask's pixels (NaN: one-class mask)."""
    from sklearn.metrics import roc_auc_score
    h, m = _flat(heat, mask)
    out = np.full(h.shape[0], np.nan)
    for i in range(h.shape[0]):
        if 0 < m[i].sum() < m.shape[1]:
            out[i] = roc_auc_score(m[i], h[i])
    return out


def _top_k(h: np.ndarray, k: int) -> np.ndarray:
    """Bool map of the ``k`` highest values of a flat map (stable order on ties)."""
    out = np.zeros(h.shape, dtype=bool)
    out[np.argsort(-h, kind="stable")[:k]] = True
    return out


def overlap(heat, mask, quantile: float | None = None) -> dict[str, np.ndarray]:
    """Pixel IoU, precision, recall and F1 of the binarised heatmap against the mask, per image: the
    ``|mask|`` highest pixels (``quantile=None``) or the top ``1 - quantile`` fraction of the pixels."""
    h, m = _flat(heat, mask)
    out = {k: np.full(h.shape[0], np.nan) for k in OVERLAP}
    for i in range(h.shape[0]):
        area = int(m[i].sum())
        if not area:
            continue
        k = area if quantile is None else int(round((1 - quantile) * h.shape[1]))
        pred = _top_k(h[i], max(k, 1))
        inter, union = float((pred & m[i]).sum()), float((pred | m[i]).sum())
        p, r = inter / pred.sum(), inter / area
        out["iou"][i], out["precision"][i], out["recall"][i] = inter / union, p, r
        out["f1"][i] = 2 * p * r / (p + r) if p + r else 0.0
    return out


def localisation(heat, mask, quantile: float | None = None) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS`, per image (``quantile``: see :func:`overlap`)."""
    return {"mass_accuracy": mass_accuracy(heat, mask), "rank_accuracy": rank_accuracy(heat, mask),
            "pointing_game": pointing_game(heat, mask), "auroc": auroc(heat, mask),
            **overlap(heat, mask, quantile)}


def chance_levels(mask, quantile: float | None = None) -> dict[str, np.ndarray]:
    """What a heatmap unrelated to the mask scores on average, per image: with mask area ``a`` and a kept
    fraction ``t`` (``a``, or ``1 - quantile``), precision ``a``, recall ``t``, F1 ``2at / (a + t)`` and IoU
    ``at / (a + t - at)`` (expected intersection ``a * t`` of the pixels)."""
    _, m = _flat(np.zeros(np.shape(mask)), mask)
    area = m.mean(1)
    kept = area if quantile is None else np.full(len(area), np.round((1 - quantile) * m.shape[1]) / m.shape[1])
    inter = area * kept
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mass_accuracy": area, "rank_accuracy": area, "pointing_game": area,
                "auroc": np.full(len(area), 0.5), "iou": inter / (area + kept - inter), "precision": area,
                "recall": kept, "f1": 2 * inter / (area + kept)}
