"""zennit canonizers that put a detector into the canonical form T-FF's LRP composite needs
(docs/ffrs.md, "Relevance"; Chandrasegaran et al., ECCV 2022), applied temporarily and reverted exactly.

- :func:`merge_feature_layer_bn`: fold every feature layer's BatchNorm into its conv, using the
  (conv, BN) pairing the detector itself declares (:meth:`Detector.feature_layers`, the pairing
  T-FF's ``copyfrom*`` uses: "the last conv seen, then its BN"). zennit's merge leaves the BN as
  ``x / sqrt(1 + eps)``, exactly the reference's "reset BN".
- :class:`BatchNormIdentity`: optional, makes those leftover BNs true identities (not the
  reference; moves omega by up to ~1.4e-3 relative on R50, as measured in this project).
- :class:`EfficientNetBlockCanonizer`: efficientnet_pytorch computes the skip add ``x + inputs``
  and the SE gating ``sigmoid(s) * x`` functionally inside ``MBConvBlock.forward``, where no rule
  can attach. The canonizer temporarily replaces the block's ``forward`` with an equivalent one
  that routes the skip through a :class:`ResidualSum` module and the SE product
  through a :class:`GatedProduct` module (zennit's ``ResNetCanonizer`` does the same for torchvision
  bottlenecks). Removing it restores the block's attributes exactly.
- :class:`RineHeadCanonizer`: RINE's TIE ``(softmax(alpha) * proj1(g)).sum(1)`` through a
  :class:`GatedProduct` (the fixed importances scale ``proj1(g)``; relevance passes to it) and a
  ``Sum(dim=1)`` over blocks (epsilon: the weighted sum as a fixed linear combination).
- R50: :func:`resnet_canonizers`, zennit's ``ResNetCanonizer`` (merge + residual add as a module)
  with the residual add as a :class:`ResidualSum` (two inputs, no stacked copy of both operands).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn
from zennit.canonizers import Canonizer, NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.layer import Sum

_MISSING = object()


class GatedProduct(nn.Module):
    """``gate * x`` as a module, so an LRP rule can attach to the EfB0 SE product (the gate
    broadcasts over space) or RINE's TIE weighting. The rule used with it,
    :class:`~forensics.explain.lrp_rules.GatePass`, sends all relevance to ``x`` and none to
    ``gate`` (the squeeze-and-excitation product, docs/ffrs.md)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return gate * x


class ResidualSum(nn.Module):
    """``a + b`` as a module: a residual add that an LRP rule (epsilon) can attach to. zennit's
    ``Sum`` needs ``torch.stack([a, b], -1)`` first, a copy of both operands that its rule then keeps
    until the backward pass; here the rule keeps ``a`` and ``b`` themselves (one of them is usually
    kept anyway, as the input of the block's first conv). Same values: ``a + b`` is the stacked sum."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class SwapAttributes(Canonizer):
    """Set instance attributes (methods, submodules) on the modules ``attribute_map`` selects, and
    restore exactly what was there before on :meth:`remove`.

    Like zennit's ``AttributeCanonizer`` but it also restores attributes that already existed on
    the instance (zennit's deletes them). ``attribute_map(name, module)`` returns ``None`` or
    ``{attribute: value}``.
    """

    def __init__(self, attribute_map: Callable[[str, nn.Module], Mapping[str, Any] | None]):
        self.attribute_map = attribute_map
        self.module: nn.Module | None = None
        self.saved: dict[str, Any] = {}

    def apply(self, root_module: nn.Module) -> list["SwapAttributes"]:
        instances = []
        for name, module in list(root_module.named_modules()):
            attributes = self.attribute_map(name, module)
            if attributes is not None:
                instance = self.copy()
                instance.register(module, attributes)
                instances.append(instance)
        return instances

    def register(self, module: nn.Module, attributes: Mapping[str, Any]) -> None:
        self.module = module
        for key, value in attributes.items():
            self.saved[key] = _instance_attribute(module, key)
            setattr(module, key, value)

    def remove(self) -> None:
        for key, old in self.saved.items():
            delattr(self.module, key)
            if old is not _MISSING:
                setattr(self.module, key, old)
        self.saved = {}

    def copy(self) -> "SwapAttributes":
        return type(self)(self.attribute_map)


def _instance_attribute(module: nn.Module, key: str) -> Any:
    """What ``module`` holds under ``key`` itself (instance dict or registered child/param/buffer),
    ``_MISSING`` if the name resolves only through the class (e.g. the ``forward`` method)."""
    for store in (module.__dict__, module._modules, module._parameters, module._buffers):
        if key in store:
            return store[key]
    return _MISSING


def merge_feature_layer_bn(detector) -> NamedMergeBatchNorm:
    """A zennit BN-merge canonizer for every feature layer of ``detector`` that declares a
    ``post_bn`` BatchNorm (names relative to the detector, which is the module the composite is
    registered on)."""
    pairs = [((fl.modules["pre_bn"],), fl.modules["post_bn"]) for fl in detector.feature_layers()
             if "post_bn" in fl.modules and fl.modules["post_bn"] != fl.modules["pre_bn"]]
    return NamedMergeBatchNorm(pairs)


class BatchNormIdentity(SwapAttributes):
    """Make every ``BatchNorm2d`` compute the identity (apply after the merge). Not the reference:
    T-FF keeps the "reset BN" scale 1/sqrt(1+eps) (docs/ffrs.md, "Relevance")."""

    def __init__(self, attribute_map=None):
        super().__init__(attribute_map or _bn_identity_map)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _bn_identity_map(name: str, module: nn.Module) -> dict[str, Any] | None:
    return {"forward": _identity} if isinstance(module, nn.BatchNorm2d) else None


# ---------------------------------------------------------------------------- torchvision ResNet
def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``torchvision.models.resnet.Bottleneck.forward``, with the residual add through
    ``self.canonizer_sum`` (:class:`ResidualSum`) instead of ``out += identity``."""
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(self.canonizer_sum(identity, out))


def _bottleneck_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    from torchvision.models.resnet import Bottleneck
    if not isinstance(module, Bottleneck):
        return None
    return {"forward": _bottleneck_forward.__get__(module), "canonizer_sum": ResidualSum()}


class ResNetBottleneckCanonizer(SwapAttributes):
    """zennit's ``ResNetBottleneckCanonizer`` with :class:`ResidualSum` (no stacked copy of the
    operands): every torchvision ``Bottleneck``'s residual add becomes a rule-bearing module."""

    def __init__(self, attribute_map=None):
        super().__init__(attribute_map or _bottleneck_attributes)


def resnet_canonizers() -> list[Canonizer]:
    """zennit's ``ResNetCanonizer`` (BN folded into the conv before it, leaving the reset BN; the
    residual add as a module) with :class:`ResNetBottleneckCanonizer` for its bottleneck part."""
    return [SequentialMergeBatchNorm(), ResNetBottleneckCanonizer()]


# ---------------------------------------------------------------------------- EfficientNet
def _mbconv_forward(self, inputs: torch.Tensor, drop_connect_rate: float | None = None) -> torch.Tensor:
    """``efficientnet_pytorch.model.MBConvBlock.forward`` (0.7.1), line for line, except that the SE
    product goes through ``self.canonizer_gate`` and the skip add through ``self.canonizer_sum``."""
    from efficientnet_pytorch.utils import drop_connect

    x = inputs
    if self._block_args.expand_ratio != 1:
        x = self._expand_conv(inputs)
        x = self._bn0(x)
        x = self._swish(x)

    x = self._depthwise_conv(x)
    x = self._bn1(x)
    x = self._swish(x)

    if self.has_se:
        x_squeezed = nn.functional.adaptive_avg_pool2d(x, 1)
        x_squeezed = self._se_reduce(x_squeezed)
        x_squeezed = self._swish(x_squeezed)
        x_squeezed = self._se_expand(x_squeezed)
        x = self.canonizer_gate(x, torch.sigmoid(x_squeezed))

    x = self._project_conv(x)
    x = self._bn2(x)

    input_filters, output_filters = self._block_args.input_filters, self._block_args.output_filters
    if self.id_skip and self._block_args.stride == 1 and input_filters == output_filters:
        if drop_connect_rate:
            x = drop_connect(x, p=drop_connect_rate, training=self.training)
        x = self.canonizer_sum(x, inputs)
    return x


def _mbconv_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    from efficientnet_pytorch.model import MBConvBlock
    if not isinstance(module, MBConvBlock):
        return None
    return {"forward": _mbconv_forward.__get__(module), "canonizer_sum": ResidualSum(),
            "canonizer_gate": GatedProduct()}


class EfficientNetBlockCanonizer(SwapAttributes):
    """Route every ``MBConvBlock``'s skip add and SE product through rule-bearing modules
    (``canonizer_sum``: :class:`ResidualSum`; ``canonizer_gate``: :class:`GatedProduct`).
    Forward values are unchanged."""

    def __init__(self, attribute_map=None):
        super().__init__(attribute_map or _mbconv_attributes)


# ---------------------------------------------------------------------------- RINE head
def _rine_head_forward(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``RineHead.forward`` with the TIE weighting and the sum over blocks as modules (same values:
    the same elementwise product and the same ``sum(dim=1)``)."""
    weighted = self.canonizer_gate(self.proj1(g), self.importances())
    z = self.proj2(self.canonizer_sum(weighted))
    return self.head(z).squeeze(-1), z


def _rine_head_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    from ..detectors.rine import RineHead
    if not isinstance(module, RineHead):
        return None
    return {"forward": _rine_head_forward.__get__(module), "canonizer_gate": GatedProduct(),
            "canonizer_sum": Sum(dim=1)}


class RineHeadCanonizer(SwapAttributes):
    """Route RINE's TIE weighted sum over blocks through rule-bearing modules."""

    def __init__(self, attribute_map=None):
        super().__init__(attribute_map or _rine_head_attributes)
