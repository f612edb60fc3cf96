"""Eval transforms built from a detector's :class:`Preprocessing` (PIL RGB image -> tensor)."""
from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from .config import Preprocessing

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


def build_eval_transform(pre: Preprocessing, grayscale: bool = False) -> T.Compose:
    """resize (optional) -> crop policy -> [ITU-R 601-2 grayscale x3] -> ToTensor -> Normalize.

    Grayscale is ``transforms.Grayscale(3)``, i.e. PIL ``convert('L')`` replicated to 3 channels,
    applied before normalisation exactly as T-FF's colour ablation does.
    """
    steps: list = []
    if pre.resize is not None:
        steps.append(T.Resize(pre.resize, interpolation=_INTERP[pre.interpolation]))
    if pre.crop == "center":
        steps.append(T.CenterCrop(pre.crop_size))
    if grayscale:
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)
