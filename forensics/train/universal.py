"""Training of the universal detectors (ResNet-50, EfficientNet-B0) with Wang et al.'s recipe,
including T-FF's colour-robust variant.

References (docs/training.md): CNNDetection ``train.py`` / ``networks/trainer.py`` (options,
augmentation, loop and early stopping, checkpoints) and T-FF ``src/cr_ud`` (RandomGrayscale after the
flip, docs/colour.md; EfficientNet-B0 from ``efficientnet_pytorch``).

The loop, as the reference: BCEWithLogits on the detector's logit; Adam(lr, (beta1, 0.999)) or SGD
(momentum 0); every ``loss_freq`` steps the loss is logged, every ``save_latest_freq`` steps
``model_epoch_latest.pth`` is written; at the end of epoch ``e`` ``latest`` and
``model_epoch_<e>.pth`` are written when ``e % save_epoch_freq == 0``, then the model is validated
(eval mode; accuracy at p > 0.5 and AP) and :class:`~forensics.train.earlystop.EarlyStopping` on
the accuracy saves ``model_epoch_best.pth``; an early stop divides the lr by 10 (fresh stopper,
delta -0.002) until it would fall below 1e-6, which ends training. The run returns the best
checkpoint, a CNNDetection-format file that ``forensics.detectors.create(name, weights=path)``
loads.

Additions to the reference (each documented at its option):

- ``--max_steps N`` stops after N optimizer steps (the project's fixed-budget benchmark); with
  ``--val_every K`` validation (and early stopping, patience counted in validation points) runs
  every K steps instead of at epoch ends. When training stops on a limit, a last validation runs
  unless one just ran at that step, so the best checkpoint always covers the final weights.
- ``--resume`` restores model, optimizer (unless ``--new_optim``), scaler, step/epoch counters
  and the position inside the epoch, early-stopping and lr state, and the RNG states. Each epoch's
  sample order is drawn from a generator seeded by ``(seed, epoch)``, so a resumed run skips the
  batches already seen and, with ``--num_threads 0``, continues bit-for-bit as an uninterrupted run.
  [deviation] CNNDetection's continue-training resets the lr to ``--lr``; here the lr schedule
  is restored.
- ``--init random`` (or absent ImageNet weights): EfficientNet-B0 gets the TF reference init
  (:func:`forensics.train.init.init_efficientnet_tf`); efficientnet_pytorch's ``from_name`` applies none.
- Bad image files never crash a run: they are skipped, and listed once per epoch (RunSummary).

Model initialisation lives in :mod:`.init`, the options (:class:`UniversalOptions`) in :mod:`.universal_options`;
the command line that builds them in :mod:`forensics.cli.train_args`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data import ImageDataset, RunSummary, collate
from ..detectors import get_config
from ..device import resolve_device
from ..errors import CheckpointError, DatasetLayoutError
from ..metrics import binary_metrics
from . import TrainerSpec, register_trainer
from .augment import AugmentConfig, seed_worker, train_transform, val_transform
from .checkpoint import BEST, LATEST, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .common import TrainLog, prepare_run_dir, seed_everything, split_records
from .earlystop import EarlyStopping, LrSchedule
from .init import INIT_CHOICES, TRAINABLE, build_detector, init_efficientnet_tf, set_bn_momentum, train_init
from .universal_options import OPTIMIZERS, UniversalOptions

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
__all__ = ["UniversalTrainer", "UniversalOptions", "TrainState", "run", "build_detector", "set_bn_momentum",
           "init_efficientnet_tf", "INIT_CHOICES", "OPTIMIZERS", "LOG_FILE"]


# ---------------------------------------------------------------------------- data
#: Independent random streams derived from ``--seed``: the sample order of an epoch, the worker
#: seeds of an epoch's loader, the validation loader's worker seeds.
ORDER_STREAM, LOADER_STREAM, VAL_STREAM = 0, 1, 2


def _stream_seed(seed: int, stream: int, epoch: int = 0) -> int:
    return int(np.random.SeedSequence([seed, stream, epoch]).generate_state(1, np.uint64)[0])


@dataclass
class TrainState:
    """Counters a checkpoint restores. ``epoch_batch``: batches of ``epoch`` already consumed
    (including batches whose files were all skipped); ``stopped_by``: why the run ended."""

    total_steps: int = 0
    epoch: int = 0
    epoch_batch: int = 0
    last_val_step: int = -1
    stopped_by: str | None = None


# ---------------------------------------------------------------------------- trainer
class UniversalTrainer:
    """One training run of ``options.detector`` (see the module docstring); :meth:`fit` returns the
    best checkpoint. Attributes ``model`` (the :class:`Detector`), ``optimizer``, ``state`` and
    ``run_dir`` are public for inspection."""

    def __init__(self, options: UniversalOptions):
        self.options = options
        self.name: str = options.detector
        train_init(self.name)
        self.device = resolve_device(options.device)
        self.amp = bool(options.amp) and self.device.type == "cuda"
        if options.amp and not self.amp:
            log.warning("--amp needs CUDA; training in float32 on %s", self.device)
        on_cuda = self.device.type == "cuda"
        self.num_workers = options.num_threads if options.num_threads is not None else (4 if on_cuda else 0)
        default_name = self.name + ("_color_robust" if options.color_robust else "")
        self.run_dir = Path(options.checkpoints_dir) / (options.name or default_name)
        self.train_log = TrainLog(self.run_dir / LOG_FILE)

        seed_everything(options.seed)
        pre = get_config(self.name).preprocessing
        augment = AugmentConfig.from_options(options, mean=tuple(pre.mean), std=tuple(pre.std))
        if augment.gray_prob > 0:
            log.info("colour-robust training: random grayscale with p=%g%s", augment.gray_prob,
                     " (validation too)" if augment.gray_val else "")
        self.train_set = ImageDataset(split_records(options.dataroot, options.train_split, options.classes),
                                      train_transform(augment))
        self.val_set = ImageDataset(split_records(options.dataroot, options.val_split, options.classes), val_transform(augment))
        log.info("%d training and %d validation images", len(self.train_set), len(self.val_set))

        self.model = build_detector(self.name, options.init, options.init_gain).to(self.device).train()
        if options.bn_momentum is not None:
            set_bn_momentum(self.model, options.bn_momentum)
        self.schedule = LrSchedule(lr=options.lr)
        self.stopper = EarlyStopping(patience=options.earlystop_epoch)
        self.optimizer = self._new_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = nn.BCEWithLogitsLoss()
        self.state = TrainState()
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._images = 0
        self._clock = time.perf_counter()
        self._bar: tqdm | None = None

    # ------------------------------------------------------------------ public
    def fit(self) -> Path:
        """Train until early stopping ends the schedule, ``niter`` epochs or ``max_steps`` steps;
        return ``<run_dir>/model_epoch_best.pth``."""
        resumed = self.options.resume and self._resume()
        if not resumed and latest_checkpoint(self.run_dir) is not None:
            log.warning("%s already holds checkpoints; starting a new run over them (use --resume to continue)",
                        self.run_dir)
        prepare_run_dir(self.run_dir, self.options.as_dict())
        self.train_log.write("resume" if resumed else "start", detector=self.name, step=self.state.total_steps,
                             epoch=self.state.epoch, lr=self.schedule.lr, device=str(self.device))
        with logging_redirect_tqdm(), tqdm(total=self.options.max_steps, initial=self.state.total_steps, unit="step",
                                           desc=f"train {self.name}", dynamic_ncols=True, disable=None) as bar:
            self._bar = bar
            self._clock = time.perf_counter()
            while (reason := self.state.stopped_by or self._limit_reached()) is None:
                self._run_epoch()
            self._finish(reason)
        best = self.run_dir / BEST
        log.info("training finished (%s) at step %d, epoch %d; best checkpoint %s (val acc %s)", self.state.stopped_by,
                 self.state.total_steps, self.state.epoch, best, self.stopper.best)
        return best

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Score the validation split in eval mode: accuracy at p > 0.5, real/fake accuracy and AP
        (:func:`forensics.metrics.binary_metrics`, docs/evaluation.md). Skipped files are logged."""
        self.model.eval()
        summary = RunSummary()
        labels: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        seed = _stream_seed(self.options.seed, VAL_STREAM)
        for batch in self._loader(self.val_set, list(range(len(self.val_set))), seed):
            summary.add(batch)
            if len(batch):
                scores.append(torch.sigmoid(self._forward(batch.images).float()).cpu())
                labels.append(batch.labels)
        self.model.train()
        if summary.skipped:
            self._report_data(summary, "val")
        if not scores:
            raise DatasetLayoutError(f"{self.options.dataroot}/{self.options.val_split}: no readable validation image")
        return binary_metrics(torch.cat(labels).numpy(), torch.cat(scores).numpy())

    # ------------------------------------------------------------------ loop
    def _limit_reached(self) -> str | None:
        if self.options.max_steps is not None and self.state.total_steps >= self.options.max_steps:
            return "max_steps"
        if self.state.epoch >= self.options.niter:
            return "niter"
        return None

    def _run_epoch(self) -> None:
        st, bs = self.state, self.options.batch_size
        order = self._epoch_order(st.epoch)
        n_batches = math.ceil(len(order) / bs)
        summary = RunSummary()
        for batch in self._loader(self.train_set, order[st.epoch_batch * bs:],
                                  _stream_seed(self.options.seed, LOADER_STREAM, st.epoch)):
            summary.add(batch)
            st.epoch_batch += 1
            if len(batch):  # a batch of skipped files only makes no step
                self._train_step(batch.images, batch.labels)
                if self.options.val_every and st.total_steps % self.options.val_every == 0:
                    self._validation_point()
            if st.stopped_by or (st.epoch_batch < n_batches and self._limit_reached()):
                break
        if summary.total:
            self._report_data(summary, "train")
        if st.epoch_batch < n_batches or st.stopped_by:
            return
        # End of the epoch, in the reference's order: periodic checkpoints, then validation.
        freq = self.options.save_epoch_freq
        if freq and st.epoch % freq == 0:
            self._save(LATEST)
            self._save(f"model_epoch_{st.epoch}.pth")
        if not self.options.val_every:
            self._validation_point()
        st.epoch += 1
        st.epoch_batch = 0

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        y = labels.to(self.device, dtype=torch.float32, non_blocking=True)
        loss = self.criterion(self._forward(images).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        st = self.state
        st.total_steps += 1
        self._loss_sum += loss.detach()
        self._loss_count += 1
        self._images += len(images)
        self._bar.update(1)
        if st.total_steps % self.options.loss_freq == 0:
            self._log_loss(float(loss.detach()))
        if st.total_steps % self.options.save_latest_freq == 0:
            self._save(LATEST)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            return self.model(x.to(self.device, non_blocking=True))

    def _log_loss(self, loss: float) -> None:
        now = time.perf_counter()
        mean = float(self._loss_sum) / self._loss_count
        speed = self._images / max(now - self._clock, 1e-9)  # since the last log line, validation included
        st, lr = self.state, self.schedule.lr
        log.info("step %d (epoch %d): loss %.4f (mean of %d steps %.4f), lr %.3g, %.1f img/s",
                 st.total_steps, st.epoch, loss, self._loss_count, mean, lr, speed)
        self.train_log.write("loss", step=st.total_steps, epoch=st.epoch, loss=loss, loss_mean=mean,
                             steps=self._loss_count, lr=lr, images_per_s=speed)
        self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2g}")
        self._loss_sum.zero_()
        self._loss_count = self._images = 0
        self._clock = now

    def _validation_point(self) -> None:
        """Validate, save ``best`` when the stopper says so, and apply CNNDetection's lr schedule
        (docs/training.md): on an early stop lr /= 10 with a fresh stopper, or the end of training."""
        st = self.state
        m = self.validate()
        st.last_val_step = st.total_steps
        shown = {k: m[k] for k in ("acc", "ap", "r_acc", "f_acc", "n_real", "n_fake")}
        log.info("validation at step %d (epoch %d): acc %.4f, ap %.4f (real acc %.4f, fake acc %.4f)",
                 st.total_steps, st.epoch, m["acc"], m["ap"], m["r_acc"], m["f_acc"])
        self.train_log.write("val", step=st.total_steps, epoch=st.epoch, lr=self.schedule.lr, **shown)
        if self.stopper.step(m["acc"]):
            self._save(BEST)
            self.train_log.write("best", step=st.total_steps, epoch=st.epoch, acc=m["acc"])
        if not self.stopper.early_stop:
            return
        if self.schedule.drop():
            self._set_lr(self.schedule.lr)
            self.stopper = self.schedule.new_stopper(self.options.earlystop_epoch)
            log.info("learning rate dropped by 10 to %g; training continues", self.schedule.lr)
            self.train_log.write("lr_drop", step=st.total_steps, epoch=st.epoch, lr=self.schedule.lr)
        else:
            log.info("early stopping: the learning rate would fall below %g", self.schedule.min_lr)
            st.stopped_by = "early_stop"
            self.train_log.write("early_stop", step=st.total_steps, epoch=st.epoch)

    def _finish(self, reason: str) -> None:
        """Final validation on a limit (unless one ran at this step), then ``latest``. Its RNG state
        is the one from before that validation, so a resumed run continues as an uninterrupted one."""
        rng = rng_state()
        if reason != "early_stop" and self.state.last_val_step != self.state.total_steps:
            self._validation_point()
        self.state.stopped_by = self.state.stopped_by or reason
        self._save(LATEST, rng=rng)
        self.train_log.write("finish", step=self.state.total_steps, epoch=self.state.epoch,
                             reason=self.state.stopped_by)

    # ------------------------------------------------------------------ data
    def _epoch_order(self, epoch: int) -> list[int]:
        """The sample order of ``epoch``: dataset order (``--serial_batches``), class-balanced draws
        (``--class_bal``) or a shuffle, from a generator seeded by ``(seed, epoch)``."""
        n = len(self.train_set)
        if self.options.serial_batches:
            return list(range(n))
        gen = torch.Generator().manual_seed(_stream_seed(self.options.seed, ORDER_STREAM, epoch))
        if self.options.class_bal:
            labels = np.array([r.label for r in self.train_set.records])
            weights = torch.as_tensor(1.0 / np.bincount(labels)[labels], dtype=torch.double)
            return list(WeightedRandomSampler(weights, n, replacement=True, generator=gen))
        return list(RandomSampler(range(n), generator=gen))

    def _loader(self, dataset: ImageDataset, indices: list[int], seed: int) -> DataLoader:
        # A private generator: creating the iterator must not draw from torch's global RNG
        # (augmentation draws), or a resumed run would diverge.
        return DataLoader(dataset, batch_size=self.options.batch_size, sampler=indices, num_workers=self.num_workers,
                          collate_fn=collate, worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(seed))

    def _report_data(self, summary: RunSummary, split: str) -> None:
        """List skipped files (once per epoch for training, per validation for val)."""
        summary.log(log)
        self.train_log.write("data", split=split, step=self.state.total_steps, epoch=self.state.epoch,
                             **summary.to_dict())

    # ------------------------------------------------------------------ state
    def _new_optimizer(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.options.optim](self.model.parameters(), self.schedule.lr, self.options)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _save(self, filename: str, rng: Mapping[str, Any] | None = None) -> Path:
        """A CNNDetection-format checkpoint (``model`` = ``detector.net.state_dict()``, docs/training.md) plus
        what ``--resume`` needs."""
        extra: dict[str, Any] = dict(
            detector=self.name, epoch_batch=self.state.epoch_batch, last_val_step=self.state.last_val_step,
            stopped_by=self.state.stopped_by, stopper=dataclasses.asdict(self.stopper),
            schedule=dataclasses.asdict(self.schedule), scaler=self.scaler.state_dict() if self.amp else None)
        if rng is not None:
            extra["rng"] = rng  # overrides the state save_checkpoint takes now
        return save_checkpoint(self.run_dir / filename, self.model.net.state_dict(), self.optimizer,
                               self.state.total_steps, self.state.epoch, **extra)

    def _resume(self) -> bool:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            log.info("--resume: no %s in %s yet; starting a new run", LATEST, self.run_dir)
            return False
        ck = load_checkpoint(path)
        if ck.get("detector", self.name) != self.name:
            raise CheckpointError(f"{path} was written by a {ck['detector']} run, not {self.name}")
        self.model.load_state(ck["model"], source=str(path))
        self.schedule = LrSchedule(**ck["schedule"])
        self.stopper = EarlyStopping(**ck["stopper"])
        if self.options.new_optim:
            self.optimizer = self._new_optimizer()
        else:
            self.optimizer.load_state_dict(ck["optimizer"])
        self._set_lr(self.schedule.lr)
        if self.amp and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState(total_steps=ck["total_steps"], epoch=ck["epoch"], epoch_batch=ck["epoch_batch"],
                                last_val_step=ck["last_val_step"],
                                stopped_by="early_stop" if ck.get("stopped_by") == "early_stop" else None)
        set_rng_state(ck["rng"])
        log.info("resumed %s at step %d (epoch %d, batch %d), lr %g%s", path, self.state.total_steps, self.state.epoch,
                 self.state.epoch_batch, self.schedule.lr, " with a fresh optimizer" if self.options.new_optim else "")
        return True


def run(options: UniversalOptions) -> Path:
    """Entry point of ``analyses/train.py --detector {resnet50,efb0}``."""
    return UniversalTrainer(options).fit()


register_trainer(TrainerSpec(
    detectors=tuple(TRAINABLE),
    description=("Wang et al. (CVPR 2020) recipe: BCE, Adam 1e-4, blur/JPEG augmentation, early stopping on val "
                 "accuracy with lr/10 drops; --color_robust adds T-FF's random grayscale (docs/colour.md)"),
    options=UniversalOptions,
    run=run,
))
