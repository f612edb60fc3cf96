"""FF-RS (omega), the forensic feature relevance statistic of T-FF (Chandrasegaran et al., ECCV 2022;
docs/ffrs.md), computed streaming.

For each kept image i, feature layer l and its LRP relevance R_i^l (``[C, H, W]``, at the folded
conv output, :mod:`forensics.explain.lrp`):

1. ``R^_i^l = max(R_i^l, 0) / sum_{c,h,w} |R_i^l|`` (no epsilon);
2. ``omega_{l,c} = sum_{h,w} mean_i R^_i^l[c, h, w]``;
3. all feature maps of all layers are ranked together by omega, descending, with a STABLE sort
   (ties keep network order, as the authors' code).

Streaming: ``sum_{h,w}`` commutes with ``mean_i``, so :class:`FFRSAccumulator` keeps, per label
and layer, only a running ``[C]`` sum of ``sum_{h,w} R^_i`` (float64) and the image count; memory
does not grow with the number of images (the authors' code keeps every relevance tensor).

Images kept: fakes with ``p >= conf_fake`` (0.9), reals with ``p <= conf_real`` (0.1), ``p``
from the same forward pass the LRP uses (the canonised model, as the authors' LRP-wrapped
model). Reals and fakes are accumulated separately; reals are explained with T-FF's -1 start
unless ``sign="correct"``.

This module holds the maths, the accumulator, the driver and its result (whose ``write`` makes the run's
output files); the rankings, their CSV and plot live in :mod:`forensics.analysis.fmap_ranking`, the embedded
default's ranking in :mod:`forensics.analysis.ffrs_outputs` (which builds on this module; the rankings' names are
re-exported here).

Deliberate differences from the authors' code (docs/ffrs.md, "Differences from the reference code"):

- A sample whose relevance in a layer is zero everywhere (``sum |R| == 0``) contributes 0 to that
  layer (it still counts in the mean); the authors' code would divide 0 by 0 and turn the layer's
  omega into NaN.
- Accumulation is in float64 (there: float32 tensors); the ranking and the CSV use the
  float32-rounded omega, as T-FF writes float32 values, so ties are float32 ties.
- :func:`topk`/:func:`lowk` re-sort with a stable sort; T-FF's consumer re-sorts with
  pandas' default (unstable quicksort), which may order tied maps differently (``stable=False``
  uses pandas, but its tie order also depends on the pandas/numpy versions). For the released
  ResNet-50 CSV this changes nothing that matters: its low-114 maps all have omega = 0.
- The default transform is T-FF's RandomResizedCrop (scale 0.99-1), random and unseeded as
  there; seed torch's RNG (with ``num_workers=0``) for repeatable runs.

Numerics: omega does not depend on the batch size beyond floating-point noise (every rule is per
sample). In float32 that noise is amplified where the epsilon rule meets a residual sum that nearly
cancels: on a tiny random-weight R50 single omegas moved by ~2e-5 between batch sizes 1 and 16
(oneDNN picks batch-size-dependent conv kernels); on a trained ResNet-50 the change stayed below
3e-5 relative. On GPU keep TF32 off (the explainer does, ``reference_precision=True``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from pathlib import Path

from .. import distributed
from ..data import ImageRecord, RunSummary
from ..detectors import Detector, FeatureMapKey
from ..explain.inputs import check_classes
from ..explain.lrp import LRPEngine, LRPResult
from ..io import atomic_write_json
from .fmap_ranking import (CSV_HEADER, Ranking, layer_share, lowk, omega_curve, plot_omega,  # noqa: F401 (re-exported)
                           read_ranking_csv, sort_ranking, topk, write_ranking_csv)
from .result import AnalysisResult

log = logging.getLogger(__name__)

LABELS = {0: "real", 1: "fake"}
#: T-FF's k for ResNet-50 (docs/dropout.md): the top-k of the summary's per-layer share by default.
REFERENCE_K = 114

# ---------------------------------------------------------------------------- per-batch pieces
def channel_shares(relevance: torch.Tensor) -> torch.Tensor:
    """``sum_{h,w} max(R, 0) / sum_{c,h,w} |R|`` per sample and channel: ``[B, C, ...]`` -> ``[B, C]``
    float64 (step 1 above followed by the spatial sum). Samples with ``sum |R| == 0`` give 0.

    The spatial sums run in ``R``'s dtype (their terms are all non-negative, so float32's pairwise
    summation keeps them within ~1e-7 relative) and everything after them in float64; summing in
    float64 throughout converted every map to float64 first and took 4x longer (bench/README.md)."""
    dims = tuple(range(2, relevance.ndim))
    pos = relevance.clamp_min(0)
    pos = (pos.sum(dim=dims) if dims else pos).double()
    mag = relevance.abs()
    denom = (mag.sum(dim=dims) if dims else mag).double().sum(dim=1)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom[:, None] > 0, pos / safe[:, None], torch.zeros_like(pos))


def confidence_mask(probs: torch.Tensor, labels: torch.Tensor, conf_real: float = 0.1,
                    conf_fake: float = 0.9) -> torch.Tensor:
    """Which samples FF-RS keeps: fakes (label 1) with ``p >= conf_fake`` and reals
    (label 0) with ``p <= conf_real``."""
    check_thresholds(conf_real, conf_fake)
    labels = labels.to(probs.device)
    return ((labels == 1) & (probs >= conf_fake)) | ((labels == 0) & (probs <= conf_real))


def check_thresholds(conf_real: float, conf_fake: float) -> None:
    """The filter must imply a correct prediction (``p >= 0.5`` is fake), since only correctly
    classified samples receive a start signal."""
    if not (0.0 <= conf_real <= 0.5 <= conf_fake <= 1.0):
        raise ValueError(f"need 0 <= conf_real <= 0.5 <= conf_fake <= 1, got conf_real={conf_real}, "
                         f"conf_fake={conf_fake}")


# ---------------------------------------------------------------------------- accumulator
class FFRSAccumulator:
    """Running FF-RS sums per label (0 real, 1 fake) and feature layer.

    ``layers``: ``{layer name: channels}`` in network order (the ranking's tie order), e.g.
    :meth:`for_detector`. :meth:`update` adds one explained batch; :meth:`omega` and
    :meth:`ranking` read the result at any time.
    """

    def __init__(self, layers: Mapping[str, int]):
        self.layers = dict(layers)
        self.sums: dict[int, dict[str, torch.Tensor]] = {
            label: {name: torch.zeros(c, dtype=torch.float64) for name, c in self.layers.items()}
            for label in LABELS}
        self.used = {label: 0 for label in LABELS}
        self.filtered = {label: 0 for label in LABELS}

    @classmethod
    def for_detector(cls, detector: Detector) -> "FFRSAccumulator":
        return cls({fl.name: fl.channels for fl in detector.feature_layers()})

    def update(self, result: LRPResult, labels: torch.Tensor | Sequence[int], keep: torch.Tensor | Sequence[bool]
               ) -> None:
        """Add the kept samples of ``result`` (``keep`` ``[B]`` bool, e.g. :func:`confidence_mask`);
        the others count as filtered. ``result.layer_relevance`` must hold every layer."""
        missing = [n for n in self.layers if n not in result.layer_relevance]
        if missing:
            raise ValueError(f"LRP result lacks {len(missing)} layer(s), e.g. {missing[:3]}; explain with layers=None")
        self.add_shares({name: channel_shares(result.layer_relevance[name]) for name in self.layers},
                        labels, keep)

    def add_shares(self, shares: Mapping[str, torch.Tensor], labels: torch.Tensor | Sequence[int],
                   keep: torch.Tensor | Sequence[bool]) -> None:
        """Add one batch given as its per-sample :func:`channel_shares` (``{layer: [B, C]}``, e.g.
        from :meth:`LRPEngine.explain_reduced` with ``reduce=channel_shares``); ``labels`` and
        ``keep`` as in :meth:`update`."""
        missing = [n for n in self.layers if n not in shares]
        if missing:
            raise ValueError(f"shares lack {len(missing)} layer(s), e.g. {missing[:3]}")
        first = shares[next(iter(self.layers))]
        device = first.device
        labels = check_classes(labels, first.shape[0], device=device, what="FF-RS labels")
        keep = torch.as_tensor(keep, device=device).reshape(-1).bool()
        if keep.shape != labels.shape:
            raise ValueError(f"keep {tuple(keep.shape)} and the batch ({first.shape[0]} samples) must both be [B]")
        for label in LABELS:
            side = labels == label
            sel = (side & keep).nonzero().squeeze(1)
            self.used[label] += int(sel.numel())
            self.filtered[label] += int((side & ~keep).sum())
            if sel.numel():
                for name in self.layers:
                    self.sums[label][name] += shares[name].index_select(0, sel).sum(dim=0).cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The running sums (float64) and counts (int64) as flat ``{name: tensor}`` (checkpoints, all-reduce)."""
        out = {f"sum/{label}/{name}": s for label in LABELS for name, s in self.sums[label].items()}
        out["used"] = torch.tensor([self.used[label] for label in LABELS], dtype=torch.int64)
        out["filtered"] = torch.tensor([self.filtered[label] for label in LABELS], dtype=torch.int64)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Set the sums and counts from :meth:`state_dict` (of an accumulator over the same layers)."""
        for label in LABELS:
            for name in self.layers:
                self.sums[label][name] = state[f"sum/{label}/{name}"].to(torch.float64).clone()
        for i, label in enumerate(LABELS):
            self.used[label] = int(state["used"][i])
            self.filtered[label] = int(state["filtered"][i])

    def omega(self, label: int) -> dict[str, torch.Tensor]:
        """``{layer: omega [C]}`` (float64) over the kept images of ``label``."""
        n = self.used[label]
        if n == 0:
            raise ValueError(f"no {LABELS[label]} image passed the filter; omega is undefined")
        return {name: s / n for name, s in self.sums[label].items()}

    def ranking(self, label: int) -> Ranking:
        """Every feature map with its omega (float32-rounded, as T-FF's CSVs), sorted descending;
        stable, so ties keep network order."""
        items: Ranking = []
        for name, values in self.omega(label).items():
            vals = values.float().tolist()
            items += [(FeatureMapKey(name, c, self.layers[name]), v) for c, v in enumerate(vals)]
        return sort_ranking(items)

    def counts(self) -> dict[str, dict[str, int]]:
        return {LABELS[label]: {"used": self.used[label], "filtered": self.filtered[label]} for label in LABELS}


# ---------------------------------------------------------------------------- driver
@dataclass
class FFRSResult(AnalysisResult):
    """Outcome of :func:`compute_ffrs`: rankings and omega per label name (``"real"``/``"fake"``,
    only sides with at least one kept image), counts, the skipped files, the settings used."""

    detector: str
    rankings: dict[str, Ranking]
    omega: dict[str, dict[str, torch.Tensor]]
    counts: dict[str, dict[str, int]]
    summary: RunSummary
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata (not the rankings: write those with :func:`write_ranking_csv`)."""
        return {"detector": self.detector, "counts": self.counts, "settings": self.settings,
                "summary": self.summary.to_dict()}

    def write(self, out_dir: str | Path, *, gan: str = "ffrs", topk_k: int = REFERENCE_K) -> dict[str, Path]:
        """The reference's CSVs (``<gan>-real.csv``, ``<gan>-fake.csv``), the omega plot of the fake ranking
        (PNG and PDF) and ``summary.json`` (images used/filtered/skipped, the per-layer share of the top
        ``topk_k``, the settings, then :attr:`record`) in ``out_dir``; every file atomically."""
        out_dir = Path(out_dir)
        paths: dict[str, Path] = {}
        for side, ranking in self.rankings.items():
            paths[f"csv_{side}"] = write_ranking_csv(out_dir / f"{gan}-{side}.csv", ranking)
        summary: dict[str, Any] = {**self.to_dict(), "gan_name": gan, "topk": topk_k, **self.record}
        fake = self.rankings.get("fake")
        if fake:
            keys = topk(fake, topk_k)
            summary["topk_layer_share"] = layer_share(keys)
            summary["topk_keys"] = [str(k) for k in keys]
            summary["num_feature_maps"] = len(fake)
            summary["num_zero_omega"] = int(sum(1 for _, v in fake if v == 0))
            title = f"FF-RS (ω) of {self.detector} over {self.counts['fake']['used']} {gan} fakes"
            for suffix in ("png", "pdf"):
                paths[f"plot_{suffix}"] = plot_omega(fake, out_dir / f"{gan}-omega.{suffix}", title=title)
        paths["summary"] = atomic_write_json(out_dir / "summary.json", summary)
        return paths


def reference_transform(detector: Detector, size: int | None = None):
    """T-FF's FF-RS input transform (docs/ffrs.md): ``RandomResizedCrop(size, scale=(0.99, 1),
    ratio=(0.99, 1), bilinear)`` (a near-full image rescaled to ``size``, default the detector's
    crop size, 224), ToTensor, the detector's normalisation. Random and unseeded, as T-FF."""
    from torchvision import transforms as T
    pre = detector.config.preprocessing
    return T.Compose([
        T.RandomResizedCrop(size or pre.crop_size, scale=(0.99, 1.0), ratio=(0.99, 1.0),
                            interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(), T.Normalize(pre.mean, pre.std)])


def compute_ffrs(detector: Detector, records: Sequence[ImageRecord], *, batch_size: int = 16,
                 transform: Callable | None = None, conf_real: float = 0.1, conf_fake: float = 0.9,
                 sign: str = "reference", device: str | torch.device | None = None, num_workers: int = 0,
                 bn_identity: bool = False, progress: bool = True) -> FFRSResult:
    """FF-RS of ``detector`` over labelled ``records`` (e.g. ``forensynths(root, 'progan_val',
    num_real=50, num_fake=50)``), streaming (docs/ffrs.md).

    ``transform``: PIL -> normalised tensor (default :func:`reference_transform`). ``device``: moves
    the detector there first (default: where it is). ``sign``/``bn_identity``: see
    :class:`~forensics.explain.lrp.LRPEngine`. Unreadable files are skipped and listed in
    ``result.summary``.

    Memory: each layer's relevance is reduced to its per-sample channel shares inside the backward
    pass (:meth:`~forensics.explain.lrp.LRPEngine.explain_reduced`), so no relevance map
    outlives its layer and peak memory is bounded by one batch's LRP (the inputs the rules keep),
    whatever the number of images; it grows with ``batch_size`` (bench/README.md).

    Inside a :func:`forensics.distributed.session` (``torchrun``) each rank explains its shard and the
    sums and counts are all-reduced, so every rank returns the whole result; with checkpointing
    (``--resume``) the sums are checkpointed every N batches (docs/distributed.md).
    """
    check_thresholds(conf_real, conf_fake)
    if any(r.label not in (0, 1) for r in records):
        raise ValueError("FF-RS needs labelled records (0 real / 1 fake); some have no label")
    if device is not None:
        from ..device import resolve_device
        detector.to(resolve_device(device))
    transform = transform if transform is not None else reference_transform(detector)
    acc = FFRSAccumulator.for_detector(detector)
    run = distributed.current()
    shard = run.shard(records, block=batch_size, state=acc.state_dict(), label=f"FF-RS {detector.name}")
    acc.load_state_dict(shard.state)
    shard.state = acc.state_dict()  # the accumulator's own tensors, updated in place between checkpoints
    with LRPEngine(detector, bn_identity=bn_identity) as lrp:
        for batch in shard.batches(transform, batch_size, num_workers=num_workers,
                                   progress=f"FF-RS {detector.name}" if progress else None):
            if len(batch):
                result = lrp.explain_reduced(batch.images, channel_shares, batch.labels, layers=None, sign=sign)
                keep = confidence_mask(result.probs, batch.labels, conf_real, conf_fake)
                acc.add_shares(result.layer_relevance, batch.labels, keep)
                shard.state = acc.state_dict()
    summary = shard.finish()
    acc.load_state_dict(run.all_reduce(acc.state_dict()))
    summary.log(log)
    counts = acc.counts()
    for name, c in counts.items():
        log.info("FF-RS %s: %s images used, %s filtered (p threshold %s)", detector.name, c["used"], c["filtered"],
                 f"<= {conf_real}" if name == "real" else f">= {conf_fake}")
    sides = {LABELS[label]: label for label in LABELS if acc.used[label]}
    return FFRSResult(
        detector=detector.name,
        rankings={name: acc.ranking(label) for name, label in sides.items()},
        omega={name: acc.omega(label) for name, label in sides.items()},
        counts=counts, summary=summary,
        settings={"batch_size": batch_size, "conf_real": conf_real, "conf_fake": conf_fake, "sign": sign,
                  "bn_identity": bn_identity, "transform": repr(transform)})


# ---------------------------------------------------------------------------- input transforms
FFRS_CROPS = ("random_resized", "center", "none")


def ffrs_transform(detector: Detector, crop: str = "random_resized", size: int | None = None):
    """Input transform of an FF-RS run: T-FF's near-full RandomResizedCrop (default),
    a CenterCrop, or full resolution (``none``), followed by the detector's normalisation."""
    if crop == "random_resized":
        return reference_transform(detector, size)
    if crop not in FFRS_CROPS:
        raise ValueError(f"crop must be one of {FFRS_CROPS}, got {crop!r}")
    return detector.transform(crop=crop, crop_size=size)
