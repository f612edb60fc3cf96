"""Per-block CLS features of a frozen CLIP ViT for attribution (docs/attribution.md).

The reference's feature is the CLS token of the hidden state after transformer block b, before the
final LayerNorm and the projection: site ``"block"`` here. ``"ln_2"`` gives RINE's per-block tokens
(the CLS token of each block's ``ln_2`` output, what a ``rine`` detector reads), ``"ln_1"`` the
CLS of ``ln_1``. The backbone is a :class:`~forensics.detectors.clip_backbone.ClipVisionBackbone`
or a ``rine``/``ufd`` detector (its frozen CLIP backbone is used).

Extraction and caching are :func:`forensics.detectors.feature_cache.extract_or_load`, the same
on-disk cache RINE/UFD training uses (one entry holds every block of a site; choosing blocks is
slicing, so a block sweep costs one extraction). The key covers the backbone (model name, and the
weights file, or a hash of the tensors for random weights), the site, the preprocessing, the
decoder's pixel limit and the ordered file list (path, size, mtime, label); any change gives a new
entry, an unchanged run loads the entry without a backbone forward. Batched, with a progress bar,
on CPU or CUDA.

Preprocessing (:func:`attribution_preprocessing`): by default the backbone's CLIP eval view
(CLIP mean/std, CenterCrop at the backbone's input size, no resize). Options: ``resize`` (short side
first, e.g. 224 for GenImage) and ``norm="imagenet"`` (the reference's [quirk]: it normalises CLIP
inputs with ImageNet statistics). Deliberate difference: the reference resizes every image to
exactly 224x224 (aspect ratio not kept, bilinear at eval, bicubic at train); here the short side is
resized and the centre cropped, identically for every split.

(``feature_cache`` lives in ``forensics.detectors``, below both the trainers and attribution, which
share it.)
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data import ImageRecord
from ..detectors.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..detectors.feature_cache import TOKEN_SITES, CacheSummary, backbone_of, default_preprocessing, extract_or_load
from ..cache import cache_dir
from ..errors import InputError

log = logging.getLogger(__name__)

SITES: tuple[str, ...] = tuple(TOKEN_SITES)  # block (reference), ln_2 (RINE), ln_1
NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


def default_cache_dir() -> Path:
    """``$FORENSICS_CACHE/features`` (entries are keyed by content; see the module docstring)."""
    return cache_dir() / "features"


def parse_blocks(text: str | Sequence[int] | None, n_blocks: int) -> list[int]:
    """Block indices from ``"all"``/``None``, ``"0,3,-1"`` or a sequence; negatives count from the end.
    Returned non-negative, in the given order, without repeats."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return list(range(n_blocks))
    items = [int(t) for t in text.replace(",", " ").split()] if isinstance(text, str) else [int(t) for t in text]
    out: list[int] = []
    for b in items:
        if not -n_blocks <= b < n_blocks:
            raise InputError(f"block {b} out of range: the backbone has {n_blocks} blocks (0..{n_blocks - 1})")
        if b % n_blocks not in out:
            out.append(b % n_blocks)
    if not out:
        raise InputError("no block selected")
    return out


def attribution_preprocessing(model, resize: int | None = None, norm: str = "clip",
                              interpolation: str = "bilinear") -> Preprocessing:
    """The backbone's deterministic view: optional short-side ``resize``, CenterCrop at the input size,
    ``norm`` statistics (``clip`` or the reference's ``imagenet``)."""
    if norm not in NORMS:
        raise InputError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    mean, std = NORMS[norm]
    return dataclasses.replace(default_preprocessing(backbone_of(model)), mean=mean, std=std, resize=resize,
                               interpolation=interpolation)


@dataclass
class BlockFeatures:
    """CLS features ``[K, blocks, width]`` (float32) of the readable records; ``kept`` = their
    positions in the record list, ``skipped`` = (path, reason) of the others."""

    features: np.ndarray
    kept: np.ndarray
    summary: CacheSummary

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.summary.skipped

    def block(self, b: int) -> np.ndarray:
        return self.features[:, b]


def block_features(model, records: Sequence[ImageRecord], site: str = "block", cache_dir: str | Path | None = None,
                   preprocessing: Preprocessing | None = None, batch_size: int = 64,
                   device: str | torch.device | None = None, num_workers: int = 0,
                   progress: bool = True) -> BlockFeatures:
    """Per-block CLS tokens of ``records`` at ``site`` from the cache (extracted and stored once)."""
    if site not in SITES:
        raise InputError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    cached = extract_or_load(model, records, site, cache_dir or default_cache_dir(), batch_size=batch_size,
                             device=device, preprocessing=preprocessing, num_workers=num_workers, progress=progress)
    return BlockFeatures(cached.features.float().numpy(), cached.indices.numpy(), cached.summary)
