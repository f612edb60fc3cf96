"""Outputs of an FF-RS run (:func:`forensics.analysis.ffrs.compute_ffrs`): the ranking CSVs, the omega plot and
``summary.json`` as ``analyses/rank_fmaps.py`` writes them, and the embedded default's ranking (computed once
and reused by the analyses that need a ranking). docs/ffrs.md."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import distributed, provenance
from ..data import forensynths
from ..detectors import Detector
from ..errors import ForensicsError
from ..io import atomic_write_json
from .ffrs import FFRSResult, compute_ffrs, ffrs_transform
from .fmap_ranking import layer_share, plot_omega, topk, write_ranking_csv

log = logging.getLogger(__name__)


def write_outputs(result: FFRSResult, out_dir: str | Path, gan: str, topk_k: int,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the reference's CSVs (``<gan>-real.csv``, ``<gan>-fake.csv``), the omega plot of the
    fake ranking (PNG and PDF) and ``summary.json`` (images used/filtered/skipped, the per-layer
    share of the top-k, the settings) into ``out_dir``; every file atomically."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for side, ranking in result.rankings.items():
        paths[f"csv_{side}"] = write_ranking_csv(out_dir / f"{gan}-{side}.csv", ranking)
    summary: dict[str, Any] = {**result.to_dict(), "gan_name": gan, "topk": topk_k, **(extra or {})}
    fake = result.rankings.get("fake")
    if fake:
        keys = topk(fake, topk_k)
        summary["topk_layer_share"] = layer_share(keys)
        summary["topk_keys"] = [str(k) for k in keys]
        summary["num_feature_maps"] = len(fake)
        summary["num_zero_omega"] = int(sum(1 for _, v in fake if v == 0))
        title = f"FF-RS (ω) of {result.detector} over {result.counts['fake']['used']} {gan} fakes"
        for suffix in ("png", "pdf"):
            paths[f"plot_{suffix}"] = plot_omega(fake, out_dir / f"{gan}-omega.{suffix}", title=title)
    paths["summary"] = atomic_write_json(out_dir / "summary.json", summary)
    return paths


# ---------------------------------------------------------------------------- embedded default
#: Where ``analyses/rank_fmaps.py`` writes its output (relative to the working directory).
RANK_FMAPS_ROOT = Path("figures/rank_fmaps")
#: T-FF's k for ResNet-50 (docs/dropout.md); the embedded default uses ``min(REFERENCE_K, 1% of the maps)``.
REFERENCE_K = 114


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
        write_outputs(result, path.parent, "val", REFERENCE_K, extra={
            "weights": detector.weights_source, "provenance": provenance.collect(detector, files=records)})
    run.barrier()
    if not path.is_file():
        raise ForensicsError(f"FF-RS kept no fake image of the benchmark's val split; {path} was not written")
    return path
