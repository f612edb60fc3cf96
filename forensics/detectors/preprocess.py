"""Eval transforms built from a detector's :class:`Preprocessing` (PIL RGB image -> tensor), and the
ten-crop variant (PIL RGB image -> ``[10, 3, H, W]``)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as F
from torchvision.transforms import InterpolationMode

from .config import Preprocessing

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


def build_eval_transform(pre: Preprocessing, grayscale: bool = False, pixel_op=None) -> T.Compose:
    """resize (optional) -> crop policy -> [ITU-R 601-2 grayscale x3] -> [pixel_op] -> ToTensor -> Normalize.

    Grayscale is ``transforms.Grayscale(3)``, i.e. PIL ``convert('L')`` replicated to 3 channels,
    applied before normalisation exactly as T-FF's colour ablation does. ``pixel_op`` (PIL -> PIL,
    e.g. a :class:`forensics.data.color.ColorAblation`) is inserted at the same place.
    """
    steps: list = []
    if pre.resize is not None:
        steps.append(T.Resize(pre.resize, interpolation=_INTERP[pre.interpolation]))
    if pre.crop == "center":
        steps.append(T.CenterCrop(pre.crop_size))
    if grayscale:
        steps.append(T.Grayscale(num_output_channels=3))
    if pixel_op is not None:
        steps.append(pixel_op)
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class PadToSize:
    """Zero-pad a PIL image to at least ``size`` x ``size``, centred exactly as torchvision's
    ``CenterCrop`` pads an image smaller than its crop (left/top get the floor of the margin)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, image):
        width, height = image.size
        dw, dh = max(self.size - width, 0), max(self.size - height, 0)
        if not dw and not dh:
            return image
        return F.pad(image, [dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2], fill=0)

    def for_mask(self) -> "PadToSize":
        """The same padding for a mask (zero fill; see :class:`forensics.data.masks.MaskTransform`)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class StackCrops:
    """Apply a per-crop transform to every crop of a ``TenCrop``/``FiveCrop`` tuple and stack the
    results into one ``[n_crops, C, H, W]`` tensor (a class, not a lambda, so data-loader workers
    can pickle it). ``per_crop``: a mask transform maps its steps over the crops."""

    per_crop = True

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, crops):
        return torch.stack([self.transform(c) for c in crops])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


class CropAveraging(nn.Module):
    """Scores multi-crop inputs with ``model``: ``[B, N, C, H, W]`` runs as ``[B*N, C, H, W]`` and
    the N logits of each image are averaged (RINE's TenCrop: average the logits, then the sigmoid;
    docs/evaluation.md). ``[B, C, H, W]`` passes through. A plain module wrapper, e.g. the ``model``
    of :func:`forensics.analysis.inference.predict_records` for :func:`build_ten_crop_transform` inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.model(x)
        if x.dim() != 5:
            raise ValueError(f"expected [B, C, H, W] or [B, N_crops, C, H, W], got {tuple(x.shape)}")
        b, n = x.shape[:2]
        return self.model(x.flatten(0, 1)).reshape(b, n).mean(dim=1)


def build_ten_crop_transform(pre: Preprocessing, grayscale: bool = False, pixel_op=None) -> T.Compose:
    """resize (optional) -> zero-pad to ``crop_size`` -> ``TenCrop(crop_size)`` -> per crop
    [grayscale x3] -> [pixel_op] -> ToTensor -> Normalize; returns ``[10, 3, crop_size, crop_size]`` per image.

    TenCrop = the 4 corner crops and the centre crop of the image and of its horizontal mirror
    (RINE's Synthbuster protocol, docs/evaluation.md; the logits of the 10 crops are averaged by the
    caller, e.g. :class:`CropAveraging`). ``pre.crop`` is
    ignored. Difference: torchvision's ``TenCrop`` raises on an image smaller than the crop; here
    such an image is first zero-padded the way ``CenterCrop`` pads it.
    """
    steps: list = []
    if pre.resize is not None:
        steps.append(T.Resize(pre.resize, interpolation=_INTERP[pre.interpolation]))
    per_crop: list = [T.Grayscale(num_output_channels=3)] if grayscale else []
    per_crop += [pixel_op] if pixel_op is not None else []
    per_crop += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    steps += [PadToSize(pre.crop_size), T.TenCrop(pre.crop_size), StackCrops(T.Compose(per_crop))]
    return T.Compose(steps)
