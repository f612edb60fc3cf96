"""Configuration as data: what a detector is, how its inputs are prepared, where it comes from."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CROP_POLICIES = ("center", "none")


@dataclass(frozen=True)
class Preprocessing:
    """Eval-time preprocessing of a detector, as its reference evaluates it.

    ``crop``: ``"center"`` (CenterCrop ``crop_size``; images smaller than that are zero-padded, as
    torchvision does) or ``"none"`` (full resolution). ``resize``: short side resized first
    (``None`` = no resize, the reference eval behaviour of all four detectors).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: str = "center"
    crop_size: int = 224
    resize: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {CROP_POLICIES}, got {self.crop!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))


@dataclass(frozen=True)
class DetectorConfig:
    """One registered detector: architecture, preprocessing, provenance and builder defaults.

    ``options`` are the builder's keyword defaults (e.g. RINE's ``backbone``, ``nproj``,
    ``proj_dim``); :func:`forensics.detectors.create` accepts overrides for any of them.
    ``weights`` lists the release tags of :mod:`forensics.weights` this detector can load.
    """

    name: str
    arch: str
    paper: str
    preprocessing: Preprocessing
    input_size: int = 224
    default_weights: str | None = None
    weights: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def with_options(self, **overrides: Any) -> "DetectorConfig":
        unknown = set(overrides) - set(self.options)
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.options)}")
        return dataclasses.replace(self, options={**self.options, **overrides})

    def with_preprocessing(self, **changes: Any) -> "DetectorConfig":
        return dataclasses.replace(self, preprocessing=dataclasses.replace(self.preprocessing, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DetectorConfig":
        d = dict(d)
        pre = d.pop("preprocessing")
        pre = Preprocessing(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
        d["weights"] = tuple(d.get("weights", ()))
        d["options"] = dict(d.get("options", {}))
        return cls(preprocessing=pre, **d)
