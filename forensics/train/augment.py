"""Wang et al.'s training augmentation (CNNDetection ``data/datasets.py``), model-agnostic.

Pieces (docs/training.md; docs/colour.md for the grayscale):

- :func:`gaussian_blur_uint8`, :func:`jpeg_roundtrip`: the two degradations on a uint8 ``HxWx3``
  RGB array, bit-for-bit as the reference computes them;
- :class:`BlurJpeg`: CNNDetection's ``data_augment`` (blur with ``blur_prob``, then, independently,
  JPEG with ``jpg_prob``), drawing from Python's ``random`` like the reference;
- :class:`RandomResize`: short side to ``load_size`` with an interpolation drawn per image;
- :class:`AugmentConfig` with :func:`train_transform` / :func:`val_transform`: the whole pipeline
  resize -> blur/JPEG -> crop -> flip -> [random grayscale] -> ToTensor -> Normalize;
- :meth:`AugmentConfig.from_options`: the pipeline from a trainer's options with the CNNDetection names
  (``loadSize``, ``blur_sig``, ...: :class:`forensics.train.options.AugmentOptions`);
- :func:`seed_worker`: ``worker_init_fn`` giving each DataLoader worker its own random streams.

Randomness: Python-``random`` draws (blur/JPEG decisions, σ, codec, quality, interpolation) use the
object's ``rng`` (a :class:`random.Random`) or, when it is ``None`` (default), the global ``random``
module, which :func:`forensics.train.common.seed_everything` seeds. Crop, flip and grayscale are
torchvision transforms drawing from torch's global RNG, as in the reference. A list with one value
is used without a draw (the reference's ``sample_discrete``/``sample_continuous``).
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..detectors.config import IMAGENET_MEAN, IMAGENET_STD
from .options import VAL_AUG_CHOICES

#: ``--rz_interp`` names -> torchvision interpolation (the reference's ``rz_dict`` of PIL filters).
INTERPOLATION: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS, "nearest": InterpolationMode.NEAREST,
}

RandomSource = random.Random | None


# ---------------------------------------------------------------------------- degradations
def gaussian_blur_uint8(img: np.ndarray, sigma: float) -> np.ndarray:
    """CNNDetection's ``gaussian_blur``: scipy ``gaussian_filter`` on each channel of a uint8
    ``HxWx3`` array **in place** (truncate 4.0, mode ``reflect``), so each separable 1-D pass is
    written into uint8 and floored, exactly as the reference (docs/training.md). Returns ``img``."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected a uint8 HxWxC array, got {img.dtype} with shape {img.shape}")
    for c in range(img.shape[2]):
        gaussian_filter(img[:, :, c], sigma=sigma, output=img[:, :, c])
    return img


def _jpeg_cv2(img: np.ndarray, quality: int) -> np.ndarray:
    ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f"cv2 could not JPEG-encode an image of shape {img.shape}")
    return np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1])


def _jpeg_pil(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="jpeg", quality=int(quality))  # Pillow default 4:2:0
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.array(decoded)


#: JPEG codecs of ``--jpg_method``: RGB uint8 array -> RGB uint8 array.
JPEG_METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"cv2": _jpeg_cv2, "pil": _jpeg_pil}


def jpeg_roundtrip(img: np.ndarray, quality: int, method: str) -> np.ndarray:
    """JPEG-compress and decode a uint8 RGB array in memory (docs/training.md): ``cv2`` (RGB->BGR,
    ``imencode('.jpg', IMWRITE_JPEG_QUALITY=q)``, ``imdecode`` colour, BGR->RGB) or ``pil``
    (``save(BytesIO, 'jpeg', quality=q)`` and reload). Returns a new array of the same shape."""
    try:
        codec = JPEG_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown JPEG method {method!r}; choose from {', '.join(JPEG_METHODS)}") from None
    return codec(img, quality)


# ---------------------------------------------------------------------------- option values
def expand_quality(values: Sequence[int], expand_range: bool = True) -> tuple[int, ...]:
    """``--jpg_qual`` as CNNDetection parses it: one value as is; two values ``a, b`` expand to every
    integer in ``[a, b]`` (``30,100`` -> 71 values); more than two is an error. With
    ``expand_range=False`` the list is kept as given (RINE's [quirk]: only 30 and 100 occur)."""
    values = tuple(int(v) for v in values)
    if not values:
        raise ValueError("jpg_qual needs at least one quality")
    if not expand_range:
        return values
    if len(values) > 2:
        raise ValueError(f"jpg_qual takes one value or a range 'a,b', got {len(values)} values {values}")
    if len(values) == 2:
        lo, hi = values
        if lo > hi:
            raise ValueError(f"jpg_qual range {lo},{hi} is empty (expected a <= b)")
        return tuple(range(lo, hi + 1))
    return values


def _check_sigma(values: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) not in (1, 2):
        raise ValueError(f"blur_sig takes one value or a range 'a,b', got {len(values)} values {values}")
    return values


# ---------------------------------------------------------------------------- random transforms
@dataclass
class _PythonRandom:
    """Base of the transforms drawing from Python's ``random`` (``rng`` or the global module)."""

    rng: RandomSource = field(default=None, kw_only=True, repr=False, compare=False)

    @property
    def _r(self) -> Any:
        return self.rng if self.rng is not None else random

    def _discrete(self, values: Sequence[Any]) -> Any:
        """The reference's ``sample_discrete``: no draw for a single value."""
        return values[0] if len(values) == 1 else self._r.choice(values)

    def _continuous(self, values: Sequence[float]) -> float:
        """The reference's ``sample_continuous``: ``random() * (b - a) + a`` for a range."""
        return values[0] if len(values) == 1 else self._r.random() * (values[1] - values[0]) + values[0]

    def reseed(self, seed: int) -> None:
        """Reseed a private ``rng`` (called per DataLoader worker by :func:`seed_worker`)."""
        if self.rng is not None:
            self.rng.seed(seed)


@dataclass
class BlurJpeg(_PythonRandom):
    """CNNDetection's ``data_augment`` on a PIL RGB image (docs/training.md): with ``blur_prob`` a
    Gaussian blur of σ = ``blur_sig[0]`` or ``uniform(blur_sig[0], blur_sig[1])``; then,
    independently, with ``jpg_prob`` a JPEG round trip with a codec drawn from ``jpg_method`` and
    a quality drawn from ``jpg_qual``. Blur always comes before JPEG; both decision draws happen
    for every image, as in the reference.

    ``jpg_qual`` holds the option as given; the qualities drawn from are ``qualities``, its
    :func:`expand_quality` expansion (``expand_quality_range=False`` keeps a 2-value set as is,
    RINE's quirk).
    ``rng``: a :class:`random.Random` for reproducible single-process use, or ``None`` for the
    global ``random`` (seeded by ``seed_everything`` and, in DataLoader workers, per worker).
    """

    blur_prob: float = 0.0
    blur_sig: Sequence[float] = (0.5,)
    jpg_prob: float = 0.0
    jpg_method: Sequence[str] = ("cv2",)
    jpg_qual: Sequence[int] = (75,)
    expand_quality_range: bool = True
    qualities: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.blur_sig = _check_sigma(self.blur_sig)
        self.jpg_qual = tuple(int(q) for q in self.jpg_qual)
        self.qualities = expand_quality(self.jpg_qual, self.expand_quality_range)
        self.jpg_method = tuple(self.jpg_method)
        unknown = [m for m in self.jpg_method if m not in JPEG_METHODS]
        if unknown or not self.jpg_method:
            raise ValueError(f"jpg_method {list(self.jpg_method)}: choose from {', '.join(JPEG_METHODS)}")
        for name in ("blur_prob", "jpg_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, img: Image.Image) -> Image.Image:
        arr = np.array(img)
        if self._r.random() < self.blur_prob:
            gaussian_blur_uint8(arr, self._continuous(self.blur_sig))
        if self._r.random() < self.jpg_prob:
            method = self._discrete(self.jpg_method)
            quality = self._discrete(self.qualities)
            arr = jpeg_roundtrip(arr, quality, method)
        return Image.fromarray(arr)

    def for_validation(self) -> "BlurJpeg":
        """CNNDetection's ``get_val_opt``: PIL JPEG only, σ fixed at the midpoint of a range
        (0.0,3.0 -> 1.5), quality fixed at ``int((first + last) / 2)`` (30..100 -> 65), and
        [quirk] the probabilities kept (stochastic validation). Shares ``rng``."""
        sig = self.blur_sig if len(self.blur_sig) == 1 else ((self.blur_sig[0] + self.blur_sig[1]) / 2,)
        q = self.qualities
        qual = q if len(q) == 1 else (int((q[0] + q[-1]) / 2),)
        return replace(self, blur_sig=sig, jpg_method=("pil",), jpg_qual=qual, rng=self.rng)

    @property
    def is_identity(self) -> bool:
        return self.blur_prob == 0 and self.jpg_prob == 0


@dataclass
class RandomResize(_PythonRandom):
    """Resize the short side to ``size`` (aspect kept) with an interpolation drawn per image from
    ``interpolations`` (CNNDetection ``custom_resize``; docs/training.md)."""

    size: int = 256
    interpolations: Sequence[str] = ("bilinear",)

    def __post_init__(self) -> None:
        self.interpolations = tuple(self.interpolations)
        unknown = [i for i in self.interpolations if i not in INTERPOLATION]
        if unknown or not self.interpolations:
            raise ValueError(f"rz_interp {list(self.interpolations)}: choose from {', '.join(INTERPOLATION)}")

    def __call__(self, img: Image.Image) -> Image.Image:
        return TF.resize(img, self.size, interpolation=INTERPOLATION[self._discrete(self.interpolations)])


# ---------------------------------------------------------------------------- whole pipelines
@dataclass(frozen=True)
class AugmentConfig:
    """The options of Wang et al.'s pipeline (CNNDetection names in brackets).

    ``load_size`` [loadSize], ``crop_size`` [cropSize], ``rz_interp``, ``no_resize`` (honoured in
    training and validation; CNNDetection ignores it in training, RINE never resizes), ``no_flip``,
    the :class:`BlurJpeg` options, ``gray_prob`` (> 0: colour-robust training, docs/colour.md),
    ``gray_val`` ([quirk] T-FF grayscales validation at random too), ``val_aug`` (``reference``:
    blur/JPEG kept in validation with the training probabilities; ``none``: off), ``mean``/``std``
    of the final Normalize (the detector's statistics).
    """

    load_size: int = 256
    crop_size: int = 224
    rz_interp: tuple[str, ...] = ("bilinear",)
    no_resize: bool = False
    no_flip: bool = False
    blur_prob: float = 0.0
    blur_sig: tuple[float, ...] = (0.5,)
    jpg_prob: float = 0.0
    jpg_method: tuple[str, ...] = ("cv2",)
    jpg_qual: tuple[int, ...] = (75,)
    expand_quality_range: bool = True
    gray_prob: float = 0.0
    gray_val: bool = False
    val_aug: str = "reference"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.val_aug not in VAL_AUG_CHOICES:
            raise ValueError(f"val_aug {self.val_aug!r}: choose from {', '.join(VAL_AUG_CHOICES)}")
        if not 0.0 <= self.gray_prob <= 1.0:
            raise ValueError(f"gray_prob must be in [0, 1], got {self.gray_prob}")
        if not self.no_resize and self.load_size < self.crop_size:
            raise ValueError(f"loadSize {self.load_size} is smaller than cropSize {self.crop_size}")

    def blur_jpeg(self, rng: RandomSource = None) -> BlurJpeg:
        return BlurJpeg(blur_prob=self.blur_prob, blur_sig=self.blur_sig, jpg_prob=self.jpg_prob,
                        jpg_method=self.jpg_method, jpg_qual=self.jpg_qual,
                        expand_quality_range=self.expand_quality_range, rng=rng)

    @classmethod
    def from_options(cls, args: Any, **overrides: Any) -> "AugmentConfig":
        """Build from a trainer's :class:`~forensics.train.options.AugmentOptions` (CNNDetection names);
        ``overrides`` set fields directly (e.g. ``mean``/``std``, ``expand_quality_range``)."""
        fields = dict(
            load_size=args.loadSize, crop_size=args.cropSize, rz_interp=tuple(args.rz_interp),
            no_resize=args.no_resize, no_flip=args.no_flip, blur_prob=args.blur_prob,
            blur_sig=tuple(args.blur_sig), jpg_prob=args.jpg_prob, jpg_method=tuple(args.jpg_method),
            jpg_qual=tuple(args.jpg_qual), gray_prob=args.gray_prob if args.color_robust else 0.0,
            gray_val=args.gray_val, val_aug=args.val_aug)
        return cls(**{**fields, **overrides})


def _tail(cfg: AugmentConfig, gray_prob: float, normalize: bool) -> list[Callable]:
    steps: list[Callable] = []
    if gray_prob > 0:
        steps.append(T.RandomGrayscale(p=gray_prob))  # ITU-R 601-2 luma replicated to 3 channels
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(cfg.mean, cfg.std))
    return steps


def train_transform(cfg: AugmentConfig, rng: RandomSource = None, normalize: bool = True) -> T.Compose:
    """Training pipeline, in the reference's exact order (docs/training.md; docs/colour.md for the grayscale):
    resize (unless ``no_resize``) -> :class:`BlurJpeg` -> RandomCrop(crop_size) ->
    RandomHorizontalFlip (unless ``no_flip``) -> RandomGrayscale(gray_prob) (colour-robust only) ->
    ToTensor -> Normalize (``normalize=False`` stops at ToTensor, values in [0, 1])."""
    steps: list[Callable] = []
    if not cfg.no_resize:
        steps.append(RandomResize(size=cfg.load_size, interpolations=cfg.rz_interp, rng=rng))
    blur_jpeg = cfg.blur_jpeg(rng)
    if not blur_jpeg.is_identity:
        steps.append(blur_jpeg)
    steps.append(T.RandomCrop(cfg.crop_size))
    if not cfg.no_flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _tail(cfg, cfg.gray_prob, normalize))


def val_transform(cfg: AugmentConfig, rng: RandomSource = None, normalize: bool = True) -> T.Compose:
    """Validation pipeline of ``get_val_opt`` (docs/training.md): resize (unless ``no_resize``) ->
    :meth:`BlurJpeg.for_validation` (PIL JPEG, midpoint σ and quality; [quirk] training
    probabilities kept; dropped with ``val_aug='none'``) -> CenterCrop(crop_size), no flip ->
    RandomGrayscale(gray_prob) only with ``gray_val`` (T-FF [quirk]) -> ToTensor -> Normalize."""
    steps: list[Callable] = []
    if not cfg.no_resize:
        steps.append(RandomResize(size=cfg.load_size, interpolations=cfg.rz_interp, rng=rng))
    blur_jpeg = cfg.blur_jpeg(rng).for_validation()
    if cfg.val_aug == "reference" and not blur_jpeg.is_identity:
        steps.append(blur_jpeg)
    steps.append(T.CenterCrop(cfg.crop_size))
    return T.Compose(steps + _tail(cfg, cfg.gray_prob if cfg.gray_val else 0.0, normalize))


# ---------------------------------------------------------------------------- workers
def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python's and numpy's global RNGs from the worker's torch seed
    (distinct per worker and per epoch) and reseed any private ``rng`` of the dataset's transform
    steps, so forked workers never repeat each other's augmentations."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, _PythonRandom):
            step.reseed(seed)
