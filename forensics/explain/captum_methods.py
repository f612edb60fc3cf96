"""captum's attribution methods and the random control behind
:func:`~forensics.explain.create_explainer` (docs/explainers.md), on every detector.

One-logit targets (captum issue 475): captum explains an output column chosen by ``target``; the
detector's logit ``f`` is handed to it as the two columns ``(-f, f)`` (real, fake), so the resolved
per-image classes (:func:`~forensics.explain.base.resolve_target`) index the target's logit
``s * f`` directly and captum expands them over steps, samples and perturbations itself.

Methods (options with their defaults):

- ``saliency`` (Simonyan et al. 2014): ``abs=True`` (the gradient's magnitude, unsigned; ``abs=False``
  keeps its sign);
- ``input_x_gradient`` (Shrikumar et al. 2016);
- ``integrated_gradients`` (Sundararajan et al., ICML 2017): ``baseline="zero"``, ``n_steps=50``,
  ``method="gausslegendre"``, ``internal_batch_size=128`` (images, inputs x steps, per forward pass:
  bounds the memory, 50 steps of 16 ResNet-50 inputs in one batch peaked at 7 GB; ``None``: one batch;
  the result is the same up to float rounding);
- ``smoothgrad`` (Smilkov et al. 2017, captum's ``NoiseTunnel`` over the signed gradient):
  ``nt_samples=25``, ``noise=0.15`` (standard deviation as a fraction of the normalised pixel range),
  ``seed=0``, ``nt_samples_batch_size=5`` (noisy samples per image and forward pass, bounds the memory;
  ``None``: all at once);
- ``occlusion`` (Zeiler & Fergus, ECCV 2014): ``window=16``, ``stride=8``, ``baseline="zero"``,
  ``perturbations_per_eval=16``; positive = occluding the patch lowers the target's logit;
- ``gradient_shap`` (Lundberg & Lee, NeurIPS 2017): baselines = ``baseline`` plus seeded noise,
  ``n_samples=20``, ``noise=0.1``, ``seed=0``, ``internal_batch_size=128`` (inputs x samples per call:
  the images go to captum in chunks of ``internal_batch_size // n_samples``, at least 1; ``None``: all at
  once; the noise then depends on the chunking, as on ``seed``);
- ``random``: seeded uniform noise in [0, 1) of the input's shape (``seed=0``), the control of every
  evaluation.

Baselines (in the detector's normalised space): ``"zero"`` (the normalisation mean colour, captum's
default), ``"black"`` (pixel value 0), a float, or a tensor broadcastable to the input.
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from captum.attr import (GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency)

from ..detectors import Detector
from .base import Capabilities, Explainer, Explanation, Target, register_explainer
from .inputs import classes_for
from .lrp_rules import zbox_bounds


def baseline_tensor(detector: Detector, x: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor:
    """A baseline like ``x`` (see the module docstring)."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "black":
            pre = detector.config.preprocessing
            black = [-m / s for m, s in zip(pre.mean, pre.std)]
            return torch.tensor(black, dtype=x.dtype, device=x.device).view(1, -1, 1, 1).expand_as(x).clone()
        raise ValueError(f"baseline must be 'zero', 'black', a number or a tensor, got {baseline!r}")
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).clone()


def pixel_range(detector: Detector) -> float:
    """Width of the detector's normalised pixel range (max over channels minus min), for noise levels."""
    pre = detector.config.preprocessing
    low, high = zbox_bounds(pre.mean, pre.std)
    return high - low


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's and numpy's global generators for the block (captum draws its noise from torch and
    GradientSHAP's interpolation points from numpy), restoring both after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(state)


class _CaptumExplainer(Explainer):
    """A captum method on the two-column ``(-f, f)`` view of the detector."""

    defaults: dict[str, Any] = {}

    def __init__(self, detector: Detector, **options: Any):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        super().__init__(detector, **{**self.defaults, **options})

    @classmethod
    def supports(cls, detector: Detector | str) -> bool:
        return True

    def two_class(self, x: torch.Tensor) -> torch.Tensor:
        f = self.detector(x)
        return torch.stack([-f, f], dim=1)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits = self.logits(x)
        classes = classes_for(target, x, lambda _: logits)
        with torch.enable_grad(), seeded(int(self.options.get("seed", 0)), x.device):
            attr = self._captum(x.requires_grad_(True), classes)
        return self.explanation(logits=logits, target=classes, input_map=attr)

    def _captum(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@register_explainer
class SaliencyExplainer(_CaptumExplainer):
    name, label = "saliency", "saliency"
    defaults = {"abs": True}
    capabilities = Capabilities(family="importance")

    def __init__(self, detector: Detector, **options: Any):
        super().__init__(detector, **options)
        if not self.options["abs"]:  # the signed gradient
            self.capabilities = Capabilities(family="sensitivity", linear=True)

    def _captum(self, x, classes):
        return Saliency(self.two_class).attribute(x, target=classes, abs=bool(self.options["abs"]))


@register_explainer
class InputXGradientExplainer(_CaptumExplainer):
    name, label = "input_x_gradient", "input x gradient"
    capabilities = Capabilities(linear=True)

    def _captum(self, x, classes):
        return InputXGradient(self.two_class).attribute(x, target=classes)


@register_explainer
class IntegratedGradientsExplainer(_CaptumExplainer):
    name, label = "integrated_gradients", "integrated gradients"
    defaults = {"baseline": "zero", "n_steps": 50, "method": "gausslegendre", "internal_batch_size": 128}
    capabilities = Capabilities(linear=True)

    def _captum(self, x, classes):
        o = self.options
        return IntegratedGradients(self.two_class).attribute(
            x, baselines=baseline_tensor(self.detector, x, o["baseline"]), target=classes, n_steps=int(o["n_steps"]),
            method=o["method"], internal_batch_size=o["internal_batch_size"])


@register_explainer
class SmoothGradExplainer(_CaptumExplainer):
    name, label = "smoothgrad", "SmoothGrad"
    defaults = {"nt_samples": 25, "noise": 0.15, "seed": 0, "nt_samples_batch_size": 5}
    capabilities = Capabilities(family="sensitivity", linear=True, stochastic=True)

    def _captum(self, x, classes):
        o = self.options
        return NoiseTunnel(Saliency(self.two_class)).attribute(
            x, nt_type="smoothgrad", nt_samples=int(o["nt_samples"]), stdevs=float(o["noise"]) * pixel_range(self.detector),
            nt_samples_batch_size=o["nt_samples_batch_size"], target=classes, abs=False)


@register_explainer
class OcclusionExplainer(_CaptumExplainer):
    name, label = "occlusion", "occlusion"
    defaults = {"window": 16, "stride": 8, "baseline": "zero", "perturbations_per_eval": 16}
    capabilities = Capabilities(linear=True)

    def _captum(self, x, classes):
        o = self.options
        c, w, s = x.shape[1], int(o["window"]), int(o["stride"])
        return Occlusion(self.two_class).attribute(
            x, sliding_window_shapes=(c, w, w), strides=(c, s, s), target=classes,
            baselines=baseline_tensor(self.detector, x, o["baseline"]), perturbations_per_eval=int(o["perturbations_per_eval"]))


@register_explainer
class GradientShapExplainer(_CaptumExplainer):
    name, label = "gradient_shap", "GradientSHAP"
    defaults = {"baseline": "zero", "n_samples": 20, "noise": 0.1, "seed": 0, "internal_batch_size": 128}
    capabilities = Capabilities(linear=True, stochastic=True)

    def _captum(self, x, classes):
        o = self.options
        base = baseline_tensor(self.detector, x[:1], o["baseline"])
        n = int(o["n_samples"])
        chunk = len(x) if o["internal_batch_size"] is None else max(1, int(o["internal_batch_size"]) // n)
        shap = GradientShap(self.two_class)
        return torch.cat([shap.attribute(x[i:i + chunk], baselines=base, n_samples=n,
                                         stdevs=float(o["noise"]) * pixel_range(self.detector),
                                         target=classes[i:i + chunk]) for i in range(0, len(x), chunk)])


@register_explainer
class RandomExplainer(_CaptumExplainer):
    """Seeded uniform noise in [0, 1) of the input's shape (the same for the same seed and shape)."""

    name, label = "random", "random"
    defaults = {"seed": 0}
    capabilities = Capabilities(family="importance", stochastic=True)

    def _attribute(self, x: torch.Tensor, target: Target) -> Explanation:
        logits = self.logits(x)
        generator = torch.Generator().manual_seed(int(self.options["seed"]))
        noise = torch.rand(x.shape, generator=generator)
        return self.explanation(logits=logits, target=classes_for(target, x, lambda _: logits), input_map=noise)
