"""Detector robustness to perturbations (docs/evaluation.md): a clean baseline and one
:func:`forensics.analysis.evaluate.evaluate_sets` run per perturbation of :mod:`forensics.data.perturb`, their
long and wide tables and the metric-vs-level plot."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..data import ImageRecord
from ..data.perturb import Perturbation, sweep
from ..detectors import Detector
from ..io import atomic_write_csv, atomic_write_json, json_safe
from ..plots import save_figure
from .evaluate import EvalResult, evaluate_sets, format_percent
from .result import AnalysisResult

log = logging.getLogger(__name__)

CLEAN = "clean"


@dataclass
class PerturbationStudy(AnalysisResult):
    """A clean baseline and one run per perturbation, on the same sets (thresholds, when
    calibrated, from the baseline). Its :attr:`record` is the clean baseline's settings (written with it)."""

    baseline: EvalResult
    runs: list[tuple[Perturbation, EvalResult]]

    @property
    def record(self) -> dict[str, Any]:
        return self.baseline.settings

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
        return save_figure(fig, Path(str(path) + ".png"), dpi=150)

    def write(self, out_dir: str | Path, stem: str = "perturbations", *, plot: bool = True) -> dict[str, Path]:
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
