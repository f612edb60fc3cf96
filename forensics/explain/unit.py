"""Pixel relevance of ONE unit of a feature map: T-FF's "LRP-max" (Chandrasegaran et al., ECCV 2022;
docs/patches.md).

For each image, the unit explained is the spatial maximum of the positive part of the chosen
feature map, measured where the detector's LRP reads layer relevance (for ``resnet50``/``efb0`` the
conv output with its BN folded in); ``z`` is its value. Relevance ``z`` is placed on that single
unit (every other unit of every map gets 0) and propagated down to the pixels with the detector's
LRP composite (:mod:`forensics.explain.lrp`). A map with no positive value gives ``z = 0`` and an
all-zero relevance.

Detectors plug in through :func:`register_unit_relevance` (a fact of the detector's registry entry;
:data:`UNIT_RELEVANCE` is the live view ``detector name -> function``); a detector
without an entry uses :func:`lrp_unit_relevance` when its LRP spec reaches the pixels. RINE's LRP
spec is head-only (it stops at the per-block CLS tokens), so RINE declares its own function, CP-LRP
through the CLIP ViT (:func:`vit_unit_relevance`, at the end of this module)::

    @register_fact(UNIT_RELEVANCE_FACT, "rine")
    def vit_unit_relevance(detector, images, key, **options) -> UnitRelevance: ...

A detector with neither (UFD) raises a clear error naming what is missing.

Difference from the reference: the reference hooks a forward on a separate LRP copy and explains
one image at a time; here a batch is explained at once (every rule is per sample, so the result is
the same up to floating-point noise) on the temporarily canonised detector.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Protocol

import torch

from ..detectors import Detector, FeatureMapKey
from ..detectors.registry import FactView, register_fact
from .inputs import model_input
from .lrp import LRP_CONFIGS, LRPEngine


@dataclass
class UnitRelevance:
    """One explained batch: ``pixel`` ``[B, C, H, W]`` input relevance, ``value`` ``[B]`` the
    explained unit's value ``z`` (>= 0), ``position`` ``[B]`` its flat index in the map."""

    pixel: torch.Tensor
    value: torch.Tensor
    position: torch.Tensor


class UnitRelevanceFn(Protocol):
    def __call__(self, detector: Detector, images: torch.Tensor, key: FeatureMapKey | str,
                 **options) -> UnitRelevance: ...


UNIT_RELEVANCE_FACT = "unit_relevance"
#: ``{detector name: function}``, read live from the detector registry (declared with
#: :func:`register_unit_relevance`).
UNIT_RELEVANCE: Mapping[str, UnitRelevanceFn] = FactView(UNIT_RELEVANCE_FACT)


def register_unit_relevance(name: str, fn: UnitRelevanceFn) -> UnitRelevanceFn:
    """Declare ``fn`` as the single-unit pixel relevance of detector ``name`` (e.g. RINE through its
    ViT), once; it is stored on the detector's registry entry."""
    return register_fact(UNIT_RELEVANCE_FACT, name)(fn)


def unit_relevance_fn(detector: Detector) -> UnitRelevanceFn:
    """The single-unit pixel relevance of ``detector``; ``NotImplementedError`` naming what is missing."""
    if detector.name in UNIT_RELEVANCE:
        return UNIT_RELEVANCE[detector.name]
    spec = LRP_CONFIGS.get(detector.name)
    if spec is not None and not spec.head_only:
        return lrp_unit_relevance
    why = ("its LRP stops at the feature layers (head-only), so no relevance reaches the pixels"
           if spec is not None else "it has no LRP spec")
    raise NotImplementedError(
        f"{detector.name}: no pixel relevance for a single feature-map unit ({why}). LRP-max patches need one: "
        f"register it with forensics.explain.unit.register_unit_relevance({detector.name!r}, fn). "
        f"Available for: {sorted(set(UNIT_RELEVANCE) | {n for n, s in LRP_CONFIGS.items() if not s.head_only})}")


def explain_unit(detector: Detector, images: torch.Tensor, key: FeatureMapKey | str, **options) -> UnitRelevance:
    """Pixel relevance of the spatial-max unit of feature map ``key`` for each image of a normalised
    batch (see the module docstring); dispatches through :func:`unit_relevance_fn`."""
    return unit_relevance_fn(detector)(detector, images, key, **options)


def max_unit_gradient(fmap: torch.Tensor, channel: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a layer output ``[B, C, ...]``: the starting relevance (``z`` at the spatial argmax of the
    positive part of ``channel``, 0 elsewhere), ``z`` ``[B]`` and the flat argmax ``[B]``."""
    chan = fmap.detach()[:, channel].clamp_min(0).reshape(fmap.shape[0], -1)
    value, position = chan.max(dim=1)
    flat = torch.zeros_like(chan).scatter_(1, position[:, None], value[:, None])
    start = torch.zeros_like(fmap)
    start[:, channel] = flat.reshape(fmap[:, channel].shape)
    return start, value, position


def lrp_unit_relevance(detector: Detector, images: torch.Tensor, key: FeatureMapKey | str, *,
                       engine: LRPEngine | None = None, bn_identity: bool = False,
                       explainer: LRPEngine | None = None) -> UnitRelevance:
    """LRP-max with the detector's LRP composite (``resnet50``, ``efb0``). Pass an active LRP
    ``engine`` (``with LRPEngine(detector) as lrp``) to canonise once for many calls (``explainer``:
    its old, deprecated name)."""
    if explainer is not None:
        warnings.warn("lrp_unit_relevance(explainer=...) is deprecated: pass engine=", DeprecationWarning,
                      stacklevel=2)
        engine = explainer
    if engine is None or not engine.active:
        with LRPEngine(detector, bn_identity=bn_identity) as lrp:
            return lrp_unit_relevance(detector, images, key, engine=lrp)
    if engine.spec.head_only:
        raise NotImplementedError(f"{detector.name}: its LRP spec is head-only (no pixel relevance)")
    k = detector.check_keys([key])[0]
    module = detector.get_submodule(detector.feature_layer(k.layer).modules[engine.spec.point])
    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        captured.setdefault("out", output)

    x = model_input(detector, images, requires_grad=True)
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            detector(x)
    finally:
        handle.remove()
    out = captured["out"]
    start, value, position = max_unit_gradient(out, k.channel)
    (pixel,) = torch.autograd.grad(out, x, grad_outputs=start)
    return UnitRelevance(pixel.detach(), value, position)


@register_fact(UNIT_RELEVANCE_FACT, "rine")
def vit_unit_relevance(detector: Detector, images: torch.Tensor, key: FeatureMapKey | str, **_options
                       ) -> UnitRelevance:
    """LRP-max for a CLIP detector's per-block CLS features (``rine``): CP-LRP through the ViT
    (:meth:`forensics.explain.vit_lrp.ViTLRP.explain_unit`) from the CLS channel's activation. A CLS
    channel has one value per image, so ``position`` is 0 and ``value`` is that activation."""
    from .vit_lrp import ViTLRP
    k = detector.check_keys([key])[0]
    result = ViTLRP(detector).explain_unit(images, str(k))
    return UnitRelevance(result.pixel, result.output, torch.zeros_like(result.output, dtype=torch.long))
