"""What the explorer offers to choose from: detectors (the embedded defaults, the registered releases whose
files are present, a checkpoint the user names), the methods and options of each, and the images of a
data-set folder. Nothing here imports Gradio; :mod:`.ui` builds the page from it."""
from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data import ImageRecord, load_rgb
from ..data.local_fakes import MASK_DIR, mask_for, read_mask
from ..detectors import Detector
from ..errors import ForensicsError
from ..explain import explainer_class, list_explainers

log = logging.getLogger(__name__)

#: Largest upload the explorer reads (bytes); a larger file is refused with a message (pixels are capped by
#: :data:`forensics.data.DEFAULT_MAX_PIXELS`, through :func:`forensics.data.load_rgb`).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: The methods selected when the page opens (upload + Explain works with no other choice).
DEFAULT_METHODS = ("lrp", "gradcam")


@dataclass(frozen=True)
class DetectorSource:
    """One choice of the detector list: registry name ``detector`` and either ``recipe`` (an embedded default,
    :data:`forensics.defaults.DEFAULT_RECIPES`) or ``weights`` (release tag or checkpoint path)."""

    label: str
    detector: str
    recipe: str | None = None
    weights: str | None = None

    def load(self, device: str = "cpu") -> Detector:
        if self.recipe is not None:
            from ..defaults import default_detector
            return default_detector(self.recipe, device=device)
        from ..detectors import create
        return create(self.detector, weights=self.weights, device=device)

    @property
    def methods(self) -> list[str]:
        """The registered explanation methods defined on this detector (no weights loaded)."""
        return list_explainers(self.detector)


def default_sources() -> list[DetectorSource]:
    """Every embedded default (:data:`~forensics.defaults.DEFAULT_RECIPES`; one that is not cached trains on
    first use, which takes minutes)."""
    from ..defaults import DEFAULT_RECIPES, is_cached
    return [DetectorSource(f"default {name}" + ("" if is_cached(name) else " (trains on first use)"),
                           recipe.detector, recipe=name) for name, recipe in DEFAULT_RECIPES.items()]


def release_sources() -> list[DetectorSource]:
    """The registered releases of a detector whose weight file is in the weights folder."""
    from ..weights import expected_path, list_specs
    return [DetectorSource(f"release {s.tag}", s.detector, weights=s.tag) for s in list_specs()
            if s.detector is not None and expected_path(s.tag).is_file()]


def available_sources(extra: Iterable[DetectorSource] = ()) -> list[DetectorSource]:
    """The page's detector list: the embedded defaults (``default resnet50`` first), releases on disk, then
    ``extra`` (``--detector/--weights`` of the command line)."""
    return [*default_sources(), *release_sources(), *extra]


def method_options(method: str) -> dict[str, Any]:
    """The options a method takes, with their defaults (its class's ``defaults`` and keyword arguments)."""
    cls = explainer_class(method)
    found = dict(getattr(cls, "defaults", {}) or {})
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
            found.setdefault(p.name, p.default)
    return found


class DetectorCache:
    """Detectors loaded on first use and kept for the session (one lock: two clicks do not load twice)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._loaded: dict[DetectorSource, Detector] = {}
        self._lock = threading.Lock()

    def get(self, source: DetectorSource) -> Detector:
        with self._lock:
            if source not in self._loaded:
                log.info("explorer: loading %s", source.label)
                self._loaded[source] = source.load(self.device)
            return self._loaded[source]


def check_upload(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES) -> str | None:
    """Why ``path`` cannot be explained (too large, unreadable, not an image), or ``None`` when it decodes."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path.name}: cannot be read ({exc.strerror or exc})"
    if size > max_bytes:
        return f"{path.name}: {size / 2**20:.1f} MiB is over the explorer's limit of {max_bytes / 2**20:.0f} MiB"
    try:
        load_rgb(path)
    except ForensicsError as exc:
        return f"{path.name}: {exc}"
    return None


def split_uploads(paths: Sequence[str | Path], max_bytes: int = MAX_UPLOAD_BYTES
                  ) -> tuple[list[ImageRecord], list[str]]:
    """``(records of the readable uploads, one refusal message per other file)``."""
    records, refused = [], []
    for p in paths:
        reason = check_upload(p, max_bytes)
        if reason is None:
            records.append(ImageRecord(Path(p), None, "upload"))
        else:
            refused.append(reason)
    return records, refused


def dataset_records(root: str | Path, layout: str = "forensynths", have_classes: bool | None = None,
                    num_instances: int | None = 50) -> dict[str, ImageRecord]:
    """The images of a data-set folder (any layout :func:`forensics.data.load_sets` reads), keyed by
    ``set/file name`` (the page's picker); at most ``num_instances`` per class folder and label."""
    from ..data import load_sets
    sets = load_sets(root, None, layout, have_classes, num_instances)
    return {f"{name}/{Path(r.path).parent.name}/{Path(r.path).name}": r
            for name, records in sets.items() for r in records}


def ground_truth_mask(record: ImageRecord):
    """The mask of a data-set image where its set has one (``<set>/masks/<stem>.png`` beside the class
    folders, :mod:`forensics.data.local_fakes`'s layout): ``bool [H, W]``, else ``None``."""
    if record.source == "upload":
        return None
    found = mask_for(record.path, Path(record.path).parent.parent / MASK_DIR)
    return None if found is None else read_mask(found)


__all__ = ["DEFAULT_METHODS", "MAX_UPLOAD_BYTES", "DetectorCache", "DetectorSource", "available_sources",
           "check_upload", "dataset_records", "default_sources", "ground_truth_mask", "method_options",
           "release_sources", "split_uploads"]
