"""The T-FF "beta = 0" LRP composite on zennit (Chandrasegaran et al., ECCV 2022; docs/ffrs.md,
"Relevance"), rule by rule.

Each T-FF rule is a custom autograd function in the reference; here each is a zennit hook whose
backward computes the same quantity:

=========================================  =============================================================
T-FF                                       here
=========================================  =============================================================
conv, beta=0, bias ignored, signed inputs  ``ZPlus(zero_params='bias')`` (= AlphaBeta(1, 0)), with the
                                           reference stabiliser ``safe(z; 1e-12, 0)``
first R50 conv ``conv1``: z^B, scalar l/h  ``ZBox(low, high, zero_params='bias')``, ``safe(Z; 1e-6, 1e-6)``
fc: epsilon, bias kept                     ``Epsilon`` with ``safe(z; 1e-6, 1e-6)``
adaptive avg-pool, residual sum: epsilon   ``Epsilon`` (no parameters) with ``safe(z; 1e-6, 1e-6)``
max-pool                                   no rule: plain gradient routing (winner takes all)
ReLU, Swish/SiLU, reset BN, dropout        ``Pass`` (dropout is the identity in eval mode: no rule)
EfB0 SE product ``sigmoid(s) * x``         :class:`GatePass`: all relevance to ``x``, none to the gate
=========================================  =============================================================

Not in T-FF (RINE, :mod:`.lrp`): the same map restricted to the head; its Linears get epsilon, the
TIE weighting ``A * y`` is a :class:`GatedProduct` (relevance passes to ``y``) and the sum over
blocks a ``Sum`` (epsilon), i.e. the weighted sum is explained as a fixed linear combination.

``safe(d; e0, e) = d + e0 * [d == 0] + e * sign(d)`` is the reference's stabiliser; zennit's own
default (``d + 1e-6 * sign(d)``, sign(0) = +1) equals ``safe(d; 1e-6, 1e-6)`` and differs from the
conv stabiliser only by < 1e-6 on omega (measured in this project), but the exact reference form costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from zennit.composites import NameLayerMapComposite
from zennit.core import Composite, Hook
from zennit.layer import Sum
from zennit.rules import Epsilon, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm, Convolution

from .canonizers import GatedProduct, ResidualSum
from .lrp_hooks import BasicRule, GatePassRule, PassRule, ResidualSumRule, ZPlusRule

#: Stabilisers of the reference (docs/ffrs.md, "Relevance"): convs ``safe(z; 1e-12, 0)``; everything else 1e-6.
CONV_STABILISER = (1e-12, 0.0)
EPSILON = 1e-6


@dataclass(frozen=True)
class SafeDivisor:
    """The reference's ``safe(d; e0, e) = d + e0 * [d == 0] + e * sign(d)`` as a zennit stabiliser."""

    e0: float
    e: float

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        # bit for bit ``d + e0 * (d == 0) + e * sign(d)``, in fewer passes over d
        if not self.e:
            return torch.where(d == 0, self.e0, d)
        return d.sign().mul_(self.e).add_(d).masked_fill_(d == 0, self.e0)


class GatePass(Hook):
    """Rule for :class:`~forensics.explain.canonizers.GatedProduct` ``(x, gate)``: the relevance at
    the product goes to ``x`` unchanged and the gate (and so the whole SE branch) gets zero, as
    T-FF's SE custom op (docs/ffrs.md, "Relevance")."""

    def backward(self, module, grad_input, grad_output):
        relevance = grad_output[0]
        rest = tuple(None if g is None else torch.zeros_like(g) for g in grad_input[1:])
        return (relevance,) + rest


def zbox_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """The z^B box of normalised pixels as the reference uses it: SCALARS over all channels,
    ``low = min_c(-mean_c / std_c)``, ``high = max_c((1 - mean_c) / std_c)`` (ImageNet:
    -2.1179, 2.64; docs/ffrs.md, "Relevance")."""
    low = min(-m / s for m, s in zip(mean, std))
    high = max((1.0 - m) / s for m, s in zip(mean, std))
    return low, high


def beta0_layer_map(zennit_hooks: bool = False) -> list[tuple[tuple[type, ...] | type, Hook]]:
    """Type -> rule map of the beta=0 composite (first match wins). Order matters:
    :class:`GatedProduct` and ``Sum`` before the generic types.

    The rules run as autograd functions (:mod:`.lrp_hooks`: same relevance, a fraction of the time
    and memory of zennit's hooks); ``zennit_hooks=True`` uses zennit's own hooks instead (with
    zennit's ``ResNetCanonizer``: the slower computation the tests compare against)."""
    eps = SafeDivisor(EPSILON, EPSILON)
    conv = SafeDivisor(*CONV_STABILISER)
    if zennit_hooks:
        return [
            (ResidualSum, ResidualSumRule(eps)),  # zennit has no two-input sum; equal to Epsilon on a stacked Sum
            (GatedProduct, GatePass()),
            (Sum, Epsilon(epsilon=eps)),
            (Activation, Pass()),
            (BatchNorm, Pass()),
            (AvgPool, Epsilon(epsilon=eps)),
            (Convolution, ZPlus(stabilizer=conv, zero_params="bias")),
            (nn.Linear, Epsilon(epsilon=eps)),
        ]
    return [
        (ResidualSum, ResidualSumRule(eps)),
        (GatedProduct, GatePassRule()),
        (Sum, BasicRule(Epsilon(epsilon=eps))),
        (Activation, PassRule()),
        (BatchNorm, PassRule()),
        (AvgPool, BasicRule(Epsilon(epsilon=eps))),
        (Convolution, ZPlusRule(stabilizer=conv, zero_params="bias")),
        (nn.Linear, BasicRule(Epsilon(epsilon=eps))),
    ]


class ScopedComposite(NameLayerMapComposite):
    """A name-then-type rule map that attaches rules only to ``scope`` and the modules under it
    (``None``: everywhere), e.g. only to RINE's head and not to its CLIP backbone."""

    def __init__(self, scope: str | None = None, **kwargs):
        self.scope = scope
        super().__init__(**kwargs)

    def mapping(self, ctx, name, module):
        if self.scope is not None and not (name == self.scope or name.startswith(self.scope + ".")):
            return None
        return super().mapping(ctx, name, module)


def beta0_composite(canonizers: Sequence, zbox: tuple[str, float, float] | None = None,
                    extra_layer_map: Sequence[tuple[type, Hook]] = (), scope: str | None = None,
                    zennit_hooks: bool = False) -> Composite:
    """The T-FF beta=0 composite: ``zbox = (module name, low, high)`` puts the bounded z^B rule on
    that conv (R50 ``conv1``; EfB0 has none: its stem uses z+ as the reference, ``use_zbeta=False``);
    ``extra_layer_map`` is matched before the standard map; ``scope`` limits the rules to one
    submodule (see :class:`ScopedComposite`); ``zennit_hooks``: see :func:`beta0_layer_map`."""
    name_map = []
    if zbox is not None:
        name, low, high = zbox
        rule = ZBox(low=low, high=high, stabilizer=SafeDivisor(EPSILON, EPSILON), zero_params="bias")
        name_map.append(((name,), rule if zennit_hooks else BasicRule(rule)))
    return ScopedComposite(scope=scope, name_map=name_map,
                           layer_map=list(extra_layer_map) + beta0_layer_map(zennit_hooks),
                           canonizers=list(canonizers))

