"""Attention-aware LRP through an open_clip vision transformer, down to pixels (CP-LRP / AttnLRP-style
rules), for the CLIP detectors (RINE, UFD).

Usage::

    with ViTLRP(detector) as lrp:                        # explain mode + transformer rules
        res = lrp.explain(images, labels)                # from the logit (start as forensics.explain.lrp)
        res.pixel                                        # [B, 3, H, W]
        res.block_relevance                              # [B, blocks]: relevance at each block's tap
        res.block_pixel                                  # [B, blocks, 3, H, W] (blocks=True)
        heat = lrp.explain_unit(images, "blocks.3.#17(T=64)").pixel   # one CLS channel of block 3
    # on exit the detector is exactly as before (forwards, hooks, requires_grad, train/eval)

    unit_relevance(detector, images, "blocks.3")         # one-shot: pixel relevance of a unit [B, 3, H, W]

Rules (applied by module type, temporarily, to every matching module of the detector):

=====================================  ======================================================================
module                                 rule (implemented as a modified gradient; relevance = input x gradient)
=====================================  ======================================================================
LayerNorm (ln_pre, ln_1, ln_2, ...)    ``(x - mean(x)) / std(x).detach() * gamma + beta``: the scale is a
                                       constant, relevance passes through the centring linearly (the
                                       LN rule of CP-LRP, Ali et al. 2022, and AttnLRP's identity rule)
self-attention (ResidualAttention-      softmax probabilities detached: relevance flows only through the
Block's ``attention``)                 values and ``out_proj`` (CP-LRP); queries and keys get none
QuickGELU / GELU                       ``x * gate(x).detach()``: all of a unit's relevance to its input
                                       (AttnLRP's identity rule for element-wise non-linearities)
Linear, conv1, RINE head (Linear,      LRP-0 (epsilon -> 0): input x gradient; ReLU passes relevance where
ReLU, TIE weighted sum)                it is open; the TIE weights softmax(alpha) are constants, so the
                                       weighted sum over blocks is a fixed linear combination
=====================================  ======================================================================

With these rules the explained output is a linear function of the pixels and of every additive term
(biases, LayerNorm betas, the class and positional embeddings), so **conservation is exact**: the
pixel relevance plus the relevance absorbed by the additive terms equals the start relevance
(``start * logit``; for a unit, its activation value). :meth:`ViTLRP.explain` returns the absorbed part
(``absorbed = start * logit - pixel.sum()``); ``check_absorption=True`` also computes it directly as
sum(parameter x gradient) over the additive parameters (a test of the rules).

Per-block decomposition (RINE): the head reads block b's ln_2 CLS token through the tap
``taps.<b>``. The relevance there is ``R_b = token_b . dlogit/dtoken_b`` (the head's LRP-0); propagating
each ``R_b`` on its own down to the pixels gives one pixel map per block, and these maps **sum to the
logit's pixel map** (the backward pass is linear). Relevance from block b's tap also reaches earlier
blocks (its token depends on them), never later ones.

Deliberate differences from AttnLRP (Achtibat et al., ICML 2024) and from LXT: the softmax and the
q.k product get no relevance (CP-LRP), and the Linear layers use LRP-0 instead of a small epsilon
(numerically identical at LXT's epsilon 1e-6, and exact conservation is kept). LXT is not used: its
open_clip composite covers ``nn.GELU`` but not open_clip's ``QuickGELU`` and it patches classes
globally.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..detectors import Detector
from ..detectors.keys import FeatureMapKey, parse_keys
from ._context import StackedContext
from .canonizers import SwapAttributes
from .inputs import model_input
from .lrp import start_signal

log = logging.getLogger(__name__)

#: Parameter names treated as additive terms (they absorb relevance): every ``*bias`` plus the ViT's
#: class and positional embeddings.
ADDITIVE_NAMES = ("bias", "class_embedding", "positional_embedding")


# ---------------------------------------------------------------------------- rules as forwards
def _layer_norm_rule(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(dim=-1, keepdim=True)
    std = torch.sqrt(centred.pow(2).mean(dim=-1, keepdim=True) + self.eps).detach()
    y = centred / std
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y.to(x.dtype)


def _quick_gelu_rule(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x).detach()


def _gelu_rule(self: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    if self.approximate == "tanh":
        gate = 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    else:
        gate = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return x * gate.detach()


def ruled_attention(block: nn.Module, q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                    v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None, *,
                    matmul=torch.matmul, softmax=None) -> torch.Tensor:
    """open_clip ``ResidualAttentionBlock.attention`` (batch-first self-attention through
    ``nn.MultiheadAttention``) written out, with ``matmul`` for the two products (``q k^T``,
    ``probs v``) and ``softmax`` over the scores' last axis as the rules to apply (default: CP-LRP's,
    the probabilities detached)."""
    mha: nn.MultiheadAttention = block.attn
    if k_x is not None or v_x is not None:
        raise NotImplementedError("ViT LRP: cross-attention blocks are not supported")
    if not mha.batch_first or not mha._qkv_same_embed_dim:
        raise NotImplementedError("ViT LRP: expects batch-first self-attention with a packed in_proj")
    b, n, d = q_x.shape
    heads = mha.num_heads
    q, k, v = F.linear(q_x, mha.in_proj_weight, mha.in_proj_bias).split(d, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = matmul(q, k.transpose(-2, -1)) / math.sqrt(d // heads)
    if attn_mask is not None:
        scores = scores + attn_mask.to(scores.dtype)
    probs = softmax(scores) if softmax is not None else torch.softmax(scores, dim=-1).detach()
    out = matmul(probs, v).transpose(1, 2).reshape(b, n, d)
    return mha.out_proj(out)


def _attention_rule(self: nn.Module, q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                    v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """CP-LRP's attention: the attention probabilities detached."""
    return ruled_attention(self, q_x, k_x, v_x, attn_mask)


def _rule_map(name: str, module: nn.Module) -> dict[str, Any] | None:
    from open_clip.transformer import QuickGELU, ResidualAttentionBlock
    if isinstance(module, nn.LayerNorm):
        return {"forward": _layer_norm_rule.__get__(module)}
    if isinstance(module, QuickGELU):
        return {"forward": _quick_gelu_rule.__get__(module)}
    if isinstance(module, nn.GELU):
        return {"forward": _gelu_rule.__get__(module)}
    if isinstance(module, ResidualAttentionBlock):
        return {"attention": _attention_rule.__get__(module)}
    return None


class TransformerRules(SwapAttributes):
    """The rules above as a canonizer: swaps the forwards of LayerNorm / QuickGELU / GELU modules and
    the ``attention`` method of open_clip attention blocks; :meth:`remove` restores them exactly."""

    def __init__(self, attribute_map=None):
        super().__init__(attribute_map or _rule_map)


@contextlib.contextmanager
def transformer_rules(model: nn.Module, attribute_map=None):
    """Apply :class:`TransformerRules` (``attribute_map``: another rule map, e.g. AttnLRP's) to ``model``
    inside the ``with`` block (forward values unchanged up to float rounding; only the gradients change)."""
    instances = TransformerRules(attribute_map).apply(model)
    if not instances:
        raise ValueError(f"{type(model).__name__} has no LayerNorm / attention block / GELU: not a transformer")
    try:
        yield model
    finally:
        for inst in reversed(instances):
            inst.remove()


# ---------------------------------------------------------------------------- results
@dataclass
class ViTRelevance:
    """One explained batch (detached, on the detector's device).

    ``output``: the explained value per image (the logit, or the unit's activation); ``start``: the
    gradient handed to it, so the start relevance is ``start * output``; ``pixel`` ``[B, 3, H, W]``;
    ``absorbed`` ``[B]``: start relevance minus pixel relevance (biases and embeddings);
    ``block_relevance`` ``[B, blocks]`` (logit only): relevance at each feature layer's tap;
    ``block_pixel`` ``[B, blocks, 3, H, W]`` (``blocks=True``); ``absorbed_direct`` (batch total,
    ``check_absorption=True``): sum(parameter x gradient) over the additive parameters."""

    output: torch.Tensor
    start: torch.Tensor
    pixel: torch.Tensor
    layers: tuple[str, ...] = ()
    block_relevance: torch.Tensor | None = None
    block_pixel: torch.Tensor | None = None
    absorbed_direct: float | None = None

    @property
    def relevance_in(self) -> torch.Tensor:
        return self.start * self.output

    @property
    def absorbed(self) -> torch.Tensor:
        return self.relevance_in - self.pixel.flatten(1).sum(1)

    def __len__(self) -> int:
        return int(self.output.shape[0])


# ---------------------------------------------------------------------------- explainer
class ViTLRP(StackedContext):
    """The CP-LRP engine of a CLIP detector down to pixels (see the module docstring; the registered
    ``cp_lrp`` explainer wraps it). Use as a context manager
    (explain mode + rules, restored on exit); outside a ``with`` block each call enters and leaves it."""

    #: module -> swapped attributes (CP-LRP's rules); :class:`forensics.explain.attn_lrp.AttnLRP` swaps the attention's
    rule_map = staticmethod(_rule_map)

    def __init__(self, detector: Detector):
        self.detector = detector
        self._stack: contextlib.ExitStack | None = None

    def _enter(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(self.detector.explain_mode())
        stack.enter_context(transformer_rules(self.detector, self.rule_map))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return model_input(self.detector, images, requires_grad=True)

    def _tap_modules(self, layers: Sequence[str]) -> list[nn.Module]:
        return [self.detector.get_submodule(self.detector.feature_layer(n).modules["pre_bn"]) for n in layers]

    # ------------------------------------------------------------------ from the logit
    def explain(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, *,
                include: torch.Tensor | Sequence[bool] | None = None, start: torch.Tensor | None = None,
                sign: str = "reference", blocks: bool = False, check_absorption: bool = False) -> ViTRelevance:
        """LRP of the logit of normalised ``images`` down to pixels. ``labels``/``include``: which
        images are explained, as :func:`forensics.explain.lrp.start_signal`. The relevance entering
        is ``start * logit``; ``sign`` keeps the meaning of relevance signs of
        :mod:`forensics.explain.lrp`: ``"reference"`` (start +1: positive = evidence for fake, on reals
        too) or ``"correct"`` (start +1 on fakes, -1 on reals: positive = evidence for the true class).
        ``start`` (``[B]``) overrides all of them. Always returns the
        relevance at every feature layer's tap (``block_relevance``); ``blocks=True`` also the pixel map
        of each block's share (one extra backward pass per block)."""
        if not self.active:
            with self:
                return self.explain(images, labels, include=include, start=start, sign=sign, blocks=blocks,
                                    check_absorption=check_absorption)
        layers = tuple(fl.name for fl in self.detector.feature_layers())
        x = self._input(images)
        additive = _additive_parameters(self.detector) if check_absorption else []
        with _capture_outputs(self._tap_modules(layers)) as taps, _requiring_grad(additive), torch.enable_grad():
            logits = self.detector(x)
            if start is None:
                # the relevance entering here is start * logit (LRP-0), not start as in the epsilon rule
                # of forensics.explain.lrp; these starts give relevance of the same sign as there
                signed = start_signal(logits, labels, include, "reference")
                start_vec = signed.abs() if sign == "reference" else signed
            else:
                start_vec = torch.as_tensor(start, dtype=logits.dtype, device=logits.device).reshape(-1)
                if start_vec.shape != logits.shape:
                    raise ValueError(f"start has {start_vec.numel()} entries for {logits.numel()} logits")
            grads = torch.autograd.grad(logits, [x, *taps, *additive], grad_outputs=start_vec, retain_graph=blocks,
                                        allow_unused=True)
            pixel, tap_grads, add_grads = grads[0] * x, grads[1:1 + len(taps)], grads[1 + len(taps):]
            block_rel = torch.stack([(t * g).flatten(1).sum(1) for t, g in zip(taps, tap_grads)], dim=1)
            block_pixel = None
            if blocks:
                maps = []
                for i, (t, g) in enumerate(zip(taps, tap_grads)):
                    (gx,) = torch.autograd.grad(t, x, grad_outputs=g, retain_graph=i < len(taps) - 1)
                    maps.append(gx * x)
                block_pixel = torch.stack(maps, dim=1).detach()
        direct = _absorbed(additive, add_grads) if check_absorption else None
        return ViTRelevance(output=logits.detach(), start=start_vec.detach(), pixel=pixel.detach(), layers=layers,
                            block_relevance=block_rel.detach(), block_pixel=block_pixel, absorbed_direct=direct)

    # ------------------------------------------------------------------ from a unit
    def explain_unit(self, images: torch.Tensor, unit: str | FeatureMapKey, *,
                     check_absorption: bool = False) -> ViTRelevance:
        """Pixel relevance of one unit: a feature-map key (one CLS channel of a block, e.g.
        ``"blocks.3.#17(T=64)"``) or a feature-layer name (``"blocks.3"``: all its channels). The start
        relevance is the unit's own activation (summed over the channels for a whole layer)."""
        if not self.active:
            with self:
                return self.explain_unit(images, unit, check_absorption=check_absorption)
        layer, channel = _parse_unit(self.detector, unit)
        x = self._input(images)
        additive = _additive_parameters(self.detector) if check_absorption else []
        with _capture_outputs(self._tap_modules([layer])) as taps, _requiring_grad(additive), torch.enable_grad():
            self.detector(x)
            act = taps[0].flatten(1) if channel is None else taps[0].flatten(1)[:, channel:channel + 1]
            output = act.sum(1)
            grads = torch.autograd.grad(output, [x, *additive], grad_outputs=torch.ones_like(output), allow_unused=True)
        direct = _absorbed(additive, grads[1:]) if check_absorption else None
        return ViTRelevance(output=output.detach(), start=torch.ones_like(output).detach(),
                            pixel=(grads[0] * x).detach(), layers=(layer,), absorbed_direct=direct)


def vit_lrp(detector: Detector, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
            **kwargs) -> ViTRelevance:
    """One-shot :meth:`ViTLRP.explain`."""
    with ViTLRP(detector) as lrp:
        return lrp.explain(images, labels, **kwargs)


def unit_relevance(detector: Detector, images: torch.Tensor, unit: str | FeatureMapKey) -> torch.Tensor:
    """Pixel relevance ``[B, 3, H, W]`` of one unit of a CLIP detector (a block's CLS channel
    ``"blocks.<b>.#<c>(T=<width>)"`` or a whole block ``"blocks.<b>"``), CP-LRP through the ViT from
    the unit's activation. Restores the detector on return. For the LRP-max patches of an analysis:
    the input patch holding the most relevance of the unit."""
    return ViTLRP(detector).explain_unit(images, unit).pixel


# ---------------------------------------------------------------------------- helpers
def _parse_unit(detector: Detector, unit: str | FeatureMapKey) -> tuple[str, int | None]:
    if isinstance(unit, str) and "#" not in unit:
        return detector.feature_layer(unit).name, None
    key = detector.check_keys(parse_keys([unit]))[0]
    return key.layer, key.channel


def _absorbed(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> float:
    """sum(parameter x gradient) over the additive parameters (unused ones absorb nothing)."""
    return float(sum(float((p * g).sum()) for p, g in zip(params, grads) if g is not None))


def _additive_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.split(".")[-1] in ADDITIVE_NAMES
            or name.endswith("_bias")]


@contextlib.contextmanager
def _requiring_grad(params: list[nn.Parameter]):
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


@contextlib.contextmanager
def _capture_outputs(modules: Sequence[nn.Module]):
    """Forward hooks storing each module's (last) output, in order; removed on exit."""
    store: list[torch.Tensor | None] = [None] * len(modules)

    def make(i: int):
        def hook(_m, _inp, out):
            store[i] = out
        return hook

    handles = [m.register_forward_hook(make(i)) for i, m in enumerate(modules)]
    try:
        yield _LazyList(store)
    finally:
        for h in handles:
            h.remove()


class _LazyList(Sequence):
    """A view of the capture store that fails clearly when a module did not run."""

    def __init__(self, store: list):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = self.store[i]
        if value is None:
            raise RuntimeError("a feature layer's tap did not run in the forward pass")
        return value

    def __iter__(self):
        return (self[i] for i in range(len(self)))
