"""Layer-wise relevance propagation (Bach et al., PLoS ONE 2015) of a detector's logit with T-FF's
"beta = 0" composite (Chandrasegaran et al., ECCV 2022; docs/ffrs.md, "Relevance"), on zennit.

Usage::

    with LRPEngine(detector) as lrp:                # explain mode + canonisation + rules
        res = lrp.explain(images, labels, layers=None)  # None: every feature layer
    res.pixel              # [B, 3, H, W] input relevance
    res.layer_relevance    # {feature-layer name: [B, C, H, W]} at the folded conv outputs
    # on exit the detector is bit-identical to before (parameters, buffers, forward, hooks)
    with LRPEngine(detector) as lrp:                # FF-RS: each layer reduced inside the backward pass
        res = lrp.explain_reduced(images, channel_shares, labels)  # {layer: [B, C]}, no full maps kept

What is explained (docs/explainers.md, "What is explained, and the sign"): one forward pass; the
gradient handed to the logit ("start") is +1 for a fake sample and -1 for a real one, only for
CORRECTLY classified samples (``p >= 0.5`` is fake), 0 otherwise. Because the fc epsilon rule divides
by the logit, the relevance entering the network sums to about ``start * (f - b) / f``, i.e. about +-1,
whatever ``f`` is.

``sign="correct"`` (not the reference) explains the logit of the TRUE class with unit relevance:
``g = f`` for a fake, ``g = -f`` for a real. Every rule is odd in the explained output (the fc
epsilon rule gives ``x_i w_i R / f`` for ``f`` and ``x_i (-w_i) R / (-f)`` for ``-f``, and all
lower rules are linear in R), so this equals a start of +1 at ``f`` for every included sample.
Positive relevance then always means evidence for the true class. The reference's -1 start on
reals instead makes positive relevance on a real image mean evidence for FAKE (a choice of the
reference code worth knowing); it is the default because the shipped real CSVs were computed that way.

Per-sample control: ``labels`` (0 real / 1 fake; ``None`` = the predicted class), ``include`` (a
boolean mask replacing the "correctly classified" filter) or an explicit ``start`` vector.

The rules run as autograd functions (:mod:`.lrp_hooks`): the same relevance as zennit's rule hooks
(bit for bit on R50 and EfB0), computed without the module gradients those hooks discard, without
z+'s all-zero negative branch on ReLU inputs, and keeping only the inputs the rules read.

Measurement points (docs/ffrs.md, "Feature maps"): relevance arriving at each feature layer's conv output after its
BN is folded in (pre-activation), read with tensor hooks, keyed by the detector's layer names.

Detectors plug in through :func:`register_lrp` (an :class:`LRPSpec`: canonizers, which conv gets the
z^B rule, extra rules, scope), which stores the spec on the detector's registry entry;
:data:`LRP_CONFIGS` is the live view ``detector name -> LRPSpec``; no code branches on detector
names. Registered: ``resnet50``, ``efb0`` (T-FF) and ``rine`` (not in T-FF: head-only LRP from the
logit to the per-block CLS tokens, see its spec's ``notes``; no pixel relevance).

Deliberate differences from the reference:

- The detector is canonised in place, temporarily (zennit), instead of copying it into a separate
  LRP model; the BN fold and the "reset BN" scale 1/sqrt(1+eps) are the reference's (optional
  ``bn_identity=True`` makes that leftover BN a true identity; the logit then equals the detector's).
- EfB0: the reference's LRP copy keeps ImageNet SE weights (docs/ffrs.md, "Differences from the
  reference code"); here the SE convs
  are the detector's own (there is no copy, and ImageNet weights are unavailable offline anyway),
  so the explained logit is the detector's own logit (up to the reset-BN scale).
- A sample whose relevance is exactly zero everywhere stays zero (no NaN anywhere here).
- On CUDA, TF32 is disabled while explaining (``reference_precision=True``, restored on exit): TF32
  moves omega by ~3e-3 (measured in this project).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from zennit.canonizers import Canonizer
from zennit.core import Composite

from ..detectors import Detector
from ..detectors.registry import FactView, register_fact
from ._context import StackedContext
from .inputs import check_classes, model_input
from .canonizers import (BatchNormIdentity, EfficientNetBlockCanonizer, RineHeadCanonizer, merge_feature_layer_bn,
                         resnet_canonizers)
from .lrp_rules import beta0_composite, zbox_bounds

log = logging.getLogger(__name__)

SIGNS = ("reference", "correct")
LRP_FACT = "lrp"


# ---------------------------------------------------------------------------- per-detector specs
@dataclass(frozen=True)
class LRPSpec:
    """How to put one detector architecture into LRP form.

    ``canonizers(detector)``: zennit canonizers (applied in order, reverted on exit).
    ``zbox_layer``: feature-layer name whose conv gets the bounded z^B rule (box from the
    detector's preprocessing mean/std), or ``None``. ``extra_layer_map()``: ``(module types, rule)``
    pairs matched before the standard beta=0 map. ``point``: the measurement point (of
    :class:`~forensics.detectors.probes.FeatureLayer`) whose module output is read as layer relevance.
    ``scope``: attach rules only to this submodule (``None``: everywhere). ``head_only``: relevance
    stops at the feature layers, whose outputs become leaves (no pixel relevance; what comes before
    them is neither differentiated nor explained). ``composite``: a factory replacing the beta=0
    composite altogether.
    """

    canonizers: Callable[[Detector], list[Canonizer]]
    zbox_layer: str | None = None
    extra_layer_map: Callable[[], list] = list
    point: str = "pre_bn"
    scope: str | None = None
    head_only: bool = False
    composite: Callable[["LRPSpec", Detector, bool], Composite] | None = None
    notes: str = ""

    def build_composite(self, detector: Detector, bn_identity: bool = False, zennit_hooks: bool = False) -> Composite:
        """The composite (``zennit_hooks``: zennit's own rule hooks instead of :mod:`.lrp_hooks`,
        for comparisons; ignored by a ``composite`` factory)."""
        if self.composite is not None:
            return self.composite(self, detector, bn_identity)
        canonizers = list(self.canonizers(detector))
        if bn_identity:
            canonizers.append(BatchNormIdentity())
        zbox = None
        if self.zbox_layer is not None:
            pre = detector.config.preprocessing
            zbox = (detector.feature_layer(self.zbox_layer).modules[self.point], *zbox_bounds(pre.mean, pre.std))
        return beta0_composite(canonizers, zbox=zbox, extra_layer_map=self.extra_layer_map(), scope=self.scope,
                               zennit_hooks=zennit_hooks)


#: ``{detector name: LRPSpec}``, read live from the detector registry (each spec is a fact of its
#: detector's entry, declared with :func:`register_lrp`).
LRP_CONFIGS: Mapping[str, LRPSpec] = FactView(LRP_FACT)


def register_lrp(name: str, spec: LRPSpec) -> LRPSpec:
    """Declare ``spec`` as the LRP spec of the detector registered as ``name`` (once)."""
    return register_fact(LRP_FACT, name)(spec)


def lrp_spec(detector: Detector) -> LRPSpec:
    try:
        return LRP_CONFIGS[detector.name]
    except KeyError:
        raise NotImplementedError(f"no LRP spec for detector {detector.name!r}; LRP is available for "
                                  f"{sorted(LRP_CONFIGS)}") from None


register_lrp("resnet50", LRPSpec(
    canonizers=lambda detector: resnet_canonizers(),
    zbox_layer="conv1",
    notes="zennit's ResNetCanonizer (BN folded, reset-BN scale kept) with the residual add as a "
          "two-input ResidualSum module (epsilon) instead of a Sum over a stacked copy; z^B on conv1 "
          "(docs/ffrs.md, \"Relevance\")."))

register_lrp("efb0", LRPSpec(
    canonizers=lambda detector: [merge_feature_layer_bn(detector), EfficientNetBlockCanonizer()],
    zbox_layer=None,
    notes="BN folded into every feature conv; skip add as ResidualSum and SE product as GatedProduct; z+ on "
          "the stem as the reference (use_zbeta=False); the detector's own SE weights (the reference "
          "keeps ImageNet SE weights, docs/ffrs.md)."))

register_lrp("rine", LRPSpec(
    canonizers=lambda detector: [RineHeadCanonizer()],
    scope="rine_head",
    head_only=True,
    notes="Not in T-FF. Head-only LRP from the logit to the captured per-block CLS tokens (the taps, "
          "RINE's feature layers): epsilon (1e-6, bias kept) on every head Linear (Q1 shared over blocks, "
          "Q2, the classifier), ReLU pass, dropout identity in eval, the TIE weighted sum over blocks as a "
          "fixed linear combination (epsilon, relevance proportional to A_bd * y_bd). The CLIP backbone is "
          "not explained (no pixel relevance)."))


# ---------------------------------------------------------------------------- start signal
def start_signal(logits: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
                 include: torch.Tensor | Sequence[bool] | None = None, sign: str = "reference") -> torch.Tensor:
    """The gradient handed to each logit (docs/explainers.md, "What is explained, and the sign").

    ``labels``: 0 real / 1 fake per sample (``None``: the predicted class, so every sample counts
    as correct). ``include``: which samples are explained (``None``: the correctly classified ones,
    ``p = sigmoid(f) >= 0.5`` meaning fake, as the reference). ``sign``: ``"reference"`` (+1 fake,
    -1 real) or ``"correct"`` (+1 for both: unit relevance on the true class's logit, see the
    module docstring). Returns a float tensor like ``logits`` with values in {-1, 0, +1}.
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    logits = logits.detach()
    fake_pred = torch.sigmoid(logits) >= 0.5
    if labels is None:
        fake = fake_pred
    else:
        labels = check_classes(labels, logits.numel(), device=logits.device, what="labels",
                               hint=" (pass labels=None to explain the predicted class)")
        fake = labels == 1
    if include is None:
        keep = fake == fake_pred
    else:
        keep = torch.as_tensor(include, device=logits.device).reshape(-1).bool()
        if keep.shape != logits.shape:
            raise ValueError(f"include has {keep.numel()} entries for {logits.numel()} logits")
    signs = torch.ones_like(logits) if sign == "correct" else torch.where(fake, 1.0, -1.0).to(logits)
    return signs * keep.to(logits.dtype)


# ---------------------------------------------------------------------------- explainer
@dataclass
class LRPResult:
    """One explained batch. ``logits`` ``[B]`` are those of the explained (canonised) model (the
    reference filters confidence on them); ``start`` ``[B]`` the gradient handed to each logit;
    ``pixel`` ``[B, C, H, W]`` the input relevance (``None`` for head-only specs such as RINE's);
    ``layer_relevance`` ``{layer: [B, C, H, W]}`` (``[B, C]`` for token features) for the requested
    feature layers (relevance at the folded conv outputs). All detached, on the detector's device."""

    logits: torch.Tensor
    start: torch.Tensor
    pixel: torch.Tensor | None
    layer_relevance: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def __len__(self) -> int:
        return int(self.logits.shape[0])


class LRPEngine(StackedContext):
    """The LRP engine: explain a detector with T-FF's beta=0 LRP composite, or its spec's composite
    (see the module docstring). Not an :class:`~forensics.explain.Explainer`: it takes labels, starts
    and layers as T-FF does; the registered ``lrp`` explainer (:mod:`.lrp_methods`) wraps it behind
    ``attribute``.

    Use as a context manager to canonise once for many batches (:meth:`explain` outside a ``with``
    block enters and leaves it around the one call). Inside the block the detector is in
    :meth:`~forensics.detectors.Detector.explain_mode`, canonised (BN folded, rule-bearing modules
    in place) and hooked; it must not be used for anything else meanwhile (its forward computes the
    canonised model, whose logit differs from the detector's by the reset-BN scale). On exit
    everything is restored exactly.
    """

    def __init__(self, detector: Detector, *, bn_identity: bool = False, reference_precision: bool = True,
                 spec: LRPSpec | None = None):
        self.detector = detector
        self.spec = spec if spec is not None else lrp_spec(detector)
        self.bn_identity = bn_identity
        self.reference_precision = reference_precision
        self._stack: contextlib.ExitStack | None = None

    # ------------------------------------------------------------------ context
    def _enter(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(self.detector.explain_mode())
        if self.reference_precision and self.detector.device.type == "cuda":
            stack.enter_context(_no_tf32())
        composite = self.spec.build_composite(self.detector, bn_identity=self.bn_identity)
        stack.callback(composite.remove)  # before register: also undoes a partial registration
        composite.register(self.detector)
        # BN merging creates bias Parameters (requires_grad=True); keep everything frozen. They
        # are discarded when the canonizers are removed; explain_mode restores the originals.
        for p in self.detector.parameters():
            p.requires_grad_(False)
        _check_batchnorms_merged(self.detector)

    # ------------------------------------------------------------------ explain
    def layer_names(self, layers: Iterable[str] | str | None) -> list[str]:
        """Resolve ``layers``: ``None`` = every feature layer, a name or names (checked)."""
        if layers is None:
            return [fl.name for fl in self.detector.feature_layers()]
        if isinstance(layers, str):
            layers = [layers]
        return [self.detector.feature_layer(name).name for name in layers]

    def explain(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, *,
                include: torch.Tensor | Sequence[bool] | None = None,
                start: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                layers: Iterable[str] | str | None = (), sign: str = "reference") -> LRPResult:
        """LRP of one batch of normalised images ``[B, C, H, W]`` (moved to the detector's device
        and floating dtype).

        ``labels``/``include``/``sign``: see :func:`start_signal`; ``start`` (``[B]``, or a function
        of the logits of this pass returning it) overrides them with an explicit gradient at the logits. ``layers``: feature layers whose relevance is
        returned (``()`` none, the default; ``None`` all; or names).
        """
        if not self.active:
            with self:
                return self.explain(images, labels, include=include, start=start, layers=layers, sign=sign)
        return self._run(images, labels, include, start, layers, sign, reduce=None)

    def explain_reduced(self, images: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor],
                        labels: torch.Tensor | Sequence[int] | None = None, *,
                        include: torch.Tensor | Sequence[bool] | None = None, start: torch.Tensor | None = None,
                        layers: Iterable[str] | str | None = None, sign: str = "reference") -> LRPResult:
        """:meth:`explain`, but each requested layer's relevance is passed through ``reduce``
        (e.g. :func:`forensics.analysis.ffrs.channel_shares`, ``[B, C, H, W]`` -> ``[B, C]``) the
        moment the backward pass has computed it, and only ``reduce``'s result is kept: no full
        relevance map outlives its layer. ``layer_relevance`` then holds the reduced tensors and
        ``pixel`` is ``None``. ``layers`` defaults to every feature layer."""
        if not self.active:
            with self:
                return self.explain_reduced(images, reduce, labels, include=include, start=start, layers=layers,
                                            sign=sign)
        return self._run(images, labels, include, start, layers, sign, reduce=reduce)

    def _run(self, images, labels, include, start, layers, sign, reduce) -> LRPResult:
        names = self.layer_names(layers)
        head_only = self.spec.head_only
        if head_only and not names:
            raise ValueError(f"{self.detector.name}: LRP stops at the feature layers (no pixel relevance); "
                             "request layers (None = all)")
        x = model_input(self.detector, images, requires_grad=not head_only)
        captured: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for name in names:
                module = self.detector.get_submodule(self.detector.feature_layer(name).modules[self.spec.point])
                hook = _leaf_output(name, captured) if head_only else _capture_grad(name, captured, reduce)
                handles.append(module.register_forward_hook(hook))
            with torch.enable_grad():
                logits = self.detector(x)
                if logits.ndim != 1:
                    raise ValueError(f"{self.detector.name}: expected one logit per image, got shape "
                                     f"{tuple(logits.shape)}")
                if start is None:
                    start_vec = start_signal(logits, labels, include, sign)
                elif callable(start):  # a function of this pass's logits (forensics.explain.lrp_methods)
                    start_vec = start(logits.detach())
                else:
                    start_vec = torch.as_tensor(start, dtype=logits.dtype, device=logits.device).reshape(-1)
                    if start_vec.shape != logits.shape:
                        raise ValueError(f"start has {start_vec.numel()} entries for {logits.numel()} logits")
                if head_only:
                    grads = torch.autograd.grad(logits, [captured[n] for n in names], grad_outputs=start_vec)
                    captured, pixel = dict(zip(names, grads)), None
                    if reduce is not None:
                        captured = {n: reduce(g) for n, g in captured.items()}
                else:
                    (pixel,) = torch.autograd.grad(logits, x, grad_outputs=start_vec)
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in names if n not in captured]
        if missing:
            raise RuntimeError(f"{self.detector.name}: no relevance reached layers {missing[:3]} "
                               f"({len(missing)} in all); are they on the path from the input to the logit?")
        return LRPResult(logits=logits.detach(), start=start_vec.detach(),
                         pixel=None if pixel is None or reduce is not None else pixel.detach(),
                         layer_relevance={n: captured[n].detach() for n in names})


def explain_lrp(detector: Detector, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
                **kwargs) -> LRPResult:
    """One-shot :meth:`LRPEngine.explain` (canonises, explains one batch, restores).
    ``bn_identity``/``reference_precision``/``spec`` go to the explainer, the rest to ``explain``."""
    opts = {k: kwargs.pop(k) for k in ("bn_identity", "reference_precision", "spec") if k in kwargs}
    with LRPEngine(detector, **opts) as lrp:
        return lrp.explain(images, labels, **kwargs)


def _capture_grad(name: str, store: dict[str, torch.Tensor],
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Forward hook: a tensor hook on the module's output stores the gradient arriving there
    (= the relevance at that output), or ``reduce`` of it, under ``name``."""
    def hook(_module, _inputs, output):
        if name in store or getattr(output, "grad_fn", None) is None:
            return None

        def keep(grad: torch.Tensor) -> None:
            store[name] = grad.detach() if reduce is None else reduce(grad.detach())
        output.register_hook(keep)
        return None
    return hook


def _leaf_output(name: str, store: dict[str, torch.Tensor]):
    """Forward hook (head-only LRP): replace the module's output by a detached leaf that requires
    grad, stored under ``name``; the relevance is then the gradient with respect to that leaf."""
    def hook(_module, _inputs, output):
        leaf = output.detach().requires_grad_(True)
        store[name] = leaf
        return leaf
    return hook


@contextlib.contextmanager
def _no_tf32():
    from ..device import reference_precision
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    reference_precision(True)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _check_batchnorms_merged(model: nn.Module) -> None:
    """Every BatchNorm must have been folded into a conv (left as the reset BN, mean 0, var 1,
    gamma 1, beta 0): an unmerged BN under the composite's pass-through rule would silently drop its
    affine map from the explanation."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            reset = (bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all())
                     and (m.weight is None or bool((m.weight == 1).all()))
                     and (m.bias is None or bool((m.bias == 0).all())))
            if not reset:
                raise RuntimeError(f"LRP canonisation left BatchNorm {name!r} unmerged; the detector's LRP spec "
                                   "must fold every BatchNorm into the layer before it")


def __getattr__(name: str):
    """``LRPExplainer``: the engine's old name (it is not an :class:`~forensics.explain.Explainer`)."""
    if name == "LRPExplainer":
        warnings.warn("forensics.explain.lrp.LRPExplainer is deprecated: the LRP engine is now LRPEngine "
                      "(registered explainers: create_explainer('lrp', detector))", DeprecationWarning, stacklevel=2)
        return LRPEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
