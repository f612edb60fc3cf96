"""One click of the explorer's ``Explain``: every chosen detector's verdict and every chosen method's maps on
every image, through the library only (:func:`forensics.analysis.inference.predict_records` for the verdicts,
:func:`forensics.analysis.heatmaps.explain_records`, as ``analyses/explain.py``, for the maps), and what the
page shows and downloads of it (figures, a TIE bar chart for RINE, safetensors). A method that fails on a
detector leaves an error in its cells; the other cells are computed as usual."""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .. import plots
from ..analysis.heatmaps import explain_records
from ..analysis.inference import predict_records
from ..analysis.tie import TIESummary, summarize
from ..data import ImageRecord
from ..explain.figures import GridCell, overlay_grid, signed_overlay
from ..io import atomic_path
from .sources import DetectorCache, DetectorSource, ground_truth_mask

log = logging.getLogger(__name__)

#: P(fake) at and above which a verdict is "fake" (logit 0), as ``target="predicted"`` of the explainers.
THRESHOLD = 0.5
#: Side (pixels) to which the page's overlays are enlarged (pixel repetition: 64 px inputs are tiny).
DISPLAY_SIDE = 256

Progress = Callable[[float, str], None]


@dataclass
class Verdict:
    """One detector's output on one image."""

    detector: str
    logit: float
    p_fake: float
    threshold: float = THRESHOLD

    @property
    def label(self) -> str:
        return "fake" if self.p_fake >= self.threshold else "real"

    def text(self) -> str:
        return f"{self.label}: P(fake) = {self.p_fake:.3f}, logit {self.logit:+.3f}, threshold {self.threshold:.3f}"


@dataclass
class Cell:
    """One method of one detector on one image: the ``pixel`` map ``[H, W]`` over ``image`` (the input the
    detector saw, uint8), or the ``error`` that stopped the method."""

    detector: str
    method: str
    label: str
    signed: bool = True
    image: np.ndarray | None = None
    pixel: np.ndarray | None = None
    seconds: float | None = None
    error: str | None = None

    def caption(self) -> str:
        if self.error is not None:
            return f"{self.detector} · {self.label}: error: {self.error}"
        return f"{self.detector} · {self.label} ({self.seconds:.2f} s)"


@dataclass
class ImageResult:
    record: ImageRecord
    name: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class ExplorerRun:
    images: list[ImageResult]
    methods: list[str]
    detectors: list[str]
    tie: dict[str, TIESummary] = field(default_factory=dict)  # RINE detectors: their TIE block importances


def run_explorer(records: Sequence[ImageRecord], sources: Sequence[DetectorSource], methods: Sequence[str],
                 cache: DetectorCache, options: Mapping[str, Mapping[str, Any]] | None = None,
                 progress: Progress | None = None) -> ExplorerRun:
    """Verdicts and maps of ``methods`` (those defined on each detector) for ``records``, target ``fake``."""
    say = progress or (lambda frac, text: None)
    options = options or {}
    results = [ImageResult(r, _unique_name(r, i)) for i, r in enumerate(records)]
    by_path = {str(r.record.path): r for r in results}
    run = ExplorerRun(results, list(methods), [s.label for s in sources])
    steps = max(1, len(sources) * (1 + len(methods)))
    done = 0
    for source in sources:
        say(done / steps, f"loading {source.label}")
        detector = cache.get(source)
        preds = predict_records(detector, records, progress=False)
        for rec, logit in zip(preds.records, preds.logits):
            by_path[str(rec.path)].verdicts[source.label] = Verdict(source.label, float(logit),
                                                                     float(torch.sigmoid(torch.tensor(logit))))
        for path, reason in preds.summary.skipped:
            if str(path) in by_path:
                by_path[str(path)].skipped[source.label] = reason
        if hasattr(detector, "importances"):
            run.tie[source.label] = summarize(detector, source.label)
        done += 1
        for method in methods:
            say(done / steps, f"{source.label}: {method}")
            done += 1
            if method not in source.methods:
                for r in results:
                    r.cells.append(Cell(source.label, method, method, error=f"not defined on {source.detector}"))
                continue
            _explain_one(detector, source.label, method, dict(options.get(method, {})), records, by_path, results)
    for r in results:
        r.mask = ground_truth_mask(r.record)
    say(1.0, "done")
    return run


def _explain_one(detector, label: str, method: str, opts: dict, records, by_path, results) -> None:
    try:
        heat = explain_records(detector, records, [method], "fake", options={method: opts}, batch_size=8)
    except Exception as exc:  # shown in the method's cells; the rest of the grid still renders
        log.warning("explorer: %s on %s failed: %s", method, label, exc)
        for r in results:
            r.cells.append(Cell(label, method, method, error=f"{type(exc).__name__}: {exc}"))
        return
    maps = heat.methods[method]
    pixel = heat.pixel(method).numpy()
    seconds = heat.seconds_per_image(method)
    for i, path in enumerate(heat.paths):
        r = by_path[path]
        r.inputs[label] = heat.images[i]
        r.cells.append(Cell(label, method, maps.label, maps.signed, heat.images[i], pixel[i], float(seconds[i])))
    explained = set(heat.paths)
    for r in results:
        if str(r.record.path) not in explained:
            r.cells.append(Cell(label, method, maps.label, error="image skipped: " + r.skipped.get(label, "unreadable")))


def _unique_name(record: ImageRecord, index: int) -> str:
    return f"{index:03d}_{Path(record.path).stem}"


def cell_overlay(cell: Cell, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The page's picture of a computed cell: :func:`signed_overlay`, enlarged by pixel repetition."""
    img = signed_overlay(cell.image, cell.pixel, cell.signed)
    k = max(1, side // max(img.shape[:2]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def image_figure(result: ImageResult, run: ExplorerRun, display_names: Mapping[str, str] | None = None):
    """One image's detectors x methods figure (:func:`~forensics.explain.figures.overlay_grid`)."""
    names = dict(display_names or {})
    has_mask = result.mask is not None
    rows, row_labels = [], []
    for det in run.detectors:
        cells = {c.method: c for c in result.cells if c.detector == det}
        verdict = result.verdicts.get(det)
        row = [GridCell(image=result.inputs.get(det), error=None if det in result.inputs or verdict else "skipped")]
        if has_mask:
            row.append(GridCell(image=result.mask.astype(np.uint8) * 255))
        for m in run.methods:
            c = cells.get(m)
            row.append(GridCell(error=c.error) if c is None or c.error is not None else
                       GridCell(image=c.image, heat=c.pixel, signed=c.signed, caption=f"{c.seconds:.2f} s"))
        rows.append(row)
        p = f"\np={verdict.p_fake:.3f}" if verdict else ""
        row_labels.append(names.get(det, det) + p)
    cols = ["input", *(["ground truth"] if has_mask else []), *run.methods]
    return overlay_grid(rows, row_labels, cols, title=f"{result.name}: target fake")


def write_downloads(run: ExplorerRun, out_dir: str | Path) -> dict[str, Any]:
    """Write every image's figure (PNG) and one ``maps.safetensors`` (``<image>/<detector>/<method>.pixel``
    ``[H, W]`` and ``<image>/<detector>/logit``) under ``out_dir``, and both in ``explorer.zip``.
    Returns ``{"figures": [...], "maps": path, "zip": path}``."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [plots.save_figure(image_figure(r, run), out / f"{r.name}", formats=("png",), dpi=150)[0]
               for r in run.images]
    tensors: dict[str, torch.Tensor] = {}
    for r in run.images:
        for det, v in r.verdicts.items():
            tensors[f"{r.name}/{det}/logit"] = torch.tensor([v.logit])
        for c in r.cells:
            if c.pixel is not None:
                tensors[f"{r.name}/{c.detector}/{c.method}.pixel"] = torch.from_numpy(np.ascontiguousarray(c.pixel))
    maps = out / "maps.safetensors"
    with atomic_path(maps) as tmp:
        save_file(tensors, str(tmp))
    archive = out / "explorer.zip"
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in [maps, *figures]:
                z.write(f, f.name)
    return {"figures": figures, "maps": maps, "zip": archive}


__all__ = ["THRESHOLD", "Cell", "ExplorerRun", "ImageResult", "Verdict", "cell_overlay", "image_figure",
           "run_explorer", "write_downloads"]
