"""Heatmaps of explanation methods on a set's images: the data selection and the one batch loop
behind the heatmap CLIs (``analyses/explain.py``, ``analyses/gradcam.py``, ``analyses/lrp_heatmaps.py``).

:func:`explained_batches` is the loop (the detector's transform, skipped files listed in a
:class:`~forensics.data.RunSummary`, each batch with the uint8 pixels the detector saw);
:func:`collect_heatmaps` gathers per-image maps of any ``explain(batch)`` over it (the overlay CLIs).
:func:`explain_records` runs every requested registered method (:mod:`forensics.explain`) on the
same batches and times each; its :class:`HeatmapRun`'s ``write`` writes the grid figure (rows = images, columns =
the input then one heatmap per method, one colour convention: :func:`forensics.explain.figures.explanation_grid`),
the maps as safetensors, a per-image CSV (logit, P(fake), target, seconds per image of each method)
and ``summary.json``.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..data import Batch, ImageDataset, ImageRecord, RunSummary, iter_batches
from ..detectors import Detector
from ..errors import ForensicsError
from ..explain import create_explainer
from ..explain.figures import explanation_grid, to_uint8, write_heatmap_figures
from ..io import atomic_path, atomic_write_json, atomic_write_text
from .result import AnalysisResult

log = logging.getLogger(__name__)


def explained_batches(detector: Detector, records: Sequence[ImageRecord], summary: RunSummary, *,
                      crop: str | None = None, batch_size: int = 8, num_workers: int = 0
                      ) -> Iterator[tuple[Batch, np.ndarray]]:
    """The readable batches of ``records`` under the detector's transform (``crop``: its crop policy),
    each with its de-normalised uint8 pixels ``[B, H, W, 3]``; unreadable files go to ``summary``."""
    dataset = ImageDataset(list(records), detector.transform(crop=crop))
    pre = detector.config.preprocessing
    for batch in iter_batches(dataset, batch_size=batch_size, num_workers=num_workers):
        summary.add(batch)
        if len(batch):
            yield batch, to_uint8(batch.images, pre.mean, pre.std)


@dataclass
class Heatmaps(AnalysisResult):
    """Per-image heatmaps of a run: file-stem ``names`` (``<index>_<stem>``), the de-normalised
    ``images`` [N, H, W, 3] uint8, ``maps`` (name -> [N, H, W]) and the ``summary`` of skipped files."""

    names: list[str]
    images: np.ndarray
    maps: dict[str, np.ndarray]
    summary: RunSummary

    def write(self, out_dir: str | Path, *, title: str = "heatmaps", formats: Sequence[str] = ("png", "pdf"),
              scale: int = 4) -> dict[str, Path]:
        """The overlays (:func:`~forensics.explain.figures.write_heatmap_figures`: per image ``<name>/image.*`` and
        ``<name>/<map>.*``, and ``grid.*``) and ``summary.json`` (images, maps, skipped files, then
        :attr:`record`); returns every file by its path relative to ``out_dir``."""
        out = Path(out_dir)
        written = write_heatmap_figures(out, self.names, self.images, self.maps, title=title, formats=formats,
                                        scale=scale)
        paths = {str(p.relative_to(out)): p for files in written.values() for p in files}
        summary = {"images": len(self.names), "names": self.names, "maps": list(self.maps),
                   "skipped": self.summary.skipped, **self.record}
        paths["summary"] = atomic_write_json(out / "summary.json", summary)
        return paths


def collect_heatmaps(detector: Detector, records: Sequence[ImageRecord],
                     explain: Callable[[Batch], Mapping[str, np.ndarray]], *, crop: str | None = None,
                     batch_size: int = 8, num_workers: int = 0) -> Heatmaps:
    """Run ``explain(batch) -> {name: [B, H, W] array}`` over ``records`` (:func:`explained_batches`)
    and gather the maps with the images they explain."""
    summary = RunSummary()
    names: list[str] = []
    images: list[np.ndarray] = []
    maps: dict[str, list[np.ndarray]] = {}
    for batch, pixels in explained_batches(detector, records, summary, crop=crop, batch_size=batch_size,
                                           num_workers=num_workers):
        for key, value in explain(batch).items():
            maps.setdefault(key, []).append(value)
        images.append(pixels)
        names += [f"{len(names) + i:03d}_{Path(p).stem}" for i, p in enumerate(batch.paths)]
    if not names:
        raise ForensicsError("no readable image to explain")
    return Heatmaps(names, np.concatenate(images), {k: np.concatenate(v) for k, v in maps.items()}, summary)


@dataclass
class MethodMaps:
    """One method's results over all images: ``pixel`` ``[N, H, W]``, ``input_map`` ``[N, C, H, W]``
    or ``None``, ``seconds`` per batch (wall time of its ``attribute`` calls), its figure ``label``
    and whether its values are ``signed``."""

    label: str
    signed: bool
    pixel: list[torch.Tensor] = field(default_factory=list)
    input_map: list[torch.Tensor] | None = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class HeatmapRun(AnalysisResult):
    """Images (``paths``, ``labels``, uint8 ``images`` [N, H, W, 3]), the detector's ``logits`` and the
    resolved ``target`` per image, per-batch sizes, and each method's :class:`MethodMaps`."""

    paths: list[str]
    labels: list[int | None]
    images: np.ndarray
    logits: torch.Tensor
    target: torch.Tensor
    batch_sizes: list[int]
    methods: dict[str, MethodMaps]
    summary: RunSummary

    def pixel(self, method: str) -> torch.Tensor:
        return torch.cat(self.methods[method].pixel)

    def seconds_per_image(self, method: str) -> np.ndarray:
        """Per image: its batch's wall time for ``method`` divided by the batch size."""
        m = self.methods[method]
        return np.concatenate([np.full(n, s / n) for s, n in zip(m.seconds, self.batch_sizes)])

    def write(self, out_dir: str | Path, *, title: str = "explanations",
              formats: Sequence[str] = ("png", "pdf")) -> dict[str, Path]:
        """``grid.{png,pdf}`` (titled ``title``), ``maps.safetensors`` (``<method>.pixel`` [N, H, W],
        ``<method>.input_map``, ``logits``, ``target``), ``explain.csv`` (one row per image) and ``summary.json``
        (images, per method its label and seconds per image, the skipped files, then :attr:`record`)."""
        from safetensors.torch import save_file

        from .. import plots
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = list(self.methods)
        row_labels = [f"{_label_name(lab)} p={float(p):.2f}" for lab, p in zip(self.labels, torch.sigmoid(self.logits))]
        fig = explanation_grid(self.images, {self.methods[m].label: self.pixel(m).numpy() for m in names},
                               signed={self.methods[m].label: self.methods[m].signed for m in names},
                               row_labels=row_labels, title=title)
        grid = plots.save_figure(fig, out_dir / "grid", formats=formats, dpi=150)

        tensors = {"logits": self.logits.contiguous(), "target": self.target.contiguous()}
        for m in names:
            tensors[f"{m}.pixel"] = self.pixel(m).contiguous()
            if self.methods[m].input_map is not None:
                tensors[f"{m}.input_map"] = torch.cat(self.methods[m].input_map).contiguous()
        with atomic_path(out_dir / "maps.safetensors") as tmp:
            save_file(tensors, str(tmp))

        per_image = {m: self.seconds_per_image(m) for m in names}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["index", "path", "label", "logit", "p_fake", "target", *[f"seconds_{m}" for m in names]])
        for i, path in enumerate(self.paths):
            writer.writerow([i, path, "" if self.labels[i] is None else self.labels[i], f"{float(self.logits[i]):.6g}",
                             f"{float(torch.sigmoid(self.logits[i])):.6g}", int(self.target[i]),
                             *[f"{per_image[m][i]:.6g}" for m in names]])
        atomic_write_text(out_dir / "explain.csv", buf.getvalue())
        summary = {"images": len(self.paths), "methods": {m: {"label": self.methods[m].label, "signed": self.methods[m].signed,
                                                             "seconds_per_image": float(per_image[m].mean())}
                                                         for m in names},
                   "torch_threads": torch.get_num_threads(), "skipped": self.summary.skipped,
                   "files": [str(p) for p in grid] + [str(out_dir / n) for n in ("maps.safetensors", "explain.csv")],
                   **self.record}
        paths = {f"grid_{Path(p).suffix[1:]}": Path(p) for p in grid}
        paths.update(maps=out_dir / "maps.safetensors", csv=out_dir / "explain.csv",
                     summary=atomic_write_json(out_dir / "summary.json", summary))
        return paths


def explain_records(detector: Detector, records: Sequence[ImageRecord], methods: Sequence[str],
                    target: str = "fake", *, options: Mapping[str, Mapping[str, Any]] | None = None,
                    crop: str | None = None, batch_size: int = 8, num_workers: int = 0) -> HeatmapRun:
    """Explain ``records`` with each of ``methods`` (registry names; ``options[method]`` passed to
    :func:`~forensics.explain.create_explainer`). ``target``: ``fake``/``real``/``predicted`` or
    ``label`` (each image's true class)."""
    options = options or {}
    explainers = {m: create_explainer(m, detector, **dict(options.get(m, {}))) for m in methods}
    maps = {m: MethodMaps(ex.label, ex.capabilities.signed) for m, ex in explainers.items()}
    summary = RunSummary()
    paths: list[str] = []
    labels: list[int | None] = []
    images, logits, targets, sizes = [], [], [], []
    for batch, pixels in explained_batches(detector, records, summary, crop=crop, batch_size=batch_size,
                                           num_workers=num_workers):
        batch_labels = [int(v) if v >= 0 else None for v in batch.labels.tolist()]
        if target == "label":
            if any(v is None for v in batch_labels):
                raise ForensicsError("--target label needs labelled images (real/fake folders)")
            want: Any = torch.tensor(batch_labels)
        else:
            want = target
        for m, ex in explainers.items():
            start = time.perf_counter()
            e = ex.attribute(batch.images, want)
            maps[m].seconds.append(time.perf_counter() - start)
            maps[m].pixel.append(e.pixel)
            if e.input_map is None:
                maps[m].input_map = None
            elif maps[m].input_map is not None:
                maps[m].input_map.append(e.input_map)
            last = e
        logits.append(last.logits)
        targets.append(last.target)
        sizes.append(len(batch))
        images.append(pixels)
        paths += [str(p) for p in batch.paths]
        labels += batch_labels
        log.info("explained %d images with %d methods", len(paths), len(methods))
    if not paths:
        raise ForensicsError("no readable image to explain")
    return HeatmapRun(paths, labels, np.concatenate(images), torch.cat(logits), torch.cat(targets), sizes, maps,
                      summary)


def _label_name(label: int | None) -> str:
    return {0: "real", 1: "fake"}.get(label if label is not None else -1, "?")


__all__ = ["HeatmapRun", "Heatmaps", "MethodMaps", "collect_heatmaps", "explain_records", "explained_batches"]
