"""Open-set attribution per block: sweep a probe's hyper-parameter on validation, evaluate on test.

Protocol per block b (docs/attribution.md, with its [quirk]s fixed):

1. fit the probe on the train features of the known classes (real + known generators) for every
   value of its sweep (C for ``logreg``, k for ``knn``; or the fixed values given);
2. score the validation split (known val vs unknown-generator val) and keep the value with the
   best ``select`` criterion: ``auroc`` (known-vs-unknown AUROC, the reference's criterion, ties ½),
   ``auroc_reference`` (ties 0 as the reference computes it: k = 1 kNN is never chosen), ``oscr`` or
   ``accuracy`` (closed-set val accuracy: needs no unknown images). Ties between values keep the
   first (the smallest C / k), as the reference;
3. evaluate that fitted probe on the test split, which shares no image with train or val:
   closed-set accuracy / macro-F1 / confusion on the known test images, AUROC (ties ½, and the
   reference's ties-as-0), TNR at 95% TPR and OSCR (correct, and the reference's) from the open-set
   score, and per unknown generator its AUROC, most-predicted known class and mean score.

Unlike the reference's ``linear.py``, every block gets its own sweep (the reference reuses the first
block's C and crashes after the first block) and the known test set is not the validation set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import metrics as M
from .classifiers import make_probe, probe_class
from .features import BlockFeatures
from .splits import PARTS, Partition
from ..errors import InputError

log = logging.getLogger(__name__)

SELECT = ("auroc", "auroc_reference", "oscr", "accuracy")
#: Test metrics of the per-block table, in column order.
TABLE_METRICS = ("accuracy", "macro_f1", "auroc", "auroc_reference", "tnr_at_tpr95", "oscr", "oscr_reference")


@dataclass
class SplitFeatures:
    """Per-part views of the extracted features: ``features`` ``[K, blocks, width]`` (one array for all
    parts), ``rows[part]`` its rows of each part's readable images and ``y[part]`` their class labels;
    the records that could not be read are listed in ``skipped``."""

    features: np.ndarray
    rows: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: list[str]
    n_known: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def block(self, part: str, b: int) -> np.ndarray:
        """``[N_part, width]`` features of block ``b`` (a copy of that block only)."""
        return self.features[self.rows[part], b]


def align(partition: Partition, feats: BlockFeatures, records: Sequence) -> SplitFeatures:
    """Rows of ``feats`` (extracted for ``records``, e.g. ``partition.all_records()``) per part;
    unreadable images are dropped from every part and listed."""
    row = {str(records[i].path): r for r, i in enumerate(feats.kept.tolist())}
    rows: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    for part in PARTS:
        recs, labels = partition.records[part], partition.labels[part]
        keep = np.array([str(r.path) in row for r in recs], dtype=bool)
        rows[part] = np.array([row[str(r.path)] for r, k in zip(recs, keep) if k], dtype=np.int64)
        y[part] = labels[keep]
    if feats.skipped:
        log.warning("%d unreadable image(s) left out of the attribution run (listed in the summary)",
                    len(feats.skipped))
    return SplitFeatures(feats.features, rows, y, partition.spec.classes, partition.spec.n_known,
                         list(feats.skipped))


@dataclass
class Evaluation:
    """Probabilities, labels and scores of one evaluated part (known + unknown images)."""

    metrics: dict[str, Any]
    known_labels: np.ndarray
    known_pred: np.ndarray
    known_scores: np.ndarray
    unknown_labels: np.ndarray
    unknown_scores: np.ndarray
    unknown_pred: np.ndarray


def evaluate(probe, x: np.ndarray, y: np.ndarray, n_known: int, classes: Sequence[str], tpr: float = 0.95
             ) -> Evaluation:
    """All metrics of a fitted probe on features ``x`` with class labels ``y`` (>= n_known: unknown)."""
    proba, score = probe.predict(x)
    known = y < n_known
    if known.all() or not known.any():
        raise InputError("evaluation needs both known and unknown images")
    out = M.open_set(proba[known], y[known], score[known], score[~known], tpr=tpr)
    pred = proba.argmax(axis=1)
    details = []
    for u in np.unique(y[~known]):
        sel = y == u
        counts = np.bincount(pred[sel], minlength=n_known)
        details.append({"unknown": classes[u], "n": int(sel.sum()),
                        "auroc": M.auroc(score[known], score[sel]),
                        "most_predicted": classes[int(counts.argmax())],
                        "most_predicted_share": float(counts.max() / sel.sum()),
                        "mean_score": float(score[sel].mean())})
    out["per_unknown"] = details
    out["mean_score_known"] = float(score[known].mean())
    out["mean_score_unknown"] = float(score[~known].mean())
    return Evaluation(out, y[known], pred[known], score[known], y[~known], score[~known], pred[~known])


@dataclass
class BlockResult:
    block: int
    param_name: str
    param: Any
    sweep: list[dict[str, Any]]
    test: Evaluation

    def row(self) -> dict[str, Any]:
        sel = next(s for s in self.sweep if s["param"] == self.param)
        return {"block": self.block, self.param_name: self.param, **{f"val_{k}": sel[k] for k in SELECT},
                **{k: self.test.metrics[k] for k in TABLE_METRICS}}


def run_block(data: SplitFeatures, block: int, classifier: str = "logreg", params: Sequence[Any] | None = None,
              select: str = "auroc", probe_options: dict[str, Any] | None = None, grid_options: dict | None = None,
              tpr: float = 0.95) -> BlockResult:
    """Sweep on val, evaluate the selected probe on test, for one block."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    cls = probe_class(classifier)
    grid = list(params) if params else cls.grid(**(grid_options or {}))
    xt, yt = data.block("train", block), data.y["train"]
    if np.any(yt >= data.n_known):
        raise InputError("training features include unknown-generator images")
    sweep: list[dict[str, Any]] = []
    best, best_probe, best_value = None, None, -np.inf
    for value in grid:
        probe = make_probe(classifier, value, **(probe_options or {})).fit(xt, yt)
        ev = evaluate(probe, data.block("val", block), data.y["val"], data.n_known, data.classes, tpr)
        entry = {"param": value, **{k: ev.metrics[k] for k in (*SELECT, *TABLE_METRICS[1:]) if k in ev.metrics}}
        sweep.append(entry)
        if entry[select] > best_value:
            best, best_probe, best_value = value, probe, entry[select]
    test = evaluate(best_probe, data.block("test", block), data.y["test"], data.n_known, data.classes, tpr)
    log.info("block %d: %s = %s (val %s %.4f); test accuracy %.4f, AUROC %.4f, OSCR %.4f", block, cls.param_name,
             best, select, best_value, test.metrics["accuracy"], test.metrics["auroc"], test.metrics["oscr"])
    return BlockResult(block, cls.param_name, best, sweep, test)


def run_blocks(data: SplitFeatures, blocks: Sequence[int], progress: bool = True, **kwargs: Any) -> list[BlockResult]:
    """:func:`run_block` for every block (each with its own sweep)."""
    return [run_block(data, b, **kwargs) for b in tqdm(blocks, desc="blocks", unit="block", disable=not progress,
                                                       leave=False)]


def best_block(results: Sequence[BlockResult], select: str = "auroc") -> BlockResult:
    """The block with the best *validation* criterion (test numbers are never used to choose)."""
    return max(results, key=lambda r: next(s[select] for s in r.sweep if s["param"] == r.param))
