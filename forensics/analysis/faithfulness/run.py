"""Every metric for every method of one detector on one set of fakes with masks
(``analyses/faithfulness.py``, docs/faithfulness.md).

:func:`load_images` reads the fakes of a set and their masks; :func:`called_fake` keeps the first
ones the detector calls fake; :func:`evaluate` explains them with
each method (target: fake, timed), runs the perturbation curves on all of them, the localisation
metrics on those the detector calls fake, and the cascading randomisation on the first few;
:func:`leaderboard` reduces the per-image values to means with bootstrap 95 % CIs; :func:`write_outputs`
writes the leaderboard (CSV and markdown), the per-image CSV, the figures and ``summary.json``.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ...data import ImageDataset, ImageRecord, RunSummary, iter_batches
from ...data.local_fakes import MASK_DIR, mask_for, read_mask
from ...detectors import Detector
from ...errors import ForensicsError
from ...explain import create_explainer
from ...explain.figures import to_uint8
from ...io import atomic_write_json, atomic_write_text
from .localisation import METRICS as LOC_METRICS, chance_levels, localisation
from .perturbation import PerturbationConfig, area, perturbation_curves
from .randomisation import CascadeResult, cascade_groups, cascading_randomisation, model_sensitive
from .stats import Estimate, bootstrap_ci

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """Normalised ``images`` ``[N, C, H, W]``, bool ``masks`` ``[N, H, W]`` (or None), uint8 ``display``
    images ``[N, H, W, 3]``, their ``paths``, and what was skipped."""

    images: torch.Tensor
    masks: np.ndarray | None
    display: np.ndarray
    paths: list[str]
    summary: RunSummary


def load_images(detector: Detector, records: Sequence[ImageRecord], mask_dir: str | Path | None,
                crop: str | None = None, batch_size: int = 16) -> ImageSet:
    """Read ``records`` through the detector's transform, and the mask of each from ``mask_dir``
    (same file stem). A fake without a mask is skipped and listed; a mask whose size differs from the
    detector's input is an error (masks need full-resolution input: ``--crop none``)."""
    dataset = ImageDataset(list(records), detector.transform(crop=crop))
    pre = detector.config.preprocessing
    summary = RunSummary()
    images, display, paths, masks = [], [], [], []
    for batch in iter_batches(dataset, batch_size=batch_size):
        summary.add(batch)
        if not len(batch):
            continue
        keep = []
        for i, p in enumerate(batch.paths):
            if mask_dir is None:
                keep.append(i)
                continue
            mp = mask_for(p, mask_dir)
            if mp is None:
                summary.skipped.append((str(p), f"no mask in {mask_dir}"))
                summary.used -= 1
                continue
            m = read_mask(mp)
            if m.shape != tuple(batch.images.shape[2:]):
                raise ForensicsError(f"mask {mp} is {m.shape[0]}x{m.shape[1]} but the detector's input is "
                                     f"{batch.images.shape[2]}x{batch.images.shape[3]}: use full-resolution "
                                     "input (--crop none) and masks of the images' size")
            masks.append(m)
            keep.append(i)
        if keep:
            x = batch.images[keep]
            images.append(x)
            display.append(to_uint8(x, pre.mean, pre.std))
            paths += [str(batch.paths[i]) for i in keep]
    if not paths:
        raise ForensicsError("no readable image with a mask to evaluate")
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise ForensicsError(f"images of several sizes {sorted(shapes)}: evaluate one size at a time")
    return ImageSet(torch.cat(images), np.stack(masks) if mask_dir is not None else None, np.concatenate(display),
                    paths, summary)


def select(data: ImageSet, keep) -> ImageSet:
    """The images of ``data`` at the indices (or bool mask) ``keep``."""
    idx = np.flatnonzero(np.asarray(keep)) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=int)
    return ImageSet(data.images[torch.as_tensor(idx, dtype=torch.long)],
                    None if data.masks is None else data.masks[idx], data.display[idx],
                    [data.paths[i] for i in idx], data.summary)


def called_fake(detector: Detector, data: ImageSet, limit: int | None, batch_size: int = 16) -> ImageSet:
    """The first ``limit`` images (all: ``None``) that ``detector`` calls fake (``logit >= 0``)."""
    detector.eval()
    logits = _logits(detector, data.images, batch_size).numpy()
    idx = np.flatnonzero(logits >= 0)[:limit]
    log.info("%d of %d images called fake by %s; evaluating %d", int((logits >= 0).sum()), len(logits),
             detector.name, len(idx))
    if not len(idx):
        raise ForensicsError(f"{detector.name} calls none of the {len(logits)} images fake: nothing to explain")
    return select(data, idx)


@dataclass
class MethodResult:
    """One method's per-image values: ``heat`` ``[N, H, W]``, ``seconds`` per image, ``curves``
    ``{fill: {morf|lerf: [N, steps+1]}}``, ``localisation`` ``{metric: [n_called_fake]}``, ``cascade``."""

    label: str
    signed: bool
    heat: torch.Tensor
    seconds: float
    curves: dict[str, dict[str, np.ndarray]]
    localisation: dict[str, np.ndarray] = field(default_factory=dict)
    cascade: CascadeResult | None = None


@dataclass
class Evaluation:
    detector: str
    data: ImageSet
    logits: np.ndarray
    called_fake: np.ndarray
    methods: dict[str, MethodResult]
    perturbation: PerturbationConfig
    randomisation_images: int
    seed: int

    @property
    def chance(self) -> dict[str, np.ndarray]:
        return chance_levels(self.data.masks[self.called_fake]) if self.data.masks is not None else {}


@torch.no_grad()
def _logits(detector: Detector, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = detector.device
    return torch.cat([detector(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def evaluate(detector: Detector, data: ImageSet, methods: Sequence[str], *,
             options: Mapping[str, Mapping[str, Any]] | None = None,
             perturbation: PerturbationConfig = PerturbationConfig(), randomisation_images: int = 8,
             min_groups: int = 4, batch_size: int = 16, seed: int = 0) -> Evaluation:
    """Explain ``data`` (target: fake) with each method and measure it (see the module docstring)."""
    options = options or {}
    detector.eval()
    x = data.images
    logits = _logits(detector, x, batch_size)
    called = (logits >= 0).numpy()
    log.info("%d images, %d called fake by %s", len(x), int(called.sum()), detector.name)
    dev = detector.device

    def score(batch: torch.Tensor) -> torch.Tensor:   # target fake: g = f
        return detector(batch.to(dev))

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
        curves = perturbation_curves(score, x.to(dev), heat, perturbation, chunk=max(batch_size * 8, 64))
        loc = localisation(heat.numpy()[called], data.masks[called]) if data.masks is not None else {}
        cascade = None
        if randomisation_images:
            cascade = cascading_randomisation(detector, method, x[:randomisation_images], "fake", opts, seed=seed,
                                              groups=groups)
        results[method] = MethodResult(label, signed, heat, seconds / len(x), curves, loc, cascade)
        log.info("%s: %.3f s/image", method, seconds / len(x))
    return Evaluation(detector.name, data, logits.numpy(), called, results, perturbation, randomisation_images, seed)


# ---------------------------------------------------------------------------------------- tables
def columns(ev: Evaluation) -> list[str]:
    cols = [f"srg_{f}" for f in ev.perturbation.fill_ins]
    if ev.data.masks is not None:
        cols += list(LOC_METRICS)
    if ev.randomisation_images:
        cols += ["random_spearman", "random_spearman_abs", "random_ssim"]
    return cols


def per_image(ev: Evaluation, method: str) -> dict[str, np.ndarray]:
    """Per-image values of every leaderboard column (and the MoRF/LeRF areas) of ``method``."""
    r = ev.methods[method]
    out: dict[str, np.ndarray] = {}
    for f, c in r.curves.items():
        out[f"auc_morf_{f}"], out[f"auc_lerf_{f}"] = area(c["morf"]), area(c["lerf"])
        out[f"srg_{f}"] = out[f"auc_lerf_{f}"] - out[f"auc_morf_{f}"]
    out.update(r.localisation)
    if r.cascade is not None:
        out["random_spearman"], out["random_ssim"] = r.cascade.spearman[-1], r.cascade.ssim[-1]
        out["random_spearman_abs"] = r.cascade.spearman_abs[-1]
    return out


def leaderboard(ev: Evaluation) -> dict[str, dict[str, Estimate]]:
    """``{method: {column: Estimate}}`` (bootstrap 95 % CIs over images) plus a ``chance`` row."""
    board = {}
    for k, m in enumerate(ev.methods):
        vals = per_image(ev, m)
        board[m] = {c: bootstrap_ci(v, seed=ev.seed + k) for c, v in vals.items()}
    if ev.data.masks is not None:
        board["chance"] = {c: bootstrap_ci(v, seed=ev.seed) for c, v in ev.chance.items()}
        board["chance"].update({f"srg_{f}": Estimate(0.0, float("nan"), float("nan"), 1)
                                for f in ev.perturbation.fill_ins})   # 0 by symmetry: no CI
    return board


def verdicts(ev: Evaluation, board: Mapping[str, Mapping[str, Estimate]]) -> dict[str, dict[str, Any]]:
    """Per method: SRG CI above 0 (per fill-in), localisation CI above the chance mean, model-sensitive."""
    out = {}
    chance = {c: float(np.mean(v)) for c, v in ev.chance.items()} if ev.data.masks is not None else {}
    for m in ev.methods:
        row = board[m]
        v: dict[str, Any] = {f"srg_{f}_above_0": bool(row[f"srg_{f}"].lo > 0) for f in ev.perturbation.fill_ins}
        for c, level in chance.items():
            v[f"{c}_above_chance"] = bool(row[c].lo > level) if c in row else None
        if "random_spearman" in row:
            v["model_sensitive"] = model_sensitive(row["random_spearman"].hi, row["random_spearman_abs"].hi)
        out[m] = v
    return out


def markdown(ev: Evaluation, board: Mapping[str, Mapping[str, Estimate]], sens: Mapping[str, Mapping]) -> str:
    cols = columns(ev)
    head = ["method", "s/image", *cols, *(["model-sensitive"] if ev.randomisation_images else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, row in board.items():
        secs = f"{ev.methods[m].seconds:.3f}" if m in ev.methods else ""
        cells = [row[c].format(2) if c in row else "" for c in cols]
        extra = ([("yes" if sens[m].get("model_sensitive") else "no") if m in sens else ""]
                 if ev.randomisation_images else [])
        lines.append("| " + " | ".join([m, secs, *cells, *extra]) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- figures
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
                    ls="--" if m == "random" else "-", label=m)
    for ax, order in zip(axes, ("MoRF (most relevant removed first)", "LeRF (least relevant removed first)")):
        ax.set_title(order, fontsize=9)
        ax.set_xlabel("fraction of patches removed")
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean logit of 'fake'")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{ev.detector}: perturbation curves, fill-in '{fill}', {len(ev.data.paths)} fakes, "
                 f"{ev.perturbation.patch}px patches", fontsize=9)
    fig.tight_layout()
    return fig


def randomisation_figure(ev: Evaluation):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(14.5, 3.9))
    axes = fig.subplots(1, 3, sharey=True)
    names = None
    for (m, r), col in zip(ev.methods.items(), _colours(len(ev.methods))):
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
    idx = np.flatnonzero(ev.called_fake)[:rows] if ev.data.masks is not None else np.arange(rows)
    idx = idx[:rows] if len(idx) else np.arange(min(rows, len(ev.data.paths)))
    maps: dict[str, np.ndarray] = {}
    signed: dict[str, bool] = {}
    if ev.data.masks is not None:
        maps["mask"], signed["mask"] = ev.data.masks[idx].astype(np.float32), False
    for m, r in ev.methods.items():
        maps[m], signed[m] = r.heat.numpy()[idx], r.signed
    labels = [f"p={float(1 / (1 + np.exp(-ev.logits[i]))):.2f}" for i in idx]
    return explanation_grid(ev.data.display[idx], maps, signed=signed, row_labels=labels,
                            title=f"{ev.detector}: heatmaps (target fake) beside the ground-truth masks")


# ---------------------------------------------------------------------------------------- outputs
def write_outputs(ev: Evaluation, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf"),
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``leaderboard.{csv,md}``, ``per_image.csv``, ``curves_<fill>.*``, ``masks_grid.*``,
    ``randomisation.*`` (+ ``randomisation.csv``) and ``summary.json``; returns the summary."""
    from ... import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    board = leaderboard(ev)
    sens = verdicts(ev, board)
    cols = columns(ev)
    rows = [["method", "seconds_per_image", *[f"{c}_{s}" for c in cols for s in ("mean", "ci_lo", "ci_hi", "n")],
             *(["model_sensitive"] if ev.randomisation_images else [])]]
    for m, row in board.items():
        cells = []
        for c in cols:
            e = row.get(c)
            cells += ["", "", "", ""] if e is None else [f"{e.mean:.6g}", f"{e.lo:.6g}", f"{e.hi:.6g}", e.n]
        rows.append([m, f"{ev.methods[m].seconds:.6g}" if m in ev.methods else "", *cells,
                     *([sens[m].get("model_sensitive", "") if m in sens else ""] if ev.randomisation_images else [])])
    files = [atomic_write_text(out_dir / "leaderboard.csv", _csv(rows))]
    md = markdown(ev, board, sens)
    files.append(atomic_write_text(out_dir / "leaderboard.md", md))

    names = list(ev.methods)
    vals = {m: per_image(ev, m) for m in names}
    keys = list(vals[names[0]])
    called_idx = np.flatnonzero(ev.called_fake)
    img_rows = [["index", "path", "logit", "called_fake", "method", *keys]]
    for m in names:
        for i, p in enumerate(ev.data.paths):
            cells = []
            for k in keys:
                v = vals[m][k]
                if len(v) == len(ev.data.paths):
                    cells.append(f"{v[i]:.6g}")
                elif k in LOC_METRICS:
                    j = np.searchsorted(called_idx, i)
                    cells.append(f"{v[j]:.6g}" if ev.called_fake[i] else "")
                else:
                    cells.append(f"{v[i]:.6g}" if i < len(v) else "")
            img_rows.append([i, p, f"{ev.logits[i]:.6g}", int(ev.called_fake[i]), m, *cells])
    files.append(atomic_write_text(out_dir / "per_image.csv", _csv(img_rows)))

    for f in ev.perturbation.fill_ins:
        files += plots.save_figure(curve_figure(ev, f), out_dir / f"curves_{f}", formats=formats, dpi=150)
    files += plots.save_figure(mask_grid(ev), out_dir / "masks_grid", formats=formats, dpi=150)
    if ev.randomisation_images:
        files += plots.save_figure(randomisation_figure(ev), out_dir / "randomisation", formats=formats, dpi=150)
        steps = ev.methods[names[0]].cascade.steps
        rrows = [["method", "step", "randomised_down_to", "spearman_mean", "spearman_abs_mean", "ssim_mean"]]
        for m in names:
            c = ev.methods[m].cascade
            rrows += [[m, k, s, f"{np.nanmean(c.spearman[k]):.6g}", f"{np.nanmean(c.spearman_abs[k]):.6g}",
                       f"{np.nanmean(c.ssim[k]):.6g}"]
                      for k, s in enumerate(steps)]
        files.append(atomic_write_text(out_dir / "randomisation.csv", _csv(rrows)))
    summary = {"detector": ev.detector, "images": len(ev.data.paths), "called_fake": int(ev.called_fake.sum()),
               "mean_mask_area_called_fake": (float(ev.data.masks[ev.called_fake].mean())
                                              if ev.data.masks is not None and ev.called_fake.any() else None),
               "perturbation": {"patch": ev.perturbation.patch, "steps": ev.perturbation.steps,
                                "fill_ins": list(ev.perturbation.fill_ins), "blur_sigma": ev.perturbation.blur_sigma,
                                "road_noise": ev.perturbation.road_noise},
               "randomisation_images": ev.randomisation_images,
               "leaderboard": {m: {c: e.to_dict() for c, e in row.items()} for m, row in board.items()},
               "verdicts": sens,
               "seconds_per_image": {m: r.seconds for m, r in ev.methods.items()},
               "skipped": ev.data.summary.skipped, "files": [str(p) for p in files],
               "torch_threads": torch.get_num_threads(), **dict(extra or {})}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


__all__ = ["Evaluation", "ImageSet", "MethodResult", "called_fake", "evaluate", "leaderboard", "load_images", "markdown",
           "verdicts", "write_outputs", "MASK_DIR"]
