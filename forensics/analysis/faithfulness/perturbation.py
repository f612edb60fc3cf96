"""Perturbation curves: remove image patches in the order a heatmap ranks them and watch the logit.

The image is cut into ``patch x patch`` patches scored by their mean relevance. **MoRF** removes the
most relevant patches first, **LeRF** the least relevant first (the exact reverse order; ties are
broken by a seeded random permutation, so a flat map gives a random order rather than raster
order); after each of ``steps`` equal steps the detector's explained score ``g = s * f`` (the target
class's logit, :func:`forensics.explain.base.target_score`) is recorded, ``steps + 1`` points from
the intact to the fully removed image (Samek et al., IEEE TNNLS 2017). A removed patch is replaced
by a **fill-in** (:data:`FILL_INS`):

- ``blur``: the image's own Gaussian-blurred version (sigma ``blur_sigma`` pixels);
- ``mean``: the image's per-channel mean;
- ``road``: ROAD's noisy linear imputation (Rong et al., ICML 2022): each removed pixel is the
  weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal), solved jointly for all removed pixels
  as one sparse linear system per image, plus Gaussian noise of std ``road_noise`` (in the
  normalised input's units); with no pixel left, the image's mean.

All fill-ins are computed on the normalised input (the per-channel normalisation is affine, so
blurring, averaging and linear imputation commute with it). The area under each curve is the
trapezoid over the removed fraction ``[0, 1]``; the **symmetric relevance gain**
``SRG = AUC(LeRF) - AUC(MoRF)`` (Blücher et al., TMLR 2024) is large when the heatmap's top patches
carry the evidence and its bottom patches do not, whichever fill-in; a heatmap unrelated to the
model scores 0 in expectation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FILL_INS = ("blur", "mean", "road")
ORDERS = ("morf", "lerf")


@dataclass(frozen=True)
class PerturbationConfig:
    """Patch side (pixels), number of steps, fill-ins and their settings, seed (tie-breaks, ROAD noise)."""

    patch: int = 8
    steps: int = 8
    fill_ins: tuple[str, ...] = FILL_INS
    blur_sigma: float = 4.0
    road_noise: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [f for f in self.fill_ins if f not in FILL_INS]
        if bad:
            raise ValueError(f"unknown fill-ins {bad}; known: {list(FILL_INS)}")
        if self.patch < 1 or self.steps < 1:
            raise ValueError("patch and steps must be >= 1")


# ---------------------------------------------------------------------------------------- patches
def patch_scores(heat: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean relevance of each patch, ``[B, P]`` in raster order (partial patches at the border count)."""
    return F.avg_pool2d(heat[:, None].double(), patch, ceil_mode=True).flatten(1)


def morf_order(heat: torch.Tensor, patch: int, seed: int = 0) -> torch.Tensor:
    """Patch indices ``[B, P]``, most relevant first (ties in a seeded random order)."""
    scores = patch_scores(heat, patch)
    perm = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(seed))
    idx = torch.argsort(scores[:, perm], dim=1, descending=True, stable=True)
    return perm[idx]


def removal_mask(order: torch.Tensor, count: int, shape: tuple[int, int], patch: int) -> torch.Tensor:
    """Bool ``[B, H, W]``: the pixels of the first ``count`` patches of ``order``."""
    h, w = shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    grid = torch.zeros(order.shape[0], gh * gw, dtype=torch.bool)
    grid.scatter_(1, order[:, :count], True)
    grid = grid.view(-1, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return grid[:, :h, :w]


def steps_counts(n_patches: int, steps: int) -> list[int]:
    """Patches removed after each step, ``0 .. n_patches`` in ``steps`` near-equal steps."""
    return [int(round(k * n_patches / steps)) for k in range(steps + 1)]


# ---------------------------------------------------------------------------------------- fill-ins
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-channel Gaussian blur (reflect padding, kernel radius ``ceil(3 sigma)``)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < r:
        k, r = k[r - pad:r + pad + 1] / k[r - pad:r + pad + 1].sum(), pad
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
               (1, 0, 1 / 6), (-1, 0, 1 / 6))


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear imputation (no noise) of ``image`` ``[C, H, W]`` at the ``removed`` pixels ``[H, W]``:
    every removed pixel equals the weighted mean of its in-image neighbours (weights 1/6 direct, 1/12
    diagonal), solved as one sparse system for all removed pixels and channels."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve
    c, h, w = image.shape
    removed = np.asarray(removed, dtype=bool)
    ys, xs = np.nonzero(removed)
    n = ys.size
    out = image.astype(np.float64, copy=True)
    if n == 0:
        return out
    if n == h * w:
        out[:] = image.reshape(c, -1).mean(1)[:, None, None]
        return out
    var = np.full((h, w), -1, dtype=np.int64)
    var[ys, xs] = np.arange(n)
    flat = image.reshape(c, -1).astype(np.float64)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    diag = np.zeros(n)
    b = np.zeros((n, c))
    for dy, dx, wt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[ok] += wt
        idx = np.nonzero(ok)[0]
        nv = var[ny[ok], nx[ok]]
        unknown = nv >= 0
        rows.append(idx[unknown])
        cols.append(nv[unknown])
        vals.append(np.full(int(unknown.sum()), -wt))
        known = idx[~unknown]
        b[known] += wt * flat[:, ny[ok][~unknown] * w + nx[ok][~unknown]].T
    a = coo_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spsolve(a.tocsc(), b)
    out[:, ys, xs] = np.asarray(sol).reshape(n, c).T
    return out


class Filler:
    """Replaces removed pixels of a batch ``x`` ``[B, C, H, W]`` by one fill-in (see the module docstring)."""

    def __init__(self, kind: str, x: torch.Tensor, cfg: PerturbationConfig):
        if kind not in FILL_INS:
            raise ValueError(f"unknown fill-in {kind!r}; known: {list(FILL_INS)}")
        self.kind, self.x, self.cfg = kind, x, cfg
        self.base = None
        if kind == "blur":
            self.base = gaussian_blur(x, cfg.blur_sigma)
        elif kind == "mean":
            self.base = x.mean((2, 3), keepdim=True).expand_as(x)
        self.generator = np.random.default_rng(cfg.seed)

    def __call__(self, removed: torch.Tensor) -> torch.Tensor:
        removed = removed.to(self.x.device)
        if self.base is not None:
            return torch.where(removed[:, None], self.base, self.x)
        xs = self.x.detach().cpu().double().numpy()
        rm = removed.cpu().numpy()
        filled = np.stack([linear_imputation(img, r) for img, r in zip(xs, rm)])
        noise = self.generator.normal(0.0, self.cfg.road_noise, size=filled.shape) * rm[:, None]
        return torch.from_numpy(filled + noise).to(self.x)


# ---------------------------------------------------------------------------------------- curves
def perturbation_curves(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, heat: torch.Tensor,
                        cfg: PerturbationConfig = PerturbationConfig(), fill_ins: Sequence[str] | None = None,
                        chunk: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """``{fill_in: {"morf"|"lerf": [B, steps + 1]}}`` explained scores as the patches are removed.

    ``score(x)`` gives the explained score ``g`` ``[B]`` of a batch (the target's logit); ``x``
    ``[B, C, H, W]`` normalised images; ``heat`` ``[B, H, W]`` their heatmaps. The perturbed images
    of all steps are scored in batches of up to ``chunk``."""
    if heat.shape[0] != x.shape[0] or tuple(heat.shape[1:]) != tuple(x.shape[2:]):
        raise ValueError(f"heatmaps {tuple(heat.shape)} do not match images {tuple(x.shape)}")
    b, _, h, w = x.shape
    order = morf_order(heat.detach().cpu(), cfg.patch, cfg.seed)
    counts = steps_counts(order.shape[1], cfg.steps)
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind in fill_ins or cfg.fill_ins:
        filler = Filler(kind, x, cfg)
        out[kind] = {}
        for name, o in (("morf", order), ("lerf", order.flip(1))):
            batch = torch.cat([filler(removal_mask(o, n, (h, w), cfg.patch)) for n in counts])
            with torch.no_grad():
                vals = torch.cat([score(batch[i:i + chunk]).detach().double().cpu()
                                  for i in range(0, batch.shape[0], chunk)])
            out[kind][name] = vals.view(len(counts), b).T.numpy()
    return out


def area(curve: np.ndarray) -> np.ndarray:
    """Area under ``[B, steps + 1]`` curves over the removed fraction ``[0, 1]`` (trapezoid)."""
    curve = np.asarray(curve, dtype=np.float64)
    return np.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), axis=-1)


def srg(curves: dict[str, np.ndarray]) -> np.ndarray:
    """Symmetric relevance gain ``AUC(LeRF) - AUC(MoRF)`` per image."""
    return area(curves["lerf"]) - area(curves["morf"])
