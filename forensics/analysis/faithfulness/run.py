"""Every metric for every method of one detector on one set of fakes with masks
(``analyses/faithfulness.py``, docs/faithfulness.md).

:func:`load_images` reads the fakes of a set, their masks and, where the set has them, their *bases* (the
untouched images the fakes were made from, paired by file name); :func:`select_pairs` keeps the first
*valid pairs*: fakes the detector calls fake whose base it calls real (without bases: the fakes it calls
fake, the masks taken on trust), and counts what it dropped; :func:`evaluate` explains them with each
method (target: fake, timed), runs the perturbation curves and the localisation metrics on them, the
cascading randomisation on the first few, and scores the two reference maps (the mask itself and the
pixel difference to the base). The tables and figures are written by :mod:`.outputs`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ...data import ImageDataset, ImageRecord, RunSummary, iter_batches
from ...data.local_fakes import base_for, mask_for, read_mask
from ...detectors import Detector
from ...errors import ForensicsError
from ...explain import create_explainer
from ...explain.figures import to_uint8
from ..result import AnalysisResult
from .localisation import chance_levels, localisation
from .outputs import write_evaluation
from .perturbation import PerturbationConfig, perturbation_curves
from .randomisation import CascadeResult, cascade_groups, cascading_randomisation
from .validity import ValidityResult, mask_validity

log = logging.getLogger(__name__)

#: The reference maps scored beside the methods (not explanation methods: the ceiling and where pixels changed).
REFERENCES = ("mask", "difference")


@dataclass
class ImageSet:
    """Normalised ``images`` ``[N, C, H, W]``, bool ``masks`` ``[N, H, W]`` (or None), uint8 ``display``
    images ``[N, H, W, 3]``, their ``paths``, the paired ``bases`` and their display images (or None), and
    what was skipped."""

    images: torch.Tensor
    masks: np.ndarray | None
    display: np.ndarray
    paths: list[str]
    summary: RunSummary
    bases: torch.Tensor | None = None
    base_display: np.ndarray | None = None
    base_paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)


def _read(detector: Detector, records: Sequence[ImageRecord], crop: str | None, batch_size: int):
    """``(images, display, kept paths, skipped)`` of ``records`` through the detector's transform."""
    dataset = ImageDataset(list(records), detector.transform(crop=crop))
    pre = detector.config.preprocessing
    xs, shown, kept, skipped = [], [], [], []
    for batch in iter_batches(dataset, batch_size=batch_size):
        skipped += batch.skipped
        if len(batch):
            xs.append(batch.images)
            shown.append(to_uint8(batch.images, pre.mean, pre.std))
            kept += [str(p) for p in batch.paths]
    return xs, shown, kept, skipped


def load_images(detector: Detector, records: Sequence[ImageRecord], mask_dir: str | Path | None,
                crop: str | None = None, batch_size: int = 16, base_dir: str | Path | None = None) -> ImageSet:
    """Read ``records`` through the detector's transform, the mask of each from ``mask_dir`` and its base from
    ``base_dir`` (both paired by file name, :func:`forensics.data.local_fakes.file_for`). A fake without a
    mask, or without a readable base where bases are given, is skipped and listed; a mask or base whose
    size differs from the detector's input is an error (masks need full-resolution input: ``--crop none``)."""
    summary = RunSummary()
    paths, masks, bases, kept_records = [], [], [], []
    for r in records:
        summary.total += 1
        mp = mask_for(r.path, mask_dir) if mask_dir is not None else None
        bp = base_for(r.path, base_dir) if base_dir is not None else None
        if mask_dir is not None and mp is None:
            summary.skipped.append((str(r.path), f"no mask in {mask_dir}"))
        elif base_dir is not None and bp is None:
            summary.skipped.append((str(r.path), f"no base in {base_dir}"))
        else:
            paths.append(str(r.path))
            masks.append(mp)
            bases.append(bp)
            kept_records.append(r)
    xs, shown, kept, skipped = _read(detector, kept_records, crop, batch_size)
    summary.skipped += skipped
    if base_dir is not None:
        pos = {p: i for i, p in enumerate(paths)}
        base_records = [replace(kept_records[pos[p]], path=str(bases[pos[p]]), label=0) for p in kept]
        bx, bshown, bkept, bskipped = _read(detector, base_records, crop, batch_size)
        summary.skipped += [(p, f"base unreadable: {why}") for p, why in bskipped]
        readable = set(bkept)
        keep = [str(bases[pos[p]]) in readable for p in kept]
        xs, shown = [torch.cat(xs)[torch.as_tensor(keep)]] if xs else [], [np.concatenate(shown)[keep]] if shown else []
        kept = [p for p, k in zip(kept, keep) if k]
    if not kept:
        raise ForensicsError("no readable image" + (" with a mask" if mask_dir is not None else "") +
                             (" and a base" if base_dir is not None else "") + " to evaluate")
    images = torch.cat(xs)
    if len({tuple(x.shape[1:]) for x in xs}) > 1:
        raise ForensicsError(f"images of several sizes {sorted({tuple(x.shape[1:]) for x in xs})}: "
                             "evaluate one size at a time")
    summary.used = len(kept)
    pos = {p: i for i, p in enumerate(paths)}
    mask_arr = None
    if mask_dir is not None:
        mask_arr = np.stack([read_mask(masks[pos[p]]) for p in kept])
        _check_size(mask_arr.shape[1:], images.shape[2:], "mask", masks[pos[kept[0]]])
    data = ImageSet(images, mask_arr, np.concatenate(shown), kept, summary)
    if base_dir is not None:
        b = torch.cat(bx)
        _check_size(b.shape[2:], images.shape[2:], "base", bases[pos[kept[0]]])
        data = replace(data, bases=b, base_display=np.concatenate(bshown), base_paths=[str(bases[pos[p]]) for p in kept])
    return data


def _check_size(got, want, what: str, example) -> None:
    if tuple(got) != tuple(want):
        raise ForensicsError(f"{what} {example} is {got[0]}x{got[1]} but the detector's input is {want[0]}x{want[1]}: "
                             f"use full-resolution input (--crop none) and {what}s of the images' size")


def select(data: ImageSet, keep) -> ImageSet:
    """The images of ``data`` at the indices (or bool mask) ``keep``."""
    idx = np.flatnonzero(np.asarray(keep)) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=int)
    t = torch.as_tensor(idx, dtype=torch.long)
    return ImageSet(data.images[t], None if data.masks is None else data.masks[idx], data.display[idx],
                    [data.paths[i] for i in idx], data.summary,
                    None if data.bases is None else data.bases[t],
                    None if data.base_display is None else data.base_display[idx],
                    None if data.base_paths is None else [data.base_paths[i] for i in idx])


@dataclass
class Selection:
    """How the scored images were chosen: ``fakes`` read, ``called_fake`` (logit >= ``threshold``), of those
    ``base_called_fake`` dropped because the base is called fake too, ``valid`` pairs, ``scored`` (the first
    ``limit`` valid ones). Without bases every fake called fake counts as valid (masks taken on trust)."""

    threshold: float
    fakes: int
    called_fake: int
    base_called_fake: int | None
    valid: int
    scored: int
    has_bases: bool
    all_fakes: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "fakes": self.fakes, "called_fake": self.called_fake,
                "dropped_base_called_fake": self.base_called_fake, "valid_pairs": self.valid, "scored": self.scored,
                "bases": self.has_bases, "all_fakes": self.all_fakes,
                "ground_truth": "counterfactual pairs (fake called fake, base called real)" if self.has_bases
                else "masks taken on trust (no bases: the fakes called fake)"}

    def line(self) -> str:
        if not self.has_bases:
            return (f"{self.called_fake} of {self.fakes} fakes called fake (logit >= {self.threshold:g}); no bases, "
                    f"so the masks are taken on trust; {self.scored} scored")
        return (f"{self.called_fake} of {self.fakes} fakes called fake (logit >= {self.threshold:g}); "
                f"{self.base_called_fake} dropped because their base is called fake too; {self.valid} valid pairs; "
                f"{self.scored} scored")


@torch.no_grad()
def logits(detector: Detector, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = detector.device
    return torch.cat([detector(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def _valid(fake: np.ndarray, base: np.ndarray | None, threshold: float) -> np.ndarray:
    called = fake >= threshold
    return called if base is None else called & (base < threshold)


def select_pairs(detector: Detector, data: ImageSet, limit: int | None, threshold: float = 0.0,
                 batch_size: int = 16, all_fakes: bool = False) -> tuple[ImageSet, Selection]:
    """The first ``limit`` valid pairs of ``data`` (``all_fakes``: the first ``limit`` fakes, whatever they are
    called) and the counts of :class:`Selection`."""
    detector.eval()
    fl = logits(detector, data.images, batch_size).numpy()
    bl = logits(detector, data.bases, batch_size).numpy() if data.bases is not None else None
    called = fl >= threshold
    valid = _valid(fl, bl, threshold)
    idx = np.arange(len(fl))[:limit] if all_fakes else np.flatnonzero(valid)[:limit]
    sel = Selection(threshold, len(fl), int(called.sum()), None if bl is None else int((called & (bl >= threshold)).sum()),
                    int(valid.sum()), int(valid[idx].sum()), bl is not None, all_fakes)
    log.info("%s: %s", detector.name, sel.line())
    if not valid.any():
        raise ForensicsError(f"{detector.name}: no valid pair to score ({sel.line()})")
    return select(data, idx), sel


@dataclass
class MethodResult:
    """One method's (or reference map's) per-image values: ``heat`` ``[N, H, W]``, ``seconds`` per image,
    ``curves`` ``{fill: {morf|lerf: [N, steps+1]}}``, ``localisation`` ``{metric: [n_valid]}``, ``cascade``."""

    label: str
    signed: bool
    heat: torch.Tensor
    seconds: float
    curves: dict[str, dict[str, np.ndarray]]
    localisation: dict[str, np.ndarray] = field(default_factory=dict)
    cascade: CascadeResult | None = None
    reference: bool = False


@dataclass
class Evaluation(AnalysisResult):
    """Everything :func:`evaluate` measured: the scored images (``data``), their logits and which are valid
    pairs, each method's :class:`MethodResult`, the perturbation and randomisation settings, the selection and
    the mask-validity check; ``write(out_dir)`` writes the leaderboard, per-image values, figures and summary."""

    detector: str
    data: ImageSet
    logits: np.ndarray
    valid: np.ndarray
    methods: dict[str, MethodResult]
    perturbation: PerturbationConfig
    randomisation_images: int
    seed: int
    threshold: float = 0.0
    base_logits: np.ndarray | None = None
    quantile: float | None = None
    selection: Selection | None = None
    validity: ValidityResult | None = None
    perturbation_images: int | None = None

    def write(self, out_dir: str | Path, *, formats: Sequence[str] = ("png", "pdf")) -> dict[str, Path]:
        """:func:`~forensics.analysis.faithfulness.outputs.write_evaluation`: the leaderboard (CSV, Markdown),
        per-image values, figures (``formats``) and ``summary.json`` with :attr:`record`; ``{name: path}``."""
        return write_evaluation(self, out_dir, formats)

    @property
    def perturbed(self) -> int:
        """How many images the perturbation curves (SRG) use: the first ones."""
        n = len(self.data.paths)
        return n if self.perturbation_images is None else min(self.perturbation_images, n)

    @property
    def called_fake(self) -> np.ndarray:
        return self.logits >= self.threshold

    @property
    def chance(self) -> dict[str, np.ndarray]:
        return chance_levels(self.data.masks[self.valid], self.quantile) if self.data.masks is not None else {}


def reference_maps(data: ImageSet) -> dict[str, torch.Tensor]:
    """``mask``: the ground truth as a heatmap; ``difference``: per-pixel ``|fake - base|`` (0-255 display
    values) summed over the channels, where a base exists."""
    out = {}
    if data.masks is not None:
        out["mask"] = torch.as_tensor(data.masks.astype(np.float32))
    if data.base_display is not None:
        diff = np.abs(data.display.astype(np.int16) - data.base_display.astype(np.int16)).sum(-1)
        out["difference"] = torch.as_tensor(diff.astype(np.float32))
    return out


def evaluate(detector: Detector, data: ImageSet, methods: Sequence[str], *,
             options: Mapping[str, Mapping[str, Any]] | None = None,
             perturbation: PerturbationConfig = PerturbationConfig(), randomisation_images: int = 8,
             min_groups: int = 4, batch_size: int = 16, seed: int = 0, threshold: float = 0.0,
             quantile: float | None = None, selection: Selection | None = None, validity_draws: int = 8,
             references: bool = True, perturbation_images: int | None = None) -> Evaluation:
    """Explain ``data`` (target: fake) with each method and measure it (see the module docstring); the mask
    validity check runs first on the valid pairs where ``data`` has bases. ``perturbation_images``: the
    perturbation curves (the costliest metric: fill-ins x orders x steps forward passes per image) on the first
    N images only (``None``: all)."""
    options = options or {}
    detector.eval()
    x = data.images
    fl = logits(detector, x, batch_size).numpy()
    bl = logits(detector, data.bases, batch_size).numpy() if data.bases is not None else None
    valid = _valid(fl, bl, threshold)
    log.info("%d images, %d valid for localisation (%s)", len(x), int(valid.sum()), detector.name)
    dev = detector.device

    def score(batch: torch.Tensor) -> torch.Tensor:   # target fake: g = f
        return detector(batch.to(dev))

    validity = None
    if data.bases is not None and data.masks is not None and valid.any():
        v = torch.as_tensor(valid)
        validity = mask_validity(score, x[v], data.bases[v], data.masks[valid], draws=validity_draws, seed=seed,
                                 batch_size=max(batch_size * 4, 64), threshold=threshold)
    masks = data.masks[valid] if data.masks is not None else None

    def measure(heat: torch.Tensor) -> tuple[dict, dict]:
        n = len(x) if perturbation_images is None else min(perturbation_images, len(x))
        curves = perturbation_curves(score, x[:n].to(dev), heat[:n], perturbation, chunk=max(batch_size * 8, 64))
        loc = localisation(heat.numpy()[valid], masks, quantile) if masks is not None else {}
        return curves, loc

    groups = cascade_groups(detector, min_groups) if randomisation_images else None
    results: dict[str, MethodResult] = {}
    for method in tqdm(methods, desc="methods", unit="method"):
        opts = dict(options.get(method, {}))
        heats, seconds = [], 0.0
        with create_explainer(method, detector, **opts) as ex:
            label, signed = ex.label, ex.capabilities.signed
            for i in range(0, len(x), batch_size):
                start = time.perf_counter()
                heats.append(ex.attribute(x[i:i + batch_size], "fake").pixel)
                seconds += time.perf_counter() - start
        heat = torch.cat(heats)
        curves, loc = measure(heat)
        cascade = None
        if randomisation_images:
            cascade = cascading_randomisation(detector, method, x[:randomisation_images], "fake", opts, seed=seed,
                                              groups=groups)
        results[method] = MethodResult(label, signed, heat, seconds / len(x), curves, loc, cascade)
        log.info("%s: %.3f s/image", method, seconds / len(x))
    if references:
        for name, heat in reference_maps(data).items():
            curves, loc = measure(heat)
            results[name] = MethodResult(name, False, heat, 0.0, curves, loc, reference=True)
    return Evaluation(detector.name, data, fl, valid, results, perturbation, randomisation_images, seed, threshold,
                      bl, quantile, selection, validity, perturbation_images)


__all__ = ["Evaluation", "ImageSet", "MethodResult", "REFERENCES", "Selection", "evaluate", "load_images", "logits",
           "reference_maps", "select", "select_pairs"]
