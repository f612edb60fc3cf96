"""Explanations of detectors behind one interface (:mod:`.base`, docs/explainers.md)::

    from forensics.explain import create_explainer, list_explainers
    with create_explainer("lrp", detector) as ex:
        e = ex.attribute(images, target="fake")     # Explanation: e.pixel [B, H, W], positive = evidence for fake

Every registered method is an :class:`Explainer` (``attribute(images, target) -> Explanation``); the
LRP engines underneath (:class:`LRPEngine`, :class:`~.vit_lrp.ViTLRP`, :class:`~.attn_lrp.AttnLRP`)
are not, and take T-FF's labels and starts.

Registered methods (each defined on the detectors its ``supports`` accepts): ``lrp`` (T-FF's beta=0
composite or zennit's named composites, :mod:`.lrp_methods` over :mod:`.lrp`), ``cp_lrp`` and
``attn_lrp`` (CLIP ViTs, :mod:`.vit_lrp`, :mod:`.attn_lrp`), ``gradcam``, ``guided_gradcam``,
``block_gradcam`` (:mod:`.cam`), captum's ``saliency``, ``input_x_gradient``,
``integrated_gradients``, ``smoothgrad``, ``occlusion``, ``gradient_shap`` and the ``random`` control
(:mod:`.captum_methods`).
"""
import warnings

from .base import (FAMILIES, TARGET_NAMES, Capabilities, Explainer, Explanation, create_explainer, explainer_class,
                   list_explainers, register_explainer, resolve_target, target_score, target_sign)
from .lrp import (LRP_CONFIGS, SIGNS, LRPEngine, LRPResult, LRPSpec, explain_lrp, lrp_spec, register_lrp,
                  start_signal)

# Each import registers its methods, in this order.
from . import lrp_methods, cam, captum_methods  # noqa: E402,F401

__all__ = ["FAMILIES", "TARGET_NAMES", "Capabilities", "Explainer", "Explanation", "create_explainer", "explainer_class",
           "list_explainers", "register_explainer", "resolve_target", "target_score", "target_sign",
           "LRP_CONFIGS", "SIGNS", "LRPEngine", "LRPResult", "LRPSpec", "explain_lrp", "lrp_spec",
           "register_lrp", "start_signal"]


def __getattr__(name: str):
    """``LRPExplainer``: the LRP engine's old name (it is not an :class:`Explainer`), kept with a warning."""
    if name == "LRPExplainer":
        warnings.warn("forensics.explain.LRPExplainer is deprecated: the LRP engine is now LRPEngine "
                      "(the registered explainer: create_explainer('lrp', detector))", DeprecationWarning,
                      stacklevel=2)
        return LRPEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
