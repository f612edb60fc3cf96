"""Heatmap figures of explanations, shared by the heatmap CLIs (``analyses/explain.py``,
``analyses/gradcam.py``, ``analyses/lrp_heatmaps.py``) and the analyses. Figures only: the data
selection and batch loop behind the CLIs are :mod:`forensics.analysis.heatmaps`'s.

- :func:`explanation_grid`: rows = images, columns = the input then one heatmap per method, in ONE
  colour convention: a diverging map (red = evidence for the target class, blue = against, white = 0),
  each heatmap scaled by its own robust maximum ``|value|`` (99.5th percentile); unsigned methods
  (Grad-CAM, the random control) use its red half.
- :func:`write_heatmap_figures`: T-FF's overlays (black -> #ffc300 -> #ffaa00) per image and a grid.
- :func:`to_uint8`: undo a detector's normalisation for display.
- :func:`signed_overlay` and :func:`overlay_grid`: the same convention as overlays on the (grey) input, as
  a grid of detectors x methods of one image with a colour bar (the explorer, ``python -m forensics app``).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plots

#: Diverging colormap of :func:`explanation_grid` (red = evidence for the target, blue = against).
SIGNED_CMAP = "bwr"
#: Percentile of ``|map|`` that maps to full colour (robust to a few extreme pixels).
SCALE_PERCENTILE = 99.5


def scale_map(heat: np.ndarray, signed: bool = True, percentile: float = SCALE_PERCENTILE) -> np.ndarray:
    """``heat`` ``[H, W]`` divided by its ``percentile`` of ``|heat|`` and clipped to [-1, 1] (``signed``)
    or [0, 1] (unsigned maps: negative values clipped); an all-zero map stays 0."""
    heat = np.asarray(heat, dtype=np.float64)
    peak = np.percentile(np.abs(heat), percentile) if heat.size else 0.0
    out = heat / peak if peak > 0 else np.zeros_like(heat)
    return np.clip(out, -1.0 if signed else 0.0, 1.0).astype(np.float32)


def explanation_grid(images: np.ndarray, maps: Mapping[str, np.ndarray], signed: Mapping[str, bool] | None = None,
                     row_labels: Sequence[str] | None = None, title: str | None = None,
                     cell_inches: float = 1.5) -> Figure:
    """Grid figure: ``images`` uint8 ``[N, H, W, 3]``; ``maps`` column label -> ``[N, H, W]`` pixel maps
    (positive = evidence for the target); ``signed`` column label -> whether the map is signed
    (default True). Scaling and colours: see the module docstring."""
    signed = dict(signed or {})
    n, cols = len(images), 1 + len(maps)
    fig = Figure(figsize=(cell_inches * cols, cell_inches * n + 0.6))
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        axes[r][0].imshow(images[r], interpolation="nearest")
        for c, (label, m) in enumerate(maps.items(), start=1):
            axes[r][c].imshow(scale_map(m[r], signed.get(label, True)), cmap=SIGNED_CMAP, vmin=-1, vmax=1,
                              interpolation="nearest")
        for c in range(cols):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        if row_labels is not None:
            axes[r][0].set_ylabel(row_labels[r], fontsize=7)
    for c, label in enumerate(["input", *maps]):
        axes[0][c].set_title(label, fontsize=7)
    fig.suptitle((title + "\n" if title else "") + "red: evidence for the target, blue: against (each map scaled "
                 "to its 99.5th percentile of |value|)", fontsize=7)
    fig.tight_layout()
    return fig


def signed_overlay(image: np.ndarray, heat: np.ndarray, signed: bool = True) -> np.ndarray:
    """``heat`` ``[H, W]`` scaled as :func:`explanation_grid` does (:func:`scale_map`) in :data:`SIGNED_CMAP`
    over the grey version of ``image`` uint8 ``[H, W, 3]``; returns uint8 RGB ``[H, W, 3]``."""
    img = np.asarray(image, dtype=np.float64)
    grey = np.repeat((img @ np.array([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    unit = (scale_map(heat, signed) + 1.0) / 2.0  # -1 (blue) .. 0 (white) .. 1 (red) onto the map's [0, 1]
    return plots.overlay(np.clip(np.rint(grey), 0, 255).astype(np.uint8), unit, cmap=SIGNED_CMAP)


def overlay_grid(cells: Sequence[Sequence["GridCell"]], row_labels: Sequence[str], col_labels: Sequence[str],
                 title: str | None = None, cell_inches: float = 1.7) -> Figure:
    """One image's grid (rows = detectors, columns = the input, the ground-truth mask where there is one,
    then one column per method): each :class:`GridCell` is an image (shown as is), a map (overlaid with
    :func:`signed_overlay`) or an error text; one colour bar for every map."""
    from matplotlib import cm, colors
    rows, cols = len(cells), max((len(r) for r in cells), default=1)
    fig = Figure(figsize=(cell_inches * cols + 0.9, cell_inches * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, row in enumerate(cells):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
            cell = row[c] if c < len(row) else GridCell()
            if cell.error is not None:
                ax.text(0.5, 0.5, "\n".join(textwrap.wrap(cell.error, 22)[:6]), ha="center", va="center",
                        fontsize=5, color="darkred", transform=ax.transAxes)
            elif cell.heat is not None:
                ax.imshow(signed_overlay(cell.image, cell.heat, cell.signed), interpolation="nearest")
            elif cell.image is not None:
                ax.imshow(cell.image, cmap="gray", interpolation="nearest")
            else:
                ax.axis("off")
            if cell.caption:
                ax.set_xlabel(cell.caption, fontsize=6)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
    for c, label in enumerate(col_labels[:cols]):
        axes[0][c].set_title(label, fontsize=7)
    bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(-1, 1), SIGNED_CMAP), ax=axes, shrink=0.8, aspect=30)
    bar.set_ticks([-1, 0, 1], labels=["against", "0", "for"])
    bar.set_label("evidence for the target\n(map / 99.5th pct of |map|)", fontsize=6)
    bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


@dataclass
class GridCell:
    """A cell of :func:`overlay_grid`: ``image`` uint8 ``[H, W, 3]`` (or a grey ``[H, W]`` mask), ``heat``
    ``[H, W]`` overlaid on it (``signed``: the method's values have both signs), or an ``error``; ``caption``
    under it (e.g. seconds)."""

    image: np.ndarray | None = None
    heat: np.ndarray | None = None
    signed: bool = True
    error: str | None = None
    caption: str = ""


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of ``images`` ``[B, 3, H, W]``: uint8 RGB ``[B, H, W, 3]`` (the pixels
    the detector saw, for overlays)."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.detach().cpu().float() * s + m).clamp(0, 1) * 255.0
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_heatmap_figures(out_dir: str | Path, names: Sequence[str], images: np.ndarray,
                          maps: dict[str, np.ndarray], title: str, formats: Sequence[str] = ("png", "pdf"),
                          scale: int = 4) -> dict[str, list[Path]]:
    """Per image ``out_dir/<name>/image.*`` and ``<map>.*`` (T-FF overlay of each ``[B, H, W]`` map in
    [0, 1]), and one ``out_dir/grid.*`` (rows = images; columns = image, then each map's overlay).
    ``scale``: per-image files are upscaled by pixel repetition (64 px images are tiny in a PDF).
    Returns ``{"image": [...], "<map>": [...], "grid": [...]}`` (all formats)."""
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {"image": [], **{k: [] for k in maps}, "grid": []}
    rows: list[list[np.ndarray]] = []
    for i, name in enumerate(names):
        overlays = {k: plots.overlay(images[i], m[i]) for k, m in maps.items()}
        row = [images[i], *overlays.values()]
        rows.append(row)
        for key, img in zip(("image", *overlays), row):
            big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1) if scale > 1 else img
            written[key] += plots.save_image(big, out_dir / name / key, formats=formats)
    fig = plots.image_grid(rows, row_labels=[n[:18] for n in names], col_labels=["image", *maps], title=title)
    written["grid"] = plots.save_figure(fig, out_dir / "grid", formats=formats, dpi=150)
    return written
