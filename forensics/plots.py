"""Figure helpers shared by the analyses: T-FF heatmap overlays, image grids, atomic PNG/PDF saving.

A leaf module: numpy, scipy and matplotlib only, nothing of the project (so any module can use it).
Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend switch),
freed by garbage collection.

- :data:`TFF_CMAP`: T-FF's attribution colormap black -> #ffc300 -> #ffaa00 (Chandrasegaran et al., ECCV 2022).
- :func:`positive_heatmap`: per-pixel relevance ``[C, H, W]`` -> ``[H, W]`` in [0, 1] (sum over
  channels, positive part, divided by the max, optional median blur), T-FF's pixel-heatmap recipe.
- :func:`overlay`: ``0.55 * colormap(heat) + 0.45 * image`` as uint8 RGB (T-FF's Grad-CAM and LRP overlays).
- :func:`image_grid`: rows of images (uint8 RGB or ``[H, W]`` maps) in one figure.
- :func:`save_figure`: a figure to ``<path>.png`` and ``<path>.pdf``, each written to a temporary file
  in the target folder and moved into place with ``os.replace``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure

#: T-FF's heatmap colormap (``cam_gb_paper_final`` and the LRP heatmaps): black -> #ffc300 -> #ffaa00.
TFF_CMAP: Colormap = LinearSegmentedColormap.from_list("tff", ["#000000", "#ffc300", "#ffaa00"])
#: Weight of the coloured heatmap in :func:`overlay` (the image gets ``1 - HEAT_WEIGHT`` = 0.45).
HEAT_WEIGHT = 0.55


def positive_heatmap(relevance: np.ndarray, median: int = 0) -> np.ndarray:
    """T-FF's pixel heatmap: ``relevance`` ``[C, H, W]`` (or ``[H, W]``) summed over channels, positive
    part, divided by its max (an all-non-positive map gives zeros), then a ``median`` x ``median``
    median filter (0/1: none; edges replicated as ``cv2.medianBlur``). Returns float32 ``[H, W]`` in [0, 1]."""
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.ndim == 3:
        rel = rel.sum(axis=0)
    if rel.ndim != 2:
        raise ValueError(f"expected relevance [C, H, W] or [H, W], got shape {rel.shape}")
    heat = np.clip(rel, 0.0, None)
    peak = heat.max(initial=0.0)
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    if median > 1:
        from scipy.ndimage import median_filter
        heat = median_filter(heat, size=median, mode="nearest")
    return heat.astype(np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, cmap: Colormap | str = TFF_CMAP,
            heat_weight: float = HEAT_WEIGHT) -> np.ndarray:
    """Blend a heatmap onto an image: ``heat_weight * cmap(heat) + (1 - heat_weight) * image``.

    ``image``: uint8 RGB ``[H, W, 3]`` (a grayscale ``[H, W]`` is replicated). ``heat``: ``[H, W]`` with
    values in [0, 1] (clipped), the image's size. Returns uint8 RGB ``[H, W, 3]``.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"heat {heat.shape} must have the image's size {img.shape[:2]}")
    if not 0.0 <= heat_weight <= 1.0:
        raise ValueError(f"heat_weight must be in [0, 1], got {heat_weight}")
    cm = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    colored = cm(np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = heat_weight * colored + (1.0 - heat_weight) * img.astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def image_figure(image: np.ndarray, dpi: int = 100) -> Figure:
    """A figure showing ``image`` (uint8 RGB or ``[H, W]``) at its native pixel size, no axes."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(img, interpolation="nearest", cmap=None if img.ndim == 3 else "gray")
    ax.set_axis_off()
    return fig


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None,
               cell_inches: float = 1.6) -> Figure:
    """A grid figure: ``rows[r][c]`` is a uint8 RGB image or an ``[H, W]`` map (shown in gray,
    0..1); rows may differ in length. Labels go on the left of each row / above each column."""
    if not rows or not any(len(r) for r in rows):
        raise ValueError("image_grid needs at least one image")
    nrows, ncols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(cell_inches * ncols, cell_inches * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(rows[r]):
                img = np.asarray(rows[r][c])
                ax.imshow(img, interpolation="nearest", **({} if img.ndim == 3 else {"cmap": "gray", "vmin": 0,
                                                                                      "vmax": 1}))
            else:
                ax.set_axis_off()
            if row_labels is not None and c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
            if col_labels is not None and r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` (same suffix), moved onto ``path`` on success, removed on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: Per-format savefig metadata that keeps files byte-identical between runs (matplotlib stamps PDFs with a date).
_STABLE_METADATA = {"pdf": {"CreationDate": None}}


def save_figure(fig: Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: float | str = "figure") -> list[Path]:
    """Save ``fig`` as ``<path>.<fmt>`` for each format, atomically (temporary file + ``os.replace``).

    ``path`` is given without suffix (a suffix that is one of ``formats`` is dropped). Works for
    pyplot figures too (close those yourself). Returns the written paths.
    """
    base = Path(path)
    if base.suffix.lstrip(".") in formats:
        base = base.with_suffix("")
    written: list[Path] = []
    for fmt in formats:
        target = base.parent / f"{base.name}.{fmt}"
        with _atomic_target(target) as tmp:
            # no creation date in PDFs: the same figure gives the same bytes (outputs compared with cmp)
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_STABLE_METADATA.get(fmt))
        written.append(target)
    return written


def save_image(image: np.ndarray, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
               dpi: int = 100) -> list[Path]:
    """Save one image at its native pixel size (no axes) via :func:`image_figure` and :func:`save_figure`."""
    return save_figure(image_figure(image, dpi=dpi), path, formats=formats, dpi=dpi)
