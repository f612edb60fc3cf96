"""One explainer interface for every method and detector (docs/explainers.md).

Usage::

    from forensics.explain import create_explainer, list_explainers
    list_explainers(detector)                       # the methods defined on this detector
    with create_explainer("lrp", detector) as ex:   # enters explain mode (and canonises, for LRP)
        e = ex.attribute(images, target="fake")     # -> Explanation
    e.pixel          # [B, H, W] float32 on the CPU: positive = evidence for the target class
    e.input_map      # [B, C, H, W] where the method has one (else None)
    e.logits, e.target, e.method, e.layers
    # on exit the detector is bit-identical to before (parameters, buffers, hooks, flags, .grad)

**What is explained** is defined here, once, for every method. Each detector has ONE logit ``f``
(``P(fake) = sigmoid(f)``). The target class of an image is 1 (fake) or 0 (real); the explained
score is the target's logit ``g = s * f`` with ``s = +1`` for fake and ``s = -1`` for real
(:func:`target_sign`), as a two-class softmax over ``(-f/2, f/2)`` would give. ``target`` is
``"fake"``, ``"real"``, ``"predicted"`` (``f >= 0``, i.e. ``p >= 0.5``, is fake) or a tensor of
per-image classes (e.g. the true labels); :func:`resolve_target` turns it into ``[B]`` classes
(:mod:`.inputs`, where the images and targets of every method are checked).

**Sign convention**: positive values of ``pixel``/``input_map`` are evidence FOR the target class
(they raise ``g``), negative values evidence against it. How the values read is each method's
:attr:`Capabilities.family`: ``evidence`` (signed contributions to ``g``), ``sensitivity`` (signed
gradients of ``g``) or ``importance`` (Grad-CAM, saliency's absolute gradient, the random control:
values >= 0 that mean "important for the target"; :attr:`Capabilities.signed` is False). ``pixel`` is ``input_map`` summed over the colour channels.

Methods register with :func:`register_explainer`; each declares its :class:`Capabilities` and which
detectors it is defined on (:meth:`Explainer.supports`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch

from ..detectors import Detector
from ._context import StackedContext, keep_grads
from .inputs import (TARGET_NAMES, Target, check_target, classes_for, float_dtype, model_input, resolve_target,
                     target_score, target_sign)


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Explanation:
    """One explained batch, detached, on the CPU.

    ``pixel`` ``[B, H, W]`` float32 (positive = evidence for the target, see the module docstring);
    ``input_map`` ``[B, C, H, W]`` where the method has one (``pixel`` is its sum over ``C``);
    ``logits`` ``[B]`` the detector's (the ViT LRP methods read them from the forward pass under their
    rules, equal up to float rounding); ``target`` ``[B]`` the resolved classes (1 fake / 0 real);
    ``method`` the registry name; ``label`` a human-readable name (figures); ``layers``
    ``{layer: tensor}`` per-layer or per-block relevance where the method has it (CNN LRP:
    ``[B, C, H, W]`` at the conv outputs; ViT LRP: ``[B]`` at each block's tap, or with ``blocks=True`` the
    ``[B, C, H, W]`` pixel map of each block's share; block Grad-CAM:
    ``[B, H, W]`` per block). LRP family: ``relevance`` ``[B]`` is the relevance entering at the
    logit and ``absorbed`` ``[B]`` what the additive terms (biases, embeddings, stabilisers, AttnLRP's
    softmax) took, so ``pixel.sum((1, 2)) + absorbed == relevance``."""

    pixel: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    method: str
    label: str = ""
    input_map: torch.Tensor | None = None
    layers: Mapping[str, torch.Tensor] | None = None
    relevance: torch.Tensor | None = None
    absorbed: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def __len__(self) -> int:
        return int(self.logits.shape[0])


def make_explanation(method: str, label: str, *, logits: torch.Tensor, target: torch.Tensor,
                     input_map: torch.Tensor | None = None, pixel: torch.Tensor | None = None,
                     layers: Mapping[str, torch.Tensor] | None = None, relevance: torch.Tensor | None = None
                     ) -> Explanation:
    """Build an :class:`Explanation` (moved to the CPU, float32; ``pixel`` = ``input_map`` summed over
    channels when not given; ``absorbed = relevance - pixel sum`` when ``relevance`` is given)."""
    def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().to("cpu", torch.float32)

    input_map = cpu(input_map)
    if pixel is None:
        if input_map is None:
            raise ValueError("an explanation needs a pixel map or an input map")
        pixel = input_map.sum(dim=1)
    pixel = cpu(pixel)
    relevance = cpu(relevance)
    absorbed = None if relevance is None else relevance - pixel.flatten(1).sum(1)
    return Explanation(pixel=pixel, logits=cpu(logits), target=target.detach().cpu(), method=method, label=label,
                       input_map=input_map, layers=None if layers is None else {k: cpu(v) for k, v in layers.items()},
                       relevance=relevance, absorbed=absorbed)


# ---------------------------------------------------------------------------- explainers
#: How a method's values read (docs/explainers.md, "What is explained, and the sign").
FAMILIES = ("evidence", "sensitivity", "importance")
Family = Literal["evidence", "sensitivity", "importance"]


@dataclass(frozen=True)
class Capabilities:
    """What a method gives: ``family`` (how its values read: ``"evidence"``, signed contributions to the
    target's score; ``"sensitivity"``, signed gradients of it; ``"importance"``, unsigned, >= 0),
    ``input_map`` (a ``[B, C, H, W]`` map besides ``pixel``), ``layers`` (per-layer / per-block
    relevance), ``conservation`` (LRP family: ``relevance``/``absorbed``), ``linear`` (the map is
    linear in the explained score ``g``, so explaining the other class negates it), ``stochastic``
    (uses the ``seed`` option). ``signed``: values of both signs (every family but importance)."""

    family: Family = "evidence"
    input_map: bool = True
    layers: bool = False
    conservation: bool = False
    linear: bool = False
    stochastic: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")

    @property
    def signed(self) -> bool:
        return self.family != "importance"


class Explainer(StackedContext):
    """Base of every registered method (docs/explainers.md, "Adding a method"). Subclasses set
    ``name``/``label``/``capabilities``, implement :meth:`supports` and :meth:`_attribute`, and may
    override :meth:`_setup` (the temporary model changes, on an ``ExitStack``; default: the
    detector's explain mode). Use as a context manager to set up once for many batches;
    :meth:`attribute` outside a ``with`` block enters and leaves around the one call. Every
    parameter's ``.grad`` is restored on exit."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    capabilities: Capabilities = Capabilities()

    def __init__(self, detector: Detector, **options: Any):
        if not self._supported(detector):
            raise NotImplementedError(f"{self.name} is not defined on detector {detector.name!r}; "
                                      f"methods for it: {list_explainers(detector)}")
        self.detector = detector
        self.options = options
        self._stack: contextlib.ExitStack | None = None

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _supported(self, detector: Detector) -> bool:
        return self.supports(detector)

    def _context_name(self) -> str:
        return f"{self.name} explainer"

    def _enter(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(keep_grads(self.detector))
        self._setup(stack)

    def _setup(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(self.detector.explain_mode())

    def attribute(self, images: torch.Tensor, target: Target = "fake") -> Explanation:
        """Explain normalised ``images`` ``[B, C, H, W]`` (moved to the detector's device and dtype)
        for ``target`` (see :func:`~forensics.explain.inputs.resolve_target`)."""
        if images.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        target = check_target(target, images.shape[0])
        if not self.active:
            with self:
                return self.attribute(images, target)
        return self._attribute(model_input(self.detector, images), target)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits ``[B]`` as it is now (inside the explainer: in explain mode)."""
        with torch.no_grad():
            out = self.detector(x)
        if out.ndim != 1:
            raise ValueError(f"{self.detector.name}: expected one logit per image, got shape {tuple(out.shape)}")
        return out

    def explanation(self, label: str | None = None, **kwargs: Any) -> Explanation:
        return make_explanation(self.name, label or self.label, **kwargs)


# ---------------------------------------------------------------------------- registry
_EXPLAINERS: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _EXPLAINERS:
        raise ValueError(f"explainer {cls.name!r} registered twice")
    _EXPLAINERS[cls.name] = cls
    return cls


def list_explainers(detector: Detector | str | None = None) -> list[str]:
    """Registered method names, in registration order; with ``detector`` (an instance or a registered
    detector name) only the methods defined on it."""
    return [n for n, cls in _EXPLAINERS.items() if detector is None or cls.supports(detector)]


def explainer_class(method: str) -> type[Explainer]:
    try:
        return _EXPLAINERS[method]
    except KeyError:
        raise KeyError(f"unknown explainer {method!r}; registered: {', '.join(_EXPLAINERS)}") from None


def create_explainer(method: str, detector: Detector, **options: Any) -> Explainer:
    """An explainer of ``detector`` with ``method`` and its ``options`` (see each method's class)."""
    return explainer_class(method)(detector, **options)


def detector_type(detector: Detector | str) -> type[Detector]:
    """The class of a detector instance, or of a registered detector name."""
    if isinstance(detector, Detector):
        return type(detector)
    from ..detectors import detector_class
    return detector_class(detector)


def detector_name(detector: Detector | str) -> str:
    return detector.name if isinstance(detector, Detector) else str(detector)


__all__ = ["FAMILIES", "TARGET_NAMES", "Capabilities", "Explainer", "Explanation", "create_explainer", "explainer_class",
           "list_explainers", "make_explanation", "register_explainer", "resolve_target", "target_score",
           "target_sign", "classes_for", "float_dtype", "model_input"]
