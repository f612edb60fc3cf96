"""Grad-CAM and Guided Grad-CAM of a detector's logit (Selvaraju et al., ICCV 2017; docs/heatmaps.md),
on pytorch-grad-cam.

Usage (registered as ``gradcam``, ``guided_gradcam`` and, for the CLIP detectors, ``block_gradcam``)::

    e = create_explainer("gradcam", detector).attribute(images, target="fake")   # e.pixel [B, H, W] in [0, 1]
    cams = gradcam(detector, images, target="fake")        # the same maps (also for a module that only
    res = guided_gradcam(detector, images, target="real")  # looks like a detector); .cam, .gradient, .product

What is explained: the detector has ONE logit ``f`` (``P(fake) = sigmoid(f)``). ``target="fake"``
explains ``f`` (``BinaryClassifierOutputTarget(1)``), ``target="real"`` explains ``-f``
(``BinaryClassifierOutputTarget(0)``); the target is always explicit. (The reference passed
``targets=None``, i.e. the argmax over one output, which always explains ``f``.) A tensor of
per-image classes (1 fake, 0 real) gives each image its own target, as
:func:`forensics.explain.base.resolve_target`. The real CAM is
therefore the Grad-CAM of the negated logit: channel weights change sign, so after Grad-CAM's ReLU it
shows the regions the fake CAM suppresses.

Layers: each detector's :meth:`~forensics.detectors.Detector.gradcam_layers` with its
:meth:`~forensics.detectors.Detector.gradcam_reshape` (ResNet-50 ``layer4``, EfB0 ``_conv_head``,
CLIP detectors a block's ``ln_1`` token grid). Everything runs inside the detector's
:meth:`~forensics.detectors.Detector.explain_mode` with an input that requires grad (the parameters
are frozen there; a frozen backbone would otherwise give no gradient at the target layer).

Guided backprop (Springenberg et al.) replaces the backward pass of every ``nn.ReLU`` by the guided
rule. It is only defined for ReLU networks: :func:`relu_network` checks that the detector has
``nn.ReLU`` modules and no other activation module. On EfB0 (SiLU/swish) and the CLIP detectors
(QuickGELU/GELU, a ReLU only in RINE's head) there is no ReLU to guide, so the reference's "guided"
gradient is just the plain input gradient (our reading of the reference code; docs/heatmaps.md). Here
such a detector gets the plain gradient, ``GuidedGradCAM.guided`` is ``False`` and the result is labelled
"Grad-CAM x gradient" (never "Guided Grad-CAM"), with a logged warning.

Restoration: hooks are removed, ReLU modules swapped for the guided ones are put back (the same
instances), parameter ``.grad`` (which pytorch-grad-cam's ``zero_grad`` clears), ``requires_grad``
flags and train/eval mode are restored; the detector's forward is bit-identical afterwards.

Differences from the reference: batched guided backprop (pytorch-grad-cam's
``GuidedBackpropReLUModel`` explains only the first image of a batch, argmax-indexes a 2-D output and
re-creates ``nn.ReLU()`` modules without ``inplace``, so it is not used as is; its
``GuidedBackpropReLUasModule`` is); CAMs are min-max scaled per image as pytorch-grad-cam does.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUasModule
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

from ..detectors import Detector
from ..detectors.clip_backbone import ClipDetector
from ._context import keep_grads
from .base import Capabilities, Explainer, Explanation, Target, detector_type, register_explainer
from .inputs import check_target, classes_for, model_input, resolve_target

log = logging.getLogger(__name__)

TARGETS = ("fake", "real")

#: Activation modules other than ReLU: a detector holding any of them is not a ReLU network.
_OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.PReLU, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Softplus)
_OTHER_ACTIVATION_NAMES = ("GELU", "Swish", "SiLU")  # e.g. open_clip's QuickGELU, efficientnet's Swish


# ---------------------------------------------------------------------------- targets and restoration
def _classes(target: str | torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    """Per-image classes of an explicit target: ``"fake"``/``"real"`` or ``n`` classes (never implicit)."""
    return resolve_target(check_target(target, n, TARGETS), torch.zeros(n)).cpu()


def cam_targets(target: str | torch.Tensor | Sequence[int], n: int) -> list[BinaryClassifierOutputTarget]:
    """pytorch-grad-cam targets for ``n`` images: ``BinaryClassifierOutputTarget(1)`` (fake) or ``(0)`` (real)."""
    return [BinaryClassifierOutputTarget(int(c)) for c in _classes(target, n)]


@contextlib.contextmanager
def _explaining(detector: Detector) -> Iterator[Detector]:
    """``explain_mode`` plus restoration of every parameter's ``.grad`` (pytorch-grad-cam calls
    ``model.zero_grad()``, which would drop them)."""
    with keep_grads(detector), detector.explain_mode():
        yield detector


def _input(detector: Detector, images: torch.Tensor) -> torch.Tensor:
    """A fresh leaf copy of ``images`` on the detector's device and dtype that requires grad."""
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    return model_input(detector, images, requires_grad=True)


# ---------------------------------------------------------------------------- Grad-CAM
def gradcam(detector: Detector, images: torch.Tensor, target: str | torch.Tensor = "fake") -> torch.Tensor:
    """Grad-CAM of ``images`` (normalised ``[B, C, H, W]``, one batch) for ``target``
    (``"fake"``: the logit, ``"real"``: the negated logit, or per-image classes) at the detector's
    Grad-CAM layers.

    Returns float32 ``[B, H, W]`` on the CPU, each map min-max scaled to [0, 1] (an all-zero map
    stays 0). The detector is restored exactly afterwards.
    """
    x = _input(detector, images)
    targets = cam_targets(target, x.shape[0])
    with _explaining(detector), GradCAM(model=detector, target_layers=detector.gradcam_layers(),
                                        reshape_transform=detector.gradcam_reshape()) as cam:
        maps = cam(input_tensor=x, targets=targets)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))


# ---------------------------------------------------------------------------- guided backprop
def relu_network(detector: Detector) -> bool:
    """Whether guided backprop is meaningful: the detector has ``nn.ReLU`` modules and no other
    activation module (checked inside explain mode, where EfB0's swish is ``nn.SiLU``). Functional
    activations (``torch.sigmoid`` in a forward) cannot be seen."""
    with detector.explain_mode():
        mods = list(detector.modules())
    has_relu = any(type(m) is nn.ReLU for m in mods)
    other = any(isinstance(m, _OTHER_ACTIVATIONS) or any(s in type(m).__name__ for s in _OTHER_ACTIVATION_NAMES)
                for m in mods)
    return has_relu and not other


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[int]:
    """Swap every ``nn.ReLU`` child for pytorch-grad-cam's guided ReLU; put the SAME instances back
    on exit. Yields how many were swapped."""
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.ReLU]
    guided = GuidedBackpropReLUasModule()
    for parent, name, _ in swapped:
        setattr(parent, name, guided)
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def input_gradient(detector: Detector, images: torch.Tensor, target: str | torch.Tensor = "fake",
                   guided: bool = True) -> torch.Tensor:
    """Gradient of ``s * f`` (``s`` = +1 fake / -1 real per image, from ``target``) with respect to the
    input, ``[B, C, H, W]`` on the CPU, batched. ``guided``: guided backprop through every ``nn.ReLU``
    (raises if the detector is not a :func:`relu_network`)."""
    if guided and not relu_network(detector):
        raise ValueError(f"{detector.name} is not a ReLU network: guided backprop would be a plain gradient "
                         "(pass guided=False, or use guided_gradcam, which labels it)")
    x = _input(detector, images)
    signs = (2 * _classes(target, x.shape[0]) - 1).to(x)
    with _explaining(detector), (_guided_relus(detector) if guided else contextlib.nullcontext()):
        with torch.enable_grad():
            logits = detector(x)
            if logits.ndim != 1:
                raise ValueError(f"{detector.name}: expected one logit per image, got {tuple(logits.shape)}")
            (grad,) = torch.autograd.grad(logits, x, grad_outputs=signs.to(logits.dtype))
    return grad.detach().cpu()


@dataclass
class GuidedGradCAM:
    """One explained batch: ``cam`` ``[B, H, W]`` in [0, 1]; ``gradient`` ``[B, C, H, W]`` (guided
    backprop when ``guided``, else the plain input gradient); ``product`` = ``cam[:, None] * gradient``
    (Guided Grad-CAM when ``guided``, else "Grad-CAM x gradient"); ``target`` as given."""

    cam: torch.Tensor
    gradient: torch.Tensor
    guided: bool
    target: str | torch.Tensor

    @property
    def product(self) -> torch.Tensor:
        return self.cam[:, None] * self.gradient

    @property
    def label(self) -> str:
        return "Guided Grad-CAM" if self.guided else "Grad-CAM x gradient"


#: Detectors already warned about (in this process) that guided backprop degenerates on them.
_WARNED_NOT_GUIDED: set[str] = set()


def guided_gradcam(detector: Detector, images: torch.Tensor, target: str | torch.Tensor = "fake") -> GuidedGradCAM:
    """Grad-CAM times guided backprop (Selvaraju et al., ICCV 2017; docs/heatmaps.md) for a ReLU network;
    for any other detector the plain gradient replaces guided backprop and the result says so
    (``guided=False``, a warning)."""
    guided = relu_network(detector)
    if not guided and detector.name not in _WARNED_NOT_GUIDED:  # once per detector, not once per batch
        _WARNED_NOT_GUIDED.add(detector.name)
        log.warning("%s has non-ReLU activations: guided backprop degenerates to the plain gradient; "
                    "computing Grad-CAM x gradient instead of Guided Grad-CAM", detector.name)
    cam = gradcam(detector, images, target)
    grad = input_gradient(detector, images, target, guided=guided)
    return GuidedGradCAM(cam=cam, gradient=grad, guided=guided, target=target)


def block_gradcam(detector: Detector, images: torch.Tensor, blocks: Sequence[int],
                  target: str | torch.Tensor = "fake") -> dict[int, torch.Tensor]:
    """Grad-CAM (:func:`gradcam`) on the token grid of each chosen block's ``ln_1`` (the CLIP
    detectors' ``cam_block`` option, set temporarily), ``{block: [B, H, W]}``."""
    if not hasattr(detector, "cam_block"):
        raise TypeError(f"{detector.name}: per-block Grad-CAM needs a CLIP detector (cam_block option)")
    saved = detector.cam_block
    out: dict[int, torch.Tensor] = {}
    try:
        for b in blocks:
            detector.cam_block = int(b)
            out[int(b)] = gradcam(detector, images, target=target)
    finally:
        detector.cam_block = saved
    return out


# ---------------------------------------------------------------------------- registered explainers
class _CAMExplainer(Explainer):
    """Grad-CAM family: pytorch-grad-cam manages its own hooks per call, so entering sets up nothing
    beyond the base class's restoration of ``.grad``; each call enters explain mode itself."""

    def _setup(self, stack: contextlib.ExitStack) -> None:
        return None

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:
        return True

    def _logits_and_classes(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, classes)``: one plain forward in explain mode (the CAM calls do their own)."""
        with self.detector.explain_mode():
            logits = self.logits(x)
        return logits, classes_for(target, x, lambda _: logits)


@register_explainer
class GradCAMExplainer(_CAMExplainer):
    """Grad-CAM (Selvaraju et al., ICCV 2017) at the detector's Grad-CAM layer, min-max scaled per image
    (unsigned: the target's positively weighted activation)."""

    name = "gradcam"
    label = "Grad-CAM"
    capabilities = Capabilities(family="importance", input_map=False)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits, classes = self._logits_and_classes(x, target)
        return self.explanation(logits=logits, target=classes, pixel=gradcam(self.detector, x, classes))


@register_explainer
class GuidedGradCAMExplainer(_CAMExplainer):
    """Guided Grad-CAM: Grad-CAM x guided backprop on ReLU networks (``input_map`` the product, signed);
    on other detectors Grad-CAM x the plain gradient, labelled so (``label``)."""

    name = "guided_gradcam"
    label = "Guided Grad-CAM"
    capabilities = Capabilities(family="sensitivity")

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits, classes = self._logits_and_classes(x, target)
        res = guided_gradcam(self.detector, x, classes)
        return self.explanation(logits=logits, target=classes, input_map=res.product, label=res.label)


@register_explainer
class BlockGradCAMExplainer(_CAMExplainer):
    """Grad-CAM on each transformer block's ``ln_1`` token grid (CLIP detectors). Option ``blocks``
    (indices; default all). ``layers``: ``{"blocks.<b>": [B, H, W]}``; ``pixel`` their mean."""

    name = "block_gradcam"
    label = "block Grad-CAM"
    capabilities = Capabilities(family="importance", input_map=False, layers=True)

    def __init__(self, detector: Detector, *, blocks: Sequence[int] | None = None):
        super().__init__(detector, blocks=blocks)
        self.blocks = list(range(detector.clip.blocks)) if blocks is None else [int(b) for b in blocks]

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:
        return issubclass(detector_type(detector), ClipDetector)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits, classes = self._logits_and_classes(x, target)
        maps = block_gradcam(self.detector, x, self.blocks, classes)
        layers = {f"blocks.{b}": m for b, m in maps.items()}
        return self.explanation(logits=logits, target=classes, pixel=torch.stack(list(maps.values())).mean(0),
                                layers=layers)
