"""Options of the universal trainer (:mod:`.universal`): CNNDetection's training options (its names and
defaults; docs/training.md) plus this project's additions, and the optimizers they choose."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .init import INIT_CHOICES
from .options import AugmentOptions, TrainOptionsError

OPTIMIZERS: dict[str, Callable[[Any, float, Any], torch.optim.Optimizer]] = {
    "adam": lambda params, lr, o: torch.optim.Adam(params, lr=lr, betas=(o.beta1, 0.999)),
    "sgd": lambda params, lr, o: torch.optim.SGD(params, lr=lr, momentum=0.0),
}


@dataclass(frozen=True, kw_only=True)
class UniversalOptions(AugmentOptions):
    """One run of the universal trainer (``analyses/train.py --detector {resnet50,efb0}``; the command line's
    help describes each option). ``classes=None`` detects flat vs class layout, ``()`` is flat."""

    detector: str = "resnet50"
    classes: tuple[str, ...] | None = None
    class_bal: bool = False
    serial_batches: bool = False
    batch_size: int = 64
    num_threads: int | None = None
    init: str = "imagenet"
    init_gain: float = 0.02
    bn_momentum: float | None = None
    optim: str = "adam"
    lr: float = 1e-4
    beta1: float = 0.9
    niter: int = 10000
    max_steps: int | None = None
    val_every: int = 0
    earlystop_epoch: int = 5
    amp: bool = False
    loss_freq: int = 400
    save_latest_freq: int = 2000
    save_epoch_freq: int = 20
    new_optim: bool = False

    def validate(self) -> None:
        super().validate()
        if self.optim not in OPTIMIZERS:
            raise TrainOptionsError(f"--optim {self.optim!r}: choose from {', '.join(OPTIMIZERS)}")
        if self.init not in INIT_CHOICES:
            raise TrainOptionsError(f"--init {self.init!r}: choose from {', '.join(INIT_CHOICES)}")
        if self.batch_size < 1:
            raise TrainOptionsError(f"--bsize {self.batch_size}: need at least one image per batch")
        if self.max_steps is not None and self.max_steps < 0:
            raise TrainOptionsError(f"--max_steps {self.max_steps}: must be >= 0")
