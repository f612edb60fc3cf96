"""One call from a backbone, a data root and a split to an :class:`AttributionReport` (what
``analyses/attribution.py`` runs): partition -> cached per-block features -> per-block sweep and
open-set evaluation."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from .. import provenance
from ..detectors.config import Preprocessing
from .features import attribution_preprocessing, block_features, parse_blocks
from .openset import align, run_blocks
from .report import AttributionReport
from .splits import DEFAULT_FRACTIONS, DEFAULT_SPLIT, SplitSpec, load_split, partition

log = logging.getLogger(__name__)


def run_attribution(model, root: str | Path, spec: SplitSpec, blocks: str | Sequence[int] | None = None,
                    site: str = "block", classifier: str = "logreg", params: Sequence[Any] | None = None,
                    select: str = "auroc", probe_options: dict[str, Any] | None = None,
                    grid_options: dict[str, Any] | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    max_per_class: int | None = None, seed: int = 0, preprocessing: Preprocessing | None = None,
                    cache_dir: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                    num_workers: int = 0, progress: bool = True) -> AttributionReport:
    """Open-set attribution of ``spec``'s generators under ``root`` from ``model``'s per-block CLS
    features (a CLIP backbone or a rine/ufd detector). See :mod:`forensics.attribution`."""
    from ..detectors.feature_cache import backbone_of
    backbone = backbone_of(model)
    chosen = parse_blocks(blocks, backbone.blocks)
    part = partition(root, spec, fractions=fractions, max_per_class=max_per_class, seed=seed)
    log.info("split %s: %s", spec.name, part.counts())
    records = part.all_records()
    start = time.perf_counter()
    feats = block_features(model, records, site=site, cache_dir=cache_dir, preprocessing=preprocessing,
                           batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    feature_seconds = time.perf_counter() - start
    data = align(part, feats, records)
    start = time.perf_counter()
    results = run_blocks(data, chosen, classifier=classifier, params=params, select=select,
                         probe_options=probe_options, grid_options=grid_options, progress=progress)
    settings = {
        **part.settings, "counts": part.counts(), "used": {p: int(len(y)) for p, y in data.y.items()}, "backbone": backbone.arch, "weights": backbone.weights_source,
        "site": site, "blocks": chosen, "classifier": classifier, "params": list(params) if params else None,
        "select": select, "probe_options": probe_options or {}, "grid_options": grid_options or {},
        "preprocessing": dataclasses.asdict(preprocessing) if preprocessing else "backbone default",
        "feature_cache": feats.summary.to_dict(), "feature_seconds": round(feature_seconds, 2),
        "probe_seconds": round(time.perf_counter() - start, 2),
        "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
        "provenance": provenance.collect(backbone, files=records),
        "title": f"{spec.name}, {classifier}, {backbone.model_name} ({site})",
    }
    return AttributionReport(results, data.classes, data.n_known, select=select, settings=settings)


#: The embedded default's backbone: forensics.defaults.default_clip_backbone() of this open_clip config
#: (seeded random weights). The 4-block, 56 px forensics-tiny-vit barely separates the benchmark's
#: families (docs/attribution_results.md); the 6-block, 224 px forensics-small-vit does.
EMBEDDED_BACKBONE = "forensics-small-vit"
#: Images per class of the embedded default (the benchmark has 400 fakes per family).
EMBEDDED_PER_CLASS = 400
#: The embedded default's C grid: ``c_step`` values over 10^-6..10^5 (one per decade; the reference sweeps 45).
EMBEDDED_C_STEP = 12


def embedded_preprocessing(model, image_size: int, norm: str = "clip") -> Preprocessing:
    """The backbone's view of the benchmark's ``image_size`` px images: centre crop when the backbone
    input is not larger, else a resize of the short side to the input size first (a crop would
    zero-pad the image)."""
    from ..detectors.feature_cache import backbone_of
    size = backbone_of(model).image_size
    return attribution_preprocessing(model, resize=size if size > image_size else None, norm=norm)


def embedded_default(backbone_name: str | None = None, split: str | None = None, backbone=None, config=None):
    """``(backbone, data root, split spec, images per class, preprocessing)`` of the embedded default:
    the synthetic benchmark's test families (benchmark ``config``, default settings when ``None``) and
    ``default_clip_backbone(backbone_name or EMBEDDED_BACKBONE)`` (or the given ``backbone``); logs one line."""
    from ..defaults import default_benchmark, default_clip_backbone
    bench = default_benchmark(config)
    backbone = backbone or default_clip_backbone(backbone_name or EMBEDDED_BACKBONE)
    spec = load_split(split or DEFAULT_SPLIT)
    pre = embedded_preprocessing(backbone, int(bench.manifest["image_size"]))
    log.info("no --weights/--dataset_dir given: embedded default = %s (%s) on the synthetic benchmark's test "
             "families (%s), split %s", backbone.arch, backbone.weights_source, bench.test_root, spec.name)
    return backbone, bench.test_root, spec, EMBEDDED_PER_CLASS, pre
