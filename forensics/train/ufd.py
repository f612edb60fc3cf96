"""UFD training (docs/training.md): a linear probe ``fc`` on the frozen CLIP image embedding.

Recipe (``train.py --arch=CLIP:ViT-L/14 --fix_backbone``):

- ``fc = Linear(embed_dim, 1)`` re-initialised (weight ~ N(0, 0.02^2), default bias); only it trains;
- loss: BCEWithLogits (mean); AdamW, lr 1e-4, betas (``--beta1`` 0.9, 0.999), weight decay 0;
  batch 256, shuffled;
- train transform (docs/training.md): resize the short side to ``--loadSize`` 256 (``--no_resize`` skips it),
  blur (p 0.5, sigma ~ U[0, 3]), JPEG (p 0.5, codec from {cv2, pil}, quality uniform over the
  integers 30..100), RandomCrop(backbone size), flip, CLIP normalisation;
- validation (``get_val_opt``): resize 256, CenterCrop, and [quirk, default ``--val_aug reference``]
  blur with p 0.5 at fixed sigma 1.5 and PIL JPEG with p 0.5 at fixed quality 65 (``--val_aug none``:
  plain resize + CenterCrop); the augmentation itself is :mod:`.augment`'s;
- schedule: up to ``--niter`` 100 epochs; after each, validation accuracy feeds CNNDetection's
  early stopping (:mod:`.earlystop`: patience 5, delta -0.001); on a stop lr /= 10 with a fresh
  stopper (delta -0.002); training ends when lr would fall below 1e-6.

Data: ``<dataroot>/<train_split>`` and ``<dataroot>/<val_split>`` in the ForenSynths layout (UFD
itself validates on ``test/progan``: pass ``--val_split test/progan``). UFD sets no seed; we seed
(``--seed`` 0).

Outputs in ``<checkpoints_dir>/<name>/``: ``fc_weights.pth`` in the released format (an
``OrderedDict`` with ``weight`` ``[1, D]`` and ``bias`` ``[1]``), rewritten whenever the early stopper
records a new best ([quirk] also on the first epoch after an lr drop), which
``create("ufd", weights=path, backbone=..., backbone_weights=...)`` loads; ``model_epoch_best.pth``
(training-checkpoint format, the same weights); ``model_epoch_latest.pth`` (every epoch, with the
stopper and lr state) for ``--resume``; ``opt.json``, ``train_log.jsonl``.

``--feature_cache DIR``: trains and validates on cached embeddings of deterministic views (resize to
``--loadSize`` unless ``--no_resize``, CenterCrop; no blur/JPEG/crop jitter/flip, no validation
augmentation). This changes the recipe; it is meant for repeated runs, where each epoch then costs
only the probe.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Transform
from ..detectors import create
from ..detectors.config import CLIP_MEAN, CLIP_STD, Preprocessing
from ..detectors.ufd import UfdDetector
from ..device import resolve_device
from ..io import atomic_torch_save, read_weight_file
from . import TrainerSpec, register_trainer
from .augment import train_transform, val_transform
from .checkpoint import BEST, LATEST, save_checkpoint
from .common import TrainLog, prepare_run_dir, seed_everything, split_records
from .earlystop import EarlyStopping, LrSchedule
from ..detectors.feature_cache import EMBEDDING
from .clip_options import UfdOptions
from .rine import (LossFn, TrainResult, augment_config, evaluate, make_sources,
                   require_labels, resume_state, set_lr, class_list, train_epoch)

log = logging.getLogger(__name__)

DESCRIPTION = "UFD linear probe on the frozen CLIP embedding, AdamW + CNNDetection early stopping (docs/training.md)"
FC_WEIGHTS = "fc_weights.pth"
FC_INIT_STD = 0.02


def reset_fc(fc: nn.Linear) -> None:
    """UFD's initialisation: default Linear init, then weight ~ N(0, 0.02^2) (bias keeps the default)."""
    fc.reset_parameters()
    nn.init.normal_(fc.weight, mean=0.0, std=FC_INIT_STD)


def ufd_step_loss(head: nn.Module, embedding: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCEWithLogits (mean) of ``fc(embedding)``; ``head`` is the ``fc`` Linear."""
    logit = head(embedding).squeeze(1)
    return F.binary_cross_entropy_with_logits(logit, labels.float()), logit


def ufd_transforms(args: UfdOptions, crop: int) -> tuple[Transform, Transform]:
    """(train, val) transforms (docs/training.md) at the backbone's crop size (JPEG quality range 30..100;
    validation per ``get_val_opt`` unless ``--val_aug none``)."""
    cfg = augment_config(args, crop)
    return train_transform(cfg), val_transform(cfg)


def cache_preprocessing(args: UfdOptions, crop: int) -> Preprocessing:
    """The deterministic view cached with ``--feature_cache``: resize to ``--loadSize`` (unless
    ``--no_resize``, first ``--rz_interp``), CenterCrop, CLIP normalisation."""
    return Preprocessing(mean=CLIP_MEAN, std=CLIP_STD, crop="center", crop_size=crop,
                         resize=None if args.no_resize else args.loadSize, interpolation=args.rz_interp[0])


def fc_state(fc: nn.Linear) -> OrderedDict[str, torch.Tensor]:
    """The released ``fc_weights.pth`` format: ``OrderedDict(weight [1, D], bias [1])`` on the CPU."""
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in fc.state_dict().items())


def train(args: UfdOptions) -> TrainResult:
    """Train UFD's linear probe as docs/training.md describes (see the module docstring); the returned model
    holds the best probe (the one in ``fc_weights.pth``)."""
    seed_everything(args.seed)
    run_dir = prepare_run_dir(Path(args.checkpoints_dir) / args.name, args.as_dict())
    device = resolve_device(args.device)
    model: UfdDetector = create("ufd", backbone=args.backbone, backbone_weights=args.backbone_weights, device=device)
    fc = model.fc
    reset_fc(fc)
    schedule = LrSchedule(lr=args.lr)
    stopper = EarlyStopping(patience=args.earlystop_epoch, delta=-0.001)
    optimizer = torch.optim.AdamW(fc.parameters(), lr=args.lr, betas=(args.beta1, 0.999),
                                  weight_decay=args.weight_decay)
    ckpt = resume_state(run_dir, args.resume)
    start_epoch, total_steps, finished = 0, 0, False
    if ckpt is not None:
        model.load_state(ckpt["model"], source=str(run_dir / LATEST))
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, total_steps = int(ckpt["epoch"]), int(ckpt["total_steps"])
        schedule = LrSchedule(lr=float(ckpt["lr"]), drops=int(ckpt["lr_drops"]))
        stopper = EarlyStopping(**ckpt["early_stopping"])
        finished = bool(ckpt["finished"])
        set_lr(optimizer, schedule.lr)
    train_records = split_records(args.dataroot, args.train_split, class_list(args.classes))
    val_records = split_records(args.dataroot, args.val_split, class_list(args.classes))
    require_labels(train_records, "training set")
    require_labels(val_records, "validation set")
    crop = model.clip.image_size
    log.info("UFD: %d train / %d val images, backbone %s, up to %d epochs on %s", len(train_records),
             len(val_records), args.backbone, args.niter, device)
    train_tf, val_tf = ufd_transforms(args, crop)
    train_src, val_src = make_sources(args, model, EMBEDDING, train_records, val_records, train_tf, val_tf,
                                      cache_preprocessing=cache_preprocessing(args, crop))
    loss_fn: LossFn = ufd_step_loss
    train_log = TrainLog(run_dir / "train_log.jsonl")
    history: list[dict[str, Any]] = []
    weights = run_dir / FC_WEIGHTS
    epoch = start_epoch
    while not finished and epoch < args.niter:
        epoch += 1
        start = time.perf_counter()
        train_loss, steps = train_epoch(fc, train_src, optimizer, loss_fn)
        total_steps += steps
        val = evaluate(fc, val_src, loss_fn)
        lr = schedule.lr
        improved = stopper.step(val["acc"])
        if improved:
            atomic_torch_save(fc_state(fc), weights)
            save_checkpoint(run_dir / BEST, {f"fc.{k}": v for k, v in fc.state_dict().items()}, optimizer,
                            total_steps, epoch, trainer="ufd")
        action = "best" if improved else ""
        if stopper.early_stop:
            if schedule.drop():
                set_lr(optimizer, schedule.lr)
                stopper = schedule.new_stopper(args.earlystop_epoch)
                action = "lr_drop"
                log.info("epoch %d: early stop, lr dropped to %.0e, continuing", epoch, schedule.lr)
            else:
                finished = True
                action = "stop"
                log.info("epoch %d: early stop at lr %.0e, training ends", epoch, schedule.lr)
        record = {"epoch": epoch, "lr": lr, "steps": total_steps, "train_loss": train_loss, "val_loss": val["loss"],
                  "val_acc": val["acc"], "val_ap": val["ap"], "action": action, "seconds": time.perf_counter() - start}
        history.append(record)
        train_log.write("epoch", **record)
        log.info("epoch %d: lr %.0e, train loss %.4f, val acc %.4f%s (%d steps, %.1f s)", epoch, lr, train_loss,
                 val["acc"], f" [{action}]" if action else "", total_steps, record["seconds"])
        save_checkpoint(run_dir / LATEST, {f"fc.{k}": v for k, v in fc.state_dict().items()}, optimizer,
                        total_steps, epoch, trainer="ufd", lr=schedule.lr, lr_drops=schedule.drops,
                        early_stopping=dataclasses.asdict(stopper), finished=finished)
    if weights.is_file():  # the final model is the early stopper's best, as CNNDetection's
        model.load_state(read_weight_file(weights, expected="UFD fc weights"), source=str(weights))
    else:  # no epoch ran (e.g. --niter 0): the current probe
        atomic_torch_save(fc_state(fc), weights)
    log.info("UFD probe (best validation accuracy) in %s", weights)
    model.eval()
    return TrainResult(model, weights, run_dir, history)


def run(options: UfdOptions) -> Path:
    return train(options).weights


register_trainer(TrainerSpec(detectors=("ufd",), description=DESCRIPTION, options=UfdOptions, run=run))
