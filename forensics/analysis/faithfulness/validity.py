"""Is the ground-truth mask where the detector's evidence is? A counterfactual check, run before any
heatmap is scored against a mask (docs/faithfulness.md, "Ground truth that holds").

A fake and its *base* (the untouched image it was made from) differ only in the manipulated region. For a
valid pair (the detector calls the fake fake and the base real) the fake-minus-base logit gap is the
evidence the manipulation added. Restoring the **mask** region of the fake from the base should remove
that gap, and restoring a **random region** of the same area that does not overlap the mask should not:

    removed(R) = (logit(fake) - logit(fake with R restored from the base)) / (logit(fake) - logit(base))

1 = restoring ``R`` turns the fake into its base for the detector, 0 = no effect. Reported per pair, as a
mean with a bootstrap 95 % CI for the mask and for the random regions (``draws`` seeded regions per pair,
averaged per pair first). Verdict (:func:`verdict`): the masks carry the detector's evidence when the
mask's mean is at least ``min_removed`` (0.5) and its CI lies above the random regions' CI.

Random regions are made of the cells of a ``cell`` x ``cell`` grid that lie wholly outside the mask, drawn
in a seeded random order until the mask's area is reached (the last cell only in part); a mask larger than
what lies outside it gets all of the outside, and the shortfall is reported (``area_ratio``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .stats import Estimate, bootstrap_ci

log = logging.getLogger(__name__)

#: The default of :func:`verdict`: the mask must remove at least half of the gap on average.
MIN_REMOVED = 0.5


def random_region(mask: np.ndarray, rng: np.random.Generator, cell: int = 8) -> np.ndarray:
    """A bool region of (up to) ``mask.sum()`` pixels, disjoint from ``mask``: grid cells wholly outside the
    mask in random order (the last one cut to the exact area, raster order inside the cell)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    need = int(mask.sum())
    region = np.zeros_like(mask)
    cells = [(y, x) for y in range(0, h, cell) for x in range(0, w, cell)
             if not mask[y:y + cell, x:x + cell].any()]
    for k in rng.permutation(len(cells)):
        if need <= 0:
            break
        y, x = cells[k]
        block = region[y:y + cell, x:x + cell]
        take = min(need, block.size)
        flat = np.zeros(block.size, dtype=bool)
        flat[:take] = True
        region[y:y + cell, x:x + cell] = flat.reshape(block.shape)
        need -= take
    if need > 0:   # fewer whole free cells than the mask's area: add the remaining free pixels
        free = np.flatnonzero(~mask.ravel() & ~region.ravel())
        region.ravel()[rng.permutation(free)[:need]] = True
    return region


def restore(fake: torch.Tensor, base: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``fake`` with the pixels of bool ``region`` ``[N, H, W]`` taken from ``base`` (``[N, C, H, W]``)."""
    keep = region.to(fake.device)[:, None].expand_as(fake)
    return torch.where(keep, base.to(fake.device), fake)


@dataclass
class ValidityResult:
    """Per valid pair: the logits of the fake, the base, the fake with the mask restored and with each random
    region restored (``[N, draws]``), and the fractions of the gap removed; ``area_ratio`` = random region
    area / mask area (1 unless the mask leaves too little outside it)."""

    fake: np.ndarray
    base: np.ndarray
    mask_restored: np.ndarray
    random_restored: np.ndarray
    area_ratio: np.ndarray
    threshold: float
    seed: int

    @property
    def gap(self) -> np.ndarray:
        return self.fake - self.base

    @property
    def removed_mask(self) -> np.ndarray:
        return (self.fake - self.mask_restored) / self.gap

    @property
    def removed_random(self) -> np.ndarray:
        """Per pair, the mean over the random draws."""
        return ((self.fake[:, None] - self.random_restored) / self.gap[:, None]).mean(1)

    def estimates(self) -> dict[str, Estimate]:
        return {"mask": bootstrap_ci(self.removed_mask, seed=self.seed),
                "random": bootstrap_ci(self.removed_random, seed=self.seed + 1)}

    def verdict(self, min_removed: float = MIN_REMOVED) -> bool:
        return verdict(self.estimates(), min_removed)

    def to_dict(self) -> dict:
        est = self.estimates()
        return {"pairs": int(len(self.fake)), "draws": int(self.random_restored.shape[1]) if self.fake.size else 0,
                "threshold": self.threshold, "seed": self.seed,
                "mean_logit": {"fake": _mean(self.fake), "base": _mean(self.base),
                               "mask_restored": _mean(self.mask_restored),
                               "random_restored": _mean(self.random_restored)},
                "removed_mask": est["mask"].to_dict(), "removed_random": est["random"].to_dict(),
                "min_area_ratio": float(self.area_ratio.min()) if self.area_ratio.size else None,
                "masks_carry_evidence": self.verdict(), "rule": RULE}


RULE = (f"yes when the mask's mean removed fraction is >= {MIN_REMOVED} and its 95 % CI lies above the "
        "random regions' CI")


def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if np.size(v) else None


def verdict(est: dict[str, Estimate], min_removed: float = MIN_REMOVED) -> bool:
    """The masks carry the evidence: the mask removes at least ``min_removed`` of the gap on average, and its
    CI lies above the random regions' CI (with fewer than 2 pairs: the means)."""
    m, r = est["mask"], est["random"]
    if m.n == 0 or not np.isfinite(m.mean):
        return False
    lo, hi = (m.lo, r.hi) if np.isfinite(m.lo) and np.isfinite(r.hi) else (m.mean, r.mean)
    return bool(m.mean >= min_removed and lo > hi)


@torch.no_grad()
def mask_validity(score: Callable[[torch.Tensor], torch.Tensor], fakes: torch.Tensor, bases: torch.Tensor,
                  masks: np.ndarray, *, draws: int = 8, cell: int = 8, seed: int = 0, batch_size: int = 64,
                  threshold: float = 0.0) -> ValidityResult:
    """Run the check on valid pairs (``fakes``/``bases`` ``[N, C, H, W]``, bool ``masks`` ``[N, H, W]``);
    ``score`` maps a batch to the fake logits ``[B]``."""
    rng = np.random.default_rng(seed)
    m = torch.as_tensor(np.asarray(masks, dtype=bool))
    regions = np.stack([np.stack([random_region(mk, rng, cell) for _ in range(draws)]) for mk in masks]) \
        if len(masks) else np.zeros((0, draws) + tuple(fakes.shape[2:]), dtype=bool)
    area = regions.sum((2, 3)).mean(1) / np.maximum(np.asarray(masks).sum((1, 2)), 1)

    def run(make: Callable[[slice], torch.Tensor]) -> np.ndarray:
        out = [score(make(slice(i, i + batch_size))).float().cpu() for i in range(0, len(fakes), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0)

    fake = run(lambda s: fakes[s])
    base = run(lambda s: bases[s])
    restored = run(lambda s: restore(fakes[s], bases[s], m[s]))
    rnd = np.stack([run(lambda s, d=d: restore(fakes[s], bases[s], torch.as_tensor(regions[s, d])))
                    for d in range(draws)], 1) if draws else np.zeros((len(fakes), 0))
    res = ValidityResult(fake, base, restored, rnd, area, threshold, seed)
    log.info("mask validity: %d pairs; the mask removes %s of the fake-minus-base gap, random regions %s",
             len(fake), *(e.format(2) for e in res.estimates().values()))
    return res


def validity_figure(res: ValidityResult, title: str):
    """Left: removed fraction per pair, mask vs random regions (mean over draws), with the means and CIs.
    Right: mean logits of the fake, the fake with random regions restored, with the mask restored, the base."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9.5, 3.8))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    est = res.estimates()
    rng = np.random.default_rng(0)
    for k, (name, vals, col) in enumerate((("mask restored", res.removed_mask, "tab:red"),
                                           ("random region restored", res.removed_random, "tab:blue"))):
        ax.scatter(k + rng.uniform(-0.15, 0.15, len(vals)), vals, s=9, alpha=0.5, color=col)
        e = est["mask" if k == 0 else "random"]
        if e.n:
            lo, hi = (e.lo, e.hi) if np.isfinite(e.lo) else (e.mean, e.mean)
            ax.errorbar([k + 0.3], [e.mean], yerr=[[e.mean - lo], [hi - e.mean]], fmt="o", color="black",
                        capsize=4, ms=5)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axhline(1, color="grey", lw=0.6, ls=":")
    ax.set_xticks([0, 1], ["mask restored", "random region\nrestored"])
    ax.set_ylabel("fraction of the fake - base logit gap removed")
    ax.set_title(f"{len(res.fake)} valid pairs (mean, 95 % CI in black)", fontsize=9)
    names = ["fake", "random region\nrestored", "mask\nrestored", "base"]
    vals = [res.fake.mean(), res.random_restored.mean(), res.mask_restored.mean(), res.base.mean()] \
        if res.fake.size else [0, 0, 0, 0]
    bx.bar(range(4), vals, color=["tab:red", "tab:blue", "tab:purple", "tab:green"])
    bx.axhline(res.threshold, color="black", lw=0.8, ls="--", label=f"threshold {res.threshold:g}")
    bx.set_xticks(range(4), names, fontsize=8)
    bx.set_ylabel("mean logit of 'fake'")
    bx.legend(fontsize=7)
    fig.suptitle(f"{title}: the masks carry the detector's evidence: {'yes' if res.verdict() else 'NO'}",
                 fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["MIN_REMOVED", "RULE", "ValidityResult", "mask_validity", "random_region", "restore", "validity_figure",
           "verdict"]
