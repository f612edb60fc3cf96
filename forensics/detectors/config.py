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
    """The declaration of one detector (as timm's ``_cfg`` next to a model): architecture,
    preprocessing, provenance, builder defaults and the facts the rest of the library reads.

    ``options`` are the builder's keyword defaults (e.g. RINE's ``backbone``, ``nproj``,
    ``proj_dim``); :func:`forensics.detectors.create` accepts overrides for any of them.
    ``default_weights``: the release tag ``weights="default"`` loads (the releases a detector can
    load are those of :mod:`forensics.weights` whose ``detector`` names it).
    ``label``: short name in tables and figures (``R50``; default: ``name``). ``head``: qualified
    name of the classifier module inside the detector (``net.fc``), the part a trainer
    re-initialises. ``init_weights``: release tag of the ImageNet initialisation of the body
    (``None``: none; the CLIP detectors train a head on a frozen backbone instead).
    """

    name: str
    arch: str
    paper: str
    preprocessing: Preprocessing
    input_size: int = 224
    default_weights: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    head: str | None = None
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

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
        d.pop("weights", None)  # written by versions that listed the releases here too
        d["options"] = dict(d.get("options", {}))
        return cls(preprocessing=pre, **d)
