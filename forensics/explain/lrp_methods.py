"""The LRP family behind :func:`~forensics.explain.create_explainer` (docs/explainers.md).

- ``lrp`` (CNNs with a pixel-reaching LRP spec: ``resnet50``, ``efb0``): T-FF's beta=0 composite
  (:mod:`forensics.explain.lrp`, numbers unchanged) or, with ``composite=``, one of zennit's
  ``epsilon_plus_flat``, ``epsilon_gamma_box``, ``epsilon_alpha2_beta1_flat`` on the same canonised
  detector. The fc epsilon rule divides by the logit, so the relevance entering is a unit per image
  (``relevance`` = +-1). The start handed to the logit is ``s * sign(f)`` (``s`` the target's sign), so
  that positive relevance is evidence for the target whatever the prediction (``sign(f)`` of the
  canonised model that is explained): for correctly classified images ``target="fake"`` is T-FF's
  ``sign="reference"`` and ``target=labels`` its ``sign="correct"``. ``logits`` and ``"predicted"``
  are the detector's own; the model is canonised only while a batch is explained.
- ``cp_lrp`` and ``attn_lrp`` (CLIP detectors ``rine``, ``ufd``): LRP-0 through the ViT with CP-LRP's
  or AttnLRP's attention rules (:mod:`.vit_lrp`, :mod:`.attn_lrp`); the relevance entering is the
  target's logit ``s * f``. ``layers``: the relevance at each block's tap, ``[B]``.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat

from ..detectors import Detector
from ..detectors.clip_backbone import ClipDetector
from .attn_lrp import AttnLRP
from .base import Capabilities, Explainer, Explanation, Target, detector_name, detector_type, register_explainer
from .inputs import classes_for, target_sign
from .canonizers import BatchNormIdentity, GatedProduct, ResidualSum
from .lrp import LRP_CONFIGS, LRPEngine, LRPSpec
from .lrp_hooks import ResidualSumRule
from .lrp_rules import GatePass
from .vit_lrp import ViTLRP

#: zennit's named composites offered besides T-FF's ``beta0``: (class, needs the input box).
ZENNIT_COMPOSITES = {
    "epsilon_plus_flat": (EpsilonPlusFlat, False),
    "epsilon_gamma_box": (EpsilonGammaBox, True),
    "epsilon_alpha2_beta1_flat": (EpsilonAlpha2Beta1Flat, False),
}
COMPOSITES = ("beta0", *ZENNIT_COMPOSITES)


def zennit_spec(base: LRPSpec, composite: str, zero_params: str | list[str] | None = None) -> LRPSpec:
    """``base`` (a detector's LRP spec: its canonizers) with zennit's named ``composite`` instead of
    T-FF's beta=0 map. The EfB0 SE product keeps its gate rule; ``epsilon_gamma_box`` gets the
    per-channel box of the detector's normalised pixels. ``zero_params``: zennit's option (``"bias"``:
    biases absorb no relevance)."""
    cls, boxed = ZENNIT_COMPOSITES[composite]

    def build(spec: LRPSpec, detector: Detector, bn_identity: bool):
        canonizers = list(spec.canonizers(detector)) + ([BatchNormIdentity()] if bn_identity else [])
        # The canonised skip add is a two-input ResidualSum, which zennit's layer maps do not know: it gets
        # the rule zennit gives its own Sum (Norm, i.e. epsilon 1e-6), else the gradient copies the
        # relevance into both branches and every bottleneck doubles it.
        kwargs: dict[str, Any] = {"layer_map": [(ResidualSum, ResidualSumRule(1e-6)), (GatedProduct, GatePass())],
                                  "canonizers": canonizers,
                                  "zero_params": zero_params}
        if boxed:
            pre = detector.config.preprocessing
            mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
            std = torch.tensor(pre.std).view(1, -1, 1, 1)
            kwargs.update(low=-mean / std, high=(1 - mean) / std)
        return cls(**kwargs)

    return LRPSpec(canonizers=base.canonizers, zbox_layer=None, point=base.point, composite=build,
                   notes=f"zennit {cls.__name__} on the canonised {composite} detector")


def _pixel_lrp_spec(detector: Detector | str) -> LRPSpec | None:
    spec = LRP_CONFIGS.get(detector_name(detector))
    return None if spec is None or spec.head_only else spec


@register_explainer
class LRP(Explainer):
    """LRP of a CNN detector. Options: ``composite`` (``beta0``, T-FF's, default; or a zennit composite
    of :data:`ZENNIT_COMPOSITES`), ``layers`` (feature layers whose relevance is returned: ``()`` none,
    default; ``None`` all; or names), ``bn_identity`` (see :class:`~forensics.explain.lrp.LRPEngine`),
    ``zero_params`` (zennit composites only: ``"bias"`` ignores biases, as T-FF's composite does)."""

    name = "lrp"
    label = "LRP"
    capabilities = Capabilities(layers=True, conservation=True, linear=True)

    def __init__(self, detector: Detector, *, composite: str = "beta0", layers=(), bn_identity: bool = False,
                 zero_params: str | list[str] | None = None, spec: LRPSpec | None = None):
        self._spec = spec
        super().__init__(detector, composite=composite, layers=layers, bn_identity=bn_identity,
                         zero_params=zero_params)
        if composite not in COMPOSITES:
            raise ValueError(f"composite must be one of {COMPOSITES}, got {composite!r}")
        base = self._spec or _pixel_lrp_spec(detector)
        self.layers = layers
        self.lrp = LRPEngine(detector, bn_identity=bn_identity,
                                spec=base if composite == "beta0" else zennit_spec(base, composite, zero_params))
        self.label = "LRP" if composite == "beta0" else f"LRP {composite}"

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:
        return _pixel_lrp_spec(detector) is not None

    def _supported(self, detector: Detector) -> bool:
        return self._spec is not None or self.supports(detector)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits = self.logits(x)  # the detector's own (canonisation rescales the logit, see .lrp)
        classes = classes_for(target, x, lambda _: logits)

        def start(canonised: torch.Tensor) -> torch.Tensor:
            prediction = torch.where(canonised >= 0, 1.0, -1.0).to(canonised.dtype)
            return target_sign(classes, canonised.dtype) * prediction

        with self.lrp:  # canonised for this batch only: the detector's forward stays its own in between
            res = self.lrp.explain(x, start=start, layers=self.layers)
        return self.explanation(logits=logits, target=classes, input_map=res.pixel,
                                layers=res.layer_relevance or None, relevance=res.start)


class _ViTMethod(Explainer):
    """CP-LRP / AttnLRP through the ViT. Options: ``blocks`` (also the pixel map of each block's share,
    in ``layers`` as ``[B, C, H, W]``; one extra backward pass per block)."""

    capabilities = Capabilities(layers=True, conservation=True, linear=True)
    vit_class: type[ViTLRP] = ViTLRP

    def __init__(self, detector: Detector, *, blocks: bool = False):
        super().__init__(detector, blocks=blocks)
        self.blocks = blocks
        self.vit = self.vit_class(detector)

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:
        return issubclass(detector_type(detector), ClipDetector)

    def _setup(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(self.vit)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        classes = classes_for(target, x, self.logits)
        res = self.vit.explain(x, start=target_sign(classes, x.dtype), blocks=self.blocks)
        layers = {n: res.block_relevance[:, i] for i, n in enumerate(res.layers)}
        if self.blocks:
            layers = {n: res.block_pixel[:, i] for i, n in enumerate(res.layers)}
        return self.explanation(logits=res.output, target=classes, input_map=res.pixel, layers=layers,
                                relevance=res.relevance_in)


@register_explainer
class CPLRP(_ViTMethod):
    """CP-LRP (Ali et al., ICML 2022): attention weights treated as constants (:mod:`.vit_lrp`)."""

    name = "cp_lrp"
    label = "CP-LRP"
    vit_class = ViTLRP


@register_explainer
class AttnLRPMethod(_ViTMethod):
    """AttnLRP (Achtibat et al., ICML 2024): relevance through the softmax and q.k too (:mod:`.attn_lrp`)."""

    name = "attn_lrp"
    label = "AttnLRP"
    vit_class = AttnLRP
