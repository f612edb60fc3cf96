"""Figures of a t-SNE map (:mod:`forensics.analysis.embed`): one panel per view, points coloured by label
(real / fake / unknown) or by source (one colour per generator or real source, marker by label)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import plots

LABEL_STYLE: dict[int, tuple[str, str]] = {0: ("real", "#1f77b4"), 1: ("fake", "#d62728"), -1: ("unknown", "#7f7f7f")}
MARKERS: dict[int, str] = {0: "o", 1: "^", -1: "s"}
MAX_SOURCES = 20  # distinct colours (tab20); further sources share the last colour, named "other"


def source_colours(sources: Sequence[str]) -> dict[str, Any]:
    """One tab10 (more than 10 sources: tab20) colour per source (most frequent first); sources beyond :data:`MAX_SOURCES` get grey."""
    from matplotlib import colormaps
    names, counts = np.unique(np.asarray(sources, dtype=object), return_counts=True)
    order = [str(n) for _, n in sorted(zip(-counts, names), key=lambda t: (t[0], str(t[1])))]
    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {s: (cmap(i) if i < MAX_SOURCES else (0.6, 0.6, 0.6, 1.0)) for i, s in enumerate(order)}


def plot_embedding(frame, colour: str, path: str | Path, title: str, views: Sequence[dict[str, Any]]) -> list[Path]:
    """Scatter of ``frame`` (:data:`forensics.analysis.embed.COLUMNS`) per view, coloured by ``label`` or
    ``source``; each panel's title gives the view and its 2-D kNN accuracy. Saved as PNG and PDF."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    names = [v["view"] for v in views]
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 1.6, 4.0 * nrows + 0.5))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    n = max(1, int((frame["view"] == names[0]).sum()))
    size = float(np.clip(8000 / n, 4, 30))
    colours = source_colours(frame["source"].astype(str)) if colour == "source" else {}
    for ax, view in zip(axes, views):
        part = frame[frame["view"] == view["view"]]
        for lab in (0, 1, -1):
            rows = part[part["label"] == lab]
            if not len(rows):
                continue
            c = (LABEL_STYLE[lab][1] if colour == "label" else [colours[str(s)] for s in rows["source"]])
            ax.scatter(rows["x"], rows["y"], s=size, c=c, marker=MARKERS[lab], alpha=0.7, linewidths=0)
        acc = view.get("knn_accuracy_2d", float("nan"))
        note = f"real/fake kNN accuracy {100 * acc:.1f} %" if np.isfinite(acc) else "one class"
        ax.set_title(f"{view['view']}\n{note}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(views):]:
        ax.set_visible(False)
    present = [lab for lab in (0, 1, -1) if (frame["label"] == lab).any()]
    if colour == "label":
        handles = [Line2D([], [], ls="", marker=MARKERS[lab], color=LABEL_STYLE[lab][1], label=LABEL_STYLE[lab][0])
                   for lab in present]
    else:
        shown = list(colours.items())[:MAX_SOURCES]
        handles = [Line2D([], [], ls="", marker="o", color=c, label=s[:24]) for s, c in shown]
        if len(colours) > MAX_SOURCES:
            handles.append(Line2D([], [], ls="", marker="o", color=(0.6, 0.6, 0.6), label=f"{len(colours) - MAX_SOURCES} other"))
        handles += [Line2D([], [], ls="", marker=MARKERS[lab], color="black", label=LABEL_STYLE[lab][0])
                    for lab in present]
    axes[ncols - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{title} (t-SNE, coloured by {colour})", fontsize=10)
    fig.tight_layout()
    return plots.save_figure(fig, path, dpi=120)
