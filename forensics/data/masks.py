"""Masks that follow their image pixel for pixel: decoding (:func:`load_mask`) and the image
transform's geometry replayed on the mask (:class:`MaskTransform`).

A mask is read as a binary ``[H, W]`` uint8 array (1 = manipulated), in the orientation of its
decoded image (the image's EXIF rotation is applied to the image; a mask file's own EXIF tag to the
mask). Grey masks: a pixel is set when it is above 127 (values 0/255) or above 0 (values 0/1). A
mask whose size differs from its (oriented) image raises :class:`~forensics.errors.MaskError` naming
both sizes and the file, unless ``resize=True`` (nearest neighbour). A real image without a mask
gets an all-zero mask; a fake without one is an error (the dataset lists it as skipped).

:class:`MaskTransform` walks the image transform (``transforms.Compose``) and replays every
geometric step on the mask with nearest-neighbour interpolation (``Resize``, ``CenterCrop``,
``Pad``, ``TenCrop``/``FiveCrop``, the steps that declare ``for_mask()`` and, per crop, the steps of a
``per_crop`` stage); photometric steps
(``ToTensor``, ``Normalize``, ``Grayscale``, and steps with ``photometric = True``) are skipped. Any
other step raises ``ValueError``: a mask is never silently misaligned.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import to_tensor

from ..errors import MaskError
from .records import ImageRecord, ParquetCell, Polygons

_PHOTOMETRIC = (T.ToTensor, T.Normalize, T.Grayscale, T.ConvertImageDtype, T.PILToTensor)
_PHOTOMETRIC_FUNCTIONS = (to_tensor,)


def load_mask(record: ImageRecord, image_size: tuple[int, int], resize: bool = False) -> np.ndarray:
    """``record``'s mask as a ``[H, W]`` uint8 0/1 array matching ``image_size`` = (width, height)
    of its decoded image: all zeros for a real without a mask; :class:`MaskError` for a fake (or
    unlabelled image) without one, an unreadable mask, or a size mismatch without ``resize``."""
    ref = record.mask
    data = ref.read() if isinstance(ref, ParquetCell) else ref
    if data is None:
        if record.label == 0:
            return np.zeros((image_size[1], image_size[0]), dtype=np.uint8)
        where = f" (the mask cell {ref} is null)" if ref is not None else ""
        raise MaskError(f"{record.ref}: no mask for this {'fake' if record.label == 1 else 'unlabelled'} "
                        f"image{where}")
    if isinstance(data, Polygons):
        return data.render(image_size)
    mask = _decode(data, str(ref))
    if mask.size != image_size:
        if not resize:
            raise MaskError(f"{record.ref}: its mask {ref} is {mask.size[0]}x{mask.size[1]} but the image is "
                            f"{image_size[0]}x{image_size[1]}; pass --mask_resize to resize masks (nearest)")
        mask = mask.resize(image_size, Image.NEAREST)
    return binarise(np.asarray(mask))


def _decode(data: Path | bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return im if im.mode == "P" else im.convert("L")  # palette masks: class indices
    except FileNotFoundError as exc:
        raise MaskError(f"{name}: no such mask file") from exc
    except Exception as exc:  # Pillow raises many types on unreadable data
        raise MaskError(f"{name}: unreadable mask ({type(exc).__name__}: {exc})") from exc


def binarise(grey: np.ndarray) -> np.ndarray:
    """0/1 uint8 from a grey mask: above 127 when values exceed 1, else above 0."""
    grey = np.asarray(grey)
    return (grey > (127 if grey.size and grey.max() > 1 else 0)).astype(np.uint8)


# ---------------------------------------------------------------------------- the geometry, replayed
def _nearest_resize(step: T.Resize) -> Callable:
    return T.Resize(step.size, interpolation=InterpolationMode.NEAREST, max_size=step.max_size)


def _pad(step: T.Pad) -> Callable:
    return T.Pad(step.padding, fill=0, padding_mode=step.padding_mode)


#: Geometric torchvision steps -> the same step for a mask (nearest neighbour, zero fill).
_GEOMETRIC: dict[type, Callable[[Any], Callable]] = {
    T.Resize: _nearest_resize,
    T.CenterCrop: lambda step: step,
    T.TenCrop: lambda step: step,
    T.FiveCrop: lambda step: step,
    T.Pad: _pad,
}


class MaskTransform:
    """The geometric part of an image transform, for masks: ``MaskTransform(transform)(mask)`` with a
    PIL ``L`` 0/1 mask returns a uint8 tensor ``[H, W]`` (``[N, H, W]`` after a multi-crop step)
    aligned with ``transform(image)``. Raises ``ValueError`` at construction for a step it cannot
    tell is photometric or geometric (module docstring)."""

    def __init__(self, transform: Callable):
        self.steps = _mask_steps(transform)

    def __call__(self, mask: np.ndarray) -> torch.Tensor:
        out: Any = Image.fromarray(mask)
        for step in self.steps:
            out = tuple(step(m) for m in out) if isinstance(out, tuple) else step(out)
        if isinstance(out, tuple):
            return torch.stack([torch.from_numpy(np.asarray(m, dtype=np.uint8).copy()) for m in out])
        return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy())


def _mask_steps(transform: Callable) -> list[Callable]:
    if isinstance(transform, T.Compose):
        return [s for step in transform.transforms for s in _mask_steps(step)]
    if hasattr(transform, "for_mask"):
        return [transform.for_mask()]  # a geometric step of the project's own that works on masks
    if getattr(transform, "per_crop", False):
        return _mask_steps(transform.transform)  # a per-crop stage (StackCrops): its steps, mapped over the crops
    kind = type(transform)
    if kind in _GEOMETRIC:
        return [_GEOMETRIC[kind](transform)]
    if isinstance(transform, _PHOTOMETRIC) or transform in _PHOTOMETRIC_FUNCTIONS or getattr(transform, "photometric",
                                                                                              False):
        return []
    raise ValueError(f"masks cannot follow the transform step {transform!r}: it is neither a known geometric step "
                     "(Resize, CenterCrop, Pad, TenCrop, FiveCrop) nor marked photometric; masks would be misaligned")
