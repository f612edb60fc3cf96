"""The feature space of a detector: its penultimate features of a data set projected to 2-D with t-SNE
(van der Maaten & Hinton, JMLR 2008), coloured by label and by source / generator (docs/embed.md).

Which features (:func:`collect_features`):

- **head** (default): the input of the detector's head module (``DetectorConfig.head``), caught by a
  forward pre-hook during the ordinary forward pass: ResNet-50's pooled 2048-d vector before ``fc``,
  EfficientNet-B0's pooled 1280-d vector before ``_fc``, UFD's CLIP image embedding before ``fc``. A head
  whose input holds one token per block (RINE: the ln_2 CLS token of every block, ``[B, blocks, width]``)
  gives the last block's.
- **blocks** of a CLIP detector (``rine``/``ufd``): the CLS token after each chosen transformer block at a
  token site (:data:`forensics.detectors.feature_cache.TOKEN_SITES`; ``ln_2``, what RINE reads, by default),
  one projection per block.

Images are chosen before any forward pass (:func:`sample_per_class`: at most ``max_images``, split evenly
over the classes real / fake / unknown, a class with fewer images leaving its share to the others, drawn
with the seed), so memory is bounded by the cap; the features come through the shared sharded batch loop
(:func:`forensics.distributed.collect_rows`): unreadable files are skipped and listed.

Projection (:func:`tsne_2d`): features wider than ``pca_dims`` (50) are first reduced by PCA (the usual
practice, which also makes t-SNE's neighbour search fast), then t-SNE (scikit-learn, PCA initialisation,
``learning_rate="auto"``, seeded; the perplexity is capped at ``(n - 1) / 3`` for small sets). The same
seed gives the same coordinates. How well the classes separate is measured both on the 2-D map and in the
(PCA) feature space (:func:`separation`: leave-one-out kNN accuracy of the label with k = 10, and the
silhouette score), since t-SNE can both create and hide clusters; and per set and class
(:func:`neighbour_agreement`: the mean share of an image's 10 nearest neighbours that carry its label, in 2-D and
in feature space), which says which generators' fakes the detector keeps apart from the reals.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .. import distributed
from ..data import ImageRecord, RunSummary
from ..detectors import Detector
from ..detectors.feature_cache import TOKEN_SITES, backbone_features, backbone_of
from ..errors import InputError
from ..io import atomic_write_csv, atomic_write_json, json_safe
from .result import AnalysisResult

log = logging.getLogger(__name__)

CLASS_NAMES: dict[int, str] = {0: "real", 1: "fake", -1: "unknown"}
SITES: tuple[str, ...] = tuple(TOKEN_SITES)
COLUMNS: tuple[str, ...] = ("path", "set", "source", "category", "label", "view", "x", "y")
KNN_K = 10
STEM = "embed"


def label_of(record: ImageRecord) -> int:
    return record.label if record.label in (0, 1) else -1


# ---------------------------------------------------------------------------- which images
def sample_per_class(records: Sequence[ImageRecord], max_images: int | None, seed: int = 0
                     ) -> tuple[list[int], list[dict[str, Any]]]:
    """Positions (input order) of at most ``max_images`` records, split evenly over the classes present
    (a class with fewer than its share keeps all and leaves the rest to the others), drawn without
    replacement with ``seed``; and per class ``{class, total, kept, dropped}``. ``None``/0: keep all."""
    labels = np.array([label_of(r) for r in records], dtype=int)
    classes = [c for c in (0, 1, -1) if (labels == c).any()]
    sizes = {c: int((labels == c).sum()) for c in classes}
    cap = len(records) if not max_images or max_images <= 0 else int(max_images)
    take, left = {}, cap
    for i, c in enumerate(sorted(classes, key=lambda c: (sizes[c], c))):  # smallest first: water-filling
        take[c] = min(sizes[c], left // (len(classes) - i))
        left -= take[c]
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        kept += (members if take[c] == sizes[c] else rng.choice(members, take[c], replace=False)).tolist()
    counts = [{"class": CLASS_NAMES[c], "total": sizes[c], "kept": take[c], "dropped": sizes[c] - take[c]}
              for c in classes]
    return sorted(kept), counts


# ---------------------------------------------------------------------------- which features
@contextlib.contextmanager
def head_input(detector: Detector) -> Iterator[dict[str, torch.Tensor]]:
    """Catch the input of the detector's head module (``config.head``) during forward passes in the block:
    ``captured["x"]`` after each pass."""
    captured: dict[str, torch.Tensor] = {}
    module = detector.get_submodule(detector.config.head)

    def hook(_module, inputs):
        captured["x"] = inputs[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def pick_blocks(text: str | Sequence[int] | None, n_blocks: int) -> list[int]:
    """Block indices from ``"all"``, ``"0,5,-1"`` or a sequence (negatives from the end), non-negative,
    without repeats; ``None`` = the last block."""
    if text is None:
        return [n_blocks - 1]
    if isinstance(text, str) and text.strip().lower() == "all":
        return list(range(n_blocks))
    items = [int(t) for t in text.replace(",", " ").split()] if isinstance(text, str) else [int(t) for t in text]
    out: list[int] = []
    for b in items:
        if not -n_blocks <= b < n_blocks:
            raise InputError(f"block {b} out of range: the detector has {n_blocks} blocks (0..{n_blocks - 1})")
        if b % n_blocks not in out:
            out.append(b % n_blocks)
    if not out:
        raise InputError("no block selected")
    return out


@dataclass
class Features:
    """Features ``values[i, v]`` (``[K, views, width]``, float32) of the readable records, one view per
    projected feature (``views``: names, e.g. ``head`` or ``block 23 (ln_2)``); skipped files in ``summary``."""

    records: list[ImageRecord]
    values: np.ndarray
    views: list[str]
    kind: str
    summary: RunSummary = field(default_factory=RunSummary)


def collect_features(detector: Detector, records: Sequence[ImageRecord], *, blocks: str | Sequence[int] | None = None,
                     site: str | None = None, batch_size: int = 32, transform: Callable | None = None,
                     num_workers: int = 0, progress: bool = True) -> Features:
    """Penultimate features of ``records`` (see the module docstring): the head's input with neither
    ``blocks`` nor ``site``, else the CLS tokens at ``site`` (default ``ln_2``) of the chosen ``blocks``
    (default: the last) of a CLIP detector."""
    records = list(records)
    device = detector.device
    if site is None and blocks is None:
        return _head_features(detector, records, batch_size, transform, num_workers, progress)
    site = site or "ln_2"
    if site not in SITES:
        raise InputError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    try:
        backbone = backbone_of(detector)
    except TypeError:
        raise InputError(f"{detector.name} has no transformer blocks: per-block features need a CLIP detector "
                         f"(rine, ufd); leave --block/--site out for its pooled features before the head") from None
    chosen = pick_blocks(blocks, backbone.blocks)

    def step(batch):
        return {"x": backbone_features(backbone, batch.images.to(device), site)[:, chosen].float()}

    values, summary, kept = _pass(detector, records, step, batch_size, transform, num_workers, progress)
    return Features(kept, values, [f"block {b} ({site})" for b in chosen], "blocks", summary)


def _head_features(detector, records, batch_size, transform, num_workers, progress) -> Features:
    chosen: list[int] = []

    def step(batch):
        detector(batch.images.to(detector.device))
        x = captured["x"]
        if x.dim() == 3:  # one token per block (RINE's head input): the last block's
            chosen[:] = [x.shape[1] - 1]
            return {"x": x[:, -1:].float()}
        return {"x": x.flatten(1)[:, None].float()}

    with head_input(detector) as captured:
        values, summary, kept = _pass(detector, records, step, batch_size, transform, num_workers, progress)
    views = [f"block {b} (head input)" for b in chosen] or [f"head input ({detector.config.head})"]
    return Features(kept, values, views, "head", summary)


def _pass(detector, records, step, batch_size, transform, num_workers, progress):
    label = f"features {detector.name}"
    was_training = detector.training
    detector.eval()
    try:
        with torch.inference_mode():
            indices, rows, summary = distributed.collect_rows(
                records, step, ("x",), transform=transform or detector.transform(), batch_size=batch_size,
                num_workers=num_workers, label=label, progress=label if progress else None)
    finally:
        detector.train(was_training)
    summary.log(log)
    if rows["x"] is None:
        raise InputError(f"no readable image among {len(records)} (every file skipped)")
    return rows["x"].numpy(), summary, [records[i] for i in indices]


# ---------------------------------------------------------------------------- projection and separation
def reduce_pca(features: np.ndarray, pca_dims: int | None, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """PCA to ``pca_dims`` components where the features are wider (``None``/0: never)."""
    from sklearn.decomposition import PCA
    x = np.asarray(features, dtype=np.float64)
    n, d = x.shape
    if not pca_dims or d <= pca_dims:
        return x, {"dims": d, "pca": None}
    k = min(int(pca_dims), n)
    pca = PCA(n_components=k, svd_solver="full", random_state=seed)
    return pca.fit_transform(x), {"dims": d, "pca": k, "pca_explained_variance": float(pca.explained_variance_ratio_.sum())}


def tsne_2d(features: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, float]:
    """t-SNE coordinates ``[n, 2]`` of (already reduced) features and the perplexity used (capped at
    ``(n - 1) / 3``)."""
    from sklearn.manifold import TSNE
    n = len(features)
    if n < 4:
        raise InputError(f"t-SNE needs at least 4 images, got {n}")
    used = float(min(perplexity, (n - 1) / 3))
    coords = TSNE(n_components=2, perplexity=used, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(np.asarray(features, dtype=np.float64))
    return coords.astype(np.float64), used


def neighbour_labels(points: np.ndarray, labels: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """``[n, k]``: the labels of each point's ``k`` nearest other points, nearest first (the one neighbour search
    behind :func:`knn_accuracy` and :func:`neighbour_share`)."""
    from sklearn.neighbors import NearestNeighbors
    k = min(k, len(points) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return labels[idx[:, 1:]]


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = KNN_K) -> float:
    """Leave-one-out accuracy of the majority label of each point's ``k`` nearest other points (a tie
    goes to the nearest neighbour's label)."""
    neigh = neighbour_labels(points, labels, k)
    vote = (neigh == 1).mean(axis=1)
    pred = np.where(vote == 0.5, neigh[:, 0], (vote > 0.5).astype(int))
    return float((pred == labels).mean())


def neighbour_share(points: np.ndarray, labels: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Per point: the share of its ``k`` nearest other points that carry its label."""
    return (neighbour_labels(points, labels, k) == labels[:, None]).mean(axis=1)


def neighbour_agreement(view: str, sets: np.ndarray, labels: np.ndarray, plane: np.ndarray, flat: np.ndarray
                        ) -> list[dict[str, Any]]:
    """Rows (view, set, class, n, share in 2-D, share in feature space) of :func:`neighbour_share`'s mean per
    set and class (labelled images only)."""
    known = labels >= 0
    two_d, feat = np.full(len(labels), np.nan), np.full(len(labels), np.nan)
    if min((labels == 0).sum(), (labels == 1).sum()) >= 2:
        two_d[known] = neighbour_share(plane[known], labels[known])
        feat[known] = neighbour_share(flat[known], labels[known])
    rows = []
    for name in dict.fromkeys(sets):
        for c in (0, 1):
            members = (sets == name) & (labels == c)
            if members.any():
                rows.append({"view": view, "set": name, "class": CLASS_NAMES[c], "n": int(members.sum()),
                             "neighbours_same_2d": float(two_d[members].mean()),
                             "neighbours_same_features": float(feat[members].mean())})
    return rows


def separation(points: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """kNN accuracy and silhouette of real vs fake on ``points`` (NaN without two labelled classes)."""
    from sklearn.metrics import silhouette_score
    known = labels >= 0
    y, p = labels[known], points[known]
    if min((y == 0).sum(), (y == 1).sum()) < 2:
        return {"knn_accuracy": float("nan"), "silhouette": float("nan")}
    return {"knn_accuracy": knn_accuracy(p, y), "silhouette": float(silhouette_score(p, y))}


# ---------------------------------------------------------------------------- the analysis
@dataclass
class Embedding(AnalysisResult):
    """The 2-D map of every view: ``frame`` (one row per kept image and view, :data:`COLUMNS`),
    ``views`` (per view: dims, PCA, perplexity, separation in 2-D and in feature space), ``sampling``
    (per class: total, kept, dropped), the pass's ``summary``, the ``settings`` and ``agreement`` (per view,
    set and class: :func:`neighbour_agreement`); :attr:`record` follows them in ``embed.json``."""

    frame: Any
    views: list[dict[str, Any]]
    sampling: list[dict[str, Any]]
    summary: RunSummary
    settings: dict[str, Any]
    agreement: list[dict[str, Any]] = field(default_factory=list)

    def view_table(self):
        import pandas as pd
        return pd.DataFrame(self.views)

    def format(self) -> str:
        kept = ", ".join(f"{c['class']} {c['kept']}/{c['total']}" for c in self.sampling)
        lines = [f"kept (of listed) per class: {kept}; {len(self.summary.skipped)} unreadable skipped",
                 f"{'view':<28} {'dims':>5} {'pca':>4} {'perp':>5}  {'kNN 2-D':>7} {'kNN feat':>8} "
                 f"{'silh 2-D':>8} {'silh feat':>9}"]
        for v in self.views:
            vals = [f"{100 * v[k]:7.1f}" if np.isfinite(v[k]) else "    nan" for k in ("knn_accuracy_2d", "knn_accuracy_features")]
            sil = [f"{v[k]:8.3f}" if np.isfinite(v[k]) else "     nan" for k in ("silhouette_2d", "silhouette_features")]
            lines.append(f"{v['view'][:28]:<28} {v['dims']:>5} {v['pca'] or '-':>4} {v['perplexity']:5.1f}  "
                         f"{vals[0]} {vals[1]:>8} {sil[0]} {sil[1]:>9}")
        if self.agreement:
            lines.append(f"share of the {KNN_K} nearest neighbours with the same label (%), per set and class:")
            lines.append(f"{'view':<28} {'set':<16} {'class':<5} {'n':>5}  {'2-D':>5} {'feat':>5}")
            lines += [f"{a['view'][:28]:<28} {str(a['set'])[:16]:<16} {a['class']:<5} {a['n']:>5}  "
                      f"{100 * a['neighbours_same_2d']:5.1f} {100 * a['neighbours_same_features']:5.1f}"
                      for a in self.agreement]
        return "\n".join(lines)

    def default_title(self) -> str:
        """``<detector>: feature space (<sets>)`` (up to four set names, else their number)."""
        names = list(dict.fromkeys(self.frame["set"]))
        shown = ", ".join(names) if len(names) <= 4 else f"{len(names)} sets"
        return f"{self.settings['detector']}: feature space ({shown})"

    def write(self, out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
        """``embed.csv`` (coordinates), ``embed-views.csv``, ``embed.json`` (report, settings, sampling, views,
        skipped files, then :attr:`record`) and the figures ``embed-label`` and ``embed-source`` (PNG and PDF),
        titled ``title`` (default :meth:`default_title`); returns ``{name: path}``."""
        from .embed_plots import plot_embedding
        title = title or self.default_title()
        out = Path(out_dir)
        paths = {"csv": out / f"{STEM}.csv", "views": out / f"{STEM}-views.csv", "json": out / f"{STEM}.json"}
        atomic_write_csv(paths["csv"], self.frame, index=False)
        atomic_write_csv(paths["views"], self.view_table(), index=False)
        if self.agreement:
            import pandas as pd
            paths["sets"] = atomic_write_csv(out / f"{STEM}-sets.csv", pd.DataFrame(self.agreement), index=False)
        for colour in ("label", "source"):
            paths[f"figure_{colour}"] = plot_embedding(self.frame, colour, out / f"{STEM}-{colour}", title,
                                                       self.views)[0]
        report = {"title": title, "table": paths["views"].name,
                  "figures": [paths["figure_label"].name, paths["figure_source"].name]}
        atomic_write_json(paths["json"], json_safe({
            "report": report, "settings": self.settings, "sampling": self.sampling, "views": self.views,
            "summary": self.summary.to_dict(), **self.record}))
        return paths


def embed(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *, max_images: int | None = 2000,
          seed: int = 0, perplexity: float = 30.0, pca_dims: int | None = 50, blocks: str | Sequence[int] | None = None,
          site: str | None = None, batch_size: int = 32, transform: Callable | None = None, num_workers: int = 0,
          progress: bool = True) -> Embedding:
    """Sample, collect features, project every view and measure separation (the module docstring)."""
    pairs = [(name, r) for name, recs in sets.items() for r in recs]
    if not pairs:
        raise InputError("no image listed in the data set(s)")
    kept, sampling = sample_per_class([r for _, r in pairs], max_images, seed)
    set_of = {id(pairs[i][1]): pairs[i][0] for i in kept}
    log.info("t-SNE of %s: %s", detector.name, ", ".join(f"{c['class']} {c['kept']} of {c['total']}" for c in sampling))
    feats = collect_features(detector, [pairs[i][1] for i in kept], blocks=blocks, site=site, batch_size=batch_size,
                             transform=transform, num_workers=num_workers, progress=progress)
    labels = np.array([label_of(r) for r in feats.records], dtype=int)
    import pandas as pd
    frames, views, agreement = [], [], []
    set_names = np.array([set_of[id(r)] for r in feats.records], dtype=object)
    for v, name in enumerate(feats.views):
        reduced, info = reduce_pca(feats.values[:, v], pca_dims, seed)
        coords, used = tsne_2d(reduced, seed=seed, perplexity=perplexity)
        flat, plane = separation(reduced, labels), separation(coords, labels)
        views.append({"view": name, "n": len(coords), **info, "perplexity": used,
                      "knn_accuracy_2d": plane["knn_accuracy"], "knn_accuracy_features": flat["knn_accuracy"],
                      "silhouette_2d": plane["silhouette"], "silhouette_features": flat["silhouette"]})
        agreement += neighbour_agreement(name, set_names, labels, coords, reduced)
        frames.append(pd.DataFrame({
            "path": [r.ref for r in feats.records], "set": [set_of[id(r)] for r in feats.records],
            "source": [r.source for r in feats.records], "category": [r.category for r in feats.records],
            "label": labels, "view": name, "x": coords[:, 0], "y": coords[:, 1]}, columns=list(COLUMNS)))
    settings = {"detector": detector.name, "features": feats.kind, "site": site, "blocks": blocks,
                "max_images": max_images, "seed": seed, "perplexity": perplexity, "pca_dims": pca_dims,
                "knn_k": KNN_K, "listed": len(pairs), "sampled": len(kept), "projected": len(feats.records)}
    return Embedding(pd.concat(frames, ignore_index=True), views, sampling, feats.summary, settings, agreement)
