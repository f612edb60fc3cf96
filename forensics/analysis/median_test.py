"""Max-activation histograms, Mood's median test and the colour-conditional percentage (T-FF; docs/median_test.md).

For each top-k feature map (FF-RS order), the spatial-max activation of every fake image (the
reference caps 500 fakes per class folder) at ``point`` (``pre_bn``, the raw conv output, as the
reference; or ``post_bn``) is measured twice: on RGB inputs and on colour-ablated inputs (grayscale,
ITU-R 601-2 luma x3 before normalisation, :mod:`forensics.data.color`). Both passes record every
map at once.

- **Test**: ``scipy.stats.median_test(rgb, ablated)`` with scipy's defaults (``ties="below"``,
  ``correction=True``, ``lambda_=1``: Pearson chi-square with Yates' correction on the 2x2 table of
  counts above / not above the grand median), as the reference; the p-value is kept (and here the
  statistic and the two medians too).
- **CSV**: ``feature_map_name,p_value`` in FF-RS rank order (the reference's ``median_test/<gan>.csv``).
- **Colour-conditional percentage** (docs/median_test.md): ``100 * #(p <= alpha) / #maps`` over the first ``topk``
  rows (alpha 0.05), the reference's uncorrected figure; reported beside it, the same share after the
  Benjamini-Hochberg correction (``scipy.stats.false_discovery_control``, adjusted p <= alpha), since
  114 tests at 0.05 expect ~6 false positives under the null.
- **KDE plots**: seaborn ``kdeplot`` of the RGB ("Baseline") and the ablated values of a map, titled
  with the key without ``(T=...)``; one figure per map and a grid of the first maps.

Deliberate differences from the reference: the cap is an argument (the reference hard-codes 500 per
class and ignores ``--num_instances``); constant activations (a KDE is undefined) are drawn as
vertical lines instead of failing; the figures are smaller and use the default font.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import provenance
from ..data import ImageRecord
from ..data.color import DEFAULT_ABLATION, ColorAblation
from ..detectors import Detector, FeatureMapKey
from ..io import atomic_path, atomic_write_csv, atomic_write_json, json_safe
from ..plots import save_figure
from .color import ablation_label
from .inference import Activations, collect_activations
from .result import AnalysisResult

log = logging.getLogger(__name__)

ALPHA = 0.05
CORRECTIONS = ("none", "bh")
CSV_COLUMNS = ("feature_map_name", "p_value")
_T_SUFFIX = re.compile(r"\(T=\d+\)$")


def mood_median_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(statistic, p_value)`` of ``scipy.stats.median_test(a, b)`` with its defaults (the reference's)."""
    from scipy.stats import median_test
    res = median_test(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def bh_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, method ``bh``);
    NaN p-values stay NaN and do not count as tests."""
    from scipy.stats import false_discovery_control
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def color_conditional_percentage(p_values: Sequence[float], alpha: float = ALPHA, topk: int | None = None,
                                 correction: str = "none") -> float:
    """``100 * #(p <= alpha) / #rows`` over the first ``topk`` p-values (docs/median_test.md; all when
    ``None``). ``correction="bh"``: on Benjamini-Hochberg adjusted p-values of those rows. A NaN
    p-value (constant activations in both runs) counts as not significant."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    p = np.asarray(p_values, dtype=np.float64)[:topk]
    if not len(p):
        raise ValueError("no p-values")
    if correction == "bh":
        p = bh_adjust(p)
    return 100.0 * float(np.sum(np.nan_to_num(p, nan=np.inf) <= alpha)) / len(p)


@dataclass
class MedianTestResult(AnalysisResult):
    """Per-map Mood's median tests of one set's fakes, RGB vs ablated (``keys`` in FF-RS order); ``settings``
    (detector, weights, provenance, point, ...) is its :attr:`record`, written as ``"settings"`` of the JSON."""

    keys: list[FeatureMapKey]
    rgb: Activations
    ablated: Activations
    ablation: str = DEFAULT_ABLATION
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = [str(r.path) for r in self.rgb.records]
        if a != [str(r.path) for r in self.ablated.records]:
            raise ValueError("the RGB and the ablated runs scored different images")
        tests = [mood_median_test(self.rgb.values[:, j], self.ablated.values[:, j]) if len(a) else (np.nan, np.nan)
                 for j in range(len(self.keys))]
        self.statistics = np.array([t[0] for t in tests], dtype=np.float64)
        self.p_values = np.array([t[1] for t in tests], dtype=np.float64)

    @property
    def record(self) -> dict[str, Any]:
        """:attr:`settings`: annotations land in the summary's ``"settings"``."""
        return self.settings

    @property
    def set_name(self) -> str:
        """The images' common ``source`` (the set's name), else ``"set"``."""
        sources = {r.source for r in self.rgb.records}
        return sources.pop() if len(sources) == 1 else "set"

    def frame(self):
        """``feature_map_name, p_value`` (the reference's CSV, FF-RS order), plus the statistic, the
        BH-adjusted p-value, the two medians and the number of images."""
        import pandas as pd
        return pd.DataFrame({
            "feature_map_name": [str(k) for k in self.keys], "p_value": self.p_values,
            "statistic": self.statistics, "p_value_bh": bh_adjust(self.p_values),
            "median_rgb": np.median(self.rgb.values, axis=0) if len(self.rgb.records) else np.nan,
            "median_ablated": np.median(self.ablated.values, axis=0) if len(self.rgb.records) else np.nan,
            "n_images": len(self.rgb.records)})

    def percentages(self, alpha: float = ALPHA, topk: int | None = None) -> dict[str, float]:
        """The colour-conditional share (%) of the first ``topk`` maps: uncorrected (the
        reference's) and Benjamini-Hochberg corrected."""
        n = len(self.keys) if topk is None else min(topk, len(self.keys))
        return {"alpha": alpha, "topk": n,
                "color_conditional_pct": color_conditional_percentage(self.p_values, alpha, n),
                "color_conditional_pct_bh": color_conditional_percentage(self.p_values, alpha, n, "bh")}

    # ------------------------------------------------------------------ figures
    def draw_kde(self, ax, j: int, legend: bool = True) -> None:
        """The KDEs of map ``j``'s spatial-max activation on RGB ("Baseline") and ablated inputs."""
        import seaborn as sns
        key = self.keys[j]
        for values, label, color in ((self.rgb.values[:, j], "Baseline", "#2a9d8f"),
                                     (self.ablated.values[:, j], ablation_label(self.ablation), "#e76f51")):
            if len(values) > 1 and np.ptp(values) > 0:
                sns.kdeplot(x=values, ax=ax, label=label, color=color, linewidth=2)
            elif len(values):
                ax.axvline(float(values[0]), label=f"{label} (constant)", color=color, linewidth=2)
        name = _T_SUFFIX.sub("", str(key))
        ax.set_title(f"{name}  p={self.p_values[j]:.2g}", fontsize=9)
        ax.set_xlabel("max spatial activation")
        ax.set_ylabel("density")
        if legend:
            ax.legend(fontsize=7)

    def kde_figure(self, j: int):
        from matplotlib.figure import Figure
        fig = Figure(figsize=(5.2, 3.2), constrained_layout=True)
        self.draw_kde(fig.add_subplot(), j)
        return fig

    def grid_figure(self, n: int = 16, ncols: int = 4, title: str | None = None):
        """KDEs of the first ``n`` maps in one figure."""
        from matplotlib.figure import Figure
        n = min(n, len(self.keys))
        ncols = max(1, min(ncols, n))
        nrows = -(-n // ncols)
        fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows), constrained_layout=True)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for j, ax in enumerate(axes.flat):
            if j < n:
                self.draw_kde(ax, j, legend=j == 0)
            else:
                ax.set_axis_off()
        if title:
            fig.suptitle(title)
        return fig

    def write(self, out_dir: str | Path, *, gan: str | None = None, alpha: float = ALPHA, topk: int | None = None,
              per_map_plots: bool = True, grid_maps: int = 16) -> dict[str, Path]:
        """Atomically, with ``gan`` the set's name (default :attr:`set_name`): ``median_test/<gan>.csv`` (:meth:`frame`), ``median_test/<gan>.json``
        (percentages, settings), ``activations/<gan>-{rgb,ablated}.csv`` (per image and map), the
        grid ``activation_histograms/<gan>-grid.{png,pdf}`` and, with ``per_map_plots``,
        ``activation_histograms/<key>/<gan>.{png,pdf}`` (the reference's layout); returns ``{name: path}``."""
        import pandas as pd
        out = Path(out_dir)
        gan = gan or self.set_name
        paths = {"csv": out / "median_test" / f"{gan}.csv"}
        with atomic_path(paths["csv"]) as tmp:  # full precision: p-values go far below 1e-6
            self.frame().to_csv(tmp, index=False)
        paths["json"] = atomic_write_json(out / "median_test" / f"{gan}.json", json_safe({
            **self.percentages(alpha, topk), "ablation": self.ablation, "n_images": len(self.rgb.records),
            "skipped": self.rgb.summary.to_dict()["skipped"], "settings": self.settings}))
        for name, acts in (("rgb", self.rgb), ("ablated", self.ablated)):
            frame = pd.DataFrame(acts.values, columns=[str(k) for k in self.keys])
            frame.insert(0, "path", [str(r.path) for r in acts.records])
            paths[f"activations_{name}"] = atomic_write_csv(out / "activations" / f"{gan}-{name}.csv", frame, index=False)
        if len(self.rgb.records):
            pct = self.percentages(alpha, topk)
            title = (f"{gan}: spatial-max activations of the top-{min(grid_maps, len(self.keys))} maps, RGB vs "
                     f"{ablation_label(self.ablation).lower()} ({pct['color_conditional_pct']:.1f}% of the top-"
                     f"{pct['topk']} colour-conditional at p <= {alpha:g}, {pct['color_conditional_pct_bh']:.1f}% "
                     f"after BH)")
            paths["grid_png"], paths["grid_pdf"] = save_figure(
                self.grid_figure(grid_maps, title=title), out / "activation_histograms" / f"{gan}-grid", dpi=110)
            if per_map_plots:
                for j, key in enumerate(self.keys):
                    png, _ = save_figure(self.kde_figure(j), out / "activation_histograms" / str(key) / gan, dpi=100)
                    paths[f"kde_{key}"] = png
        return paths


def median_test_analysis(detector: Detector, records: Sequence[ImageRecord], keys: Sequence[FeatureMapKey | str], *,
                         point: str = "pre_bn", ablation: str = DEFAULT_ABLATION, crop: str = "none",
                         batch_size: int = 32, num_workers: int = 0, progress: bool = True) -> MedianTestResult:
    """Spatial-max activations of ``keys`` for ``records`` (the reference: the set's fakes, <= 500
    per class) on RGB and ablated inputs, and the per-map median tests (see the module docstring).
    Full resolution by default (``crop="none"``, the reference)."""
    keys = detector.check_keys(keys)
    op = ColorAblation(ablation)
    gray = ablation == "grayscale"
    common = dict(point=point, reduce="spatial_max", batch_size=batch_size, num_workers=num_workers,
                  progress=progress)
    rgb = collect_activations(detector, records, keys, transform=detector.transform(crop=crop),
                              desc=f"{detector.name} RGB", **common)
    rgb.summary.log(log)
    abl_transform = detector.transform(crop=crop, grayscale=gray, pixel_op=None if gray else op)
    abl = collect_activations(detector, records, keys, transform=abl_transform,
                              desc=f"{detector.name} {ablation}", **common)
    settings = {"detector": detector.name, "weights": detector.weights_source,
                "provenance": provenance.collect(detector, files=records), "point": point,
                "ablation": ablation, "crop": crop, "n_records": len(records)}
    return MedianTestResult(list(keys), rgb, abl, ablation, settings)
