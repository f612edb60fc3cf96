"""LRP rules as autograd functions (forensics.explain.lrp_hooks) against zennit's own hooks: rule by
rule on small modules, and FF-RS end to end (the streaming path with per-layer reduction inside the
backward pass vs the computation it replaced: zennit's hooks and canonizers, full relevance maps,
shares computed afterwards) on tiny random-weight R50 / EfB0."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer

from forensics.analysis.ffrs import FFRSAccumulator, channel_shares
from forensics.explain import LRPEngine, lrp_spec
from forensics.explain.canonizers import ResidualSum
from forensics.explain.lrp_hooks import BasicRule, PassRule, ResidualSumRule, ZPlusRule
from forensics.explain.lrp_rules import CONV_STABILISER, EPSILON, SafeDivisor
from helpers import calibrated_cached

pytestmark = pytest.mark.usefixtures("one_thread")


def relevance(module: nn.Module, rule, *inputs: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """Input relevance of ``module`` under ``rule`` for a random output relevance."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    composite = LayerMapComposite(layer_map=[(type(module), rule)])
    with composite.context(module) as hooked:
        out = hooked(*leaves)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
        grads = torch.autograd.grad(out, leaves, grad_outputs=grad)
    return list(grads)


def conv(**kwargs) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(4, 5, 3, **kwargs)


@pytest.mark.parametrize("signed", [False, True], ids=["relu-input", "signed-input"])
@pytest.mark.parametrize("module", [conv(padding=1), conv(stride=2, bias=False), conv(groups=1, dilation=2),
                                    nn.Linear(6, 3)], ids=["conv", "conv-stride", "conv-dilated", "linear"])
def test_zplus_matches_zennit(module, signed):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 9, 9) if isinstance(module, nn.Conv2d) else torch.randn(2, 6)
    x = x if signed else x.clamp_min(0)
    stab = SafeDivisor(*CONV_STABILISER)
    ours = relevance(module, ZPlusRule(stabilizer=stab, zero_params="bias"), x)
    ref = relevance(module, ZPlus(stabilizer=stab, zero_params="bias"), x)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-6, atol=1e-7)
    assert ours[0].abs().sum() > 0


@pytest.mark.parametrize("make,rule", [
    (lambda: nn.AdaptiveAvgPool2d(1), lambda: Epsilon(epsilon=SafeDivisor(EPSILON, EPSILON))),
    (lambda: nn.Linear(4 * 81, 3), lambda: Epsilon(epsilon=SafeDivisor(EPSILON, EPSILON))),
    (lambda: conv(padding=1), lambda: ZBox(low=-2.0, high=2.5, stabilizer=SafeDivisor(EPSILON, EPSILON),
                                           zero_params="bias")),
    (lambda: nn.ReLU(), lambda: Pass()),
], ids=["avgpool-epsilon", "linear-epsilon", "conv-zbox", "relu-pass"])
def test_basic_and_pass_rules_match_zennit(make, rule):
    torch.manual_seed(2)
    module = make()
    x = torch.randn(2, 4, 9, 9)
    if isinstance(module, nn.Linear):
        x = x.flatten(1)
    ours_rule = PassRule() if isinstance(rule(), Pass) else BasicRule(rule())
    torch.testing.assert_close(relevance(module, ours_rule, x)[0], relevance(module, rule(), x)[0],
                               rtol=1e-6, atol=1e-7)


def test_residual_sum_matches_zennit_stacked_sum():
    torch.manual_seed(3)
    a, b = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    b[0, 0, 0, 0] = -a[0, 0, 0, 0]  # an exactly zero sum takes the stabiliser's zero branch
    stab = SafeDivisor(EPSILON, EPSILON)
    ours = relevance(ResidualSum(), ResidualSumRule(stab), a, b)
    leaves = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
    with LayerMapComposite(layer_map=[(Sum, Epsilon(epsilon=stab))]).context(Sum()) as summed:
        out = summed(torch.stack(leaves, dim=-1))
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        ref = torch.autograd.grad(out, leaves, grad_outputs=grad)
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=0, atol=0)


def test_inplace_change_of_a_kept_input_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            x = x * 1.0
            y = self.lin(x)
            x.mul_(2)  # the input the rule keeps changes after the layer ran
            return y.sum() + x.sum()

    x = torch.randn(2, 3, requires_grad=True)
    with LayerMapComposite(layer_map=[(nn.Linear, BasicRule(Epsilon()))]).context(Net()) as net:
        with pytest.raises(RuntimeError, match="modified in place"):
            net(x).backward()


# ---------------------------------------------------------------------------- FF-RS end to end
def shares_float64(relevance: torch.Tensor) -> torch.Tensor:
    """channel_shares as it was: every sum in float64."""
    pos = relevance.clamp_min(0).sum(dim=(2, 3), dtype=torch.float64)
    denom = relevance.abs().sum(dim=(1, 2, 3), dtype=torch.float64)
    return torch.where(denom[:, None] > 0, pos / torch.where(denom > 0, denom, 1.0)[:, None], 0.0)


def old_ffrs(model, batches, zennit_canonizers):
    """The computation this module replaced: zennit's hooks (and, for R50, zennit's ResNetCanonizer),
    every layer's full relevance map returned, float64 shares taken afterwards."""
    base = lrp_spec(model)
    spec = dataclasses.replace(
        base, canonizers=zennit_canonizers or base.canonizers,
        composite=lambda s, det, bn: dataclasses.replace(s, composite=None).build_composite(det, bn,
                                                                                            zennit_hooks=True))
    acc = FFRSAccumulator.for_detector(model)
    with LRPEngine(model, spec=spec) as lrp:
        for x, labels in batches:
            res = lrp.explain(x, labels, layers=None)
            acc.add_shares({n: shares_float64(r) for n, r in res.layer_relevance.items()}, labels,
                           torch.ones(len(labels), dtype=torch.bool))
    return acc


def new_ffrs(model, batches):
    acc = FFRSAccumulator.for_detector(model)
    with LRPEngine(model) as lrp:
        for x, labels in batches:
            res = lrp.explain_reduced(x, channel_shares, labels)
            assert all(t.shape == (len(labels), c) for (n, c), t in zip(acc.layers.items(),
                                                                         res.layer_relevance.values()))
            acc.add_shares(res.layer_relevance, labels, torch.ones(len(labels), dtype=torch.bool))
    return acc


@pytest.mark.parametrize("arch,size,canonizers", [("resnet50", 32, lambda d: [ResNetCanonizer()]),
                                                  ("efb0", 64, None)])
def test_ffrs_top1000_equals_the_zennit_hook_computation(arch, size, canonizers):
    model = calibrated_cached(arch, 0, 32)
    torch.manual_seed(4)
    x = torch.randn(6, 3, size, size)
    with torch.no_grad():
        labels = (torch.sigmoid(lrp_forward(model, x)) >= 0.5).long()  # correct samples: all explained
    batches = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    old, new = old_ffrs(model, batches, canonizers), new_ffrs(model, batches)
    assert old.counts() == new.counts()
    for label in (0, 1):
        if not old.used[label]:
            continue
        ranked_old = old.ranking(label)[:1000]
        top = dict(new.ranking(label))
        assert ranked_old[0][1] > 0
        for key, value in ranked_old:
            assert abs(top[key] - value) <= 1e-6 * abs(value) + 1e-12, (key, top[key], value)


def lrp_forward(model, x):
    """Logits of the canonised model (what the explainer filters on)."""
    with LRPEngine(model) as lrp:
        return lrp.explain(x, include=torch.zeros(len(x), dtype=torch.bool)).logits
