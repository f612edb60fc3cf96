"""Max-activation rankings and LRP-max patches of top feature maps (T-FF; docs/patches.md).

1. **Rankings** (:func:`max_activation_rankings`, docs/patches.md): for each chosen feature map (a top-k of an
   FF-RS ranking), every fake image ranked by the spatial max of that map's activation, measured at
   ``point`` (``pre_bn``: the raw conv output, the reference; ``post_bn`` optional), descending. All
   maps are recorded in one pass over the images (the reference reloads the model per map).
2. **Patches** (:func:`extract_patches`, docs/patches.md): for each map, its top-``num_instances`` images; the
   pixel relevance of the map's spatial-max unit (:func:`forensics.explain.unit.explain_unit`,
   LRP-max); heatmap = relevance summed over RGB, positive part, divided by its max
   (:func:`forensics.plots.positive_heatmap`); binarised at ``> percentile`` (75th) of the heatmap;
   the tight bounding box of the 1-pixels cropped from the (de-normalised) input image. An empty
   mask (e.g. a map with no positive value, z = 0) gives the whole image.
3. **Collage** (:func:`collage_figure`, docs/patches.md): for the chosen maps, their top-N patches in rank
   order, each resized to 224x224 (nearest), given a 1-px black border and resized back (bilinear),
   as one figure with one row per map.

:func:`patch_study` runs steps 1 and 2 on one set and returns a :class:`PatchStudy`, whose ``write(out_dir)``
writes the rankings, the patch files, the collage and ``summary.json``.

Images are used at full resolution (``crop="none"``) for the ranking and the LRP pass, as the
reference. Patch files: ``<out>/<layer>.#<c>/<rank>_hm_<max_act:.3f>_<z:.3f>.jpg`` (JPEG quality 95;
rank 1-based in activation order; ``max_act`` the ranking's activation, ``z`` the LRP-explained
unit's value at the folded conv output).

Deliberate differences from the reference, each with an option reproducing it:

- The box includes its last row and column (``reference_box=False``); the reference's upper bounds
  are exclusive, so every patch loses its last row and column (``reference_box=True``; a box that
  would then be empty keeps one row/column).
- The collage shows the top-N in numeric rank order (``order="numeric"``); the reference lists files
  lexicographically, so with 20 patches "10_..." < "1_..." and it shows ranks 10-14
  (``order="lexicographic"``, docs/patches.md).
- The reference's collage hard-codes 27 maps and 5 patches; both are arguments here.
- The max-activation ranking accepts a final batch of one image (the reference's squeeze breaks it).

The ranking pass goes through the shared batch loop (:func:`~forensics.analysis.inference.collect_activations`,
i.e. :func:`forensics.distributed.collect_rows`). The patch pass does not: it is one small pass per map over
that map's top ``num_instances`` images (in ranking order, not a data set's), and what it keeps per image
(the de-normalised image and its heatmap, at the image's own size) is neither a fixed-shape row that
:func:`~forensics.distributed.collect_rows` could gather nor a tensor state a ``--resume`` checkpoint could
hold; sharding twenty images per map over ranks would buy nothing. It uses :func:`iter_batches` directly
and logs each skipped file with its map.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data import ImageDataset, ImageRecord, RunSummary, iter_batches
from ..detectors import Detector, FeatureMapKey
from ..explain.figures import to_uint8
from ..explain.unit import unit_relevance_fn
from ..io import atomic_path, atomic_write_csv, atomic_write_json
from ..plots import image_grid, positive_heatmap, save_figure
from .inference import collect_activations
from .result import AnalysisResult

log = logging.getLogger(__name__)

PERCENTILE = 75.0
ORDERS = ("numeric", "lexicographic")
TILE = 224
_PATCH_RE = re.compile(r"^(?P<rank>\d+)_hm_(?P<max_act>-?[\d.]+|nan)_(?P<z>-?[\d.]+|nan)\.jpg$")


# ---------------------------------------------------------------------------- geometry
def binarize(heat: np.ndarray, percentile: float = PERCENTILE) -> np.ndarray:
    """``heat > percentile(heat)`` over all pixels (docs/patches.md), boolean ``[H, W]``."""
    heat = np.asarray(heat, dtype=np.float64)
    return heat > np.percentile(heat, percentile)


def tight_box(mask: np.ndarray, reference: bool = False) -> tuple[int, int, int, int]:
    """Tight bounding box ``(top, bottom, left, right)`` of the True pixels as half-open slices
    (``image[top:bottom, left:right]``). An empty mask gives the whole image. ``reference=True``
    reproduces the reference's exclusive upper bounds (last row and column dropped), keeping at
    least one row and column."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return 0, h, 0, w
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if reference:
        bottom, right = max(bottom - 1, top + 1), max(right - 1, left + 1)
    return top, bottom, left, right


# ---------------------------------------------------------------------------- rankings
@dataclass
class ActivationRanking:
    """Per feature map (string key, in the given order), the images sorted by activation, descending:
    ``rows[key] = [(record, value), ...]``. ``summary`` lists unreadable files."""

    keys: list[FeatureMapKey]
    rows: dict[str, list[tuple[ImageRecord, float]]]
    point: str = "pre_bn"
    summary: RunSummary = field(default_factory=RunSummary)

    def top(self, key: FeatureMapKey | str, n: int | None = None) -> list[tuple[ImageRecord, float]]:
        return self.rows[str(key)][:n]

    def frame(self, key: FeatureMapKey | str):
        """The reference's per-map CSV: ``name`` (path), ``max_act``."""
        import pandas as pd
        return pd.DataFrame({"name": [str(r.path) for r, _ in self.rows[str(key)]],
                             "max_act": [v for _, v in self.rows[str(key)]]})

    def write_csvs(self, out_dir: str | Path) -> dict[str, Path]:
        """``<out_dir>/<key>.csv`` per map (the reference's ``activation_rankings`` files; a part of
        :class:`PatchStudy`'s outputs, which writes them with the patches and the summary). Atomic."""
        return {str(k): atomic_write_csv(Path(out_dir) / f"{k}.csv", self.frame(k), index=False) for k in self.keys}


def max_activation_rankings(detector: Detector, records: Sequence[ImageRecord], keys: Sequence[FeatureMapKey | str],
                            *, point: str = "pre_bn", batch_size: int = 32, transform: Callable | None = None,
                            num_workers: int = 0, progress: bool = True) -> ActivationRanking:
    """Rank ``records`` (the reference: every fake of the set) per feature map by the spatial max
    of its activation at ``point`` (docs/patches.md); full resolution unless ``transform`` is given.
    Ties keep the input order (stable sort)."""
    keys = detector.check_keys(keys)
    acts = collect_activations(detector, records, keys, point=point, reduce="spatial_max", batch_size=batch_size,
                               transform=transform or detector.transform(crop="none"), num_workers=num_workers,
                               progress=progress, desc=f"max activations {detector.name}")
    acts.summary.log(log)
    rows = {}
    for j, k in enumerate(keys):
        order = np.argsort(-acts.values[:, j], kind="stable")
        rows[str(k)] = [(acts.records[i], float(acts.values[i, j])) for i in order]
    return ActivationRanking(keys, rows, point, acts.summary)


# ---------------------------------------------------------------------------- patches
@dataclass
class Patch:
    """One LRP-max patch: ``rank`` (1-based), the image ``path``, the ranking's ``max_act``, the
    explained unit's value ``z``, the ``box`` (top, bottom, left, right; half-open) and the pixels."""

    key: str
    rank: int
    path: str
    max_act: float
    z: float
    box: tuple[int, int, int, int]
    image: np.ndarray = field(repr=False)
    heat: np.ndarray = field(repr=False)

    @property
    def pixels(self) -> np.ndarray:
        top, bottom, left, right = self.box
        return self.image[top:bottom, left:right]

    @property
    def filename(self) -> str:
        return patch_filename(self.rank, self.max_act, self.z)


def patch_filename(rank: int, max_act: float, z: float) -> str:
    """``<rank>_hm_<max_act:.3f>_<z:.3f>.jpg`` (the reference's name)."""
    return f"{rank}_hm_{max_act:.3f}_{z:.3f}.jpg"


def map_folder(key: FeatureMapKey | str) -> str:
    """``<layer>.#<c>`` (the reference's per-map folder name)."""
    k = FeatureMapKey.parse(key)
    return f"{k.layer}.#{k.channel}"


def extract_patches(detector: Detector, ranking: ActivationRanking, *, keys: Sequence[FeatureMapKey | str] | None = None,
                    num_instances: int = 20, percentile: float = PERCENTILE, reference_box: bool = False,
                    batch_size: int = 16, transform: Callable | None = None, progress: bool = True,
                    **relevance_options: Any) -> dict[str, list[Patch]]:
    """LRP-max patches (docs/patches.md) of the top ``num_instances`` images of each map of ``ranking``
    (or of ``keys``). ``relevance_options`` go to the detector's unit-relevance function
    (:func:`forensics.explain.unit.explain_unit`). Raises ``NotImplementedError`` for a detector
    without a pixel relevance of a single unit (RINE today)."""
    fn = unit_relevance_fn(detector)
    keys = [FeatureMapKey.parse(k) for k in (keys if keys is not None else ranking.keys)]
    transform = transform or detector.transform(crop="none")
    pre = detector.config.preprocessing
    out: dict[str, list[Patch]] = {}
    for key in tqdm(keys, desc=f"LRP-max patches {detector.name}", unit="map", disable=not progress):
        top = ranking.top(key, num_instances)
        dataset = ImageDataset([r for r, _ in top], transform)
        patches: list[Patch] = []
        for batch in iter_batches(dataset, batch_size=batch_size):
            for path, reason in batch.skipped:
                log.warning("%s: skipped %s (%s)", key, path, reason)
            if batch.images is None or not len(batch):
                continue
            res = fn(detector, batch.images, key, **relevance_options)
            images = to_uint8(batch.images, pre.mean, pre.std)
            for j, i in enumerate(batch.indices):
                image = images[j]
                heat = positive_heatmap(res.pixel[j].double().cpu().numpy())
                box = tight_box(binarize(heat, percentile), reference=reference_box)
                patches.append(Patch(str(key), i + 1, str(top[i][0].path), top[i][1], float(res.value[j]), box,
                                     image, heat))
        out[str(key)] = patches
    return out


@dataclass
class PatchStudy(AnalysisResult):
    """Max-activation rankings and LRP-max patches of one set (:func:`patch_study`): the ``ranking``, the
    ``patches`` per map and the ``settings`` the summary leads with (e.g. detector, weights, gan_name, fmap_csv,
    topk); :meth:`write` writes them all."""

    ranking: ActivationRanking
    patches: dict[str, list[Patch]]
    settings: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path, *, quality: int = 95, collage_maps: int = 27, collage_n: int = 5,
              collage_order: str = "numeric", title: str | None = None) -> dict[str, Path]:
        """Under ``out_dir``: ``activation_rankings/<key>.csv`` per map, the patches
        ``patches/<layer>.#<c>/<rank>_hm_<max_act>_<z>.jpg`` (JPEG ``quality``) with ``patches/patches.json``
        (key, rank, path, values, box of each), the collage of the first ``collage_maps`` maps' top
        ``collage_n`` patches (:func:`collage_figure`, ``collage.{png,pdf}``) and ``summary.json``
        (:attr:`settings`, point, num_images, skipped files, then :attr:`record`). Atomic; returns
        ``{name: path}`` (``ranking/<key>``, ``patch/<key>/<rank>``, ``patches_index``, ``collage``,
        ``summary``)."""
        out = Path(out_dir)
        paths = {f"ranking/{k}": p for k, p in self.ranking.write_csvs(out / "activation_rankings").items()}
        paths.update(self._write_patches(out / "patches", quality))
        chosen = {str(key): out / "patches" / map_folder(key) for key in self.ranking.keys[:collage_maps]}
        if title is None:
            where = (f"{self.settings['detector']} on {self.settings['gan_name']}: "
                     if {"detector", "gan_name"} <= set(self.settings) else "")
            title = f"{where}LRP-max patches of the top-{len(chosen)} maps ({collage_order} rank order)"
        paths["collage"] = save_figure(collage_figure(chosen, collage_n, collage_order, title=title),
                                       out / "collage", dpi=100)[0]
        paths["summary"] = atomic_write_json(out / "summary.json", {
            **self.settings, "point": self.ranking.point, "num_images": len(self.ranking.rows[str(self.ranking.keys[0])]),
            "skipped": self.ranking.summary.to_dict()["skipped"], **self.record})
        return paths

    def _write_patches(self, out: Path, quality: int) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        index = []
        for key, items in self.patches.items():
            for p in items:
                target = out / map_folder(key) / p.filename
                with atomic_path(target) as tmp:
                    Image.fromarray(np.ascontiguousarray(p.pixels)).save(tmp, format="JPEG", quality=quality)
                paths[f"patch/{key}/{p.rank}"] = target
                index.append({"key": key, "rank": p.rank, "path": p.path, "max_act": p.max_act, "z": p.z,
                              "box": list(p.box), "file": str(target)})
        paths["patches_index"] = atomic_write_json(out / "patches.json", index)
        return paths


def patch_study(detector: Detector, records: Sequence[ImageRecord], keys: Sequence[FeatureMapKey | str], *,
                point: str = "pre_bn", num_instances: int = 20, percentile: float = PERCENTILE,
                reference_box: bool = False, batch_size: int = 16, num_workers: int = 0, progress: bool = True,
                settings: Mapping[str, Any] | None = None) -> PatchStudy:
    """:func:`max_activation_rankings` of ``records`` on ``keys`` (full resolution), then
    :func:`extract_patches` of each map's top ``num_instances`` images, as one :class:`PatchStudy` (with
    ``settings`` for its summary). Raises ``NotImplementedError`` before ranking for a detector without a pixel
    relevance of a single unit."""
    unit_relevance_fn(detector)
    ranking = max_activation_rankings(detector, records, keys, point=point, batch_size=batch_size,
                                      num_workers=num_workers, progress=progress)
    patches = extract_patches(detector, ranking, num_instances=num_instances, percentile=percentile,
                              reference_box=reference_box, batch_size=batch_size, progress=progress)
    return PatchStudy(ranking, patches, dict(settings or {}))


# ---------------------------------------------------------------------------- collage
def patch_rank(path: str | Path) -> int:
    """The rank in a patch file name ``<rank>_hm_...jpg``."""
    m = _PATCH_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a patch file name (<rank>_hm_<max_act>_<z>.jpg)")
    return int(m["rank"])


def collage_files(folder: str | Path, n: int = 5, order: str = "numeric") -> list[Path]:
    """The first ``n`` patch files of one map's folder: by rank (``numeric``, default) or by name
    (``lexicographic``, the reference's quirk: "10_..." sorts before "1_...")."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    files = [p for p in Path(folder).iterdir() if _PATCH_RE.match(p.name)]
    files.sort(key=patch_rank if order == "numeric" else (lambda p: p.name))
    return files[:n]


def collage_tile(patch: np.ndarray | Image.Image, size: int = TILE) -> np.ndarray:
    """The reference's tile: resize to ``size`` (nearest), 1-px black border, resize back (bilinear)."""
    img = patch if isinstance(patch, Image.Image) else Image.fromarray(np.asarray(patch))
    img = img.convert("RGB").resize((size, size), Image.NEAREST)
    framed = Image.new("RGB", (size + 2, size + 2), (0, 0, 0))
    framed.paste(img, (1, 1))
    return np.asarray(framed.resize((size, size), Image.BILINEAR))


def collage_figure(folders: Mapping[str, str | Path], n: int = 5, order: str = "numeric", title: str | None = None,
                   cell_inches: float = 2.0):
    """One figure: a row per map (``{key: folder of its patch files}``), its first ``n`` patches
    (:func:`collage_files`) as tiles, each titled with its rank."""
    rows, labels = [], []
    for key, folder in folders.items():
        files = collage_files(folder, n, order)
        if not files:
            log.warning("%s: no patch files in %s; left out of the collage", key, folder)
            continue
        with_rank = [(patch_rank(f), collage_tile(Image.open(f))) for f in files]
        rows.append([tile for _, tile in with_rank])
        labels.append(str(key) if order == "numeric" else f"{key}\nranks {', '.join(str(r) for r, _ in with_rank)}")
    if not rows:
        raise ValueError("no patch files for the collage")
    col_titles = [f"rank {i + 1}" for i in range(max(len(r) for r in rows))] if order == "numeric" else None
    fig = image_grid(rows, row_labels=labels, col_labels=col_titles, cell_inches=cell_inches)
    if title:  # room for it above the column titles, whatever the figure's height
        height = fig.get_figheight()
        fig.subplots_adjust(top=1 - 0.55 / height)
        fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return fig
