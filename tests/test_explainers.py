"""The explainer registry (forensics.explain): every registered method on every registered detector
(tiny random-weight models), the target / sign convention, conservation of the LRP family, integrated
gradients' completeness, AttnLRP's rules, and `lrp` numbers equal to LRPEngine's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from forensics.detectors import Detector, DetectorConfig, FeatureLayer, Preprocessing, create, list_detectors
from forensics.explain import (FAMILIES, Capabilities, Explainer, Explanation, LRPEngine, LRPSpec, create_explainer,
                               explainer_class, list_explainers, resolve_target)
from forensics.explain.attn_lrp import AttnLRP, SoftmaxRule, UniformMatmul
from forensics.explain.vit_lrp import ViTLRP
from helpers import assert_same_snapshot, calibrated_cached, single_thread, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"resnet50": 32, "efb0": 32, "rine": 56, "ufd": 56}
#: cheap settings for the slow methods on tiny models (the defaults are tested for their values elsewhere)
FAST = {"integrated_gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4}, "gradient_shap": {"n_samples": 4},
        "occlusion": {"window": 16, "stride": 16}}


def tiny(name: str) -> Detector:
    if name in ("resnet50", "efb0"):
        return calibrated_cached(name, 0, 32)
    torch.manual_seed(0)
    extra = {"nproj": 1, "proj_dim": 16} if name == "rine" else {}
    return create(name, backbone="forensics-tiny-vit", backbone_weights=None, **extra).eval()


@pytest.fixture(scope="module")
def models():
    with single_thread():
        return {name: tiny(name) for name in list_detectors()}


def images(name: str, n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZES[name], SIZES[name], generator=g)


# ---------------------------------------------------------------------------- every detector x every method
@pytest.mark.parametrize("method", list_explainers())
@pytest.mark.parametrize("name", list_detectors())
def test_every_method_on_every_detector(models, name, method):
    """Shapes, dtype and device, the resolved target, determinism for a seed, the detector's outputs
    and state bit-identical afterwards, and a clear refusal where the method is not defined."""
    model = models[name]
    if method not in list_explainers(model):
        assert method not in list_explainers(name)
        with pytest.raises(NotImplementedError, match=name):
            create_explainer(method, model)
        return
    assert method in list_explainers(name)
    x = images(name)
    with torch.no_grad():
        logits = model(x)
    param = next(model.parameters())
    param.grad = torch.ones_like(param)  # must survive (pytorch-grad-cam calls zero_grad)
    before = snapshot(model)
    explainer = create_explainer(method, model, **FAST.get(method, {}))
    with explainer as ex:
        first = ex.attribute(x, target="predicted")
        again = ex.attribute(x, target="predicted")
        labels = ex.attribute(x, target=torch.tensor([1, 0]))
    assert_same_snapshot(before, snapshot(model))
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    param.grad = None

    assert isinstance(first, Explanation) and first.method == method and first.label
    assert first.pixel.shape == (2, SIZES[name], SIZES[name]) and first.pixel.dtype == torch.float32
    assert first.pixel.device.type == "cpu" and torch.isfinite(first.pixel).all()
    if explainer.capabilities.input_map:
        assert first.input_map.shape == x.shape
        torch.testing.assert_close(first.pixel, first.input_map.sum(1))
    assert first.target.tolist() == (logits >= 0).long().tolist() and labels.target.tolist() == [1, 0]
    torch.testing.assert_close(first.logits, logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(first.pixel, again.pixel)  # deterministic for a seed
    if not explainer.capabilities.signed:
        assert (first.pixel >= 0).all()
    if first.layers is not None:
        assert explainer.capabilities.layers and first.layers
    if explainer.capabilities.conservation:
        torch.testing.assert_close(first.pixel.flatten(1).sum(1) + first.absorbed, first.relevance)


#: the methods linear in the explained score (their capabilities say so)
LINEAR = [m for m in list_explainers() if explainer_class(m).capabilities.linear]


def test_families_are_declared_and_read_as_documented():
    """Every method declares how its values read; signed-ness follows from the family; the linear
    methods are signed."""
    assert LINEAR and all(explainer_class(m).capabilities.signed for m in LINEAR)
    for method in list_explainers():
        caps = explainer_class(method).capabilities
        assert caps.family in FAMILIES and caps.signed == (caps.family != "importance"), method
    with pytest.raises(ValueError, match="family"):
        Capabilities(family="vibes")


def test_the_old_lrp_engine_names_warn(models):
    from forensics.explain.unit import lrp_unit_relevance
    with pytest.warns(DeprecationWarning, match="LRPEngine"):
        from forensics.explain import LRPExplainer
    with pytest.warns(DeprecationWarning, match="LRPEngine"):
        from forensics.explain.lrp import LRPExplainer as old
    assert LRPExplainer is old is LRPEngine and not issubclass(LRPEngine, Explainer)
    model, x = models["resnet50"], images("resnet50")
    layer = model.feature_layers()[0]
    key = f"{layer.name}.#0(T={layer.channels})"
    with LRPEngine(model) as lrp:
        new = lrp_unit_relevance(model, x, key, engine=lrp)
        with pytest.warns(DeprecationWarning, match="engine="):
            same = lrp_unit_relevance(model, x, key, explainer=lrp)
    assert torch.equal(new.pixel, same.pixel)


def test_one_context_shape_for_explainers_and_engines(models):
    """Explainers and LRP engines enter the same way: not re-entrant, and a failure while entering
    unwinds what was already entered (the detector as before, nothing left active)."""
    model = models["resnet50"]
    before = snapshot(model)
    for context in (create_explainer("gradcam", model), LRPEngine(model), ViTLRP(models["rine"])):
        with context:
            with pytest.raises(RuntimeError, match="already active"):
                context.__enter__()
        assert not context.active

    class Failing(type(create_explainer("saliency", model))):
        def _setup(self, stack):
            super()._setup(stack)  # explain mode entered ...
            raise RuntimeError("boom")  # ... then a failure

    ex = Failing(model)
    with pytest.raises(RuntimeError, match="boom"):
        ex.attribute(images("resnet50"))
    assert not ex.active
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.parametrize("method", LINEAR)
@pytest.mark.parametrize("name", list_detectors())
def test_real_is_the_negated_fake_explanation(models, name, method):
    """One place defines the target: the real class explains -f, so every method linear in the
    explained score gives the exact negation (with the same seed for the stochastic ones)."""
    model = models[name]
    if method not in list_explainers(model):
        pytest.skip(f"{method} is not defined on {name}")
    x = images(name)
    with create_explainer(method, model, **FAST.get(method, {})) as ex:
        fake, real = ex.attribute(x, "fake"), ex.attribute(x, "real")
    torch.testing.assert_close(real.pixel, -fake.pixel, rtol=1e-4, atol=1e-6)


def test_stochastic_methods_follow_their_seed(models):
    model, x = models["resnet50"], images("resnet50")
    for method in ("smoothgrad", "gradient_shap", "random"):
        assert explainer_class(method).capabilities.stochastic
        a, b, c = (create_explainer(method, model, **{**FAST.get(method, {}), "seed": s}).attribute(x).pixel
                   for s in (0, 0, 1))
        assert torch.equal(a, b) and not torch.equal(a, c), method


def test_memory_bounds_chunk_without_changing_the_maps(models):
    """integrated gradients' ``internal_batch_size`` only chunks the interpolated images; GradientSHAP's
    chunks the images (each chunk gets the per-image answer for its own noise draws)."""
    model, x = models["resnet50"], images("resnet50", n=3)
    ig = [create_explainer("integrated_gradients", model, n_steps=8, internal_batch_size=b).attribute(x, "fake").pixel
          for b in (None, 5)]
    # equal up to float rounding (a random deep net amplifies the batch-size-dependent conv rounding)
    torch.testing.assert_close(ig[0], ig[1], rtol=0, atol=1e-2 * float(ig[0].abs().max()))
    torch.testing.assert_close(ig[0].sum((1, 2)), ig[1].sum((1, 2)), rtol=1e-2, atol=1e-3)  # rounding, as above
    whole = create_explainer("gradient_shap", model, n_samples=4, internal_batch_size=None).attribute(x, "fake")
    chunked = create_explainer("gradient_shap", model, n_samples=4, internal_batch_size=4).attribute(x, "fake")
    first = create_explainer("gradient_shap", model, n_samples=4, internal_batch_size=None).attribute(x[:1], "fake")
    assert chunked.pixel.shape == whole.pixel.shape
    torch.testing.assert_close(chunked.pixel[:1], first.pixel)  # chunk 1 = image 0 alone, same seed


def test_resolve_target():
    logits = torch.tensor([2.0, -1.0, 0.0])
    assert resolve_target("fake", logits).tolist() == [1, 1, 1]
    assert resolve_target("real", logits).tolist() == [0, 0, 0]
    assert resolve_target("predicted", logits).tolist() == [1, 0, 1]  # p = 0.5 is fake
    assert resolve_target(torch.tensor([0, 1, 1]), logits).tolist() == [0, 1, 1]
    for bad in ("true", torch.tensor([0, 2, 1]), torch.tensor([1, 0])):
        with pytest.raises(ValueError):
            resolve_target(bad, logits)
    with pytest.raises(KeyError, match="registered"):
        create_explainer("no-such-method", tiny("ufd"))


def test_one_check_of_classes_for_targets_and_lrp_labels(models):
    """The explainers' targets and the LRP engine's labels go through the same 0/1 check."""
    from forensics.explain import start_signal
    logits = torch.tensor([2.0, -1.0])
    assert resolve_target([1.0, 0.0], logits).dtype == torch.int64
    for bad, match in (([0.5, 1.0], "0 \\(real\\) or 1"), ([2, 1], "got \\[2\\]"), ([1], "1 target classes for 2")):
        with pytest.raises(ValueError, match=match):
            resolve_target(bad, logits)
    with pytest.raises(ValueError, match="labels must be 0 .*got \\[3\\].*labels=None"):
        start_signal(logits, [3, 1])
    with pytest.raises(ValueError, match="3 target classes for 2 images"):  # before any work
        create_explainer("saliency", models["resnet50"]).attribute(images("resnet50"), [1, 0, 1])


# ---------------------------------------------------------------------------- sign convention
class LinearDetector(Detector):
    """One logit with a known linear part: f = mean over pixels of the red channel (1x1 conv, average
    pool, fc with weight 1 and no bias): red pixels above 0 are evidence for fake, below 0 for real."""

    def __init__(self):
        super().__init__(DetectorConfig(name="linear-test", arch="linear", paper="",
                                        preprocessing=Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3)))
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1)).squeeze(1)

    def _feature_layers(self):
        return [FeatureLayer("conv", 1, {"pre_bn": "conv"})]

    def gradcam_layers(self):
        return [self.conv]


#: the methods defined on the linear model (LRP through an empty spec: it has no registered one)
ON_LINEAR = ["lrp", *list_explainers(LinearDetector())]


@pytest.mark.parametrize("method", ON_LINEAR)
def test_sign_convention_on_a_known_linear_model(method):
    """Left half of the red channel at +2 (evidence for fake), right half at -1 (for real): f = 0.5.
    Each method is checked as its family reads (its capabilities): evidence, target fake: the left
    half is positive and above the right half, target real the opposite; sensitivity: the target's
    gradient, >= 0 everywhere for fake (the red channel raises f) and <= 0 for real, nonzero somewhere;
    importance: >= 0, and a deterministic method gives the half that supports the target at least the
    other's importance (Grad-CAM: more; saliency's magnitude: equal; the random control: neither)."""
    model = LinearDetector().eval()
    x = torch.zeros(1, 3, 16, 16)
    x[:, 0, :, :8], x[:, 0, :, 8:] = 2.0, -1.0
    x[:, 1:] = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))  # ignored by f
    opts = {"spec": LRPSpec(canonizers=lambda d: [])} if method == "lrp" else dict(FAST.get(method, {}))
    if method == "occlusion":
        opts = {"window": 4, "stride": 4}
    ex = create_explainer(method, model, **opts)
    caps = ex.capabilities
    for target, sign in (("fake", 1.0), ("real", -1.0)):
        e = ex.attribute(x, target)
        left, right = e.pixel[0, :, :8].mean(), e.pixel[0, :, 8:].mean()
        if caps.family == "evidence":
            assert sign * left > 0 and sign * left > sign * right, (target, left, right)
        elif caps.family == "sensitivity":
            assert (sign * e.pixel >= 0).all() and (sign * e.pixel > 0).any(), target
        else:
            assert (e.pixel >= 0).all(), target
            if not caps.stochastic:
                assert sign * (left - right) >= 0, (target, left, right)


# ---------------------------------------------------------------------------- LRP family
@pytest.mark.parametrize("name", ["resnet50", "efb0"])
def test_lrp_numbers_equal_lrp_explainer(models, name):
    """`lrp` is LRPEngine unchanged: target "fake" is T-FF's reference start (+1 on predicted fakes,
    -1 on predicted reals), target = the labels is its sign-correct start on correctly classified images."""
    model, x = models[name], images(name)
    with LRPEngine(model) as lrp:
        ref = lrp.explain(x, None, sign="reference", layers=None)  # None: the (canonised) prediction
        labels = (ref.logits >= 0).long()
        correct = lrp.explain(x, labels, sign="correct")
    with create_explainer("lrp", model, layers=None) as ex:
        fake, own = ex.attribute(x, "fake"), ex.attribute(x, labels)
    assert torch.equal(fake.input_map, ref.pixel.cpu())
    assert torch.equal(own.input_map, correct.pixel.cpu())
    assert all(torch.equal(fake.layers[k], v.cpu()) for k, v in ref.layer_relevance.items())


@pytest.mark.parametrize("composite", ["beta0", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"])
def test_lrp_composites_conserve_on_resnet50(models, composite):
    """T-FF's composite: pixel relevance + what the fc bias absorbs (relevance * b / f) = the unit
    relevance entering. zennit's epsilon_plus_flat with ``zero_params="bias"`` (no bias absorbs
    anything): pixel relevance = the unit relevance, up to the stabilisers. The gamma and alpha2-beta1
    rules are not conservative on signed pre-activations (a neuron with no negative part gets alpha = 2
    times its relevance; gamma's denominators can nearly cancel): finite maps that differ from beta0."""
    model, x = models["resnet50"], images("resnet50")
    before = snapshot(model)
    opts = {} if composite == "beta0" else {"zero_params": "bias"}
    e = create_explainer("lrp", model, composite=composite, **opts).attribute(x, "predicted")
    assert_same_snapshot(before, snapshot(model))
    assert e.relevance.abs().tolist() == [1.0, 1.0]
    bias = float(model.net.fc.bias.detach()) if composite == "beta0" else 0.0
    expected = e.relevance * (1 - bias / e.logits)
    ratio = e.pixel.flatten(1).sum(1) / expected
    if composite in ("beta0", "epsilon_plus_flat"):
        assert ((ratio - 1).abs() < 2e-3).all(), ratio
    else:
        assert torch.isfinite(e.pixel).all()
        assert not torch.allclose(e.pixel, create_explainer("lrp", model).attribute(x, "predicted").pixel)
    if composite != "beta0":
        assert e.label == f"LRP {composite}"


@pytest.mark.parametrize("method", ["cp_lrp", "attn_lrp"])
@pytest.mark.parametrize("name", ["rine", "ufd"])
def test_vit_lrp_conservation_is_exact(models, name, method):
    """relevance = the target's logit s * f; the absorbed part equals what the additive parameters
    (and, for AttnLRP, the softmax rules) take, measured directly in the backward pass."""
    model, x = models[name], images(name)
    e = create_explainer(method, model).attribute(x, torch.tensor([1, 0]))
    torch.testing.assert_close(e.relevance, e.logits * torch.tensor([1.0, -1.0]))
    direct = (AttnLRP if method == "attn_lrp" else ViTLRP)(model).explain(
        x, start=torch.tensor([1.0, -1.0]), check_absorption=True).absorbed_direct
    assert float(e.absorbed.sum()) == pytest.approx(direct, rel=1e-3, abs=1e-5)


def test_attn_lrp_rules():
    """Uniform rule: each factor of a product gets half the true gradient; softmax rule: the true
    Jacobian, and what it does not pass on is recorded; the rules leave forward values unchanged and
    AttnLRP differs from CP-LRP (relevance reaches q and k)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=g, requires_grad=True), torch.randn(2, 4, 5, generator=g, requires_grad=True)
    out = UniformMatmul.apply(a, b)
    grad = torch.randn(out.shape, generator=g)
    ga, gb = torch.autograd.grad(out, [a, b], grad)
    ta, tb = torch.autograd.grad(a @ b, [a, b], grad)
    torch.testing.assert_close((ga, gb), (0.5 * ta, 0.5 * tb))
    a, b, out = a.detach(), b.detach(), out.detach()
    assert float((a * ga).sum() + (b * gb).sum()) == pytest.approx(float((out * grad).sum()), rel=1e-5)

    s = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    store: list = []
    probs = SoftmaxRule.apply(s, store)
    r = torch.randn(probs.shape, generator=g, dtype=torch.float64)
    (gs,) = torch.autograd.grad(probs, s, r)
    (ts,) = torch.autograd.grad(torch.softmax(s, -1), s, r)
    torch.testing.assert_close(gs, ts)
    torch.testing.assert_close(store[0], ((probs * r) - s * gs).flatten(1).sum(1).detach())

    model = tiny("ufd")
    x = images("ufd")
    with torch.no_grad():
        plain = model(x)
        ex = AttnLRP(model)
        with ex:
            ruled = model(x)
    torch.testing.assert_close(ruled, plain, rtol=1e-5, atol=1e-6)
    cp = create_explainer("cp_lrp", model).attribute(x).pixel
    attn = create_explainer("attn_lrp", model).attribute(x).pixel
    assert not torch.allclose(cp, attn)


def test_vit_block_pixel_maps_sum_to_the_pixel_map(models):
    model, x = models["rine"], images("rine")
    e = create_explainer("attn_lrp", model, blocks=True).attribute(x)
    total = sum(e.layers.values())
    torch.testing.assert_close(total.sum(1), e.pixel, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- captum
@pytest.mark.parametrize("name", ["ufd", "resnet50"])
def test_integrated_gradients_completeness(models, name):
    """Sum of attributions = f(x) - f(baseline) for the target's score, within the steps' error: on the
    smooth ViT within 1% at 64 steps; on the random R50 (ReLUs, logits ~65) the error shrinks with
    the number of steps."""
    from forensics.explain.captum_methods import baseline_tensor
    model, x = models[name], images(name)
    for baseline in ("zero", "black"):
        with torch.no_grad():
            base = model(baseline_tensor(model, x, baseline))
        errors = []
        for steps in (8, 64):
            e = create_explainer("integrated_gradients", model, n_steps=steps, baseline=baseline).attribute(x, "real")
            expected = -(e.logits - base)
            errors.append(float(((e.pixel.flatten(1).sum(1) - expected).abs() / expected.abs()).max()))
        if name == "ufd":
            assert errors[1] < 1e-2, errors
        else:
            assert errors[1] < errors[0], errors
