"""The embedded default's FF-RS ranking (:func:`forensics.analysis.ffrs.compute_ffrs` on the benchmark's val split,
written as ``analyses/rank_fmaps.py`` writes it, computed once and reused by the analyses that need a ranking) and
the k those analyses use by default. docs/ffrs.md."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import distributed, provenance
from ..data import forensynths
from ..detectors import Detector
from ..errors import ForensicsError
from .ffrs import REFERENCE_K, compute_ffrs, ffrs_transform  # noqa: F401 (REFERENCE_K re-exported)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- embedded default
#: Where ``analyses/rank_fmaps.py`` writes its output (relative to the working directory).
RANK_FMAPS_ROOT = Path("figures/rank_fmaps")


def default_k(num_maps: int) -> int:
    """k of the embedded default: ``min(114, 1 % of the feature maps)`` (at least 1)."""
    return min(REFERENCE_K, max(1, num_maps // 100))


def embedded_ranking_csv(detector: Detector, bench, name: str | None = None, seed: int = 0, batch_size: int = 16,
                         root: str | Path = RANK_FMAPS_ROOT) -> Path:
    """The fake FF-RS CSV of an embedded-default detector, ``<root>/<name>/val_default/val-fake.csv``
    as ``python analyses/rank_fmaps.py`` writes it (``name``: the default recipe, e.g. ``resnet50_cr``;
    default the detector's name). Computed with rank_fmaps' default settings (the benchmark's val
    split, RandomResizedCrop to the image size, torch seeded with ``seed``) and written there when
    missing; reused otherwise."""
    path = Path(root) / (name or detector.name) / "val_default" / "val-fake.csv"
    if path.is_file():
        return path
    log.info("%s does not exist: computing FF-RS of %s on the benchmark's val split and writing it there "
             "(as `python analyses/rank_fmaps.py` would)", path, name or detector.name)
    torch.manual_seed(seed)
    size = int(bench.manifest["image_size"])
    records = forensynths(bench.root, "val", have_classes=True)
    result = compute_ffrs(detector, records,
                          transform=ffrs_transform(detector, "random_resized", size), batch_size=batch_size)
    run = distributed.current()
    if run.is_main:
        result.annotate(weights=detector.weights_source, provenance=provenance.collect(detector, files=records))
        result.write(path.parent, gan="val", topk_k=REFERENCE_K)
    run.barrier()
    if not path.is_file():
        raise ForensicsError(f"FF-RS kept no fake image of the benchmark's val split; {path} was not written")
    return path
