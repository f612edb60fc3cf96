"""Model-agnostic image perturbations for robustness evaluation (PIL RGB -> PIL RGB, seeded).

The perturbations of RINE's robustness study (docs/evaluation.md, adapted there from GANDCTAnalysis),
with the parameter ranges the reference draws from, plus resizing and fixed-level variants for sweeps:

============  ==============================  ======================================================
kind          random draw (``level=None``)    fixed level (sweeps)
============  ==============================  ======================================================
``blur``      k ~ {3,5,7,9}, sigma from k     ``Blur(sigma=s)``: kernel derived from sigma by cv2
``crop``      p ~ U[0.05, 0.20]               ``Crop(fraction=p)``
``jpeg``      quality ~ U{10..74}             ``JPEG(quality=q)``
``noise``     std ~ U[5, 20]                  ``Noise(std=s)``
``resize``    scale ~ U[0.5, 1.5]             ``Resize(scale=f)``
``combined``  blur -> crop -> jpeg -> noise   (random draws only)
============  ==============================  ======================================================

Every perturbation takes the image and a ``numpy.random.Generator``. :func:`image_rng` makes one
generator per image, seeded by ``(seed, digest of the decoded pixels)`` (or ``(seed, index)`` when
the caller has an index), so a run is deterministic whatever the number of data-loader workers,
the batch size or the order of the files. :class:`PerturbedTransform` puts a perturbation in front
of a detector's eval transform under a :class:`Protocol`: ``always`` (every image perturbed, at
its size; the default, used for sweeps) or ``rine`` (RINE's protocol, docs/evaluation.md: each image perturbed with
probability 0.5, and a perturbed image is then resized to 256x256 before the detector's crop; an
unperturbed one gets the plain transform).

The reference's bugs are fixed by default and reproduced with ``reference_bugs=True``:

- blur: the reference passes ``cv2.BORDER_DEFAULT`` (= 4) as ``sigmaX``, so sigma is 4 for every
  kernel. Fixed: ``sigmaX=0``, i.e. sigma derived from the kernel by OpenCV,
  ``0.3 * ((k - 1) / 2 - 1) + 0.8`` = 0.8, 1.1, 1.4, 1.7 for k = 3, 5, 7, 9 (our reading of the
  reference's intent: the kernel size is the drawn strength).
- crop: ``cv2.resize`` is given ``dsize=(H, W)`` where it expects ``(W, H)``, so a non-square
  image comes back transposed in shape. Fixed: back to ``(H, W)``.
- jpeg: the drawn quality is passed as the parameter *id* (value 90), which OpenCV ignores, so
  every image is encoded at OpenCV's default quality 95; the RGB array is also encoded as if it were
  BGR (only the chroma conversion changes). Fixed: ``IMWRITE_JPEG_QUALITY`` = the drawn quality, and
  RGB -> BGR before encoding. Bug mode encodes with no parameters, which is byte-identical to what
  the reference's ignored parameter produces (checked with opencv-python 5.0.0, which also warns
  about the unknown key).
- noise: the reference truncates (``astype(uint8)`` after clipping, a -0.5 grey-level bias on
  average); we round to nearest. Bug mode truncates.

Other deliberate differences: the reference draws from the global ``random``/``numpy`` state,
seeded once per perturbation type and consumed by 12 workers (so which image gets which draw is
not reproducible); crop keeps the image when the cut is 0 rows or columns (the reference's
``image[0:-0]`` is empty and crashes the resize). ``Resize`` is our addition (not in the reference).
Grayscale is not a perturbation here: it is the detector transform's ``grayscale=True``.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import cv2
import numpy as np
from PIL import Image
from torchvision.transforms import functional as TF

BLUR_KERNELS: tuple[int, ...] = (3, 5, 7, 9)
CROP_RANGE: tuple[float, float] = (0.05, 0.20)
JPEG_QUALITY_RANGE: tuple[int, int] = (10, 74)  # inclusive, as numpy randint(10, 75)
NOISE_STD_RANGE: tuple[float, float] = (5.0, 20.0)
RESIZE_SCALE_RANGE: tuple[float, float] = (0.5, 1.5)
#: sigma of the reference's blur: ``cv2.BORDER_DEFAULT`` passed as ``sigmaX``.
REFERENCE_BLUR_SIGMA: float = float(cv2.BORDER_DEFAULT)


def image_rng(seed: int, key: int | Image.Image) -> np.random.Generator:
    """The generator for one image: seeded by ``(seed, key)`` for an integer key (e.g. the image's
    index), else by ``(seed, BLAKE2b digest of the image's mode, size and pixels)``. ``seed >= 0``."""
    if isinstance(key, Image.Image):
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{key.mode}:{key.size}".encode())
        h.update(key.tobytes())
        key = int.from_bytes(h.digest(), "little")
    return np.random.default_rng([int(seed), int(key)])


@dataclass(frozen=True)
class Perturbation(ABC):
    """An image perturbation: ``perturbation(image, rng) -> image`` (PIL RGB in and out).

    ``kind`` names it in :data:`PERTURBATIONS`; ``parameter`` is the field holding its fixed level
    (``None`` for kinds without one). A level left at ``None`` is drawn per image from the
    reference's range. ``reference_bugs`` reproduces the reference's bugs (module docstring).
    """

    kind: ClassVar[str]
    parameter: ClassVar[str | None]
    reference_bugs: bool = field(default=False, kw_only=True)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return Image.fromarray(self.apply_array(np.asarray(image.convert("RGB")), rng))

    @abstractmethod
    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Perturb an ``[H, W, 3]`` uint8 RGB array (returns a new uint8 array, or ``arr`` itself)."""

    def apply(self, image: Image.Image, seed: int = 0, key: int | None = None) -> Image.Image:
        """Perturb one image with its own generator :func:`image_rng` ``(seed, key or image)``."""
        return self(image, image_rng(seed, image if key is None else key))

    @property
    def level(self) -> float | None:
        """The fixed level, or ``None`` when it is drawn per image."""
        return None if self.parameter is None else getattr(self, self.parameter)

    def label(self) -> str:
        """e.g. ``blur(sigma=2)``, ``jpeg(random)``, ``crop(random, reference bugs)``."""
        level = self.level
        text = f"{self.parameter}={level:g}" if level is not None else "random"
        return f"{self.kind}({text}{', reference bugs' if self.reference_bugs else ''})"

    def _no_fixed_level_with_bugs(self) -> None:
        if self.reference_bugs and self.level is not None:
            raise ValueError(f"{self.kind}: reference_bugs discards the level ({self.parameter}={self.level}), "
                             "so it applies to random draws only")


@dataclass(frozen=True)
class Blur(Perturbation):
    """Gaussian blur (``cv2.GaussianBlur``, border ``BORDER_REFLECT_101``).

    ``sigma=None``: kernel ``kernel`` (default: drawn from {3,5,7,9}) with ``sigmaX=0``, i.e. sigma
    derived from the kernel (bug mode: sigma 4). ``sigma=s``: kernel ``kernel`` or, by default, the
    one OpenCV derives from sigma (``ksize=(0, 0)``); ``sigma=0`` leaves the image unchanged.
    """

    kind: ClassVar[str] = "blur"
    parameter: ClassVar[str] = "sigma"
    sigma: float | None = None
    kernel: int | None = None

    def __post_init__(self) -> None:
        if self.sigma is not None and self.sigma < 0:
            raise ValueError(f"blur: sigma must be >= 0, got {self.sigma}")
        if self.kernel is not None and (self.kernel < 1 or self.kernel % 2 == 0):
            raise ValueError(f"blur: kernel must be a positive odd integer, got {self.kernel}")
        self._no_fixed_level_with_bugs()

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.sigma is None:
            k = self.kernel if self.kernel is not None else int(rng.choice(BLUR_KERNELS))
            sigma = REFERENCE_BLUR_SIGMA if self.reference_bugs else 0.0
            return cv2.GaussianBlur(arr, (k, k), sigmaX=sigma)
        if self.sigma == 0:
            return arr
        ksize = (self.kernel, self.kernel) if self.kernel is not None else (0, 0)
        return cv2.GaussianBlur(arr, ksize, sigmaX=float(self.sigma))


@dataclass(frozen=True)
class Crop(Perturbation):
    """Cut ``floor(H * p / 2)`` rows at the top and at the bottom and ``floor(W * p / 2)`` columns
    at each side, then resize back bicubically (``cv2.INTER_CUBIC``) to ``(H, W)`` (bug mode:
    to ``(W, H)``, the reference's swapped ``dsize``). ``fraction=None``: p ~ U[0.05, 0.20]."""

    kind: ClassVar[str] = "crop"
    parameter: ClassVar[str] = "fraction"
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None and not 0 <= self.fraction < 1:
            raise ValueError(f"crop: fraction must be in [0, 1), got {self.fraction}")

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.fraction if self.fraction is not None else float(rng.uniform(*CROP_RANGE))
        h, w = arr.shape[:2]
        dy, dx = int(h * p * 0.5), int(w * p * 0.5)
        cropped = arr[dy:h - dy, dx:w - dx]
        dsize = (h, w) if self.reference_bugs else (w, h)  # cv2 dsize is (width, height)
        return cv2.resize(cropped, dsize, interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class JPEG(Perturbation):
    """JPEG re-compression through ``cv2.imencode``/``imdecode`` at ``quality`` (``None``: drawn
    uniformly from the integers 10..74). Bug mode: the quality is drawn but not applied (cv2's
    default 95) and the RGB array is encoded as if it were BGR."""

    kind: ClassVar[str] = "jpeg"
    parameter: ClassVar[str] = "quality"
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.quality is not None:
            if not (1 <= self.quality <= 100 and float(self.quality).is_integer()):
                raise ValueError(f"jpeg: quality must be an integer in 1..100, got {self.quality}")
            object.__setattr__(self, "quality", int(self.quality))
        self._no_fixed_level_with_bugs()

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = JPEG_QUALITY_RANGE
        quality = self.quality if self.quality is not None else int(rng.integers(lo, hi + 1))
        if self.reference_bugs:
            return cv2.imdecode(_imencode(arr, []), cv2.IMREAD_COLOR)
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
        decoded = cv2.imdecode(_imencode(bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]), cv2.IMREAD_COLOR)
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _imencode(arr: np.ndarray, params: list[int]) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", arr, params)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed on a {arr.shape} {arr.dtype} array (params {params})")
    return buf


@dataclass(frozen=True)
class Noise(Perturbation):
    """Additive Gaussian noise, independent per pixel and channel, standard deviation ``std`` grey
    levels (``None``: std ~ U[5, 20]; the reference calls it "variance" but uses it as the std),
    clipped to [0, 255] and rounded (bug mode: truncated, as the reference)."""

    kind: ClassVar[str] = "noise"
    parameter: ClassVar[str] = "std"
    std: float | None = None

    def __post_init__(self) -> None:
        if self.std is not None and self.std < 0:
            raise ValueError(f"noise: std must be >= 0, got {self.std}")

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        std = self.std if self.std is not None else float(rng.uniform(*NOISE_STD_RANGE))
        noisy = np.clip(arr.astype(np.float64) + std * rng.standard_normal(arr.shape), 0.0, 255.0)
        return (noisy if self.reference_bugs else np.rint(noisy)).astype(np.uint8)


@dataclass(frozen=True)
class Resize(Perturbation):
    """Rescale by ``scale`` (PIL bicubic, which low-pass filters when shrinking); with ``restore``
    (default) resize back to the original size, so the detector sees the same field of view and
    only the resampling changes; without it the detector's crop sees the rescaled image (an image
    smaller than the crop is zero-padded by ``CenterCrop``). ``scale=None``: U[0.5, 1.5]. Not in
    the reference; ``reference_bugs`` has no effect."""

    kind: ClassVar[str] = "resize"
    parameter: ClassVar[str] = "scale"
    scale: float | None = None
    restore: bool = True

    def __post_init__(self) -> None:
        if self.scale is not None and self.scale <= 0:
            raise ValueError(f"resize: scale must be > 0, got {self.scale}")

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = self.scale if self.scale is not None else float(rng.uniform(*RESIZE_SCALE_RANGE))
        if scale == 1:
            return arr
        h, w = arr.shape[:2]
        image = Image.fromarray(arr)
        out = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
        if self.restore:
            out = out.resize((w, h), Image.Resampling.BICUBIC)
        return np.asarray(out)


@dataclass(frozen=True)
class Combined(Perturbation):
    """blur -> crop -> jpeg -> noise, each with its own random draw from one generator (RINE's
    "combined"; ``reference_bugs`` applies to every step)."""

    kind: ClassVar[str] = "combined"
    parameter: ClassVar[None] = None

    def steps(self) -> tuple[Perturbation, ...]:
        bugs = self.reference_bugs
        return (Blur(reference_bugs=bugs), Crop(reference_bugs=bugs), JPEG(reference_bugs=bugs),
                Noise(reference_bugs=bugs))

    def apply_array(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in self.steps():
            arr = step.apply_array(arr, rng)
        return arr


#: Every perturbation kind.
PERTURBATIONS: dict[str, type[Perturbation]] = {cls.kind: cls for cls in (Blur, Crop, JPEG, Noise, Resize, Combined)}
#: Other names accepted for a kind (RINE's result files say ``compress``).
ALIASES: dict[str, str] = {"compress": "jpeg", "jpg": "jpeg", "cropping": "crop", "gaussian_noise": "noise"}
#: Standard levels of a sweep (the clean baseline is evaluated separately). Blur/JPEG follow
#: CNNDetection-style robustness plots; crop/noise bracket RINE's random ranges.
SWEEP_LEVELS: dict[str, tuple[float, ...]] = {
    "blur": (0.5, 1.0, 2.0, 3.0, 4.0),
    "jpeg": (95, 90, 75, 50, 30, 10),
    "noise": (2.0, 5.0, 10.0, 15.0, 20.0),
    "crop": (0.05, 0.10, 0.15, 0.20, 0.30),
    "resize": (0.25, 0.5, 0.75, 1.5, 2.0),
}


def perturbation_class(kind: str) -> type[Perturbation]:
    name = ALIASES.get(kind, kind)
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)} "
                       f"(aliases: {', '.join(ALIASES)})")
    return PERTURBATIONS[name]


def make(kind: str, level: float | None = None, *, reference_bugs: bool = False, **options: Any) -> Perturbation:
    """A perturbation of ``kind`` at a fixed ``level`` (``None``: drawn per image from the
    reference's range). ``options`` are other fields (e.g. ``kernel`` for blur, ``restore``)."""
    cls = perturbation_class(kind)
    if level is not None:
        if cls.parameter is None:
            raise ValueError(f"{cls.kind} has no fixed level; leave level unset")
        options[cls.parameter] = level
    return cls(reference_bugs=reference_bugs, **options)


def sweep_levels(kind: str) -> tuple[float, ...]:
    name = perturbation_class(kind).kind
    if name not in SWEEP_LEVELS:
        raise ValueError(f"{name} has no standard sweep; sweepable: {', '.join(SWEEP_LEVELS)}")
    return SWEEP_LEVELS[name]


def sweep(kind: str, levels: Sequence[float] | None = None, *, reference_bugs: bool = False,
          **options: Any) -> list[Perturbation]:
    """One fixed-level perturbation per level (default: :data:`SWEEP_LEVELS`)."""
    levels = sweep_levels(kind) if levels is None else levels
    return [make(kind, level, reference_bugs=reference_bugs, **options) for level in levels]


@dataclass(frozen=True)
class Protocol:
    """How a perturbation is applied in an evaluation: each image is perturbed with ``probability``;
    a perturbed image is then resized to ``resize`` = ``(height, width)`` (``None``: kept) before
    the detector's eval transform."""

    name: str
    probability: float
    resize: tuple[int, int] | None = None


#: Evaluation protocols by name. ``rine`` is the robustness protocol of Koutlis & Papadopoulos (ECCV 2024),
#: named after the paper that defined it; it applies to any detector (it is not a fact of the ``rine`` detector).
PROTOCOLS: dict[str, Protocol] = {
    "always": Protocol("always", 1.0, None),
    # docs/evaluation.md: p = 0.5; perturbed -> ToPILImage -> Resize(256, 256) -> CenterCrop 224.
    "rine": Protocol("rine", 0.5, (256, 256)),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


@dataclass
class PerturbedTransform:
    """``transform(perturb(image))`` under a :class:`Protocol`, one generator per image
    (:func:`image_rng` of ``seed`` and the pixels: the same image always gets the same draw, with
    any number of workers). The first draw decides whether the image is perturbed."""

    perturbation: Perturbation
    transform: Callable[[Image.Image], Any]
    seed: int = 0
    protocol: Protocol | str = "always"

    def __post_init__(self) -> None:
        self.protocol = get_protocol(self.protocol)

    def __call__(self, image: Image.Image) -> Any:
        rng = image_rng(self.seed, image)
        if rng.random() < self.protocol.probability:
            image = self.perturbation(image, rng)
            if self.protocol.resize is not None:
                image = TF.resize(image, list(self.protocol.resize))
        return self.transform(image)
