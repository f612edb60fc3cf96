"""Options of the CLIP-head trainers (:mod:`.rine`, :mod:`.ufd`): what both share (data, backbone, run folder,
feature cache, CNNDetection's blur/JPEG recipe at the backbone's crop) and each one's own (docs/training.md)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..detectors.clip_backbone import DEFAULT_BACKBONE, DEFAULT_BACKBONE_WEIGHTS
from ..detectors.feature_cache import DTYPES
from .options import AugmentOptions, TrainOptionsError


@dataclass(frozen=True, kw_only=True)
class ClipOptions(AugmentOptions):
    """Options both CLIP trainers share. ``classes``: comma list of class folders (``""``: all, or flat);
    ``backbone_weights``: a release tag or file, ``None`` for a random backbone; ``feature_cache``: train on
    cached backbone features of deterministic views (no augmentation). The crop is the backbone's input size
    (``cropSize`` ``None``, or equal to it)."""

    classes: str = ""
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = DEFAULT_BACKBONE_WEIGHTS
    batch_size: int = 128
    lr: float = 1e-3
    checkpoints_dir: str | Path = Path("checkpoints")
    num_threads: int = 4
    feature_cache: str | Path | None = None
    cache_dtype: str = "float32"
    # CNNDetection's blur/JPEG recipe shared by RINE and UFD (docs/training.md)
    cropSize: int | None = None
    blur_prob: float = 0.5
    blur_sig: tuple[float, ...] = (0.0, 3.0)
    jpg_prob: float = 0.5
    jpg_method: tuple[str, ...] = ("cv2", "pil")
    jpg_qual: tuple[int, ...] = (30, 100)

    def validate(self) -> None:
        super().validate()
        if self.cache_dtype not in DTYPES:
            raise TrainOptionsError(f"--cache_dtype {self.cache_dtype!r}: choose from {', '.join(DTYPES)}")
        if self.batch_size < 1:
            raise TrainOptionsError(f"--bsize {self.batch_size}: need at least one image per batch")


@dataclass(frozen=True, kw_only=True)
class RineOptions(ClipOptions):
    """RINE's recipe (the released 2-class model): it never resizes and validates without blur/JPEG.
    ``jpg_qual_range``: JPEG quality uniform over every integer of ``jpg_qual``'s range (CNNDetection/UFD)
    instead of only the two listed values [RINE quirk]."""

    name: str | None = "rine"
    no_resize: bool = True
    val_aug: str = "none"
    nproj: int = 4
    proj_dim: int = 128
    factor: float = 0.2
    dropout: float = 0.5
    epochs: int = 1
    epochs_reduce_lr: tuple[int, ...] = (6, 11)
    jpg_qual_range: bool = False

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.dropout < 1.0:
            raise TrainOptionsError(f"--dropout {self.dropout}: must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class UfdOptions(ClipOptions):
    """UFD's linear probe: AdamW (``beta1``, ``weight_decay``) with CNNDetection's early stopping."""

    name: str | None = "ufd"
    batch_size: int = 256
    lr: float = 1e-4
    beta1: float = 0.9
    weight_decay: float = 0.0
    niter: int = 100
    earlystop_epoch: int = 5
