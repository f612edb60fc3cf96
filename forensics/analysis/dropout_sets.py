"""The feature-map sets that feature-map dropout masks (docs/dropout.md): top-k, low-k and random-k of an
FF-RS ranking; random-k drawn without replacement or with the reference's sampler (see
:mod:`forensics.analysis.dropout` for the analysis)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..detectors import FeatureMapKey
from .fmap_ranking import Ranking, lowk, topk

log = logging.getLogger(__name__)

RANDOM_MODES: tuple[str, ...] = ("without_replacement", "reference")


def replica_name(r: int, k: int | None = None) -> str:
    """Name of random replica ``r`` (``randomk#r``; in a sweep ``randomk@k#r``)."""
    return f"randomk#{r}" if k is None else f"randomk@{k}#{r}"


def random_k(keys: Sequence[FeatureMapKey], exclude: Sequence[FeatureMapKey], k: int, rng: np.random.Generator,
             mode: str = "without_replacement") -> list[FeatureMapKey]:
    """k maps of ``keys`` outside ``exclude`` (the top-k), drawn with ``rng`` (docs/dropout.md).

    ``without_replacement``: k distinct maps uniformly from the pool, returned in ``keys`` order.
    ``reference``: the reference's sampler: ``len(keys)`` draws with replacement, de-duplicated,
    visited in a seeded random order (standing in for the reference's hash-randomised set order),
    top-k members skipped, the first k others kept; if fewer than k remain (only when k is close to
    the number of unique draws) the reference masks fewer, and so does this, with a warning.
    """
    if mode not in RANDOM_MODES:
        raise ValueError(f"random_mode must be one of {RANDOM_MODES}, got {mode!r}")
    excluded = set(exclude)
    if mode == "without_replacement":
        pool = [key for key in keys if key not in excluded]
        if k > len(pool):
            raise ValueError(f"cannot draw {k} maps outside the top-k: only {len(pool)} remain")
        return [pool[i] for i in np.sort(rng.choice(len(pool), size=k, replace=False))]
    unique = np.unique(rng.integers(0, len(keys), size=len(keys)))
    picked: list[FeatureMapKey] = []
    for i in rng.permutation(unique):
        if len(picked) == k:
            break
        if keys[i] not in excluded:
            picked.append(keys[i])
    if len(picked) < k:
        log.warning("reference random-k: only %d of %d maps could be drawn (as the reference, fewer are masked)",
                    len(picked), k)
    return picked


@dataclass
class FeatureMapSets:
    """The masked sets of one analysis: ``topk``, ``lowk`` and ``randomk`` (one list per replica)."""

    k: int
    topk: list[FeatureMapKey]
    lowk: list[FeatureMapKey]
    randomk: list[list[FeatureMapKey]]
    random_mode: str = "without_replacement"
    seed: int = 0

    def variants(self) -> dict[str, list[FeatureMapKey]]:
        """``{variant: keys}`` of every masked model: ``topk``, ``lowk``, ``randomk#0``, ..."""
        out = {"topk": self.topk, "lowk": self.lowk}
        out.update({replica_name(r): keys for r, keys in enumerate(self.randomk)})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "random_mode": self.random_mode, "seed": self.seed, "replicas": len(self.randomk),
                "topk": [str(x) for x in self.topk], "lowk": [str(x) for x in self.lowk],
                "randomk": [[str(x) for x in keys] for keys in self.randomk]}


def feature_map_sets(ranking: Ranking, k: int, *, replicas: int = 5, seed: int = 0,
                     random_mode: str = "without_replacement", stable: bool = True) -> FeatureMapSets:
    """Top-k, low-k and ``replicas`` random-k sets of ``ranking`` (the FF-RS fake ranking, e.g.
    :func:`forensics.analysis.fmap_ranking.read_ranking_csv`; docs/dropout.md). The pool of random-k is every map of the
    ranking, in its order. ``stable``: tie order of the re-sort (see :func:`~forensics.analysis.fmap_ranking.topk`).
    Needs ``2 k <= number of maps`` so that top-k, low-k and random-k can be disjoint from top-k."""
    n = len(ranking)
    if k < 0 or 2 * k > n:
        raise ValueError(f"k must be in [0, {n // 2}] for a ranking of {n} maps (top-k and low-k must not "
                         f"overlap), got {k}")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    rng = np.random.default_rng(seed)
    keys = [key for key, _ in ranking]
    top = topk(ranking, k, stable)
    return FeatureMapSets(k=k, topk=top, lowk=lowk(ranking, k, stable),
                          randomk=[random_k(keys, top, k, rng, random_mode) for _ in range(replicas)],
                          random_mode=random_mode, seed=seed)
