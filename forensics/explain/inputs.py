"""What goes into an explanation, checked in one place: the images (on the detector's device, in its
floating dtype) and the target classes (docs/explainers.md, "What is explained, and the sign").

``target`` is ``"fake"``, ``"real"``, ``"predicted"`` (``logit >= 0``, i.e. ``p >= 0.5``, is fake) or
per-image classes (1 fake / 0 real); :func:`resolve_target` turns it into ``[B]`` classes, and
:func:`check_classes` is the one check of 0/1 classes (also of the LRP engine's ``labels``). The
explained score of an image is ``g = s * f`` with ``s = +1`` for fake and ``-1`` for real
(:func:`target_sign`, :func:`target_score`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

TARGET_NAMES = ("fake", "real", "predicted")
Target = str | torch.Tensor | Sequence[int]


# ---------------------------------------------------------------------------- images
def float_dtype(model: nn.Module) -> torch.dtype:
    """The model's floating dtype (float32 unless converted, e.g. to float64 in tests)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_input(detector: nn.Module, images: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    """``images`` detached, on the detector's device in its floating dtype (a new leaf, requiring grad
    when asked; the caller's tensor is never touched)."""
    return images.detach().to(detector.device, float_dtype(detector)).requires_grad_(requires_grad)


# ---------------------------------------------------------------------------- classes
def check_classes(values: torch.Tensor | Sequence[int], n: int, *, device: torch.device | str | None = None,
                  what: str = "target classes", hint: str = "") -> torch.Tensor:
    """``values`` as ``[n]`` int64 classes (1 fake / 0 real) on ``device``; ``ValueError`` (naming
    ``what``, plus ``hint``) for a wrong count or a value other than 0 and 1."""
    classes = torch.as_tensor(values, device=device).reshape(-1)
    if classes.numel() != n:
        raise ValueError(f"{classes.numel()} {what} for {n} images")
    if classes.is_floating_point() and not torch.equal(classes, classes.round()):
        raise ValueError(f"{what} must be 0 (real) or 1 (fake){hint}")
    classes = classes.long()
    bad = (classes != 0) & (classes != 1)
    if bad.any():
        raise ValueError(f"{what} must be 0 (real) or 1 (fake); got {classes[bad].unique().tolist()}{hint}")
    return classes


def check_target(target: Target, n: int, names: Sequence[str] = TARGET_NAMES) -> Target:
    """``target`` checked for ``n`` images before any work: one of ``names``, or ``n`` classes
    (returned as an int64 tensor)."""
    if isinstance(target, str) or target is None:
        if target not in names:
            raise ValueError(f"target must be one of {tuple(names)} or a tensor of 0/1 classes, got {target!r}")
        return target
    return check_classes(target, n)


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Per-image target classes ``[B]`` (int64, 1 fake / 0 real, on ``logits``' device) for
    ``target`` = ``"fake"``, ``"real"``, ``"predicted"`` (``logit >= 0`` is fake) or a tensor /
    sequence of 0/1 classes, one per image."""
    logits = logits.detach().reshape(-1)
    target = check_target(target, logits.numel())
    if isinstance(target, str):
        if target == "predicted":
            return (logits >= 0).long()
        return torch.full_like(logits, 1 if target == "fake" else 0, dtype=torch.long)
    return target.to(logits.device)


def classes_for(target: Target, x: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """:func:`resolve_target` that runs ``logits_of(x)`` only when ``target`` is ``"predicted"``."""
    if isinstance(target, str) and target == "predicted":
        return resolve_target(target, logits_of(x))
    return resolve_target(target, x.new_zeros(x.shape[0]))


def target_sign(classes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``s`` per image: +1 for fake (explain ``f``), -1 for real (explain ``-f``)."""
    return (2 * classes - 1).to(dtype)


def target_score(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The explained score ``g = s * f`` of each image (see the module docstring)."""
    return target_sign(classes, logits.dtype) * logits


__all__ = ["TARGET_NAMES", "Target", "check_classes", "check_target", "classes_for", "float_dtype", "model_input",
           "resolve_target", "target_score", "target_sign"]
