"""Every trainer's options as data: a frozen dataclass per trainer, with the reference's names and defaults,
validated on construction, built by code (:mod:`forensics.defaults`, a notebook) or from a parsed command line
(:meth:`TrainOptions.from_args`; the parsers live in :mod:`forensics.cli.train_args`).

Field names are the command line's (``cropSize``, ``blur_sig``, ...: CNNDetection's spellings, docs/training.md),
so a run's ``opt.json`` reads like the reference's ``opt.txt``. Comma-list options hold tuples.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ..errors import ForensicsError
T = TypeVar("T", bound="TrainOptions")

#: ``val_aug`` choices: ``reference`` keeps blur/JPEG in validation with the training
#: probabilities ([quirk] of ``get_val_opt``), ``none`` switches it off.
VAL_AUG_CHOICES = ("reference", "none")


class TrainOptionsError(ForensicsError, ValueError):
    """A trainer option is out of its range (the message names the option and the value given)."""


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What every trainer shares: the run folder, seed, device, resume. Subclasses add their own fields."""

    dataroot: str | Path
    train_split: str = "train"
    val_split: str = "val"
    name: str | None = None
    checkpoints_dir: str | Path = "checkpoints"
    resume: bool = False
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for f in fields(self):  # comma lists -> tuples, so options built by code and parsed ones compare equal
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TrainOptionsError` naming the option for a value out of its range."""
        if self.seed < 0:
            raise TrainOptionsError(f"--seed {self.seed}: the seed must be >= 0")

    @classmethod
    def from_args(cls: type[T], args: argparse.Namespace | Mapping[str, Any]) -> T:
        """The options a parsed command line (:mod:`forensics.cli.train_args`) gives; names it lacks keep
        their defaults and names that are not options (``--verbose``) are ignored."""
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values (what ``opt.json`` records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class AugmentOptions(TrainOptions):
    """CNNDetection's augmentation options (:class:`.augment.AugmentConfig` reads them; docs/training.md)."""

    loadSize: int = 256
    cropSize: int | None = 224
    no_resize: bool = False
    no_flip: bool = False
    rz_interp: tuple[str, ...] = ("bilinear",)
    blur_prob: float = 0.0
    blur_sig: tuple[float, ...] = (0.5,)
    jpg_prob: float = 0.0
    jpg_method: tuple[str, ...] = ("cv2",)
    jpg_qual: tuple[int, ...] = (75,)
    color_robust: bool = False
    gray_prob: float = 0.5
    gray_val: bool = False
    val_aug: str = "reference"

    def validate(self) -> None:
        super().validate()
        if self.val_aug not in VAL_AUG_CHOICES:
            raise TrainOptionsError(f"--val_aug {self.val_aug!r}: choose from {', '.join(VAL_AUG_CHOICES)}")
        for name in ("blur_prob", "jpg_prob", "gray_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainOptionsError(f"--{name} {getattr(self, name)}: a probability must be in [0, 1]")
