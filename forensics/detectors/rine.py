"""RINE (Koutlis & Papadopoulos, ECCV 2024): per-block CLIP CLS tokens weighted by a Trainable
Importance Estimator (TIE), as in ``mever-team/rine`` ``src/models.py`` (spec: docs/tie.md).

- Backbone: a frozen open_clip CLIP ViT (default ``ViT-L-14-quickgelu``: 24 blocks, width 1024).
  The token of block ``b`` is the CLS token of the output of ``resblocks[b].ln_2`` (the normalised
  MLP input, not the block output), stacked over blocks to ``g`` ``[B, n, w]``.
- Head (:class:`RineHead`, q = ``nproj``, d = ``proj_dim``): ``proj1`` = Dropout + q x [Linear, ReLU,
  Dropout] (Linears at indices 3k+1) on the last axis; ``alpha`` ``[1, n, d]`` (randn),
  A = softmax(alpha, dim=1) over blocks; z0 = sum_b A * proj1(g); z = ``proj2``(z0) (same shape of
  Sequential); logit = ``head``(z) (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear(d, 1)).
  The official checkpoints (``model_*_trainable.pth``: ``alpha``, ``proj1.1.weight``, ...,
  ``head.6.bias``) load into :class:`RineHead` unchanged; ``RineDetector.rine_head.state_dict()``
  writes that format back.
- Feature maps (channel analyses): layer ``blocks.<b>`` = block b's captured token, ``width``
  channels, keys ``blocks.<b>.#<c>(T=<width>)``. Each token passes through an ``nn.Identity`` tap
  (``taps.<b>``) before stacking; both measurement points name it, so probes record and mask exactly
  what the head sees and never touch the backbone's residual stream.

Differences from the reference, all numerically small: open_clip instead of OpenAI ``clip``
(~2e-6 on the tokens, see :mod:`.clip_backbone`), and fp32 everywhere (the reference's backbone is
fp16 on GPU).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from ..errors import CheckpointError
from ..papers import RINE2024
from .base import load_strict
from .clip_backbone import ClipDetector, check_state_complete, clip_options, split_prefixed
from .config import CLIP_MEAN, CLIP_STD, DetectorConfig, Preprocessing
from .probes import FeatureLayer
from .registry import register_detector
from .resnet50 import unwrap_training_checkpoint

CONFIG = DetectorConfig(
    name="rine",
    arch="RINE (CLIP ViT per-block ln_2 CLS tokens + TIE head)",
    paper=RINE2024,
    # RINE test_1 transform: CenterCrop(224) at native resolution, no resize, CLIP normalisation.
    preprocessing=Preprocessing(mean=CLIP_MEAN, std=CLIP_STD, crop="center", crop_size=224),
    default_weights="rine.2class",
    options=clip_options(nproj=4, proj_dim=128, dropout=0.5),
    label="RINE",
    head="rine_head",
)

HEAD_PREFIX = f"{CONFIG.head}."
_PROJ1_LINEAR = re.compile(r"^proj1\.\d+\.weight$")


def projection(in_dim: int, dim: int, nproj: int, dropout: float) -> nn.Sequential:
    """RINE's Q1/Q2: Dropout, then ``nproj`` x [Linear, ReLU, Dropout] (Linears at indices 3k+1)."""
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for i in range(nproj):
        layers += [nn.Linear(in_dim if i == 0 else dim, dim), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class HeadGeometry:
    """What a RINE head checkpoint's tensor shapes say: backbone ``blocks`` x ``width``, ``nproj``, ``proj_dim``."""

    blocks: int
    width: int
    nproj: int
    proj_dim: int

    @classmethod
    def of(cls, state: Mapping[str, Any], source: str) -> "HeadGeometry":
        check_state_complete(state, ("alpha", "proj1.1.weight"), source, "a RINE head checkpoint")
        alpha, first = state["alpha"], state["proj1.1.weight"]
        if alpha.ndim != 3 or alpha.shape[0] != 1 or first.ndim != 2:
            raise CheckpointError(f"{source}: not a RINE head (alpha {tuple(alpha.shape)}, expected [1, blocks, "
                                  f"proj_dim]; proj1.1.weight {tuple(first.shape)}, expected [proj_dim, width])")
        return cls(blocks=int(alpha.shape[1]), width=int(first.shape[1]),
                   nproj=sum(1 for k in state if _PROJ1_LINEAR.match(k)), proj_dim=int(alpha.shape[2]))


class RineHead(nn.Module):
    """RINE's trainable part (``proj1``, ``alpha``, ``proj2``, ``head``) for ``blocks`` x ``width`` tokens.

    Parameter names equal the reference's, so its checkpoints load with no renaming. 283,009
    parameters for (24 blocks, width 1024, nproj 4, proj_dim 128).
    """

    def __init__(self, blocks: int, width: int, nproj: int = 4, proj_dim: int = 128, dropout: float = 0.5):
        super().__init__()
        if min(blocks, width, nproj, proj_dim) < 1:
            raise ValueError(f"RineHead needs positive sizes, got blocks={blocks}, width={width}, "
                             f"nproj={nproj}, proj_dim={proj_dim}")
        self.geometry = HeadGeometry(blocks, width, nproj, proj_dim)
        self.alpha = nn.Parameter(torch.randn(1, blocks, proj_dim))
        self.proj1 = projection(width, proj_dim, nproj, dropout)
        self.proj2 = projection(proj_dim, proj_dim, nproj, dropout)
        self.head = nn.Sequential(
            nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(proj_dim, 1),
        )

    def importances(self) -> torch.Tensor:
        """TIE block importances A = softmax(alpha, dim=1), ``[blocks, proj_dim]``: each channel's
        weights over the blocks sum to 1."""
        return torch.softmax(self.alpha, dim=1)[0]

    def forward(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``g`` ``[B, blocks, width]`` -> (logit ``[B]``, z ``[B, proj_dim]``, the output of ``proj2``)."""
        z = self.proj2((self.importances() * self.proj1(g)).sum(dim=1))
        return self.head(z).squeeze(-1), z

    def load_state(self, state: Mapping[str, Any], source: str = "<state dict>", arch: str = "RINE head") -> None:
        """Load a reference-format head checkpoint strictly, after checking its block count and
        width against this head's (one clear error naming the file, expected and found)."""
        found = HeadGeometry.of(state, source)
        own = self.geometry
        if (found.blocks, found.width) != (own.blocks, own.width):
            raise CheckpointError(
                f"{source}: RINE head for {found.blocks} blocks x width {found.width}, but this model expects "
                f"{own.blocks} blocks x width {own.width} ({arch}); e.g. the released heads (24 x 1024) need "
                "backbone='ViT-L-14-quickgelu'")
        load_strict(self, state, source=source, arch=f"{arch}, nproj={own.nproj}, proj_dim={own.proj_dim}")


class RineFeatures(NamedTuple):
    """One RINE forward pass: ``logit`` ``[B]``, ``z`` ``[B, proj_dim]`` (proj2 output, the
    contrastive / t-SNE feature), ``tokens`` g ``[B, blocks, width]``, ``importances`` ``[blocks, proj_dim]``."""

    logit: torch.Tensor
    z: torch.Tensor
    tokens: torch.Tensor
    importances: torch.Tensor


@register_detector(CONFIG)
class RineDetector(ClipDetector):
    """RINE on an open_clip backbone.

    Options: ``backbone`` (open_clip model name, default ``ViT-L-14-quickgelu``), ``backbone_weights``
    (tag or path, default ``clip.vit_l14_openai``; ``None`` = random), ``nproj`` (4), ``proj_dim``
    (128), ``dropout`` (0.5), ``cam_block`` (Grad-CAM block, default -1 = last). A tiny random
    model: ``create("rine", backbone="forensics-tiny-vit", backbone_weights=None, nproj=1, proj_dim=16)``.
    """

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        opts = self.config.options
        self.rine_head = RineHead(self.clip.blocks, self.clip.width, int(opts["nproj"]), int(opts["proj_dim"]),
                                  float(opts["dropout"]))
        self.taps = nn.ModuleList(nn.Identity() for _ in range(self.clip.blocks))

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> RineFeatures:
        _, cls_tokens = self.clip.forward_with_cls_tokens(x, site="ln_2")
        g = torch.stack([tap(t) for tap, t in zip(self.taps, cls_tokens)], dim=1)
        logit, z = self.rine_head(g)
        return RineFeatures(logit, z, g, self.rine_head.importances())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logit

    def importances(self) -> torch.Tensor:
        """TIE importances softmax(alpha, dim=1)[0], ``[blocks, proj_dim]`` (columns sum to 1 over blocks)."""
        return self.rine_head.importances()

    def _feature_layers(self) -> list[FeatureLayer]:
        return [FeatureLayer(f"blocks.{b}", self.clip.width, {"pre_bn": f"taps.{b}", "post_bn": f"taps.{b}"})
                for b in range(self.clip.blocks)]

    # ------------------------------------------------------------------ weights
    @classmethod
    def _head_part(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """The head tensors of a checkpoint: reference head files as they are; backbone keys
        (``clip.*``) removed; this detector's own ``rine_head.`` prefix removed."""
        _, rest = split_prefixed(unwrap_training_checkpoint(state), cls.BACKBONE_PREFIXES)
        return {k.removeprefix(HEAD_PREFIX): v for k, v in rest.items()}

    @classmethod
    def infer_options(cls, state: Mapping[str, Any], source: str) -> dict[str, Any]:
        geometry = HeadGeometry.of(cls._head_part(state), source)
        return {"nproj": geometry.nproj, "proj_dim": geometry.proj_dim}

    def load_state(self, state: Mapping[str, Any], source: str = "<state dict>") -> None:
        """A reference head file (``alpha``, ``proj1.*``, ...), optionally with the reference's
        ``clip.*`` backbone keys (loaded into the backbone), or this detector's own state dict."""
        self._split_backbone(state, source)
        self.rine_head.load_state(self._head_part(state), source=source, arch=f"RINE on {self.clip.arch}")
