"""EfficientNet-B0 universal detector (efficientnet_pytorch 0.7.1, one output), as in T-FF."""
from __future__ import annotations

from torch import nn

from ..papers import TFF2022
from .base import Detector, conv_bn_layers, load_strict
from .config import IMAGENET_MEAN, IMAGENET_STD, DetectorConfig, Preprocessing
from .registry import register_detector
from .resnet50 import unwrap_training_checkpoint

CONFIG = DetectorConfig(
    name="efb0",
    arch="EfficientNet-B0 (efficientnet_pytorch, 1 output)",
    paper=TFF2022,
    preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="center", crop_size=224),
    default_weights="efb0.tff_blur_jpg_prob0.5",
    options={"image_size": None},
    label="EfB0",
    # T-FF cr_ud: EfficientNet.from_pretrained('efficientnet-b0', num_classes=1) (fc not loaded).
    head="net._fc",
    init_weights="init.efb0_imagenet",
)


def _swish_owners(net: nn.Module):
    """(module, attribute) pairs holding efficientnet_pytorch's shared ``_swish`` activations."""
    return [(m, "_swish") for m in net.modules() if isinstance(getattr(m, "_swish", None), nn.Module)]


@register_detector(CONFIG)
class EfficientNetB0Detector(Detector):
    """Feature maps: ``_conv_stem``, every ``_expand_conv``/``_depthwise_conv``/``_project_conv`` and
    ``_conv_head`` (49 layers, 21,008 maps; the SE convs are excluded as in T-FF)."""

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        from efficientnet_pytorch import EfficientNet  # pinned, kept behind this builder
        # image_size=None: TF-style "same" padding computed dynamically, as the reference builds it.
        self.net = EfficientNet.from_name("efficientnet-b0", num_classes=1,
                                          image_size=config.options["image_size"])

    def forward(self, x):
        return self.net(x).squeeze(1)

    def _feature_layers(self):
        return conv_bn_layers(self.net, "net.", lambda name, mod: "conv" in name.rsplit(".", 1)[-1])

    def gradcam_layers(self) -> list[nn.Module]:
        return [self.net._conv_head]

    def load_state(self, state, source: str = "<state dict>") -> None:
        load_strict(self.net, unwrap_training_checkpoint(state), source=source, arch=self.config.arch)

    def _enter_explain(self):
        # MemoryEfficientSwish is a custom autograd Function that gradient/LRP hooks cannot see
        # through; nn.SiLU computes the same function as a standard module.
        saved = [(owner, attr, getattr(owner, attr)) for owner, attr in _swish_owners(self.net)]
        for owner, attr, _ in saved:
            setattr(owner, attr, nn.SiLU())
        return saved

    def _exit_explain(self, saved) -> None:
        for owner, attr, module in saved:
            setattr(owner, attr, module)
