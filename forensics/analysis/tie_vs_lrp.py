"""Does RINE use the blocks its TIE says matter? TIE block importance vs LRP block relevance.

For every image of a data set, LRP runs from the logit through RINE's head (Q1 shared over blocks,
the TIE weighted sum as a fixed linear combination, Q2, the classifier; the ``rine`` spec of
:mod:`forensics.explain.lrp`: epsilon 1e-6 with biases kept) to the captured ln_2 CLS token of each
block. A block's relevance ``R_b`` is the sum over its channels; its **share** is
``|R_b| / sum_b' |R_b'|`` (``share="abs"``, default: how much of the explanation a block carries,
whatever its sign) or ``R_b / sum_b' R_b'`` (``share="signed"``). The start signal is
``sign="correct"`` (+1 at the logit of the true class: positive relevance = evidence for the true
class), for correctly classified images only (the reference's filter; ``include_wrong=True`` keeps all).

The TIE importance of a block is its mean softmax weight over the channels
(:func:`forensics.analysis.tie.mean_importance`). Per group (real, fake, all) the mean share per block
is compared with it by Spearman's rho and Kendall's tau (scipy), with percentile bootstrap confidence
intervals over images (``n_boot`` resamples of the group's images, seeded).

Outputs (:meth:`Comparison.write`): ``tie_vs_lrp.csv`` (per block: TIE importance, mean share per group),
``correlations.csv`` (group, statistic, value, CI), ``per_image.csv``, ``tie_vs_lrp.json``, the
side-by-side bar chart; :func:`write_image_grid` and :func:`write_block_maps` add the figures that run the
detector again (a per-image grid: image, CP-LRP pixel map through the ViT (:mod:`forensics.explain.vit_lrp`),
per-block relevance share vs TIE; per-block pixel maps and Grad-CAM).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from .. import distributed, plots
from ..data import ImageDataset, ImageRecord, RunSummary
from ..detectors import Detector
from ..explain.lrp import LRPEngine
from ..io import atomic_path, atomic_write_json
from .result import AnalysisResult
from .tie import importance_matrix, mean_importance
from ..errors import DatasetLayoutError

log = logging.getLogger(__name__)

SHARES = ("abs", "signed")
GROUPS = ("real", "fake", "all")


def block_relevance(layer_relevance: dict[str, torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """Per-block relevance ``[B, blocks]``: each feature layer's relevance summed over its channels."""
    return torch.stack([layer_relevance[n].flatten(1).sum(1) for n in layers], dim=1)


def block_shares(relevance: np.ndarray, share: str = "abs") -> np.ndarray:
    """Row-normalised block relevance ``[N, blocks]`` (``abs``: |R_b| / sum |R|; ``signed``: R_b / sum R).
    A row whose denominator is 0 gives NaN (listed, never dropped silently)."""
    if share not in SHARES:
        raise ValueError(f"share must be one of {SHARES}, got {share!r}")
    rel = np.abs(relevance) if share == "abs" else np.asarray(relevance, dtype=np.float64)
    total = rel.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, rel / np.where(total == 0, 1, total), np.nan)


@dataclass
class BlockRelevance:
    """Per-image LRP block relevance of a data set: ``relevance`` ``[N, blocks]``, ``logits``,
    ``labels``, ``included`` (explained: correctly classified unless all were kept), ``records``."""

    relevance: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    included: np.ndarray
    records: list[ImageRecord]
    summary: RunSummary = field(default_factory=RunSummary)

    def group(self, name: str) -> np.ndarray:
        """Row indices of ``real``/``fake``/``all`` explained images."""
        mask = self.included.copy()
        if name != "all":
            mask &= self.labels == (1 if name == "fake" else 0)
        return np.flatnonzero(mask)


def collect_block_relevance(detector: Detector, records: Sequence[ImageRecord], *, batch_size: int = 32,
                            transform: Callable | None = None, sign: str = "correct", include_wrong: bool = False,
                            num_workers: int = 0, progress: bool = True) -> BlockRelevance:
    """Head LRP of every labelled record to the per-block CLS tokens (see the module docstring)."""
    if any(r.label not in (0, 1) for r in records):
        raise DatasetLayoutError("TIE vs LRP needs labelled records (0 real / 1 fake)")
    layers = [fl.name for fl in detector.feature_layers()]
    records = list(records)

    def step(batch):
        include = torch.ones(len(batch), dtype=torch.bool) if include_wrong else None
        res = lrp.explain(batch.images, batch.labels, include=include, layers=layers, sign=sign)
        return {"relevance": block_relevance(res.layer_relevance, layers).double(), "logits": res.logits.double(),
                "labels": batch.labels}

    with LRPEngine(detector) as lrp:
        indices, rows, summary = distributed.collect_rows(
            records, step, ("relevance", "logits", "labels"), transform=transform or detector.transform(),
            batch_size=batch_size, num_workers=num_workers, label=f"LRP blocks {detector.name}",
            progress=f"LRP blocks {detector.name}" if progress else None)
    summary.log(log)
    if not indices:
        raise DatasetLayoutError("no readable image to explain")
    logits_np, labels_np = rows["logits"].numpy(), rows["labels"].numpy().astype(int)
    correct = (logits_np >= 0) == (labels_np == 1)  # p >= 0.5 is fake, as the LRP start filter
    included = np.ones_like(correct) if include_wrong else correct
    return BlockRelevance(rows["relevance"].numpy(), logits_np, labels_np, included.astype(bool),
                          [records[i] for i in indices], summary)


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


@dataclass
class Comparison(AnalysisResult):
    """TIE importance vs mean LRP share: ``tie`` ``[blocks]``, ``mean_share`` ``{group: [blocks]}``,
    ``correlations`` rows (group, n, statistic, value, ci_low, ci_high), ``shares`` ``[N, blocks]``;
    :meth:`write` writes the tables, the bars and ``tie_vs_lrp.json`` (with :attr:`record` after the numbers)."""

    tie: np.ndarray
    mean_share: dict[str, np.ndarray]
    correlations: list[dict[str, Any]]
    shares: np.ndarray
    data: BlockRelevance
    settings: dict[str, Any]

    def table(self):
        import pandas as pd
        frame = pd.DataFrame({"block": np.arange(1, len(self.tie) + 1), "tie_importance": self.tie})
        for g, v in self.mean_share.items():
            frame[f"lrp_share_{g}"] = v
        return frame

    def correlation_table(self):
        import pandas as pd
        return pd.DataFrame(self.correlations)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``tie_vs_lrp.csv``, ``correlations.csv``, ``per_image.csv``, the bars ``tie_vs_lrp.{png,pdf}`` and
        ``tie_vs_lrp.json`` (settings, correlations, means, counts, skipped files, then :attr:`record`) under
        ``out_dir``; returns ``{name: path}``. The figures that need the detector are :func:`write_image_grid`
        and :func:`write_block_maps`."""
        import pandas as pd
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, frame in (("tie_vs_lrp", self.table()), ("correlations", self.correlation_table())):
            with atomic_path(out / f"{name}.csv") as tmp:
                frame.to_csv(tmp, index=False, float_format="%.6f")
            paths[name] = out / f"{name}.csv"
        d = self.data
        per_image = pd.DataFrame({"path": [str(r.path) for r in d.records], "label": d.labels, "logit": d.logits,
                                  "included": d.included})
        for b in range(d.relevance.shape[1]):
            per_image[f"R_block{b + 1}"] = d.relevance[:, b]
        with atomic_path(out / "per_image.csv") as tmp:
            per_image.to_csv(tmp, index=False, float_format="%.6g")
        paths["per_image"] = out / "per_image.csv"
        paths["bars"] = plot_bars(self, out / "tie_vs_lrp")[0]
        paths["json"] = atomic_write_json(out / "tie_vs_lrp.json", {
            "settings": self.settings, "correlations": self.correlations, "tie": self.tie,
            "mean_share": self.mean_share, "counts": {g: int(len(d.group(g))) for g in GROUPS},
            "n_images": len(d.records), "skipped": [list(s) for s in d.summary.skipped], **self.record})
        return paths


def compare(data: BlockRelevance, tie: np.ndarray, *, share: str = "abs", n_boot: int = 1000, ci: float = 0.95,
            seed: int = 0) -> Comparison:
    """Spearman / Kendall between ``tie`` and the mean block share of each group, with percentile
    bootstrap CIs over the group's images (``n_boot`` resamples, ``numpy`` generator seeded ``seed``)."""
    tie = np.asarray(tie, dtype=np.float64)
    if tie.shape != (data.relevance.shape[1],):
        raise ValueError(f"TIE importance has {tie.size} blocks, the relevance {data.relevance.shape[1]}")
    shares = block_shares(data.relevance, share)
    bad = np.isnan(shares).any(axis=1) & data.included
    if bad.any():
        log.warning("%d explained image(s) have zero total block relevance: left out of the means (%s)",
                    int(bad.sum()), [str(data.records[i].path) for i in np.flatnonzero(bad)[:5]])
    rng = np.random.default_rng(seed)
    mean_share: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    alpha = (1 - ci) / 2
    for g in GROUPS:
        idx = np.array([i for i in data.group(g) if not bad[i]], dtype=int)
        if idx.size == 0:
            log.warning("no explained %s image: no %s correlation", g, g)
            continue
        mean_share[g] = shares[idx].mean(axis=0)
        rho, tau = _corr(tie, mean_share[g])
        boot = np.array([_corr(tie, shares[rng.choice(idx, idx.size)].mean(axis=0)) for _ in range(n_boot)])
        for j, (stat, value) in enumerate((("spearman", rho), ("kendall", tau))):
            lo, hi = (np.nanquantile(boot[:, j], [alpha, 1 - alpha]) if n_boot else (np.nan, np.nan))
            rows.append({"group": g, "n": int(idx.size), "statistic": stat, "value": value,
                         "ci_low": float(lo), "ci_high": float(hi)})
    return Comparison(tie, mean_share, rows, shares, data,
                      {"share": share, "n_boot": n_boot, "ci": ci, "seed": seed})


# ---------------------------------------------------------------------------- figures and files
def plot_bars(comp: Comparison, path: str | Path, title: str | None = None) -> list[Path]:
    """Side by side per block: TIE mean importance and the mean LRP share of each group."""
    from matplotlib.figure import Figure
    blocks = len(comp.tie)
    series = [("TIE importance", comp.tie, "olive")] + [
        (f"LRP share, {g} (n={len(comp.data.group(g))})", comp.mean_share[g], color)
        for g, color in (("real", "tab:blue"), ("fake", "tab:red")) if g in comp.mean_share]
    fig = Figure(figsize=(max(6, blocks * 0.55), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(1, blocks + 1)
    for i, (label, values, color) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width=width, color=color, label=label)
    ax.axhline(1 / blocks, color="k", ls="--", lw=0.8, label=f"uniform 1/{blocks}")
    ax.set_xticks(x)
    ax.set_xlabel("Transformer block")
    ax.set_ylabel("share of the blocks (sums to 1)")
    rho = {(r["group"], r["statistic"]): r["value"] for r in comp.correlations}
    stats = ", ".join(f"{g}: rho {rho[(g, 'spearman')]:.2f}" for g in ("real", "fake") if (g, "spearman") in rho)
    ax.set_title(title or f"TIE importance vs LRP block share ({comp.settings['share']}); {stats}", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return plots.save_figure(fig, path, dpi=150)


def plot_image_grid(images: np.ndarray, pixel: np.ndarray, shares: np.ndarray, tie: np.ndarray,
                    titles: Sequence[str], path: str | Path) -> list[Path]:
    """One row per image: the image, its LRP pixel heatmap (positive part, T-FF colours, overlaid) and
    its per-block relevance share next to the TIE importance."""
    from matplotlib.figure import Figure
    n, blocks = len(images), len(tie)
    fig = Figure(figsize=(3 + max(3, blocks * 0.35) + 3, 2.1 * n))
    grid = fig.add_gridspec(n, 3, width_ratios=[1, 1, max(1.5, blocks * 0.18)])
    x = np.arange(1, blocks + 1)
    for i in range(n):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(images[i])
        ax.set_axis_off()
        ax.set_title(titles[i], fontsize=7)
        ax = fig.add_subplot(grid[i, 1])
        ax.imshow(plots.overlay(images[i], plots.positive_heatmap(pixel[i])))
        ax.set_axis_off()
        ax.set_title("LRP pixels (CP-LRP)", fontsize=7)
        ax = fig.add_subplot(grid[i, 2])
        ax.bar(x - 0.2, shares[i], width=0.4, color="tab:purple", label="LRP share")
        ax.bar(x + 0.2, tie, width=0.4, color="olive", label="TIE")
        ax.set_xticks(x)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
        if i == n - 1:
            ax.set_xlabel("Transformer block", fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, path, dpi=150)


def tie_importance(detector: Detector) -> np.ndarray:
    """The detector's TIE mean importance per block ``[blocks]``."""
    return mean_importance(importance_matrix(detector))


def write_image_grid(detector: Detector, comp: Comparison, out_dir: str | Path, n: int = 6,
                     transform: Callable | None = None, name: str = "per_image") -> list[Path]:
    """The per-image grid for the first ``n // 2`` explained reals and ``n - n // 2`` fakes: pixel maps by
    CP-LRP through the ViT (:class:`~forensics.explain.vit_lrp.ViTLRP`, sign-correct start, as the shares)."""
    from ..explain.figures import to_uint8
    from ..explain.vit_lrp import ViTLRP
    d = comp.data
    real, fake = d.group("real"), d.group("fake")
    idx = list(real[: n // 2]) + list(fake[: n - len(real[: n // 2])])
    if not idx:
        raise ValueError("no explained image for the per-image grid")
    dataset = ImageDataset([d.records[i] for i in idx], transform or detector.transform())
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.as_tensor(d.labels[idx])
    res = ViTLRP(detector).explain(images, labels, include=torch.ones(len(idx), dtype=torch.bool), sign="correct")
    pre = detector.config.preprocessing
    titles = [f"{'fake' if d.labels[i] else 'real'} {Path(d.records[i].path).name} p={1 / (1 + np.exp(-d.logits[i])):.2f}"
              for i in idx]
    return plot_image_grid(to_uint8(images, pre.mean, pre.std), res.pixel.cpu().numpy(), comp.shares[idx],
                           comp.tie, titles, Path(out_dir) / name)


def write_block_maps(detector: Detector, comp: Comparison, out_dir: str | Path, n: int = 4,
                     transform: Callable | None = None, name: str = "per_block") -> list[Path]:
    """Heatmap overlays per image and per block for the first ``n`` explained fakes (reals if none):
    one row per image with the image, the CP-LRP pixel map of the logit, then per block the pixel map
    of that block's relevance (they sum to the logit's map) and the Grad-CAM baseline on the block's
    ``ln_1`` token grid (:func:`~forensics.explain.cam.block_gradcam`, target = the true class)."""
    from ..explain.cam import block_gradcam
    from ..explain.figures import to_uint8
    from ..explain.vit_lrp import ViTLRP
    d = comp.data
    idx = list(d.group("fake")[:n]) or list(d.group("real")[:n])
    if not idx:
        raise ValueError("no explained image for the per-block maps")
    dataset = ImageDataset([d.records[i] for i in idx], transform or detector.transform())
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = torch.as_tensor(d.labels[idx])
    res = ViTLRP(detector).explain(images, labels, include=torch.ones(len(idx), dtype=torch.bool), sign="correct",
                                   blocks=True)
    blocks = res.block_pixel.shape[1]
    target = "fake" if int(labels[0]) == 1 else "real"
    cams = block_gradcam(detector, images, range(blocks), target=target)
    pre = detector.config.preprocessing
    pixels = to_uint8(images, pre.mean, pre.std)
    rows, labels_row = [], []
    for r, i in enumerate(idx):
        row = [pixels[r], plots.overlay(pixels[r], plots.positive_heatmap(res.pixel[r].cpu().numpy()))]
        for b in range(blocks):
            row.append(plots.overlay(pixels[r], plots.positive_heatmap(res.block_pixel[r, b].cpu().numpy())))
            row.append(plots.overlay(pixels[r], cams[b][r].cpu().numpy()))
        rows.append(row)
        labels_row.append(f"{'fake' if d.labels[i] else 'real'} {Path(d.records[i].path).stem}")
    titles = ["image", "LRP logit"] + [t for b in range(blocks) for t in (f"LRP block {b + 1}", f"CAM block {b + 1}")]
    fig = plots.image_grid(rows, row_labels=labels_row, col_labels=titles)
    return plots.save_figure(fig, Path(out_dir) / name, dpi=150)
