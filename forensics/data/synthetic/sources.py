"""Real images of the benchmark: the bundled scikit-image photographs and procedural dead-leaves images, each
split into disjoint train/val and test regions, and random rescaled, flipped crops of them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import BenchmarkConfig
from .seeding import _rng


def load_photo(name: str) -> np.ndarray:
    """One bundled scikit-image colour photograph as ``uint8`` HxWx3."""
    import skimage.data
    try:
        img = getattr(skimage.data, name)()
    except AttributeError as exc:
        raise ValueError(f"skimage.data has no image {name!r}") from exc
    if isinstance(img, tuple):          # stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"skimage.data.{name} is not a colour image (shape {img.shape})")
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def dead_leaves(size: int, rng: np.random.Generator, palette: np.ndarray, rmin: float = 1.5,
                rmax: float | None = None, supersample: int = 2) -> np.ndarray:
    """Colour dead-leaves image (size x size, uint8): discs of radius ~ r^-3 on [rmin, rmax],
    dropped front-to-back until the canvas is covered, colours drawn from ``palette`` (Nx3 uint8)
    with a mild random shading; rendered at ``supersample``x and area-downsampled (anti-aliased)."""
    import cv2
    s = size * supersample
    rmax = (rmax if rmax is not None else size / 4) * supersample
    rmin = rmin * supersample
    canvas = np.zeros((s, s, 3), np.float32)
    filled = np.zeros((s, s), bool)
    yy, xx = np.mgrid[0:s, 0:s]
    n_left = s * s
    for _ in range(200_000):
        if n_left < 1:
            break
        u = rng.random()
        # inverse CDF of p(r) ~ r^-3 on [rmin, rmax]
        r = 1.0 / math.sqrt(u / rmax**2 + (1 - u) / rmin**2)
        cy, cx = rng.uniform(-r, s + r, size=2)
        y0, y1 = max(0, int(cy - r)), min(s, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(s, int(cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        m = ((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r) & ~filled[y0:y1, x0:x1]
        if not m.any():
            continue
        col = palette[rng.integers(len(palette))].astype(np.float32)
        # linear shading across the disc (lighting), +-10%
        g = rng.normal(0, 0.1 / max(r, 1.0), size=2)
        shade = 1.0 + g[0] * (yy[y0:y1, x0:x1] - cy) + g[1] * (xx[y0:y1, x0:x1] - cx)
        canvas[y0:y1, x0:x1][m] = np.clip(col[None, :] * shade[m][:, None], 0, 255)
        filled[y0:y1, x0:x1] |= m
        n_left -= int(m.sum())
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Source:
    """A source image and its two disjoint regions ``(y0, y1, x0, x1)``."""

    name: str
    image: np.ndarray
    train_region: tuple[int, int, int, int]
    test_region: tuple[int, int, int, int]


def split_regions(h: int, w: int, test_fraction: float, gap: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Train/val = first part of the longer side, test = last ``test_fraction`` of it."""
    if w >= h:
        cut = int(round(w * (1 - test_fraction)))
        return (0, h, 0, cut - gap // 2), (0, h, cut + (gap - gap // 2), w)
    cut = int(round(h * (1 - test_fraction)))
    return (0, cut - gap // 2, 0, w), (cut + (gap - gap // 2), h, 0, w)


def load_sources(cfg: BenchmarkConfig) -> list[Source]:
    photos = [(n, load_photo(n)) for n in cfg.photo_sources]
    if cfg.dead_leaves:
        rng = _rng(cfg.seed, "dead_leaves")
        pal = np.concatenate([p.reshape(-1, 3)[rng.integers(0, p.shape[0] * p.shape[1], 2000)] for _, p in photos]) \
            if photos else rng.integers(0, 256, (4000, 3)).astype(np.uint8)
        for i in range(cfg.dead_leaves):
            photos.append((f"deadleaves{i}" if cfg.dead_leaves > 1 else "deadleaves",
                           dead_leaves(cfg.dead_leaves_size, rng, pal)))
    out = []
    for name, img in photos:
        tr, te = split_regions(img.shape[0], img.shape[1], cfg.test_fraction, cfg.region_gap)
        out.append(Source(name, img, tr, te))
    return out


def class_name(source: str) -> str:
    """Dead-leaves sources share one class folder."""
    return "deadleaves" if source.startswith("deadleaves") else source


def sample_crop(src: Source, region: str, rng: np.random.Generator, size: int, scale_range: tuple[float, float],
                min_std: float = 4.0, max_tries: int = 50) -> np.ndarray:
    """One ``size x size`` uint8 crop from ``src``'s train or test region: rescale factor
    log-uniform in ``scale_range`` (area filter when shrinking, bicubic when enlarging), random
    position, horizontal flip with probability 1/2; nearly flat crops are redrawn."""
    import cv2
    y0, y1, x0, x1 = src.train_region if region == "train" else src.test_region
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    crop = None
    for _ in range(max_tries):
        s = math.exp(rng.uniform(lo, hi))
        c = int(round(size / s))
        c = max(4, min(c, y1 - y0, x1 - x0))
        top = int(rng.integers(y0, y1 - c + 1))
        left = int(rng.integers(x0, x1 - c + 1))
        patch = src.image[top:top + c, left:left + c]
        interp = cv2.INTER_AREA if c >= size else cv2.INTER_CUBIC
        crop = cv2.resize(patch, (size, size), interpolation=interp)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if crop.std() >= min_std:
            break
    return np.ascontiguousarray(crop)


def sample_crops(sources: Sequence[Source], region: str, n_per_source: Sequence[int], rng: np.random.Generator,
                 cfg: BenchmarkConfig) -> tuple[np.ndarray, list[str]]:
    """``sum(n_per_source)`` crops (N x H x W x 3 uint8) and the source name of each."""
    imgs, names = [], []
    for src, n in zip(sources, n_per_source):
        for _ in range(int(n)):
            imgs.append(sample_crop(src, region, rng, cfg.image_size, cfg.scale_range, cfg.min_crop_std))
            names.append(src.name)
    return np.stack(imgs) if imgs else np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8), names


def _split_count(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]
