"""Wang et al. (CVPR 2020) universal detector: torchvision ResNet-50 with ``fc`` 2048 -> 1."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models import resnet50

from ..papers import WANG2020
from .base import Detector, conv_bn_layers, load_strict
from .config import IMAGENET_MEAN, IMAGENET_STD, DetectorConfig, Preprocessing
from .registry import register_detector

CONFIG = DetectorConfig(
    name="resnet50",
    arch="ResNet-50 (torchvision, fc 2048->1)",
    paper=WANG2020,
    # CNNDetection eval.py: no resize, CenterCrop(224), ImageNet normalisation.
    preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="center", crop_size=224),
    default_weights="resnet50.cnndet_blur_jpg_prob0.5",
    label="R50",
    # CNNDetection networks/trainer.py: resnet50(pretrained=True) with a new fc.
    head="net.fc",
    init_weights="init.resnet50_imagenet",
)


def unwrap_training_checkpoint(state: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """CNNDetection / T-FF files are ``{'model': state_dict, 'optimizer': ..., 'total_steps': ...}``;
    a bare state dict is accepted too. A ``module.`` prefix (DataParallel) is stripped."""
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


@register_detector(CONFIG)
class ResNet50Detector(Detector):
    """Feature maps: every ``nn.Conv2d`` (53 layers, 26,560 maps), pre-BN or post-BN."""

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        self.net = resnet50(weights=None, num_classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def _feature_layers(self):
        return conv_bn_layers(self.net, "net.", lambda name, mod: True)

    def gradcam_layers(self) -> list[nn.Module]:
        return [self.net.layer4]

    def load_state(self, state, source: str = "<state dict>") -> None:
        load_strict(self.net, unwrap_training_checkpoint(state), source=source, arch=self.config.arch)
