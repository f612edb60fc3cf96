"""Feature-map rankings: ``[(FeatureMapKey, value), ...]`` sorted by a relevance statistic such as FF-RS
(:mod:`forensics.analysis.ffrs`, docs/ffrs.md), their top-k / low-k, per-layer shares, the omega plot and
the ranking CSV (``key,mean_relevance``, the format of the CSVs released with T-FF, Chandrasegaran et al.,
ECCV 2022)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

import numpy as np

from ..detectors import FeatureMapKey
from ..io import atomic_write_text
from ..plots import save_figure

CSV_HEADER = ("key", "mean_relevance")

Ranking = list[tuple[FeatureMapKey, float]]


def sort_ranking(ranking: Iterable[tuple[FeatureMapKey, float]], stable: bool = True) -> Ranking:
    """Sort by omega, descending. ``stable=True``: ties keep their order (Python's sort, as the
    reference writes its CSVs); ``False``: pandas' default ``sort_values`` (quicksort), as the
    reference's consumers re-sort (tie order then depends on the pandas/numpy versions)."""
    items = list(ranking)
    if stable:
        return sorted(items, key=lambda kv: kv[1], reverse=True)
    import pandas as pd
    frame = pd.DataFrame({"i": range(len(items)), "v": [v for _, v in items]})
    return [items[i] for i in frame.sort_values("v", ascending=False)["i"]]


def topk(ranking: Ranking, k: int, stable: bool = True) -> list[FeatureMapKey]:
    """The k most relevant maps (the first k after re-sorting, as ``get_all_channels``; k=0 -> [])."""
    return [key for key, _ in sort_ranking(ranking, stable)[:k]] if k > 0 else []


def lowk(ranking: Ranking, k: int, stable: bool = True) -> list[FeatureMapKey]:
    """The k least relevant maps (the last k after re-sorting; k=0 -> [])."""
    return [key for key, _ in sort_ranking(ranking, stable)[-k:]] if k > 0 else []


def layer_share(keys: Iterable[FeatureMapKey | str]) -> dict[str, int]:
    """How many of ``keys`` (e.g. a top-k) each layer holds, layers in first-seen (= best rank) order."""
    out: dict[str, int] = {}
    for key in keys:
        layer = FeatureMapKey.parse(key).layer
        out[layer] = out.get(layer, 0) + 1
    return out


def omega_curve(ranking: Ranking) -> tuple[np.ndarray, np.ndarray]:
    """Plot data of the README's omega figure: (sorted feature-map index, omega sorted descending)."""
    values = np.array([v for _, v in sort_ranking(ranking)], dtype=np.float64)
    return np.arange(len(values)), values


def plot_omega(ranking: Ranking, path: str | Path, title: str | None = None) -> Path:
    """Save the omega-vs-sorted-index figure (atomic write; the format follows ``path``'s suffix)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, y = omega_curve(ranking)
    fig, ax = plt.subplots(figsize=(8, 4))
    try:
        ax.plot(x, y)
        ax.set_xlabel(f"sorted feature map index ({len(x)} in total)")
        ax.set_ylabel("FF-RS (ω)")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        save_figure(fig, path, formats=(Path(path).suffix.lstrip(".") or "png",))
    finally:
        plt.close(fig)
    return Path(path)


def write_ranking_csv(path: str | Path, ranking: Ranking) -> Path:
    """Write a ranking in the format of T-FF's released CSVs (docs/ffrs.md): header ``key,mean_relevance``, one row
    per feature map sorted by omega descending (stable), ``key`` as ``layer.#c(T=n)``, omega as a
    Python float repr. Atomic."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for key, value in sort_ranking(ranking):
        writer.writerow((str(key), repr(float(value))))
    return atomic_write_text(path, buf.getvalue())


def read_ranking_csv(path: str | Path) -> Ranking:
    """Read a ranking CSV (ours or the reference's ``fmap_relevances/...csv``) in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != CSV_HEADER:
            raise ValueError(f"{path}: expected header {','.join(CSV_HEADER)}, got {','.join(header)!r}")
        return [(FeatureMapKey.parse(key), float(value)) for key, value in reader]
