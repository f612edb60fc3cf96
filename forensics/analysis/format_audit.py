"""Format-shortcut audit: is a detector a JPEG-vs-PNG classifier?

Many benchmarks store the two classes in different formats (GenImage: reals JPEG from ImageNet,
fakes PNG), so a detector can score well by spotting JPEG compression instead of generation
artefacts (Grommelt et al., "Fake or JPEG? Revealing Common Biases in Generated Image Detection
Datasets", 2024). The audit scores the same images three times: as stored, then every image of both
classes re-encoded to PNG, then to JPEG quality 95 (in memory through ``cv2.imencode``, no file
written), so both classes share one format. Per set it reports the AP and accuracy of each
re-encoding, the change from the stored images and a paired percentile-bootstrap CI of that change
(images resampled within each class, the same draw for both runs; ``n_boot`` resamples, seeded).

A set is **flagged** when some re-encoding lowers the AP by more than ``min_drop`` with the CI's
upper end of the change still below ``-min_drop`` (a clear, not a noisy, drop). PNG re-encoding
keeps the decoded pixels, so a pixel-based detector scores it identically (a sanity check); JPEG 95
gives the fakes the reals' compression traces. The composition line says which formats each class
holds (from the file headers).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import cv2
import numpy as np

from ..data import ImageRecord
from ..data.perturb import JPEG, Perturbation
from ..detectors import Detector
from ..io import atomic_write_csv, atomic_write_json, json_safe
from .breakdown import header_info
from .evaluate import EvalResult, evaluate_sets
from .result import AnalysisResult

COLUMNS: tuple[str, ...] = ("set", "encoding", "ap", "acc", "d_ap", "d_ap_lo", "d_ap_hi", "d_acc", "d_acc_lo",
                            "d_acc_hi", "n_real", "n_fake", "flagged")


@dataclass(frozen=True)
class PNG(Perturbation):
    """Re-encode as PNG in memory (lossless: the decoded pixels are kept)."""

    kind: ClassVar[str] = "png"
    parameter: ClassVar[None] = None

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"cv2.imencode(.png) failed on a {arr.shape} array")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def label(self) -> str:
        return "png"


#: The re-encodings of the audit, by the name used in its table.
ENCODINGS: dict[str, Perturbation] = {"png": PNG(), "jpeg95": JPEG(quality=95)}
STORED = "stored"


def _metric_pair(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    from sklearn.metrics import average_precision_score
    acc = lambda p: float(((p > 0.5) == (y == 1)).mean())  # noqa: E731
    return (float(average_precision_score(y, a)), acc(a), float(average_precision_score(y, b)), acc(b))


def paired_change(y: np.ndarray, stored: np.ndarray, changed: np.ndarray, n_boot: int = 500, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """AP/accuracy of ``changed`` and their change from ``stored`` with percentile-bootstrap CIs
    (images resampled within each class, the same indices for both runs)."""
    ap0, acc0, ap1, acc1 = _metric_pair(y, stored, changed)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in (0, 1)]
    draws = np.empty((n_boot, 2))
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(ix, size=len(ix), replace=True) for ix in by_class])
        a0, c0, a1, c1 = _metric_pair(y[idx], stored[idx], changed[idx])
        draws[i] = (a1 - a0, c1 - c0)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    (ap_lo, acc_lo), (ap_hi, acc_hi) = np.percentile(draws, q, axis=0)
    return {"ap": ap1, "acc": acc1, "d_ap": ap1 - ap0, "d_ap_lo": float(ap_lo), "d_ap_hi": float(ap_hi),
            "d_acc": acc1 - acc0, "d_acc_lo": float(acc_lo), "d_acc_hi": float(acc_hi)}


def composition(records: Sequence[ImageRecord]) -> dict[str, dict[str, int]]:
    """``{"real": {"JPEG": n, ...}, "fake": {...}}`` from the files' headers."""
    out: dict[str, Counter] = {"real": Counter(), "fake": Counter()}
    for r in records:
        if r.label in (0, 1):
            out["real" if r.label == 0 else "fake"][header_info(r)[0]] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


@dataclass
class FormatAudit(AnalysisResult):
    """The audit's rows (one per set and encoding, the stored images included), each set's format
    composition and flag, and the runs' :class:`EvalResult`; ``settings`` is its :attr:`record`."""

    rows: list[dict[str, Any]]
    composition: dict[str, dict[str, dict[str, int]]]
    flagged: dict[str, bool]
    runs: dict[str, EvalResult] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def format(self) -> str:
        lines = [f"{'set':<16} {'encoding':<8} {'AP':>6} {'acc':>6} {'dAP [95% CI]':>24} {'dacc [95% CI]':>24}"]
        for r in self.rows:
            ci = lambda k: (f"{100 * r[k]:+6.1f} [{100 * r[k + '_lo']:+6.1f}, {100 * r[k + '_hi']:+6.1f}]"  # noqa: E731
                            if r["encoding"] != STORED else "")
            lines.append(f"{r['set'][:16]:<16} {r['encoding']:<8} {100 * r['ap']:6.1f} {100 * r['acc']:6.1f} "
                         f"{ci('d_ap'):>24} {ci('d_acc'):>24}")
        for name, flag in self.flagged.items():
            comp = "; ".join(f"{side}: " + ", ".join(f"{k} {v}" for k, v in fmts.items())
                             for side, fmts in self.composition[name].items())
            verdict = ("FLAGGED: AP drops when both classes share one format (format shortcut)" if flag
                       else "not flagged")
            lines.append(f"{name}: {verdict} ({comp})")
        return "\n".join(lines)

    def eval_results(self) -> list[EvalResult]:
        return list(self.runs.values())

    def write(self, out_dir: str | Path, stem: str = "format-audit") -> dict[str, Path]:
        """``<stem>.csv`` (one row per set and encoding) and ``<stem>.json`` (settings, rows, each set's format
        composition and flag); atomic."""
        out = Path(out_dir)
        paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
        atomic_write_csv(paths["csv"], self.to_frame(), index=False)
        atomic_write_json(paths["json"], json_safe({"settings": self.settings, "rows": self.rows,
                                                    "composition": self.composition, "flagged": self.flagged}))
        return paths


def format_audit(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *, min_drop: float = 0.05,
                 n_boot: int = 500, seed: int = 0, encodings: Mapping[str, Perturbation] | None = None,
                 **options: Any) -> FormatAudit:
    """Score ``sets`` as stored and under each of ``encodings`` (default :data:`ENCODINGS`), with
    ``options`` passed to :func:`evaluate_sets` (crop, batch_size, ...); see the module docstring."""
    encodings = dict(encodings or ENCODINGS)
    runs = {STORED: evaluate_sets(detector, sets, **options)}
    for name, op in encodings.items():
        runs[name] = evaluate_sets(detector, sets, perturbation=op, seed=seed, **options)
    rows, flagged = [], {}
    for name in sets:
        base = runs[STORED].predictions[name]
        y, p0 = base.labels, base.probs
        refs = [r.ref for r in base.records]
        row0 = runs[STORED].rows[name]
        rows.append({"set": name, "encoding": STORED, "ap": row0["ap"], "acc": row0["acc"],
                     "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "flagged": False})
        flag = False
        for enc in encodings:
            pred = runs[enc].predictions[name]
            order = {ref: i for i, ref in enumerate(r.ref for r in pred.records)}
            keep = [i for i, ref in enumerate(refs) if ref in order]
            p1 = pred.probs[[order[refs[i]] for i in keep]]
            change = paired_change(y[keep], p0[keep], p1, n_boot=n_boot, seed=seed)
            drop = change["d_ap"] < -min_drop and change["d_ap_hi"] < -min_drop
            flag |= drop
            rows.append({"set": name, "encoding": enc, **change, "n_real": int((y[keep] == 0).sum()),
                         "n_fake": int((y[keep] == 1).sum()), "flagged": bool(drop)})
        flagged[name] = bool(flag)
        rows[[i for i, r in enumerate(rows) if r["set"] == name and r["encoding"] == STORED][0]]["flagged"] = bool(flag)
    settings = {"detector": detector.name, "min_drop": min_drop, "n_boot": n_boot, "seed": seed,
                "encodings": {k: v.label() for k, v in encodings.items()}}
    return FormatAudit(rows, {n: composition(r) for n, r in sets.items()}, flagged, runs, settings)
