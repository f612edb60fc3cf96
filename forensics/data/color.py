"""Model-agnostic colour ablations of an image (PIL RGB -> PIL RGB, deterministic).

T-FF's colour ablation (docs/colour.md) is ``grayscale``: ``transforms.Grayscale(3)``, i.e. PIL
``convert('L')`` (ITU-R 601-2 luma ``L = (299 R + 587 G + 114 B) / 1000``, rounded to uint8)
replicated to three identical channels. It is inserted into a detector's eval transform before
ToTensor and the per-channel normalisation (:meth:`forensics.detectors.Detector.transform`
``pixel_op=``), exactly where the reference puts it.

The other ablations are our additions, to ask *which* part of colour a detector uses:

==============  =====================================================================================
name            what the image becomes
==============  =====================================================================================
``grayscale``   ITU-R 601-2 luma x 3 (the reference's ablation; the default everywhere)
``chroma_only`` the chroma of PIL's JPEG YCbCr with the luma replaced by the constant 128 (only colour
                information left; the complement of ``grayscale``)
``swap_rb``     channels B, G, R (red and blue swapped)
``swap_rg``     channels G, R, B
``swap_gb``     channels R, B, G
``rotate_gbr``  channels G, B, R (a cyclic permutation: every channel moves)
==============  =====================================================================================

Every ablation is a picklable :class:`ColorAblation` (data-loader workers can use it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
from PIL import Image


def grayscale(image: Image.Image) -> Image.Image:
    """ITU-R 601-2 luma replicated to 3 channels (= ``transforms.Grayscale(num_output_channels=3)``)."""
    luma = image.convert("RGB").convert("L")
    return Image.merge("RGB", (luma, luma, luma))


def chroma_only(image: Image.Image, luma: int = 128) -> Image.Image:
    """The image's Cb/Cr (PIL's JPEG YCbCr) with Y set to the constant ``luma``, back to RGB."""
    _, cb, cr = image.convert("RGB").convert("YCbCr").split()
    flat = Image.new("L", image.size, int(luma))
    return Image.merge("YCbCr", (flat, cb, cr)).convert("RGB")


def permute_channels(image: Image.Image, order: tuple[int, int, int]) -> Image.Image:
    """The RGB channels in ``order`` (e.g. ``(2, 1, 0)`` = BGR)."""
    arr = np.asarray(image.convert("RGB"))
    return Image.fromarray(np.ascontiguousarray(arr[..., list(order)]))


def _permutation(order: tuple[int, int, int]) -> Callable[[Image.Image], Image.Image]:
    def op(image: Image.Image) -> Image.Image:
        return permute_channels(image, order)
    return op


#: name -> (operation, one-line description).
ABLATIONS: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
    "grayscale": (grayscale, "ITU-R 601-2 luma x3 (T-FF's colour ablation)"),
    "chroma_only": (chroma_only, "YCbCr chroma with constant luma 128"),
    "swap_rb": (_permutation((2, 1, 0)), "channels B,G,R"),
    "swap_rg": (_permutation((1, 0, 2)), "channels G,R,B"),
    "swap_gb": (_permutation((0, 2, 1)), "channels R,B,G"),
    "rotate_gbr": (_permutation((1, 2, 0)), "channels G,B,R"),
}
DEFAULT_ABLATION = "grayscale"


@dataclass(frozen=True)
class ColorAblation:
    """A named colour ablation from :data:`ABLATIONS`, callable on a PIL image (picklable)."""

    name: str = DEFAULT_ABLATION
    photometric: ClassVar[bool] = True  # moves no pixel: a mask transform skips it

    def __post_init__(self) -> None:
        if self.name not in ABLATIONS:
            raise KeyError(f"unknown colour ablation {self.name!r}; choose from {', '.join(ABLATIONS)}")

    def __call__(self, image: Image.Image) -> Image.Image:
        return ABLATIONS[self.name][0](image)

    @property
    def description(self) -> str:
        return ABLATIONS[self.name][1]

    def __repr__(self) -> str:
        return f"ColorAblation({self.name!r})"
