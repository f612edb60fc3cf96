"""A small, offline, deterministic synthetic-image forensic benchmark in the ForenSynths layout.

Nothing is downloaded. **Real** images are random crops (with random rescale and horizontal flip)
of the colour photographs that scikit-image ships inside its wheel (:data:`PHOTO_SOURCES`), mixed
with procedural *dead-leaves* images (occlusion model with power-law disc sizes and colours drawn
from the photographs, the classic natural-statistics image model). Every source image is split
along its longer side into a train/val region (the first ``1 - test_fraction``) and a test region
(the rest), separated by a small gap, so that train/val and test crops never share pixels.

Crops are rescaled by a log-uniform factor in [1/3, 2], so about 40% of the reals are *enlarged*
(smooth, without a top octave): "blurry" is then no reliable cue and a detector must learn a
family's own trace, which is what makes generalisation partial.

**Fake** images are real crops passed through small image generators (about 20k parameters
each), one per *family* (:data:`FAMILIES`), each trained briefly at build time on real
train-region crops (Adam, lr 2e-3, batch 16, L1 + L1 of the Laplacian, 100 steps). Every
upsampling generator sees the crop at half resolution (2x2 average) and must synthesise the
full-resolution image; all families share the same low-resolution trunk and differ in the
operator that produces the full-resolution output, so that each family leaves its own spectral
fingerprint, as real GAN/diffusion generators do:

==============  =======================================================================
``tconv``       transposed convolution (k=4, s=2) as the last layer (ProGAN/DCGAN-like);
                the default training family. Its outputs also carry the colour fingerprint
                below.
``tconv3``      transposed convolution with k=3, s=2 (uneven kernel overlap).
``pshuffle``    sub-pixel convolution: conv -> PixelShuffle(2) (ESPCN/EDSR-like).
``nearest``     nearest-neighbour x2 + 3x3 conv (resize-convolution).
``bilinear``    bilinear x2 + 3x3 conv.
``denoise``     no upsampling: a full-resolution residual denoiser (DnCNN-like) applied to the
                noised image, a stand-in for diffusion-style generators.
==============  =======================================================================

Training is deliberately brief: the traces fade as a generator trains (a default-recipe
ResNet-50 reached AP 0.994 on ``tconv`` fakes of 100-step generators, 0.92 at 150 steps, 0.71 at
400). Because the brief Adam run oscillates, the strength of the period-2 trace at a fixed step
varies several-fold between seeds; for ``tconv`` and ``tconv3`` the build therefore scores
snapshots every 10 steps from 80 to 140 (0.8 to 1.4 x ``gen_steps``) by :func:`nyquist_ratio` on a
probe set and keeps the one nearest to step 100 whose ratio is at least ``gen_select_min``
(see :class:`BenchmarkConfig`).

The training family's colour fingerprint (:class:`ColourFingerprint`) is a chroma-only change in
ITU-R 601 YCbCr, i.e. invisible in the ``L = 0.299 R + 0.587 G + 0.114 B`` grayscale used by
T-FF's colour ablation up to 8-bit rounding and clipping (mean |dL| 0.13 levels, mean |dRGB| 2.1
levels on test crops): 60% of the chroma is decoded at half resolution (2x2 blocks, as in
4:2:0 video, perceptually subtle) and the chroma gain is raised by 8%.

The layout written by :func:`build_benchmark`::

    OUT/train/<class>/{0_real,1_fake}/*.png     fakes of the training family only
    OUT/val/<class>/{0_real,1_fake}/*.png
    OUT/test/<family>/{0_real,1_fake}/*.png     one folder per family (own reals, test regions)
    OUT/manifest.json                           seed, families, counts, sizes, generator settings

``<class>`` is the source image (``astronaut``, ``coffee``, ..., ``deadleaves``). The build is
deterministic for a seed on a given platform and torch version (torch's deterministic algorithms,
seeded generators, one torch thread by default: other thread counts give slightly different
images); the manifest records a SHA-256 over all written images so two builds can be compared.
The output folder is written under a temporary name and renamed into place only when complete.
The default build (9 classes x 250 + 250 train, 25 + 25 val, 6 families x 400 + 400 test, 64x64
PNG, about 80 MB) takes about 70 s on one CPU core.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

BENCHMARK_VERSION = 1

#: Colour photographs bundled inside the scikit-image wheel (no download needed).
PHOTO_SOURCES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "retina",
                                  "hubble_deep_field", "immunohistochemistry")

REAL_DIR, FAKE_DIR = "0_real", "1_fake"

# ITU-R 601-2 luma, the weights of PIL ``convert('L')`` and torchvision ``Grayscale``.
_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColourFingerprint:
    """Chroma-only post-processing of a family's output (invisible in ITU-R 601 grayscale).

    ``chroma_block``: weight in [0, 1] of chroma decoded at half resolution (2x2 average,
    nearest-neighbour replication) blended into the full-resolution chroma. ``saturation``: gain on
    Cb/Cr; with ``calibrate=True`` it is instead the target ratio of the mean chroma magnitude of
    the outputs to that of the inputs on the build's probe set (the briefly trained generators
    themselves desaturate by a seed-dependent 0-12%), and the gain applied is solved for. The
    gain applied is recorded in the manifest. ``0.0`` / ``1.0`` leave the image unchanged.
    """

    chroma_block: float = 0.0
    saturation: float = 1.0
    calibrate: bool = False

    @property
    def active(self) -> bool:
        return self.chroma_block != 0.0 or self.saturation != 1.0


@dataclass(frozen=True)
class FamilySpec:
    """One generator family: its last-stage operator and training settings."""

    name: str
    kind: str                       # "tconv4" | "tconv3" | "pshuffle" | "nearest" | "bilinear" | "denoise"
    description: str
    colour: ColourFingerprint = field(default_factory=ColourFingerprint)


#: Every family the benchmark knows, in the order they are built and listed.
FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (
    FamilySpec("tconv", "tconv4", "transposed conv k4 s2 as last layer (ProGAN/DCGAN-like); "
                                  "+ colour fingerprint when it is the training family"),
    FamilySpec("tconv3", "tconv3", "transposed conv k3 s2 as last layer (uneven overlap)"),
    FamilySpec("pshuffle", "pshuffle", "3x3 conv to 4x channels + PixelShuffle(2) (sub-pixel conv)"),
    FamilySpec("nearest", "nearest", "nearest-neighbour x2 + 3x3 conv (resize-convolution)"),
    FamilySpec("bilinear", "bilinear", "bilinear x2 + 3x3 conv"),
    FamilySpec("denoise", "denoise", "full-resolution residual denoiser on the noised image (no upsampling)"),
)}

DEFAULT_TRAIN_FAMILY = "tconv"
DEFAULT_COLOUR = ColourFingerprint(chroma_block=0.6, saturation=1.08)


@dataclass(frozen=True)
class BenchmarkConfig:
    """All knobs of :func:`build_benchmark`; the defaults are the documented default benchmark."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 250          # per class and per label (real / fake)
    val_per_class: int = 25
    test_per_family: int = 400          # per family and per label
    families: tuple[str, ...] = tuple(FAMILIES)
    train_family: str = DEFAULT_TRAIN_FAMILY
    colour: ColourFingerprint = DEFAULT_COLOUR   # applied to the training family only
    colour_families: tuple[str, ...] = ()        # extra families that also get ``colour``
    photo_sources: tuple[str, ...] = PHOTO_SOURCES
    dead_leaves: int = 2                 # number of procedural dead-leaves source images (0: none)
    dead_leaves_size: int = 512
    test_fraction: float = 0.3           # share of each source's longer side kept for test crops
    region_gap: int = 8                  # pixels left unused between the two regions
    scale_range: tuple[float, float] = (1 / 3, 2.0)   # crop rescale factor (log-uniform)
    min_crop_std: float = 4.0            # reject nearly flat crops (std of uint8 values)
    gen_width: int = 32
    gen_steps: int = 100                 # brief on purpose: longer training erases the traces (150: AP 0.92)
    gen_batch: int = 16
    gen_lr: float = 2e-3
    gen_pool: int = 512                  # real train-region crops the generators are trained on
    gen_hf_weight: float = 1.0           # weight of the high-frequency (Laplacian) L1 term
    # Snapshot selection for the families whose trace sits at the Nyquist frequency (period-2
    # upsamplers): the brief Adam run oscillates, so the strength of the trace at a fixed step varies
    # several-fold between seeds. These generators are trained for gen_select_window[1] * gen_steps
    # steps and scored every gen_steps / gen_select_snapshots steps from gen_select_window[0] *
    # gen_steps on by nyquist_ratio on the probe set; of the snapshots whose ratio is >=
    # gen_select_min, the one nearest to gen_steps is kept (the earlier on a tie; the strongest
    # snapshot if none qualifies). None: off (fixed gen_steps for all).
    gen_select_min: float | None = 1.3
    gen_select_window: tuple[float, float] = (0.8, 1.4)
    gen_select_snapshots: int = 10       # snapshots per gen_steps steps (every 10 steps at 100)
    gen_select_kinds: tuple[str, ...] = ("tconv4", "tconv3")
    gen_probe: int = 256                 # real train-region crops used for the measurements above
    denoise_sigma: float = 0.1           # noise std (on the [-1, 1] scale) for the denoise family
    threads: int | None = 1              # torch threads during the build (None: leave as is); the
                                         # images are bit-identical only for the same thread count

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {list(FAMILIES)}")
        if self.train_family not in self.families:
            raise ValueError(f"train_family {self.train_family!r} must be one of families {list(self.families)}")
        if len(set(self.families)) != len(self.families):
            raise ValueError("families must be distinct")
        if self.image_size < 16 or self.image_size % 4:
            raise ValueError("image_size must be a multiple of 4 and >= 16")
        if not 0.05 <= self.test_fraction <= 0.7:
            raise ValueError("test_fraction must lie in [0.05, 0.7]")
        for name in ("train_per_class", "val_per_class", "test_per_family", "gen_steps", "gen_batch", "gen_pool"):
            if getattr(self, name) < (0 if name in ("val_per_class", "gen_steps") else 1):
                raise ValueError(f"{name} must be positive")
        lo, hi = self.gen_select_window
        if not (0 < lo <= 1 <= hi) or self.gen_select_snapshots < 1:
            raise ValueError("gen_select_window must be (lo, hi) with 0 < lo <= 1 <= hi; gen_select_snapshots >= 1")
        if not 0.0 <= self.colour.chroma_block <= 1.0 or self.colour.saturation <= 0:
            raise ValueError("colour.chroma_block must lie in [0, 1] and colour.saturation be > 0")
        if not self.photo_sources and not self.dead_leaves:
            raise ValueError("need at least one source (photo_sources or dead_leaves)")

    def family_colour(self, family: str) -> ColourFingerprint:
        if family == self.train_family or family in self.colour_families:
            return self.colour
        return ColourFingerprint()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["families"] = list(self.families)
        d["photo_sources"] = list(self.photo_sources)
        d["colour_families"] = list(self.colour_families)
        d["scale_range"] = list(self.scale_range)
        d["gen_select_window"] = list(self.gen_select_window)
        d["gen_select_kinds"] = list(self.gen_select_kinds)
        return d


# --------------------------------------------------------------------------------------------
# determinism helpers
# --------------------------------------------------------------------------------------------

def _rng(seed: int, *stream: int | str) -> np.random.Generator:
    """Independent numpy stream for (seed, purpose...)."""
    key = [int(seed) & 0xFFFFFFFF] + [int(hashlib.sha256(str(s).encode()).hexdigest()[:8], 16) for s in stream]
    return np.random.default_rng(key)


def _torch_seed(seed: int, *stream: int | str) -> int:
    return int(_rng(seed, "torch", *stream).integers(0, 2**62))


@contextlib.contextmanager
def deterministic_torch(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count inside the block; restored afterwards."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


# --------------------------------------------------------------------------------------------
# real sources and crops
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------

def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    return torch.stack([y, (b - y) / 1.772, (r - y) / 1.402], 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x[:, 0], x[:, 1], x[:, 2]
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
    return torch.stack([r, g, b], 1)


def apply_colour_fingerprint(x: torch.Tensor, chroma_block: float = 0.0, gain: float = 1.0) -> torch.Tensor:
    """Chroma-only change of ``x`` (N x 3 x H x W, [-1, 1]): a share ``chroma_block`` of the chroma
    at half resolution (2x2 blocks) and a chroma ``gain``; luma is untouched."""
    if chroma_block == 0.0 and gain == 1.0:
        return x
    ycc = rgb_to_ycbcr(x)
    c = ycc[:, 1:]
    if chroma_block:
        blk = F.interpolate(F.avg_pool2d(c, 2), scale_factor=2, mode="nearest")
        c = (1 - chroma_block) * c + chroma_block * blk
    c = c * gain
    return ycbcr_to_rgb(torch.cat([ycc[:, :1], c], 1))


def chroma_magnitude(x: torch.Tensor) -> float:
    """Mean chroma magnitude sqrt(Cb^2 + Cr^2) of N x 3 x H x W images in [-1, 1]."""
    c = rgb_to_ycbcr(x)[:, 1:]
    return float(c.pow(2).sum(1).sqrt().mean())


def nyquist_share(x: torch.Tensor, border: int = 4) -> torch.Tensor:
    """Per image: share of the non-DC luma power on the Nyquist row and column of the spectrum,
    where the period-2 trace of 2x upsamplers lies (``border`` pixels dropped first)."""
    y = rgb_to_ycbcr(x)[:, 0]
    if border:
        y = y[:, border:-border, border:-border]
    p = torch.fft.fft2(y.double()).abs().pow(2)
    h = p.shape[-1] // 2
    nyq = p[:, h, :].sum(1) + p[:, :, h].sum(1) - p[:, h, h]
    return nyq / (p.sum((1, 2)) - p[:, 0, 0]).clamp_min(1e-12)


def nyquist_ratio(fakes: torch.Tensor, reals: torch.Tensor) -> float:
    """Median over pairs of ``nyquist_share(fake_i) / nyquist_share(real_i)`` (fakes made from the
    reals, both quantised to 8 bit): the strength of the period-2 upsampling trace."""
    q = lambda t: torch.round((t.clamp(-1, 1) + 1) * 127.5)  # noqa: E731
    return float(torch.median(nyquist_share(q(fakes)) / nyquist_share(q(reals)).clamp_min(1e-12)))


class Generator(nn.Module):
    """Half-resolution trunk + a family-specific last stage producing the full-resolution RGB image.

    ``forward(x)`` takes the full-resolution real crop (N x 3 x H x W in [-1, 1]); the upsampling
    families see only its 2x2 average, the ``denoise`` family sees it plus Gaussian noise.
    """

    def __init__(self, kind: str, width: int = 32, denoise_sigma: float = 0.1,
                 colour: ColourFingerprint = ColourFingerprint()):
        super().__init__()
        self.kind, self.colour, self.denoise_sigma = kind, colour, float(denoise_sigma)
        self.chroma_gain = float(colour.saturation)   # replaced by the calibrated gain at build time
        w = width
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.trunk = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), act(), nn.Conv2d(w, w, 3, padding=1), act(),
                                   nn.Conv2d(w, w, 3, padding=1), act())
        if kind == "tconv4":
            self.last = nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1)
        elif kind == "tconv3":
            self.last = nn.ConvTranspose2d(w, 3, 3, stride=2, padding=1, output_padding=1)
        elif kind == "pshuffle":
            self.last = nn.Sequential(nn.Conv2d(w, 12, 3, padding=1), nn.PixelShuffle(2))
        elif kind == "nearest":
            self.last = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, 3, 3, padding=1))
        elif kind == "bilinear":
            self.last = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                      nn.Conv2d(w, 3, 3, padding=1))
        elif kind == "denoise":
            self.last = nn.Conv2d(w, 3, 3, padding=1)
        else:
            raise ValueError(f"unknown generator kind {kind!r}")

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "denoise":
            xn = x + (noise if noise is not None else torch.randn_like(x)) * self.denoise_sigma
            y = xn - self.last(self.trunk(xn))
        else:
            y = self.last(self.trunk(F.avg_pool2d(x, 2)))
        return apply_colour_fingerprint(y, self.colour.chroma_block, self.chroma_gain)


_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def _highpass(x: torch.Tensor) -> torch.Tensor:
    k = _LAPLACE.to(x).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=x.shape[1])


def train_generator(gen: Generator, pool: torch.Tensor, steps: int, batch: int, lr: float, hf_weight: float,
                    seed: int, select: Callable[[Generator], float] | None = None,
                    select_steps: Sequence[int] = (), select_min: float = 0.0,
                    prefer_step: int | None = None) -> tuple[list[float], dict]:
    """Adam on L1 + ``hf_weight`` * L1 of the Laplacian (sharper outputs), without the colour
    fingerprint (a post-process). Returns the loss curve (mean of every 50 steps) and the
    selection record. With ``select``, the snapshot after each step count in ``select_steps``
    (training then runs to the largest) is scored by ``select(gen)``; of the snapshots scoring
    ``>= select_min`` the one nearest to ``prefer_step`` (default: ``steps``) is kept, the earlier
    on a tie, or the highest-scoring snapshot if none qualifies."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.9, 0.99))
    colour, gen.colour = gen.colour, ColourFingerprint()
    gain, gen.chroma_gain = gen.chroma_gain, 1.0
    curve, acc = [], []
    checkpoints = sorted(set(int(s) for s in select_steps)) if select else []
    prefer = steps if prefer_step is None else prefer_step
    if checkpoints:
        steps = checkpoints[-1]
    best: tuple[float, int, dict] | None = None        # highest score
    chosen: tuple[float, int, dict] | None = None      # qualifying snapshot nearest to ``prefer``
    scores: dict[int, float] = {}
    gen.train()
    try:
        for step in range(steps):
            idx = torch.randint(0, pool.shape[0], (batch,), generator=g)
            x = pool[idx]
            if gen.kind == "denoise" and x.shape[-1] >= 32:   # fully convolutional at full res: train on
                h = x.shape[-1] // 2                           # half-size patches (4x cheaper)
                oy, ox = (int(v) for v in torch.randint(0, x.shape[-1] - h + 1, (2,), generator=g))
                x = x[..., oy:oy + h, ox:ox + h]
            if torch.rand((), generator=g) < 0.5:
                x = x.flip(3)
            noise = torch.randn(x.shape, generator=g) if gen.kind == "denoise" else None
            y = gen(x, noise)
            loss = (y - x).abs().mean() + hf_weight * (_highpass(y) - _highpass(x)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc.append(loss.item())
            if len(acc) == 50 or step == steps - 1:
                curve.append(round(sum(acc) / len(acc), 5))
                acc = []
            if step + 1 in checkpoints:
                gen.eval()
                with torch.no_grad():
                    score = float(select(gen))
                gen.train()
                scores[step + 1] = round(score, 5)
                snap = (score, step + 1, {k: v.detach().clone() for k, v in gen.state_dict().items()})
                if score >= select_min and (chosen is None or abs(step + 1 - prefer) < abs(chosen[1] - prefer)):
                    chosen = snap
                if best is None or score > best[0]:
                    best = snap
        if chosen is not None:
            best = chosen
        if best is not None:
            gen.load_state_dict(best[2])
    finally:
        gen.colour, gen.chroma_gain = colour, gain
        gen.eval()
    record = {"selected_step": best[1], "scores": scores} if best is not None else {"selected_step": steps}
    return curve, record


@torch.no_grad()
def generate(gen: Generator, reals: np.ndarray, seed: int, batch: int = 256) -> np.ndarray:
    """Fakes (uint8 N x H x W x 3) for real crops ``reals``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(reals), batch):
        x = to_tensor(reals[i:i + batch])
        noise = torch.randn(x.shape, generator=g) if gen.kind == "denoise" else None
        out.append(to_uint8(gen(x, noise)))
    return np.concatenate(out) if out else reals[:0].copy()


def selection_steps(cfg: BenchmarkConfig) -> list[int]:
    """Step counts at which snapshots are scored (80, 90, ..., 140 for the default 100 steps)."""
    n = max(int(cfg.gen_steps), 1)
    every = max(1, int(round(n / cfg.gen_select_snapshots)))
    lo = max(1, int(round(cfg.gen_select_window[0] * n)))
    hi = max(lo, int(round(cfg.gen_select_window[1] * n)))
    return list(range(lo, hi + 1, every))


def build_generators(cfg: BenchmarkConfig, sources: Sequence[Source],
                     progress: Callable[[str], None] | None = None) -> tuple[dict[str, Generator], dict[str, dict]]:
    """Train one generator per family on real train-region crops; returns generators and their info."""
    rng = _rng(cfg.seed, "gen_pool")
    pool_np, _ = sample_crops(sources, "train", _split_count(cfg.gen_pool, len(sources)), rng, cfg)
    pool = to_tensor(pool_np)
    probe_np, _ = sample_crops(sources, "train", _split_count(cfg.gen_probe, len(sources)), _rng(cfg.seed, "probe"), cfg)
    probe = to_tensor(probe_np)
    probe_noise = torch.randn(probe.shape, generator=torch.Generator().manual_seed(_torch_seed(cfg.seed, "probe")))
    real_chroma = chroma_magnitude(probe)
    gens, info = {}, {}
    for name in cfg.families:
        spec = FAMILIES[name]
        t0 = time.perf_counter()
        torch.manual_seed(_torch_seed(cfg.seed, "init", name))
        gen = Generator(spec.kind, cfg.gen_width, cfg.denoise_sigma, cfg.family_colour(name))
        selecting = cfg.gen_select_min is not None and spec.kind in cfg.gen_select_kinds
        curve, record = train_generator(gen, pool, cfg.gen_steps, cfg.gen_batch, cfg.gen_lr, cfg.gen_hf_weight,
                                        _torch_seed(cfg.seed, "train", name),
                                        select=(lambda gn: nyquist_ratio(gn(probe), probe)) if selecting else None,
                                        select_steps=selection_steps(cfg) if selecting else (),
                                        select_min=float(cfg.gen_select_min or 0.0))
        with torch.no_grad():
            if gen.colour.active and gen.colour.calibrate and gen.colour.saturation != 1.0:
                gen.chroma_gain = 1.0
                own = chroma_magnitude(gen(probe, probe_noise)) / real_chroma
                gen.chroma_gain = float(gen.colour.saturation) / own
            out = gen(probe, probe_noise)
            measured = {"nyquist_ratio": round(nyquist_ratio(out, probe), 4),
                        "chroma_ratio": round(chroma_magnitude(out) / real_chroma, 4),
                        "l1": round(float((out - probe).abs().mean()), 5)}
        gens[name] = gen
        info[name] = {"kind": spec.kind, "description": spec.description,
                      "parameters": sum(p.numel() for p in gen.parameters()),
                      "colour_fingerprint": {**dataclasses.asdict(gen.colour), "chroma_gain_applied":
                                             round(gen.chroma_gain, 5)},
                      "train_steps": (selection_steps(cfg)[-1] if selecting else cfg.gen_steps),
                      "kept_step": record["selected_step"],
                      "selection": ({"rule": "snapshot nearest to gen_steps with probe nyquist_ratio >= min",
                                     "min": cfg.gen_select_min, **record} if selecting else None),
                      "batch": cfg.gen_batch, "lr": cfg.gen_lr,
                      "loss": "L1 + %g * L1(Laplacian)" % cfg.gen_hf_weight, "loss_curve_per_50_steps": curve,
                      "probe": measured, "seconds": round(time.perf_counter() - t0, 2)}
        if progress:
            progress(f"generator {name}: kept step {record['selected_step']}, probe {measured} "
                     f"({info[name]['seconds']} s)")
    return gens, info


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def _write_pngs(folder: Path, imgs: np.ndarray, names: Sequence[str], prefix: str, hasher) -> None:
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, src) in enumerate(zip(imgs, names)):
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise OSError(f"cannot encode PNG for {folder}")
        data = buf.tobytes()
        fname = f"{prefix}_{i:05d}_{src}.png"
        (folder / fname).write_bytes(data)
        hasher.update(f"{folder.name}/{fname}".encode())
        hasher.update(hashlib.sha256(data).digest())


def build_benchmark(out: PathLike, cfg: BenchmarkConfig = BenchmarkConfig(), overwrite: bool = False,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Build the benchmark into ``out`` (atomically) and return its manifest (also ``out/manifest.json``)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    say = progress or (lambda msg: log.info("%s", msg))
    t_start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with deterministic_torch(cfg.threads):
            manifest = _build_into(tmp, cfg, say)
        manifest["build_seconds"] = round(time.perf_counter() - t_start, 1)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"benchmark written to {out} in {manifest['build_seconds']} s")
    return manifest


def _build_into(root: Path, cfg: BenchmarkConfig, say: Callable[[str], None]) -> dict:
    t0 = time.perf_counter()
    sources = load_sources(cfg)
    say(f"{len(sources)} sources loaded ({time.perf_counter() - t0:.1f} s)")
    gens, gen_info = build_generators(cfg, sources, say)
    hasher = hashlib.sha256()
    counts: dict = {"train": {}, "val": {}, "test": {}}

    # train / val: per class, reals and fakes of the training family from distinct train-region crops
    classes: dict[str, list[Source]] = {}
    for s in sources:
        classes.setdefault(class_name(s.name), []).append(s)
    tgen = gens[cfg.train_family]
    for split, n in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
        if n == 0:
            continue
        for ci, (cname, srcs) in enumerate(classes.items()):
            rng = _rng(cfg.seed, split, cname)
            reals, rnames = sample_crops(srcs, "train", _split_count(n, len(srcs)), rng, cfg)
            base, fnames = sample_crops(srcs, "train", _split_count(n, len(srcs)), rng, cfg)
            fakes = generate(tgen, base, _torch_seed(cfg.seed, "gen", split, cname))
            _write_pngs(root / split / cname / REAL_DIR, reals, rnames, "real", hasher)
            _write_pngs(root / split / cname / FAKE_DIR, fakes, fnames, cfg.train_family, hasher)
            counts[split][cname] = {REAL_DIR: len(reals), FAKE_DIR: len(fakes)}
        say(f"{split}: {sum(v[REAL_DIR] + v[FAKE_DIR] for v in counts[split].values())} images")

    # test: per family, own reals and fakes, both from the test regions, balanced over sources
    per_src = _split_count(cfg.test_per_family, len(sources))
    for fam in cfg.families:
        rng = _rng(cfg.seed, "test", fam)
        reals, rnames = sample_crops(sources, "test", per_src, rng, cfg)
        base, fnames = sample_crops(sources, "test", per_src, rng, cfg)
        fakes = generate(gens[fam], base, _torch_seed(cfg.seed, "gen", "test", fam))
        _write_pngs(root / "test" / fam / REAL_DIR, reals, [class_name(n) for n in rnames], "real", hasher)
        _write_pngs(root / "test" / fam / FAKE_DIR, fakes, [class_name(n) for n in fnames], fam, hasher)
        counts["test"][fam] = {REAL_DIR: len(reals), FAKE_DIR: len(fakes)}
    say(f"test: {len(cfg.families)} families x {2 * cfg.test_per_family} images")

    import skimage
    return {
        "benchmark": "forensics.synthetic",
        "version": BENCHMARK_VERSION,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "format": "png (RGB, 8 bit)",
        "layout": {"train": "train/<class>/{0_real,1_fake}", "val": "val/<class>/{0_real,1_fake}",
                   "test": "test/<family>/{0_real,1_fake}"},
        "train_family": cfg.train_family,
        "families": list(cfg.families),
        "classes": list(classes),
        "counts": counts,
        "sources": [{"name": s.name, "class": class_name(s.name), "shape": list(s.image.shape),
                     "train_region_yyxx": list(s.train_region), "test_region_yyxx": list(s.test_region)}
                    for s in sources],
        "generators": gen_info,
        "config": cfg.to_dict(),
        "software": {"torch": torch.__version__, "numpy": np.__version__, "skimage": skimage.__version__,
                     "threads": torch.get_num_threads()},
        "images_sha256": hasher.hexdigest(),
    }


def read_manifest(root: PathLike) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def config_from_dict(d: Mapping) -> BenchmarkConfig:
    """Inverse of :meth:`BenchmarkConfig.to_dict` (e.g. ``config_from_dict(read_manifest(p)['config'])``)."""
    d = dict(d)
    d["colour"] = ColourFingerprint(**d.get("colour", {}))
    for k in ("families", "photo_sources", "colour_families", "scale_range", "gen_select_window", "gen_select_kinds"):
        if k in d:
            d[k] = tuple(d[k])
    return BenchmarkConfig(**d)
