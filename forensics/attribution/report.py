"""Outputs of an attribution run: per-block table, sweeps, per-unknown details (CSV), a JSON summary,
and figures (PNG + PDF): metric vs block, confusion matrix and known/unknown score histograms of the
block with the best validation criterion. Everything is written atomically."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..analysis.result import AnalysisResult
from ..io import atomic_write_json, atomic_write_text
from .openset import TABLE_METRICS, BlockResult, best_block

log = logging.getLogger(__name__)

#: Metrics drawn against the block index.
CURVE_METRICS = ("accuracy", "macro_f1", "auroc", "tnr_at_tpr95", "oscr")


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


@dataclass
class AttributionReport(AnalysisResult):
    """Results of :func:`~forensics.attribution.openset.run_blocks` plus the run's settings (its :attr:`record`,
    the summary's ``"settings"``)."""

    results: list[BlockResult]
    classes: list[str]
    n_known: int
    select: str = "auroc"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    @property
    def best(self) -> BlockResult:
        return best_block(self.results, self.select)

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def format_table(self) -> str:
        """The per-block table (test metrics in %), the best-validation block marked with ``*``."""
        rows = self.rows()
        pname = self.results[0].param_name
        head = ["block", pname, f"val {self.select}", *TABLE_METRICS]
        lines = [" | ".join(head), " | ".join("---" for _ in head)]
        best = self.best.block
        for r in rows:
            mark = "*" if r["block"] == best else ""
            lines.append(" | ".join([f"{r['block']}{mark}", f"{r[pname]:.3g}", f"{100 * r['val_' + self.select]:.1f}",
                                     *(f"{100 * r[m]:.1f}" for m in TABLE_METRICS)]))
        return "\n".join(lines)

    def write(self, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
        """``results.csv`` (per block), ``sweep.csv``, ``unknown_details.csv``, ``summary.json`` (settings,
        classes, best block, per-block metrics and sweeps) and, with ``figures``, the figures (PNG + PDF) under
        ``out_dir``; returns ``{name: path}``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        paths["results"] = atomic_write_text(out / "results.csv", _csv(self.rows()))
        sweep = [{"block": r.block, r.param_name: s["param"], **{k: v for k, v in s.items() if k != "param"}}
                 for r in self.results for s in r.sweep]
        paths["sweep"] = atomic_write_text(out / "sweep.csv", _csv(sweep))
        details = [{"block": r.block, **d} for r in self.results for d in r.test.metrics["per_unknown"]]
        paths["unknown_details"] = atomic_write_text(out / "unknown_details.csv", _csv(details))
        summary = {"settings": self.settings, "classes": self.classes, "n_known": self.n_known,
                   "select": self.select, "best_block": self.best.block,
                   "blocks": [{**r.row(), "test": r.test.metrics, "sweep": r.sweep} for r in self.results]}
        paths["summary"] = atomic_write_json(out / "summary.json", summary)
        if figures:
            paths.update(self.figures(out))
        return paths

    def figures(self, out: Path) -> dict[str, Path]:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..plots import save_figure
        paths: dict[str, Path] = {}
        title = self.settings.get("title", "")
        # metric vs block
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        blocks = [r.block for r in self.results]
        for m in CURVE_METRICS:
            ax.plot(blocks, [100 * r.test.metrics[m] for r in self.results], marker="o", label=m)
        ax.set_xlabel("block")
        ax.set_ylabel("test metric (%)")
        ax.set_xticks(blocks)
        ax.set_ylim(0, 100)
        ax.axhline(100 / self.n_known, color="grey", lw=0.8, ls=":", label="chance accuracy")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{title}\nper-block open-set attribution (test split)", fontsize=8)
        fig.tight_layout()
        paths["fig_blocks"] = save_figure(fig, out / "metrics_vs_block")[0]
        plt.close(fig)
        best = self.best
        known_names = self.classes[: self.n_known]
        # confusion matrix of the known test images (rows true, columns predicted), row-normalised
        cm = np.asarray(best.test.metrics["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * self.n_known, 1.0 + 0.6 * self.n_known))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(self.n_known), known_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(self.n_known), known_names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, fraction=0.046, label="row share")
        ax.set_title(f"block {best.block}: known test images\naccuracy {100 * best.test.metrics['accuracy']:.1f}%",
                     fontsize=8)
        fig.tight_layout()
        paths["fig_confusion"] = save_figure(fig, out / "confusion")[0]
        plt.close(fig)
        # score histograms, known vs each unknown generator
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        t = best.test
        lo = min(t.known_scores.min(), t.unknown_scores.min())
        hi = max(t.known_scores.max(), t.unknown_scores.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        ax.hist(t.known_scores, bins=bins, density=True, alpha=0.5, label=f"known (n={len(t.known_scores)})",
                color="tab:blue")
        ax.hist(t.unknown_scores, bins=bins, density=True, alpha=0.5, color="tab:red",
                label=f"unknown, all (n={len(t.unknown_scores)})")
        for u in np.unique(t.unknown_labels):
            ax.hist(t.unknown_scores[t.unknown_labels == u], bins=bins, density=True, histtype="step",
                    label=self.classes[u])
        ax.set_xlabel("open-set score (higher = known)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.set_title(f"block {best.block}: test scores, AUROC {100 * t.metrics['auroc']:.1f}%", fontsize=8)
        fig.tight_layout()
        paths["fig_scores"] = save_figure(fig, out / "score_histograms")[0]
        plt.close(fig)
        return paths
