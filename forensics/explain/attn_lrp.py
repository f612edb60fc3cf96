"""AttnLRP (Achtibat et al., ICML 2024) through an open_clip vision transformer, for the CLIP
detectors (RINE, UFD); docs/explainers.md.

It differs from CP-LRP (:mod:`forensics.explain.vit_lrp`) only in the attention, where relevance now
also flows through the attention weights to the queries and keys:

=====================================  ======================================================================
operation                              rule (as a modified gradient; relevance = input x gradient)
=====================================  ======================================================================
``q @ k^T`` and ``softmax(.) @ v``     uniform rule for the bilinear products: each factor gets half of the
                                       relevance of every product term (the true gradient x 1/2)
softmax                                AttnLRP's softmax rule ``R_in = x * (R_out - s * sum(R_out))``, the
                                       first-order Taylor term at ``x`` (the true Jacobian); the rest of the
                                       relevance is absorbed (the expansion's bias term)
LayerNorm, QuickGELU / GELU, Linear    as CP-LRP: LayerNorm with its scale detached (AttnLRP's identity rule
                                       on the normalisation), the element-wise non-linearities pass all of a
                                       unit's relevance to its input (identity rule; QuickGELU included,
                                       which LXT's open_clip support lacks), Linear layers LRP-0
=====================================  ======================================================================

Conservation: the pixel relevance plus what the additive parameters (biases, LayerNorm betas,
class and positional embeddings) and the softmax rules absorb equals the start relevance ``start *
logit``. ``check_absorption=True`` measures both directly (``absorbed_direct``; the softmax share is
recorded in each rule's backward pass).

Why not PyPI ``lxt``: its open_clip support patches classes globally at import and has no rule for
open_clip's ``QuickGELU`` (the OpenAI ViT-L/14 of RINE and UFD). The rules here are swapped onto
the detector's own modules temporarily and restored exactly on exit, like every explainer here.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from ..detectors import Detector
from .vit_lrp import ViTLRP, ViTRelevance, _rule_map, ruled_attention


class UniformMatmul(torch.autograd.Function):
    """``a @ b`` whose backward hands each factor half of the true gradient (AttnLRP's uniform rule)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        return 0.5 * (grad @ b.transpose(-2, -1)), 0.5 * (a.transpose(-2, -1) @ grad)


class SoftmaxRule(torch.autograd.Function):
    """Softmax over the last axis with AttnLRP's rule: the true Jacobian-vector product, so that
    ``x * grad_in = x * (R_out - s * sum(R_out))`` with ``R_out = s * grad_out``. The relevance not
    passed on (``sum(R_out) - sum(R_in)`` per sample) is appended to ``store`` when given."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, store: list | None) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(scores, probs)
        ctx.store = store
        return probs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scores, probs = ctx.saved_tensors
        r_out = probs * grad
        grad_in = r_out - probs * r_out.sum(dim=-1, keepdim=True)
        if ctx.store is not None:
            finite = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))
            ctx.store.append((r_out - finite * grad_in).flatten(1).sum(1).detach())
        return grad_in, None


def attention_rule(self: nn.Module, q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                   v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None, *,
                   store: list | None = None) -> torch.Tensor:
    """open_clip ``ResidualAttentionBlock.attention`` with AttnLRP's uniform and softmax rules."""
    return ruled_attention(self, q_x, k_x, v_x, attn_mask, matmul=UniformMatmul.apply,
                           softmax=lambda scores: SoftmaxRule.apply(scores, store))


def attn_rule_map(name: str, module: nn.Module, store: list | None = None) -> dict[str, Any] | None:
    """CP-LRP's rule map with AttnLRP's attention (``store`` collects the softmax absorption)."""
    from open_clip.transformer import ResidualAttentionBlock
    if isinstance(module, ResidualAttentionBlock):
        return {"attention": functools.partial(attention_rule.__get__(module), store=store)}
    return _rule_map(name, module)


class AttnLRP(ViTLRP):
    """AttnLRP of a CLIP detector down to pixels; the interface of :class:`~forensics.explain.vit_lrp.ViTLRP`
    (``explain``, ``explain_unit``), with the softmax absorption added to ``absorbed_direct``."""

    def __init__(self, detector: Detector):
        super().__init__(detector)
        self._softmax_absorbed: list[torch.Tensor] = []
        self.rule_map = functools.partial(attn_rule_map, store=self._softmax_absorbed)

    def explain(self, images: torch.Tensor, labels=None, **kwargs) -> ViTRelevance:
        if not self.active:
            with self:
                return self.explain(images, labels, **kwargs)
        self._softmax_absorbed.clear()
        blocks = sum(1 for m in self.detector.modules() if "attention" in m.__dict__)
        res = super().explain(images, labels, **kwargs)
        first_pass = self._softmax_absorbed[:blocks]  # later entries: the per-block passes of blocks=True
        self._softmax_absorbed.clear()
        if res.absorbed_direct is None:
            return res
        softmax = float(sum(float(t.sum()) for t in first_pass))
        return dataclasses.replace(res, absorbed_direct=res.absorbed_direct + softmax)
