"""Settings of the synthetic benchmark: :class:`BenchmarkConfig` (every knob of the build, the defaults being
the default benchmark), the generator families (:data:`FAMILIES`), the training family's colour fingerprint
(:class:`ColorFingerprint`) and the layout's constants.

Public names spell "color" as the rest of the API does (``ColorAblation``, ``--color_robust``). The
serialized names stay as they were: :meth:`BenchmarkConfig.to_dict` writes ``colour`` and
``colour_families`` (the manifest's keys, and the default benchmark's cache key is a digest of that dict),
and :func:`config_from_dict` reads either spelling. The attributes ``BenchmarkConfig.colour`` /
``colour_families`` remain, warning (``DeprecationWarning``) that they are deprecated."""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping

PathLike = str | os.PathLike

BENCHMARK_VERSION = 1

#: Colour photographs bundled inside the scikit-image wheel (no download needed).
PHOTO_SOURCES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "retina",
                                  "hubble_deep_field", "immunohistochemistry")

REAL_DIR, FAKE_DIR = "0_real", "1_fake"


@dataclass(frozen=True)
class ColorFingerprint:
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
    color: ColorFingerprint = field(default_factory=ColorFingerprint)


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
DEFAULT_COLOR = ColorFingerprint(chroma_block=0.6, saturation=1.08)


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
    color: ColorFingerprint = DEFAULT_COLOR      # applied to the training family only
    color_families: tuple[str, ...] = ()         # extra families that also get ``color``
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
        if not 0.0 <= self.color.chroma_block <= 1.0 or self.color.saturation <= 0:
            raise ValueError("color.chroma_block must lie in [0, 1] and color.saturation be > 0")
        if not self.photo_sources and not self.dead_leaves:
            raise ValueError("need at least one source (photo_sources or dead_leaves)")

    def family_color(self, family: str) -> ColorFingerprint:
        if family == self.train_family or family in self.color_families:
            return self.color
        return ColorFingerprint()

    @property
    def colour(self) -> ColorFingerprint:
        """Deprecated spelling of :attr:`color`."""
        warnings.warn("BenchmarkConfig.colour is deprecated; use .color", DeprecationWarning, stacklevel=2)
        return self.color

    @property
    def colour_families(self) -> tuple[str, ...]:
        """Deprecated spelling of :attr:`color_families`."""
        warnings.warn("BenchmarkConfig.colour_families is deprecated; use .color_families", DeprecationWarning,
                      stacklevel=2)
        return self.color_families

    def to_dict(self) -> dict:
        """The settings as plain data, under their serialized names (``colour``, ``colour_families``: the
        manifest's keys, digested into the cache key of :func:`forensics.defaults.default_benchmark`)."""
        d = {_SERIALIZED.get(k, k): v for k, v in dataclasses.asdict(self).items()}
        d["families"] = list(self.families)
        d["photo_sources"] = list(self.photo_sources)
        d["colour_families"] = list(self.color_families)
        d["scale_range"] = list(self.scale_range)
        d["gen_select_window"] = list(self.gen_select_window)
        d["gen_select_kinds"] = list(self.gen_select_kinds)
        return d


def config_from_dict(d: Mapping) -> BenchmarkConfig:
    """Inverse of :meth:`BenchmarkConfig.to_dict` (e.g. ``config_from_dict(read_manifest(p)['config'])``);
    field names in either spelling."""
    d = {_FIELDS.get(k, k): v for k, v in d.items()}
    d["color"] = ColorFingerprint(**d.get("color", {}))
    for k in ("families", "photo_sources", "color_families", "scale_range", "gen_select_window", "gen_select_kinds"):
        if k in d:
            d[k] = tuple(d[k])
    return BenchmarkConfig(**d)


#: Field name -> its name in :meth:`BenchmarkConfig.to_dict` (the manifest and the cache key), and back.
_SERIALIZED = {"color": "colour", "color_families": "colour_families"}
_FIELDS = {v: k for k, v in _SERIALIZED.items()}
