"""RINE training (docs/training.md): the TIE head on a frozen CLIP backbone's per-block ln_2 CLS tokens.

Recipe (docs/training.md), defaults = the released 2-class model:

- data: ``<dataroot>/train`` and ``<dataroot>/val`` in the ForenSynths layout
  (``<split>/<class>/{0_real,1_fake}`` or flat ``<split>/{0_real,1_fake}``); ``--classes`` picks class
  folders (e.g. ``chair,horse``), default all;
- train transform: CNNDetection blur (p 0.5, sigma ~ U[0, 3]) then JPEG (p 0.5, codec from
  {cv2, pil}, quality drawn from the **two-element set {30, 100}** [quirk]; ``--jpg_qual_range`` gives
  every integer in 30..100 as CNNDetection/UFD), RandomCrop(backbone size) with **no resize**,
  horizontal flip, CLIP normalisation; validation: CenterCrop, no resize, no augmentation;
- loss: ``BCEWithLogits(reduction='sum') + factor * SupCon(normalize(z))`` (:func:`.losses.rine_loss`);
  Adam, lr 1e-3, default betas, no weight decay; lr/10 from epoch 6 and lr/100 from epoch 11
  (``--epochs_reduce_lr 6 11``, 1-based epochs); batch 128, shuffled, ``drop_last=False``; 1 epoch;
  ``seed_everything(0)``;
- each epoch ends with a validation pass (loss summed per batch and averaged over batches,
  accuracy at 0.5), logged only: as in the reference it selects nothing.

Outputs in ``<checkpoints_dir>/<name>/``: ``model_<name>_trainable.pth``, the **head only** in the
official key format (``alpha``, ``proj1.1.weight``, ..., ``head.6.bias``; a plain dict, docs/training.md), which
``forensics.detectors.create("rine", weights=path, backbone=..., backbone_weights=...)`` loads with
``nproj``/``proj_dim`` inferred; ``model_epoch_latest.pth``, the training checkpoint
(``{'model': head state, 'optimizer', 'total_steps', 'epoch', 'rng', ...}``) that ``--resume``
continues from (epoch granularity); ``opt.json`` and ``train_log.jsonl``.

``--feature_cache DIR`` trains on cached backbone tokens of **deterministic** views
(:mod:`.feature_cache`: CenterCrop, no blur/JPEG/crop jitter/flip). That changes the recipe (no
augmentation) and is meant for hyper-parameter grids and multi-epoch studies, where every epoch
then costs only head time; validation is identical with or without the cache.

Differences from the reference: open_clip fp32 backbone (the reference's is fp16 on GPU); the
backbone runs under ``no_grad`` as there; only the head's parameters go to Adam (the frozen CLIP
parameters get no gradient in the reference either, so the updates are the same).

The helpers in the "shared with the UFD trainer" section (data splits, feature sources, epoch loops)
are reused by :mod:`.ufd`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.dataset import ImageDataset, RunSummary, Transform, collate
from ..data.layouts import ImageRecord
from ..detectors import create
from ..detectors.clip_backbone import ClipDetector, ClipVisionBackbone
from ..detectors.config import CLIP_MEAN, CLIP_STD, Preprocessing
from ..detectors.rine import RineDetector
from ..device import resolve_device
from ..errors import DatasetLayoutError, ForensicsError
from ..io import atomic_torch_save
from ..metrics import binary_metrics
from . import TrainerSpec, register_trainer
from .augment import AugmentConfig, seed_worker, train_transform, val_transform
from .checkpoint import LATEST, latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from .common import TrainLog, prepare_run_dir, seed_everything, split_records
from ..detectors.feature_cache import backbone_features, extract_or_load
from .clip_options import ClipOptions, RineOptions
from .losses import rine_loss

log = logging.getLogger(__name__)

DESCRIPTION = "RINE head (TIE) on a frozen CLIP backbone, BCE(sum) + factor * SupCon (docs/training.md)"
SITE = "ln_2"


# ============================================================================ shared with the UFD trainer
def class_list(classes: str) -> list[str] | None:
    """``--classes`` comma list -> class folders; ``""`` -> ``None`` (detect flat vs class layout)."""
    return [c.strip() for c in classes.split(",") if c.strip()] or None


def require_labels(records: Sequence[ImageRecord], what: str) -> None:
    if any(r.label is None for r in records):
        raise DatasetLayoutError(f"{what}: every training/validation image needs a 0_real/1_fake label")
    if {r.label for r in records} != {0, 1}:
        log.warning("%s has a single class (%s)", what, {r.label for r in records})


class FeatureSource(Protocol):
    """Batches of (float32 features, int64 labels) on the training device, one pass per call."""

    def __len__(self) -> int: ...

    def batches(self, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class ImageFeatureSource:
    """Images decoded and transformed afresh each pass (augmentation), then the frozen backbone
    under ``no_grad``. Unreadable files are skipped and logged after each pass."""

    records: Sequence[ImageRecord]
    transform: Transform
    backbone: ClipVisionBackbone
    site: str
    batch_size: int
    device: torch.device
    num_workers: int = 0
    summary: RunSummary = field(default_factory=RunSummary)

    def __len__(self) -> int:
        return len(self.records)

    def batches(self, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(ImageDataset(self.records, self.transform), batch_size=self.batch_size, shuffle=shuffle,
                            num_workers=self.num_workers, collate_fn=collate, drop_last=False,
                            worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda")
        self.summary = RunSummary()
        for batch in loader:
            self.summary.add(batch)
            if len(batch) == 0:
                continue
            with torch.no_grad():
                feats = backbone_features(self.backbone, batch.images.to(self.device, non_blocking=True), self.site)
            yield feats.float(), batch.labels.to(self.device)
        if self.summary.skipped:
            self.summary.log(log)


@dataclass
class TensorFeatureSource:
    """Pre-extracted features (a :mod:`.feature_cache` entry) batched in a fresh random order per
    pass (torch's global RNG, so seeding and resuming reproduce it); rows cast to float32."""

    features: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    device: torch.device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n) if shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.features[idx].to(self.device).float(), self.labels[idx].to(self.device)


#: ``loss_fn(head, features, labels) -> (loss, logits [B])``
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_sources(args: ClipOptions, model: ClipDetector, site: str, train: list[ImageRecord],
                 val: list[ImageRecord], train_tf: Transform, val_tf: Transform,
                 cache_preprocessing: Preprocessing | None = None) -> tuple[FeatureSource, FeatureSource]:
    """(train, val) feature sources: from images (``train_tf``/``val_tf``) or, with
    ``--feature_cache``, from cached features of deterministic views (``cache_preprocessing``,
    default the detector's eval preprocessing) of both splits."""
    device = model.device
    if args.feature_cache is None:
        return (ImageFeatureSource(train, train_tf, model.clip, site, args.batch_size, device, args.num_threads),
                ImageFeatureSource(val, val_tf, model.clip, site, args.batch_size, device, args.num_threads))
    log.warning("--feature_cache: training on cached features of deterministic views (no augmentation); "
                "this is not the reference recipe")
    sources = []
    for records in (train, val):
        cached = extract_or_load(model, records, site, args.feature_cache, batch_size=args.batch_size,
                                 dtype=args.cache_dtype, preprocessing=cache_preprocessing,
                                 num_workers=args.num_threads)
        sources.append(TensorFeatureSource(cached.features, cached.labels, args.batch_size, device))
    return sources[0], sources[1]


def train_epoch(head: nn.Module, source: FeatureSource, optimizer: torch.optim.Optimizer, loss_fn: LossFn
                ) -> tuple[float, int]:
    """One shuffled pass with ``head`` in train mode; returns (mean loss per step, steps)."""
    head.train()
    total: torch.Tensor | float = 0.0
    steps = 0
    for feats, labels in source.batches(shuffle=True):
        loss, _ = loss_fn(head, feats, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = total + loss.detach()  # summed on the device: no host sync per step
        steps += 1
    return float(total) / max(steps, 1), steps


@torch.no_grad()
def evaluate(head: nn.Module, source: FeatureSource, loss_fn: LossFn) -> dict[str, float]:
    """Validation pass in eval mode: ``loss`` (mean over batches of each batch's loss) and
    :func:`forensics.metrics.binary_metrics` of sigmoid(logit) at 0.5 (``acc``, ``ap``, ...)."""
    head.eval()
    losses: list[float] = []
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for feats, y in source.batches(shuffle=False):
        loss, logits = loss_fn(head, feats, y)
        losses.append(float(loss))
        scores.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    if not losses:
        raise ForensicsError("validation set has no readable image")
    return {"loss": float(np.mean(losses)), **binary_metrics(np.concatenate(labels), np.concatenate(scores))}


def resume_state(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """The latest training checkpoint of ``run_dir`` when ``resume``; RNG state restored."""
    if not resume:
        return None
    path = latest_checkpoint(run_dir)
    if path is None:
        raise ForensicsError(f"--resume: no {LATEST} in {run_dir}")
    ckpt = load_checkpoint(path)
    set_rng_state(ckpt["rng"])
    log.info("resuming from %s (epoch %d, step %d)", path, ckpt["epoch"], ckpt["total_steps"])
    return ckpt


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def augment_config(args: ClipOptions, crop: int, **overrides: Any) -> AugmentConfig:
    """:class:`AugmentConfig` from the CNNDetection options, cropping at the backbone's input size
    ``crop`` (its positional embedding fixes it) with CLIP normalisation."""
    if args.cropSize is not None and args.cropSize != crop:
        raise ValueError(f"--cropSize {args.cropSize} differs from the backbone's input size {crop}")
    return AugmentConfig.from_options(args, crop_size=crop, mean=CLIP_MEAN, std=CLIP_STD, **overrides)


# ============================================================================ RINE
def lr_at_epoch(base_lr: float, epoch: int, milestones: Sequence[int]) -> float:
    """lr for 1-based ``epoch``: divided by 10 for every milestone <= epoch (6, 11: 1e-3, 1e-4, 1e-5)."""
    return base_lr * 0.1 ** sum(1 for m in milestones if epoch >= m)


def rine_step_loss(factor: float) -> LossFn:
    """RINE's loss on a batch of tokens ``[B, blocks, width]`` for the :class:`RineHead`."""
    def loss_fn(head: nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, z = head(tokens)
        return rine_loss(logit, z, labels, factor), logit
    return loss_fn


def rine_transforms(args: RineOptions, crop: int) -> tuple[Transform, Transform]:
    """(train, val) transforms (docs/training.md) at the backbone's crop size: JPEG qualities kept as the
    listed set unless ``--jpg_qual_range`` [quirk]."""
    cfg = augment_config(args, crop, expand_quality_range=args.jpg_qual_range)
    return train_transform(cfg), val_transform(cfg)


@dataclass
class TrainResult:
    """A finished run: the trained ``model`` (in memory, eval mode), the final weights file, the run
    folder and the per-epoch history."""

    model: nn.Module
    weights: Path
    run_dir: Path
    history: list[dict[str, Any]]


def head_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"model_{name}_trainable.pth"


def train(args: RineOptions) -> TrainResult:
    """Train RINE's head as docs/training.md describes (see the module docstring)."""
    seed_everything(args.seed)
    run_dir = prepare_run_dir(Path(args.checkpoints_dir) / args.name, args.as_dict())
    device = resolve_device(args.device)
    model: RineDetector = create("rine", backbone=args.backbone, backbone_weights=args.backbone_weights,
                                 nproj=args.nproj, proj_dim=args.proj_dim, dropout=args.dropout, device=device)
    head = model.rine_head
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr)
    ckpt = resume_state(run_dir, args.resume)
    start_epoch, total_steps = 0, 0
    if ckpt is not None:
        head.load_state(ckpt["model"], source=str(run_dir / LATEST))
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, total_steps = int(ckpt["epoch"]), int(ckpt["total_steps"])
    train_records = split_records(args.dataroot, args.train_split, class_list(args.classes))
    val_records = split_records(args.dataroot, args.val_split, class_list(args.classes))
    require_labels(train_records, "training set")
    require_labels(val_records, "validation set")
    log.info("RINE: %d train / %d val images, backbone %s, q=%d d=%d factor=%g, %d epoch(s) on %s",
             len(train_records), len(val_records), args.backbone, args.nproj, args.proj_dim, args.factor,
             args.epochs, device)
    train_tf, val_tf = rine_transforms(args, model.clip.image_size)
    train_src, val_src = make_sources(args, model, SITE, train_records, val_records, train_tf, val_tf)
    loss_fn = rine_step_loss(args.factor)
    train_log = TrainLog(run_dir / "train_log.jsonl")
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch + 1, args.epochs + 1):
        lr = lr_at_epoch(args.lr, epoch, args.epochs_reduce_lr)
        set_lr(optimizer, lr)
        start = time.perf_counter()
        train_loss, steps = train_epoch(head, train_src, optimizer, loss_fn)
        total_steps += steps
        val = evaluate(head, val_src, loss_fn)
        record = {"epoch": epoch, "lr": lr, "steps": total_steps, "train_loss": train_loss, "val_loss": val["loss"],
                  "val_acc": val["acc"], "val_ap": val["ap"], "seconds": time.perf_counter() - start}
        history.append(record)
        train_log.write("epoch", **record)
        log.info("epoch %d: lr %.0e, train loss %.4f, val loss %.4f, val acc %.4f (%d steps, %.1f s)", epoch, lr,
                 train_loss, val["loss"], val["acc"], total_steps, record["seconds"])
        save_checkpoint(run_dir / LATEST, head.state_dict(), optimizer, total_steps, epoch, trainer="rine",
                        backbone=args.backbone, nproj=args.nproj, proj_dim=args.proj_dim, factor=args.factor)
    weights = head_file(run_dir, args.name)
    atomic_torch_save({k: v.detach().cpu() for k, v in head.state_dict().items()}, weights)
    log.info("RINE head saved to %s", weights)
    model.eval()
    return TrainResult(model, weights, run_dir, history)


def run(options: RineOptions) -> Path:
    return train(options).weights


register_trainer(TrainerSpec(detectors=("rine",), description=DESCRIPTION, options=RineOptions, run=run))
