"""RINE's Trainable Importance Estimator (TIE): block importances A = softmax(alpha, dim=1) of a head
(docs/tie.md).

``A`` is ``[blocks, proj_dim]``: for each projected channel, a distribution over the transformer blocks
(each column sums to 1). Two per-block summaries:

- **mean importance**: ``A.mean(axis=1)``, the average weight a block gets over the channels (sums to
  1 over blocks; uniform = 1/blocks);
- **winner fraction** (the reference's ``results/figs/importance.jpg``, docs/tie.md): for each channel the block
  with the largest weight (``argmax``; ties -> the lowest block, as numpy/pandas), counted per block and
  divided by ``proj_dim``. The reference plots only blocks some channel picks; here every block has an
  entry (0 where none picks it), and the figure draws no bar there, as the reference.

Works on the official head files (``model_2class_trainable.pth``: alpha ``[1, 24, 128]``), on heads the
project trains (same format), on a :class:`~forensics.detectors.rine.RineDetector` or
:class:`~forensics.detectors.rine.RineHead`, or on an ``alpha`` tensor.

Figures: :func:`plot_winner_histogram` (the reference's grouped bars: 14x3 in, bar width 0.25, colours
gold / olive / peru for successive heads (olive, the 2-class colour, for a single head), x = "Transformer block" 1-based, y up to 0.1; the y limit is
raised when a bar is taller, e.g. a 6-block default head, instead of clipping it), :func:`plot_heatmap`
(A as blocks x channels) and :func:`plot_block_bars` (mean importance with the uniform level).
:func:`summarize_heads` gives the :class:`TIEReport` of several heads; its ``write(out_dir)`` writes the tables,
the figures and ``tie.json``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import plots
from ..io import atomic_path, atomic_write_json, read_weight_file
from ..errors import CheckpointError
from .result import AnalysisResult

log = logging.getLogger(__name__)

#: The reference figure's colours for the 1-, 2- and 4-class heads, reused for successive heads.
REFERENCE_COLORS = ("gold", "olive", "peru")
REFERENCE_YLIM = 0.1


def importance_matrix(source: Any) -> np.ndarray:
    """``A = softmax(alpha, dim=1)`` as float64 ``[blocks, proj_dim]`` from a head file path, a state
    dict with ``alpha`` (reference head or a RINE detector's, ``rine_head.alpha``), a module with an
    ``importances()`` method (RineDetector / RineHead) or an ``alpha`` tensor ``[1, blocks, d]`` /
    ``[blocks, d]``."""
    if isinstance(source, (str, os.PathLike)):
        source = read_weight_file(source, expected="a RINE head checkpoint (alpha, proj1.*, ...)")
    if hasattr(source, "importances"):
        return source.importances().detach().double().cpu().numpy()
    if isinstance(source, Mapping):
        key = next((k for k in ("alpha", "rine_head.alpha") if k in source), None)
        if key is None:
            raise CheckpointError(f"no 'alpha' in the state dict (keys: {list(source)[:6]} ...): not a RINE head")
        source = source[key]
    alpha = torch.as_tensor(source).detach().double().cpu()
    if alpha.ndim == 3 and alpha.shape[0] == 1:
        alpha = alpha[0]
    if alpha.ndim != 2:
        raise CheckpointError(f"alpha must be [1, blocks, proj_dim] or [blocks, proj_dim], got {tuple(alpha.shape)}")
    return torch.softmax(alpha, dim=0).numpy()


def mean_importance(matrix: np.ndarray) -> np.ndarray:
    """Per-block mean of A over the channels, ``[blocks]`` (sums to 1)."""
    return np.asarray(matrix, dtype=np.float64).mean(axis=1)


def winner_fractions(matrix: np.ndarray) -> np.ndarray:
    """The reference figure's bars: fraction of channels whose largest weight is on each block, ``[blocks]``."""
    matrix = np.asarray(matrix)
    winners = matrix.argmax(axis=0)
    return np.bincount(winners, minlength=matrix.shape[0]) / matrix.shape[1]


@dataclass(frozen=True)
class TIESummary:
    """A head's importances: ``matrix`` A ``[blocks, proj_dim]`` and its per-block summaries."""

    label: str
    matrix: np.ndarray

    @property
    def blocks(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def mean(self) -> np.ndarray:
        return mean_importance(self.matrix)

    @property
    def winners(self) -> np.ndarray:
        return winner_fractions(self.matrix)

    @property
    def channel_max(self) -> np.ndarray:
        """Each channel's largest block weight, ``[proj_dim]`` (the reference: mean 0.19 on 2-class)."""
        return self.matrix.max(axis=0)

    def table(self):
        """Per-block table (pandas): block (1-based), mean_importance, winner_fraction."""
        import pandas as pd
        return pd.DataFrame({"block": np.arange(1, self.blocks + 1), "mean_importance": self.mean,
                             "winner_fraction": self.winners})

    def stats(self) -> dict[str, Any]:
        return {"label": self.label, "blocks": self.blocks, "proj_dim": int(self.matrix.shape[1]),
                "uniform": 1.0 / self.blocks, "mean_importance_min": float(self.mean.min()),
                "mean_importance_max": float(self.mean.max()), "channel_max_mean": float(self.channel_max.mean()),
                "channel_max_min": float(self.channel_max.min()), "channel_max_max": float(self.channel_max.max()),
                "top_winner_blocks": [int(b) + 1 for b in np.argsort(-self.winners, kind="stable")[:5]]}


def summarize(source: Any, label: str = "head") -> TIESummary:
    return TIESummary(label, importance_matrix(source))


# ---------------------------------------------------------------------------- figures
def plot_winner_histogram(summaries: Sequence[TIESummary], path: str | Path, title: str | None = None) -> list[Path]:
    """The reference's ``importance.jpg``: grouped bars of :attr:`TIESummary.winners` per head."""
    from matplotlib.figure import Figure
    if not summaries:
        raise ValueError("no head to plot")
    blocks = summaries[0].blocks
    fig = Figure(figsize=(14, 3))
    ax = fig.add_subplot()
    width = 0.25
    offsets = (np.arange(len(summaries)) - (len(summaries) - 1) / 2) * width
    top = REFERENCE_YLIM
    for i, (s, off) in enumerate(zip(summaries, offsets)):
        if s.blocks != blocks:
            raise ValueError(f"heads with different block counts ({blocks} and {s.blocks}) in one figure")
        picked = np.flatnonzero(s.winners > 0)
        color = "olive" if len(summaries) == 1 else REFERENCE_COLORS[i % len(REFERENCE_COLORS)]
        ax.bar(picked + 1 + off, s.winners[picked], width=width, color=color, label=s.label)
        top = max(top, float(s.winners.max()) * 1.1)
    ax.set_xticks(np.arange(1, blocks + 1))
    ax.set_xlim(0.4, blocks + 0.6)
    ax.set_ylim(0, top)
    ax.set_xlabel("Transformer block", fontsize=15)
    ax.set_ylabel("fraction of channels", fontsize=12)
    ax.legend(fontsize=12)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return plots.save_figure(fig, path, dpi=200)


def plot_heatmap(summary: TIESummary, path: str | Path) -> list[Path]:
    """A as an image: blocks (rows, 1-based) x channels, colour = softmax weight."""
    from matplotlib.figure import Figure
    d = summary.matrix.shape[1]
    fig = Figure(figsize=(min(14, 3 + d / 12), 1.5 + summary.blocks / 4))
    ax = fig.add_subplot()
    im = ax.imshow(summary.matrix, aspect="auto", cmap="viridis", interpolation="nearest",
                   extent=(-0.5, d - 0.5, summary.blocks + 0.5, 0.5))
    ax.set_xlabel("projected channel")
    ax.set_ylabel("Transformer block")
    ax.set_title(f"TIE importances softmax(alpha) of {summary.label} (each column sums to 1)")
    fig.colorbar(im, ax=ax, label="weight")
    fig.tight_layout()
    return plots.save_figure(fig, path, dpi=150)


def plot_block_bars(summary: TIESummary, path: str | Path) -> list[Path]:
    """Mean importance per block with the uniform level 1/blocks (:func:`block_bars_figure`), saved."""
    return plots.save_figure(block_bars_figure(summary), path, dpi=150)


def block_bars_figure(summary: TIESummary):
    """The figure of :func:`plot_block_bars` (also the explorer's TIE chart)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(max(5, summary.blocks * 0.4), 3))
    ax = fig.add_subplot()
    x = np.arange(1, summary.blocks + 1)
    ax.bar(x, summary.mean, color="olive")
    ax.axhline(1.0 / summary.blocks, color="k", ls="--", lw=1, label=f"uniform 1/{summary.blocks}")
    ax.set_xticks(x)
    ax.set_xlabel("Transformer block")
    ax.set_ylabel("mean softmax weight")
    ax.set_title(f"TIE mean importance per block: {summary.label}")
    ax.legend()
    fig.tight_layout()
    return fig


@dataclass
class TIEReport(AnalysisResult):
    """The TIE importances of one or more heads (:func:`summarize_heads`); :meth:`write` writes their tables,
    figures and ``tie.json``."""

    heads: list[TIESummary]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """CSV per head (``tie-<label>.csv``: block, mean_importance, winner_fraction), the matrix
        (``tie-<label>-matrix.csv``), ``tie.json`` (the run summary: ``{"heads": [stats per head], **record}``)
        and the figures (PNG + PDF); returns ``{name: path}``."""
        import pandas as pd
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for s in self.heads:
            tag = _safe(s.label)
            with atomic_path(out / f"tie-{tag}.csv") as tmp:
                s.table().to_csv(tmp, index=False, float_format="%.6f")
            paths[f"table_{tag}"] = out / f"tie-{tag}.csv"
            with atomic_path(out / f"tie-{tag}-matrix.csv") as tmp:
                pd.DataFrame(s.matrix, index=pd.Index(np.arange(1, s.blocks + 1), name="block")).to_csv(
                    tmp, float_format="%.6f")
            paths[f"matrix_{tag}"] = out / f"tie-{tag}-matrix.csv"
            paths[f"heatmap_{tag}"] = plot_heatmap(s, out / f"tie-{tag}-heatmap")[0]
            paths[f"bars_{tag}"] = plot_block_bars(s, out / f"tie-{tag}-mean")[0]
        by_blocks: dict[int, list[TIESummary]] = {}
        for s in self.heads:
            by_blocks.setdefault(s.blocks, []).append(s)
        for blocks, group in by_blocks.items():
            name = "importance" if len(by_blocks) == 1 else f"importance-{blocks}blocks"
            paths[name] = plot_winner_histogram(group, out / name)[0]
        paths["json"] = atomic_write_json(out / "tie.json", {"heads": [s.stats() for s in self.heads], **self.record})
        return paths


def summarize_heads(sources: Sequence[Any], labels: Sequence[str]) -> TIEReport:
    """:func:`summarize` of each head in ``sources`` (paths, state dicts, modules or alpha tensors) with its
    label, as one :class:`TIEReport`."""
    if len(labels) != len(sources):
        raise ValueError(f"{len(labels)} labels for {len(sources)} heads")
    return TIEReport([summarize(source, label) for source, label in zip(sources, labels)])


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
