"""Training losses: Khosla et al.'s supervised contrastive loss (SupCon) and RINE's objective
(spec: docs/training.md).

SupCon, as RINE uses it (``contrast_mode='all'``, one view, temperature = base temperature = 0.07):
for L2-normalised features ``f_i`` and labels ``y_i``,

    s_ij = f_i . f_j / T  - max_k (f_i . f_k / T)          (row-max subtraction, self included)
    log p_ij = s_ij - log sum_{k != i} exp(s_ik)             (self-pairs excluded)
    loss_i = -(T / T_base) * mean_{j != i, y_j = y_i} log p_ij   (0 when i has no positive)
    loss = mean_i loss_i                                     (over every anchor)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPCON_TEMPERATURE = 0.07


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = SUPCON_TEMPERATURE,
                base_temperature: float = SUPCON_TEMPERATURE) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``contrast_mode='all'``).

    ``features``: ``[B, D]`` (one view, RINE's case) or ``[B, V, D]`` (V views), expected
    L2-normalised along the last axis (the caller normalises, as the reference does).
    ``labels``: ``[B]``; same label = positive pair. Anchors without a positive contribute 0 and
    the loss is the mean over all ``B * V`` anchors.
    """
    if features.ndim == 2:
        features = features.unsqueeze(1)
    if features.ndim != 3:
        raise ValueError(f"features must be [B, D] or [B, V, D], got {tuple(features.shape)}")
    batch, views = features.shape[:2]
    labels = labels.reshape(-1)
    if labels.numel() != batch:
        raise ValueError(f"{labels.numel()} labels for {batch} samples")
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # [V*B, D], view-major as the reference
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    n = batch * views
    not_self = ~torch.eye(n, dtype=torch.bool, device=features.device)
    same = labels.view(-1, 1).eq(labels.view(1, -1)).repeat(views, views) & not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(dim=1, keepdim=True))
    positives = same.sum(dim=1)
    mean_log_prob_pos = (same * log_prob).sum(dim=1) / positives.clamp(min=1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss` (the reference's ``SupConLoss`` defaults)."""

    def __init__(self, temperature: float = SUPCON_TEMPERATURE, base_temperature: float = SUPCON_TEMPERATURE):
        super().__init__()
        self.temperature = temperature
        self.base_temperature = base_temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return supcon_loss(features, labels, self.temperature, self.base_temperature)


def rine_loss(logit: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, factor: float) -> torch.Tensor:
    """RINE's objective: ``BCEWithLogits(logit, y, reduction='sum') + factor * SupCon(normalize(z), y)``.

    ``logit`` ``[B]``, ``z`` ``[B, proj_dim]`` (the proj2 output), ``labels`` ``[B]`` (0 real, 1 fake).
    The BCE term is summed over the batch, as the reference (so it dominates at batch 128).
    """
    bce = F.binary_cross_entropy_with_logits(logit.reshape(-1), labels.float().reshape(-1), reduction="sum")
    return bce + factor * supcon_loss(F.normalize(z, dim=1), labels)
