"""Initialisation of a universal detector for training, as CNNDetection and T-FF do it: ImageNet
weights for the body, the head's own init, and the init of a network trained from random weights
(docs/training.md; docs/colour.md).

What differs between detectors is declared once per detector: the ImageNet release and the head's
qualified name in its :class:`~forensics.detectors.DetectorConfig` (``init_weights``, ``head``), and
the initialisers below as the detector's ``"train_init"`` fact (:class:`TrainInit`, declared with
:func:`forensics.detectors.registry.register_fact`). A detector with that fact is trainable by the
universal trainer.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .. import weights as weight_registry
from ..detectors import DetectorConfig, create
from ..detectors.base import Detector, load_strict
from ..detectors.registry import FactView, register_fact
from ..errors import WeightsNotFoundError
from ..io import read_weight_file

log = logging.getLogger(__name__)

INIT_CHOICES = ("imagenet", "random")
TRAIN_INIT_FACT = "train_init"


def _cnndet_fc_init(head: nn.Linear, gain: float) -> None:
    """CNNDetection: ``fc = Linear(2048, 1)`` with weight ~ N(0, init_gain), default bias (docs/training.md)."""
    nn.init.normal_(head.weight, 0.0, gain)


def _library_head_init(head: nn.Linear, gain: float) -> None:
    """T-FF EfB0: ``from_pretrained(num_classes=1)`` keeps the library's ``nn.Linear`` init."""


def init_efficientnet_tf(net: nn.Module) -> None:
    """The TensorFlow EfficientNet reference init (as timm's ``_init_weight_goog``): conv weights
    ~ N(0, sqrt(2 / fan_out)) with ``fan_out = k*k*out_channels / groups``, conv biases 0, BatchNorm
    weight 1 / bias 0, linear weights ~ N(0, 0.01) with bias 0.

    efficientnet_pytorch's ``from_name`` keeps PyTorch's per-layer defaults, under which the signal
    of a fresh model in eval mode (BatchNorm with running statistics 0/1, eps 1e-3) shrinks to
    ~1e-13 at the head and the logits are bit-identical for any input. With this init the eval-mode
    output depends on the input again, though weakly (logit spread ~1e-6 on 64 px inputs): what
    remains is the BatchNorm running statistics, which only training (momentum 0.01 in this
    library) brings to the data's scale. In train mode BatchNorm renormalises every layer either way.
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class TrainInit:
    """How training initialises one architecture: ``init_head(head, gain)`` and ``init_random(net)``,
    applied when the body is not loaded from ImageNet weights (``None``: the constructor's init is proper)."""

    init_head: Callable[[nn.Linear, float], None]
    init_random: Callable[[nn.Module], None] | None = None


# CNNDetection networks/trainer.py: resnet50(pretrained=True), new fc ~ N(0, init_gain).
register_fact(TRAIN_INIT_FACT, "resnet50")(TrainInit(_cnndet_fc_init))
# T-FF cr_ud: EfficientNet.from_pretrained('efficientnet-b0', num_classes=1) (fc not loaded).
register_fact(TRAIN_INIT_FACT, "efb0")(TrainInit(_library_head_init, init_efficientnet_tf))

#: ``{detector name: TrainInit}``: the detectors the universal trainer trains (live registry view).
TRAINABLE = FactView(TRAIN_INIT_FACT)


def train_init(name: str) -> TrainInit:
    """The :class:`TrainInit` of detector ``name``; ``KeyError`` naming the trainable ones."""
    try:
        return TRAINABLE[name]
    except KeyError:
        raise KeyError(f"the universal trainer trains {', '.join(TRAINABLE)}, not {name!r}") from None


def _load_imagenet(net: nn.Module, head: str, config: DetectorConfig) -> Path | None:
    """Load the ImageNet weights ``config.init_weights`` into ``net`` except its ``head``; ``None``
    (after ONE warning naming the file and its source) when the file is absent."""
    if config.init_weights is None:
        raise ValueError(f"{config.name} declares no ImageNet initialisation (init_weights); use init='random'")
    try:
        path = weight_registry.resolve(config.init_weights)
    except WeightsNotFoundError as exc:
        log.warning("ImageNet initialisation unavailable; falling back to random initialisation.\n%s", exc)
        return None
    state = read_weight_file(path, expected=f"ImageNet weights for {config.arch}")
    prefix = f"{head}."
    own_head = {prefix + k: v for k, v in getattr(net, head).state_dict().items()}
    body = {k: v for k, v in state.items() if not k.startswith(prefix)}
    load_strict(net, {**body, **own_head}, source=str(path), arch=f"{config.arch} (without its head)")
    log.info("initialised from ImageNet weights %s (head %r re-initialised)", path, head)
    return path


def build_detector(name: str, init: str = "imagenet", init_gain: float = 0.02) -> Detector:
    """A detector ready for training (CPU, eval mode): ImageNet weights for the body when
    ``init='imagenet'`` and the file is present (else random, with one warning), the detector's
    random init when not loaded, then the head init (docs/training.md; docs/colour.md)."""
    if init not in INIT_CHOICES:
        raise ValueError(f"init {init!r}: choose from {', '.join(INIT_CHOICES)}")
    recipe = train_init(name)
    detector = create(name)
    # The body is the module holding the head (``net`` for ``net.fc``); ImageNet files name its keys.
    owner, _, head = detector.config.head.rpartition(".")
    net = detector.get_submodule(owner)
    source = _load_imagenet(net, head, detector.config) if init == "imagenet" else None
    if source is None and recipe.init_random is not None:
        recipe.init_random(net)
    recipe.init_head(getattr(net, head), init_gain)
    detector.weights_source = f"init:{source}" if source is not None else "init:random"
    return detector


def set_bn_momentum(net: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm of ``net``; returns how many."""
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"BatchNorm momentum must be in (0, 1], got {momentum}")
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = momentum
    log.info("BatchNorm momentum set to %g on %d layers", momentum, len(layers))
    return len(layers)
