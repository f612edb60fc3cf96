"""UFD, UniversalFakeDetect (Ojha, Li & Lee, CVPR 2023): a linear probe on the CLIP image embedding
(spec: docs/training.md).

- Backbone: a frozen open_clip CLIP ViT (default ``ViT-L-14-quickgelu``). The feature is
  ``encode_image(x)`` = ln_post(CLS after the last block) @ proj, 768-d for ViT-L/14, **not**
  L2-normalised.
- Classifier: ``fc = Linear(embed_dim, 1)``; logit -> sigmoid -> P(fake). A random ``fc`` is
  initialised as UFD's training does (weight ~ N(0, 0.02^2), default bias).
- Weights: the released ``fc_weights.pth`` (``{'weight': [1, 768], 'bias': [1]}``) loads strictly
  into ``fc``; UFD training checkpoints (``{'model': state_dict}`` with ``fc.weight``/``fc.bias``
  and the CLIP tensors under ``model.``) are accepted too, their CLIP part loading into the backbone.
- Feature maps: one layer ``embedding`` (``embed_dim`` channels, keys ``embedding.#<c>(T=768)``)
  through the ``nn.Identity`` tap ``tap`` between the embedding and ``fc``.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from ..papers import UFD2023
from .base import load_strict
from .clip_backbone import ClipDetector, clip_options
from .config import CLIP_MEAN, CLIP_STD, DetectorConfig, Preprocessing
from .probes import FeatureLayer
from .registry import register_detector

CONFIG = DetectorConfig(
    name="ufd",
    arch="UFD (CLIP ViT image embedding + Linear(embed_dim, 1))",
    paper=UFD2023,
    # validate.py: CenterCrop(224) at native resolution, no resize, CLIP normalisation.
    preprocessing=Preprocessing(mean=CLIP_MEAN, std=CLIP_STD, crop="center", crop_size=224),
    default_weights="ufd.fc",
    options=clip_options(),
    label="UFD",
    head="fc",
)

FC_PREFIX = f"{CONFIG.head}."


class UfdFeatures(NamedTuple):
    """One UFD forward pass: ``logit`` ``[B]`` and the CLIP ``embedding`` ``[B, embed_dim]``."""

    logit: torch.Tensor
    embedding: torch.Tensor


@register_detector(CONFIG)
class UfdDetector(ClipDetector):
    """UFD on an open_clip backbone.

    Options: ``backbone`` (default ``ViT-L-14-quickgelu``), ``backbone_weights`` (tag or path, default
    ``clip.vit_l14_openai``; ``None`` = random), ``cam_block`` (Grad-CAM block, default -1 = last).
    """

    # UFD's CLIPModel holds CLIP as ``self.model``; RINE-style ``clip.`` keys are accepted as well.
    BACKBONE_PREFIXES = ("model.", "clip.")

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        self.tap = nn.Identity()
        self.fc = nn.Linear(self.clip.embed_dim, 1)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The (tapped) CLIP image embedding ``[B, embed_dim]``, the feature UFD classifies."""
        return self.tap(self.clip(x))

    def forward_features(self, x: torch.Tensor) -> UfdFeatures:
        embedding = self.embed(x)
        return UfdFeatures(self.fc(embedding).squeeze(1), embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logit

    def _feature_layers(self) -> list[FeatureLayer]:
        return [FeatureLayer("embedding", self.clip.embed_dim, {"pre_bn": "tap", "post_bn": "tap"})]

    def load_state(self, state: Mapping[str, Any], source: str = "<state dict>") -> None:
        """``fc_weights.pth`` (``weight``, ``bias``), or keys prefixed ``fc.`` (training checkpoints,
        whose ``model.*`` CLIP tensors go to the backbone)."""
        rest = self._split_backbone(state, source)
        fc_state = {k.removeprefix(FC_PREFIX): v for k, v in rest.items()}
        load_strict(self.fc, fc_state, source=source, arch=f"UFD fc Linear({self.clip.embed_dim}, 1)")
