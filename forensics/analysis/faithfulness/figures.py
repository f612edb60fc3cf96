"""Figures of a faithfulness run: perturbation curves, cascading randomisation, heatmaps beside the masks."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the result class draws with these functions
    from .run import Evaluation


def _colours(n: int):
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def curve_figure(ev: Evaluation, fill: str):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    steps = ev.perturbation.steps
    frac = np.linspace(0, 1, steps + 1)
    for (m, r), col in zip(ev.methods.items(), _colours(len(ev.methods))):
        for ax, order in zip(axes, ("morf", "lerf")):
            ax.plot(frac, r.curves[fill][order].mean(0), color=col, lw=2.2 if m == "random" else 1.3,
                    ls="--" if m == "random" else ":" if r.reference else "-",
                    label=f"{m} (reference)" if r.reference else m)
    for ax, order in zip(axes, ("MoRF (most relevant removed first)", "LeRF (least relevant removed first)")):
        ax.set_title(order, fontsize=9)
        ax.set_xlabel("fraction of patches removed")
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean logit of 'fake'")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{ev.detector}: perturbation curves, fill-in '{fill}', {ev.perturbed} fakes, "
                 f"{ev.perturbation.patch}px patches", fontsize=9)
    fig.tight_layout()
    return fig


def randomisation_figure(ev: Evaluation):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(14.5, 3.9))
    axes = fig.subplots(1, 3, sharey=True)
    names = None
    for (m, r), col in zip(ev.methods.items(), _colours(len(ev.methods))):
        if r.cascade is None:
            continue
        c = r.cascade
        names = c.steps
        for ax, vals in zip(axes, (c.spearman, c.spearman_abs, c.ssim)):
            ax.plot(range(len(names)), np.nanmean(vals, 1), marker="o", ms=3, color=col,
                    lw=2.2 if m == "random" else 1.3, ls="--" if m == "random" else "-", label=m)
    for ax, title in zip(axes, ("Spearman", "Spearman of |map|", "SSIM")):
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{title} with the trained model's map", fontsize=9)
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("randomised cumulatively down to")
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the panels, not over them
    fig.suptitle(f"{ev.detector}: cascading parameter randomisation, {ev.randomisation_images} images", fontsize=9)
    fig.tight_layout()
    return fig


def mask_grid(ev: Evaluation, rows: int = 6):
    from ...explain.figures import explanation_grid
    idx = np.flatnonzero(ev.valid)[:rows] if ev.data.masks is not None else np.arange(rows)
    idx = idx[:rows] if len(idx) else np.arange(min(rows, len(ev.data.paths)))
    maps: dict[str, np.ndarray] = {}
    signed: dict[str, bool] = {}
    for m, r in sorted(ev.methods.items(), key=lambda kv: not kv[1].reference):   # references first
        maps[m], signed[m] = r.heat.numpy()[idx], r.signed
    labels = [f"p={float(1 / (1 + np.exp(-ev.logits[i]))):.2f}" for i in idx]
    beside = ("the ground-truth mask and the pixel difference to the base" if ev.data.base_display is not None
              else "the mask (taken on trust: no bases)")
    return explanation_grid(ev.data.display[idx], maps, signed=signed, row_labels=labels,
                            title=f"{ev.detector}: heatmaps (target fake) beside {beside}")


__all__ = ["curve_figure", "mask_grid", "randomisation_figure"]
