"""Colour ablation of a detector (T-FF; docs/colour.md) and the colour-robust comparison (docs/colour.md).

:func:`color_ablation` runs a detector on every test set twice, on RGB images and on colour-ablated
ones (grayscale by default: ITU-R 601-2 luma x3 inserted before the detector's normalisation; other
ablations of :mod:`forensics.data.color` by name), through
:func:`forensics.analysis.color_comparison.compare_rgb_gray`. Per set (docs/colour.md): AP; real / fake /
overall accuracy at 0.5; the G-mean threshold calibrated on the **RGB** predictions of that set
(every set, ProGAN included, as T-FF) and the accuracies of both runs at it; mean and std of
P(fake) for reals and fakes.

The box-and-whisker figure (docs/colour.md): the fakes whose RGB P(fake) >= 0.2 (``min_p``), their P(fake) in
% on RGB ("Baseline") and on the ablated image of the same files, as two boxes with fliers; the
red double arrow between the two medians is labelled ``{m1 - m2:.1f}% drop`` (percentage points).
One figure per set and a combined panel of all sets (seaborn; PNG and PDF).

:func:`compare_color_robust` runs the ablation on a baseline and a colour-robust detector of each
architecture over the same sets and writes the table of docs/colour.md (AP on RGB vs colour-ablated
images, rows ``<arch> baseline RGB``, ``<arch> baseline color-ablated``, ``CR-<arch> RGB``,
``CR-<arch> color-ablated``) as CSV, markdown and a grouped bar figure.

Outputs are written atomically (:mod:`forensics.io`, :func:`forensics.plots.save_figure`).

Deliberate differences from the reference, named:

- The reference's per-set CSVs (``<gan>-AP-#N-samples-no-crop.csv``, ``-UNCALIBRATED_ACC-``,
  ``-CALIBRATED_ACC-``) have every metric in percent as there, but the threshold as a fraction (the
  reference multiplies it by 100 too, docs/colour.md), and N is the number of images scored.
- Cosmetics of the box plot are not copied (8x10 in, 40-50 pt fonts, Times New Roman); the data,
  the filter, the boxes, the red medians and the drop annotation are.
- Unreadable files are skipped and listed in the JSON, never scored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data import ImageRecord
from ..data.color import DEFAULT_ABLATION, ColorAblation
from ..detectors import Detector, get_config, list_detectors
from ..io import atomic_write_csv, atomic_write_json, atomic_write_text, json_safe
from ..plots import save_figure
from .color_comparison import ColorComparison, compare_rgb_gray
from .evaluate import MEAN
from .result import AnalysisResult

log = logging.getLogger(__name__)

#: Fakes whose RGB P(fake) is below this are left out of the box plot (docs/colour.md).
MIN_P = 0.2
#: Box colours of the reference (RGB, ablated).
BOX_COLORS = ("#83c5be", "#b7b7a4")
_UNCAL = ("r_acc", "f_acc", "acc", "y_real_mean", "y_fake_mean", "y_real_std", "y_fake_std")
_CAL = ("r_acc", "f_acc", "acc")


def ablation_label(ablation: str) -> str:
    """Display name of the ablated input: ``Grayscale`` or the ablation's name."""
    return "Grayscale" if ablation == "grayscale" else ablation


# ---------------------------------------------------------------------------- one detector
@dataclass
class ColorAblationStudy(AnalysisResult):
    """RGB vs colour-ablated runs of one detector (``comparison``; fractions) and the box-plot
    filter ``min_p``. ``label`` names the detector in titles and tables; ``settings`` is its :attr:`record`
    (the summary's ``"settings"``)."""

    comparison: ColorComparison
    label: str
    min_p: float = MIN_P
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    @property
    def ablation(self) -> str:
        return self.comparison.ablation

    @property
    def sets(self) -> list[str]:
        return list(self.comparison.rgb.rows)

    def fake_probs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """P(fake) of set ``name``'s fakes with RGB p >= ``min_p``: (RGB, ablated), the same files
        in the same order (the box plot's data, fractions)."""
        rgb, abl = self.comparison.rgb.predictions[name], self.comparison.gray.predictions[name]
        ablated = {str(r.path): p for r, p in zip(abl.records, abl.probs)}
        pairs = [(p, ablated[str(r.path)]) for r, p, y in zip(rgb.records, rgb.probs, rgb.labels)
                 if y == 1 and p >= self.min_p and str(r.path) in ablated]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        out = np.asarray(pairs, dtype=np.float64)
        return out[:, 0], out[:, 1]

    def box_stats(self, name: str) -> dict[str, float]:
        """Number of fakes in the box plot and the medians of their P(fake) in %, with the drop
        ``median RGB - median ablated`` in percentage points (NaN when no fake passes ``min_p``)."""
        rgb, abl = self.fake_probs(name)
        if not len(rgb):
            return {"n_box": 0, "median_rgb": float("nan"), "median_ablated": float("nan"),
                    "median_drop": float("nan")}
        m1, m2 = 100 * float(np.median(rgb)), 100 * float(np.median(abl))
        return {"n_box": len(rgb), "median_rgb": m1, "median_ablated": m2, "median_drop": m1 - m2}

    def to_frame(self):
        """One row per set plus ``mean``: every metric of the RGB and the ablated run (suffixes
        ``_rgb`` and ``_ablated``; the calibrated columns at the RGB threshold), ``ap_drop`` and the
        box-plot statistics (fractions, except the box medians in %)."""
        import pandas as pd
        rgb, abl = self.comparison.rgb.to_frame(), self.comparison.gray.to_frame()
        metric_cols = [c for c in rgb.columns if c not in ("threshold", "n_real", "n_fake", "n_skipped")]
        frame = pd.DataFrame(index=rgb.index)
        frame["ap_rgb"], frame["ap_ablated"] = rgb["ap"], abl["ap"]
        frame["ap_drop"] = rgb["ap"] - abl["ap"]
        if "threshold" in rgb.columns:
            frame["threshold"] = rgb["threshold"]
        for col in metric_cols:
            if col != "ap":
                frame[f"{col}_rgb"], frame[f"{col}_ablated"] = rgb[col], abl[col]
        for col in ("n_real", "n_fake", "n_skipped"):
            frame[col] = rgb[col]
        stats = pd.DataFrame.from_dict({n: self.box_stats(n) for n in self.sets}, orient="index")
        frame = frame.join(stats)
        if MEAN in frame.index:
            for col in ("median_rgb", "median_ablated", "median_drop"):
                frame.loc[MEAN, col] = float(np.nanmean(stats[col])) if stats[col].notna().any() else float("nan")
            frame.loc[MEAN, "n_box"] = int(stats["n_box"].sum())
        frame["n_box"] = frame["n_box"].astype(int)
        frame.index.name = "set"
        return frame

    def reference_rows(self, name: str) -> dict[str, dict[str, Any]]:
        """The reference's three CSV rows of set ``name`` (docs/colour.md), metrics in percent,
        ``threshold`` as a fraction: ``ap``, ``uncalibrated``, ``calibrated``."""
        rgb, abl = self.comparison.rgb.rows[name], self.comparison.gray.rows[name]
        other = "grayscale" if self.ablation == "grayscale" else self.ablation
        ap = {"gan_name": name, "original_ap": 100 * rgb["ap"], f"{other}_ap": 100 * abl["ap"]}
        uncal = {"gan_name": name}
        for prefix, row in (("original", rgb), (other, abl)):
            uncal.update({f"{prefix}_{m}": 100 * row[m] for m in _UNCAL})
        cal = {"gan_name": name, "threshold": rgb.get("threshold", float("nan"))}
        for prefix, row in (("original", rgb), (other, abl)):
            cal.update({f"{prefix}_{m}": 100 * row.get(f"{m}_cal", float("nan")) for m in _CAL})
        return {"ap": ap, "uncalibrated": uncal, "calibrated": cal}

    def format(self) -> str:
        lines = [f"{self.label}: RGB vs {ablation_label(self.ablation).lower()} (AP in %, fakes' median P(fake) "
                 f"drop for RGB p >= {self.min_p:g})"]
        frame = self.to_frame()
        for name, r in frame.iterrows():
            lines.append(f"{'Mean' if name == MEAN else name}: AP {100 * r.ap_rgb:.1f} -> {100 * r.ap_ablated:.1f} "
                         f"(drop {100 * r.ap_drop:.1f}); median P(fake) drop {r.median_drop:.1f}% "
                         f"over {int(r.n_box)} fakes")
        return "\n".join(lines)

    # ------------------------------------------------------------------ figures
    def draw_box(self, ax, name: str, title: str | None = None) -> None:
        """Draw set ``name``'s box plot (docs/colour.md) on a matplotlib axes."""
        draw_box(ax, *self.fake_probs(name), ablation_label(self.ablation), title or name, self.min_p)

    def box_figure(self, name: str):
        from matplotlib.figure import Figure
        fig = Figure(figsize=(4.2, 5), constrained_layout=True)
        self.draw_box(fig.add_subplot(), name, f"{self.label}: {name}")
        return fig

    def combined_figure(self, ncols: int = 3):
        """All sets' box plots side by side, one panel per set."""
        from matplotlib.figure import Figure
        names = self.sets
        ncols = max(1, min(ncols, len(names)))
        nrows = -(-len(names) // ncols)
        fig = Figure(figsize=(3.6 * ncols, 4.4 * nrows), constrained_layout=True)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i < len(names):
                self.draw_box(ax, names[i])
            else:
                ax.set_axis_off()
        fig.suptitle(f"{self.label}: fakes' P(fake), RGB vs {ablation_label(self.ablation).lower()} "
                     f"(RGB p >= {self.min_p:g})")
        return fig

    # ------------------------------------------------------------------ outputs
    def write(self, out_dir: str | Path, *, tag: str = "default", crop: str = "none") -> dict[str, Path]:
        """Write atomically, under ``out_dir``: ``color-ablation.csv`` (:meth:`to_frame`),
        ``color-ablation.json`` (settings, rows, thresholds, skipped files), ``predictions.csv``
        (every image, RGB and ablated P(fake)), per set the reference's three CSVs under
        ``<gan>_<tag>/`` (named ``...-no-crop.csv`` for ``crop="none"``, else ``...-<crop>-crop.csv``) and the
        box plots ``whisker/<gan>.{png,pdf}`` and ``whisker/all.{png,pdf}``; returns ``{name: path}``."""
        import pandas as pd
        out = Path(out_dir)
        suffix = "no-crop" if crop == "none" else f"{crop}-crop"
        paths = {"csv": atomic_write_csv(out / "color-ablation.csv", self.to_frame())}
        rgb_pred = self.comparison.rgb.predictions_frame()
        abl_pred = self.comparison.gray.predictions_frame()
        pred = rgb_pred.rename(columns={"logit": "logit_rgb", "p_fake": "p_fake_rgb"}).merge(
            abl_pred[["set", "path", "logit", "p_fake"]].rename(columns={"logit": "logit_ablated",
                                                                          "p_fake": "p_fake_ablated"}),
            on=["set", "path"], how="outer")
        paths["predictions"] = atomic_write_csv(out / "predictions.csv", pred, index=False)
        paths["json"] = atomic_write_json(out / "color-ablation.json", json_safe({
            "label": self.label, "ablation": self.ablation, "min_p": self.min_p, "settings": self.settings,
            "rgb": self.comparison.rgb.to_dict(), "ablated": self.comparison.gray.to_dict()}))
        for name in self.sets:
            n = len(self.comparison.rgb.predictions[name].records)
            folder = out / f"{name}_{tag}"
            for kind, row in self.reference_rows(name).items():
                stem = {"ap": "AP", "uncalibrated": "UNCALIBRATED_ACC", "calibrated": "CALIBRATED_ACC"}[kind]
                paths[f"{name}_{kind}"] = atomic_write_csv(folder / f"{name}-{stem}-#{n}-samples-{suffix}.csv", pd.DataFrame([row]), index=False)
            png, pdf = save_figure(self.box_figure(name), out / "whisker" / name, dpi=150)
            paths[f"{name}_box_png"], paths[f"{name}_box_pdf"] = png, pdf
        paths["box_png"], paths["box_pdf"] = save_figure(self.combined_figure(), out / "whisker" / "all", dpi=150)
        return paths


def draw_box(ax, rgb: np.ndarray, ablated: np.ndarray, ablated_label: str = "Grayscale", title: str = "",
             min_p: float = MIN_P) -> None:
    """Two boxes (seaborn, fliers shown) of P(fake) in %: "Baseline" (RGB) and the ablated input of
    the same images; red medians and a red double arrow between them labelled ``x.x% drop``."""
    import pandas as pd
    import seaborn as sns
    ax.set_title(title, fontsize=10)
    ax.set_ylim(-2, 102)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("P(fake) (%)")
    if not len(rgb):
        ax.set_xticks([0, 1], ["Baseline", ablated_label])
        ax.text(0.5, 50, f"no fake with\nRGB p >= {min_p:g}", ha="center", va="center", fontsize=9)
        return
    n = len(rgb)
    data = pd.DataFrame({"input": ["Baseline"] * n + [ablated_label] * n,
                         "p": np.concatenate([100 * np.asarray(rgb), 100 * np.asarray(ablated)])})
    sns.boxplot(data=data, x="input", y="p", hue="input", palette=list(BOX_COLORS), width=0.45, showfliers=True,
                medianprops={"color": "red", "linewidth": 3}, legend=False, ax=ax)
    m1, m2 = 100 * float(np.median(rgb)), 100 * float(np.median(ablated))
    ax.plot([0.225, 0.5], [m1, m1], color="red", lw=1, ls=":")
    ax.plot([0.5, 0.775], [m2, m2], color="red", lw=1, ls=":")
    ax.annotate("", xy=(0.5, m2), xytext=(0.5, m1),
                arrowprops={"arrowstyle": "<->", "color": "red", "lw": 2, "shrinkA": 0, "shrinkB": 0})
    if abs(m1 - m2) >= 8:  # room between the medians: the label sits on the arrow
        y, va = (m1 + m2) / 2, "center"
    elif max(m1, m2) > 85:  # short arrow near the top: the label goes under it
        y, va = min(m1, m2) - 2, "top"
    else:
        y, va = max(m1, m2) + 2, "bottom"
    ax.text(0.5, y, f" {m1 - m2:.1f}% drop", color="red", fontsize=10, fontweight="bold", ha="center", va=va,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
    ax.set_xlabel(f"{n} fakes (RGB p >= {min_p:g})")


def color_ablation(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *,
                   ablation: str = DEFAULT_ABLATION, label: str | None = None, min_p: float = MIN_P,
                   **options: Any) -> ColorAblationStudy:
    """RGB vs ``ablation`` on every set (docs/colour.md), thresholds G-mean calibrated on the RGB
    predictions of each set. ``options`` go to :func:`forensics.analysis.evaluate.evaluate_sets`
    (``crop`` — the reference evaluates full resolution, ``crop="none"`` —, ``batch_size``,
    ``inclusive``, ``num_workers``, ``progress``)."""
    ColorAblation(ablation)
    cmp = compare_rgb_gray(detector, sets, calibrate=True, ablation=ablation, **options)
    settings = {**cmp.rgb.settings, "ablation": ablation, "min_p": min_p}
    return ColorAblationStudy(cmp, label or detector.name, min_p, settings)


# ---------------------------------------------------------------------------- colour-robust comparison
BASELINE, ROBUST = "baseline", "robust"


def arch_label(name: str) -> str:
    """The short label a detector declares (``R50`` for resnet50, ``EfB0`` for efb0; see
    :class:`~forensics.detectors.DetectorConfig`), else ``name`` as it is."""
    return get_config(name).label if name in list_detectors() else name


def pair_labels(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Table labels of baseline/robust pairs given as ``(architecture, baseline name)``: the
    architecture's :func:`arch_label`, suffixed with ``-<baseline name>`` where two pairs share an
    architecture (``resnet50`` and ``resnet50_long`` against one colour-robust R50), so none overwrites
    another."""
    labels = [arch_label(arch) for arch, _ in pairs]
    return [label if labels.count(label) == 1 else f"{label}-{base}" for label, (_, base) in zip(labels, pairs)]


@dataclass
class RobustComparison(AnalysisResult):
    """Colour ablation of a baseline and a colour-robust detector per architecture:
    ``studies[arch] = {"baseline": study, "robust": study}`` (same sets, same ablation). Its summaries are the
    studies' ``color-ablation.json``: :meth:`annotate` adds to every study's settings (and to :attr:`record`,
    which keeps what was added)."""

    studies: dict[str, dict[str, ColorAblationStudy]]

    def annotate(self, **entries: Any):
        super().annotate(**entries)
        for pair in self.studies.values():
            for study in pair.values():
                study.annotate(**entries)
        return self

    @property
    def ablation(self) -> str:
        first = next(iter(self.studies.values()))
        return first[BASELINE].ablation

    def row_labels(self, arch: str) -> dict[tuple[str, str], str]:
        return {(BASELINE, "rgb"): f"{arch} baseline RGB", (BASELINE, "ablated"): f"{arch} baseline color-ablated",
                (ROBUST, "rgb"): f"CR-{arch} RGB", (ROBUST, "ablated"): f"CR-{arch} color-ablated"}

    def table(self):
        """docs/colour.md: rows ``<arch> baseline RGB`` / ``color-ablated``, ``CR-<arch> RGB`` /
        ``color-ablated``; columns the sets and ``mean``; AP in %."""
        import pandas as pd
        rows = {}
        for arch, pair in self.studies.items():
            for (which, inp), label in self.row_labels(arch).items():
                frame = pair[which].to_frame()
                rows[label] = 100 * frame[f"ap_{inp}"]
        table = pd.DataFrame(rows).T
        table.index.name = "detector / input"
        return table

    def drops(self):
        """AP drop (RGB - ablated, in AP points x100) per architecture and model; columns sets + mean."""
        import pandas as pd
        rows = {f"{arch} {which}": 100 * pair[which].to_frame()["ap_drop"]
                for arch, pair in self.studies.items() for which in (BASELINE, ROBUST)}
        table = pd.DataFrame(rows).T
        table.index.name = "AP drop"
        return table

    def to_markdown(self, digits: int = 1) -> str:
        """The table as a GitHub markdown table (AP in %)."""
        return markdown_table(self.table(), digits)

    def figure(self):
        """One panel per architecture: per set, grouped bars of AP (%) baseline RGB / ablated and
        CR RGB / ablated."""
        from matplotlib.figure import Figure
        table = self.table()
        archs = list(self.studies)
        fig = Figure(figsize=(max(6.0, 1.2 * len(table.columns) + 2), 3.8 * len(archs)), constrained_layout=True)
        axes = fig.subplots(len(archs), 1, squeeze=False)[:, 0]
        colors = ("#1f77b4", "#aec7e8", "#d62728", "#ff9896")
        for ax, arch in zip(axes, archs):
            labels = list(self.row_labels(arch).values())
            x = np.arange(len(table.columns))
            width = 0.2
            for i, (label, color) in enumerate(zip(labels, colors)):
                ax.bar(x + (i - 1.5) * width, table.loc[label].to_numpy(), width, label=label, color=color,
                       edgecolor="black", linewidth=0.4)
            ax.set_xticks(x, list(table.columns))
            ax.set_ylabel("AP (%)")
            low = float(np.nanmin(table.loc[labels].to_numpy()))
            ax.set_ylim(max(0.0, 10 * np.floor(low / 10) - 10), 100.5)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
            ax.set_title(f"{arch}: AP on RGB vs {ablation_label(self.ablation).lower()} test images")
        return fig

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``color-robust.csv`` (the table, %), ``color-robust-drop.csv``, ``color-robust.md``,
        ``color-robust.{png,pdf}`` and, per architecture and model, the full colour-ablation outputs
        under ``<arch>/<baseline|robust>/`` (:meth:`ColorAblationStudy.write`). Atomic; returns ``{name: path}``."""
        out = Path(out_dir)
        paths = {"csv": atomic_write_csv(out / "color-robust.csv", self.table()),
                 "drop_csv": atomic_write_csv(out / "color-robust-drop.csv", self.drops()),
                 "markdown": atomic_write_text(out / "color-robust.md", self.to_markdown() + "\n")}
        paths["png"], paths["pdf"] = save_figure(self.figure(), out / "color-robust", dpi=150)
        for arch, pair in self.studies.items():
            for which, study in pair.items():
                for key, path in study.write(out / arch / which).items():
                    paths[f"{arch}_{which}_{key}"] = path
        return paths


def markdown_table(frame, digits: int = 1) -> str:
    """A numeric frame as a GitHub markdown table (index as the first column)."""
    head = [str(frame.index.name or ""), *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in frame.iterrows():
        cells = ["nan" if not np.isfinite(v) else f"{v:.{digits}f}" for v in row.to_numpy(dtype=float)]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def compare_color_robust(pairs: Mapping[str, tuple[Detector, Detector]], sets: Mapping[str, Sequence[ImageRecord]],
                         *, ablation: str = DEFAULT_ABLATION, min_p: float = MIN_P,
                         **options: Any) -> RobustComparison:
    """:func:`color_ablation` of each ``(baseline, colour-robust)`` detector pair, keyed by an
    architecture label (e.g. ``{"R50": (r50, cr_r50)}``), on the same ``sets``. ``options`` go to
    :func:`forensics.analysis.evaluate.evaluate_sets`."""
    studies: dict[str, dict[str, ColorAblationStudy]] = {}
    for arch, (baseline, robust) in pairs.items():
        studies[arch] = {}
        for which, det, label in ((BASELINE, baseline, arch), (ROBUST, robust, f"CR-{arch}")):
            log.info("colour ablation of %s (%s)", label, det.weights_source)
            studies[arch][which] = color_ablation(det, sets, ablation=ablation, label=label, min_p=min_p, **options)
    return RobustComparison(studies)
