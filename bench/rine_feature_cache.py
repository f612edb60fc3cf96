"""RINE head training: one epoch with the backbone in the loop vs epochs on the feature cache.

Generates ``--n-images`` random 256x256 PNGs (half real, half fake) in a temporary ForenSynths
layout, builds RINE on a random ``--backbone`` (default ``forensics-small-vit``: 224 px, 6 blocks,
width 256; ``forensics-tiny-vit`` for a quick look) and times

1. one training epoch without the cache: decode + blur/JPEG + crop/flip + backbone forward + head
   step for every batch (the reference recipe, docs/training.md);
2. the first cache extraction (deterministic views, one backbone pass) and a cache hit (load);
3. ``--cached-epochs`` head-only epochs on the cached tokens.

Prints the figures and the ratio uncached / cached epoch (target >= 10x). No assertion: a script.

    python bench/rine_feature_cache.py [--backbone forensics-small-vit] [--n-images 64] [--device auto] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from forensics.data.layouts import forensynths
from forensics.detectors import create
from forensics.device import resolve_device
from forensics.train import get_trainer
from forensics.train.common import seed_everything
from forensics.detectors.feature_cache import extract_or_load
from forensics.train.rine import (SITE, ImageFeatureSource, TensorFeatureSource, rine_step_loss, rine_transforms,
                                  train_epoch)


def make_images(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("0_real" if i % 2 == 0 else "1_fake")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="forensics-small-vit")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cached-epochs", type=int, default=5)
    ap.add_argument("--nproj", type=int, default=4)
    ap.add_argument("--proj-dim", type=int, default=128)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's); on a shared, loaded CPU use 1, as extra threads "
                         "spin against other processes and distort both timings")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(0)
    model = create("rine", backbone=args.backbone, backbone_weights=None, nproj=args.nproj, proj_dim=args.proj_dim,
                   device=device)
    head = model.rine_head
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    loss_fn = rine_step_loss(factor=0.2)
    train_tf, _ = rine_transforms(get_trainer("rine").options(dataroot="."), model.clip.image_size)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; backbone {args.backbone} "
          f"({model.clip.blocks} blocks, width {model.clip.width}, {model.clip.image_size} px), head q={args.nproj} "
          f"d={args.proj_dim}; {args.n_images} images {args.image_size}x{args.image_size}, batch {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "data", args.n_images, args.image_size)
        records = forensynths(root / "data")

        warm = ImageFeatureSource(records[:args.batch_size], train_tf, model.clip, SITE, args.batch_size, device)
        train_epoch(head, warm, optimizer, loss_fn)  # warm-up: one batch (allocations, lazy imports)
        source = ImageFeatureSource(records, train_tf, model.clip, SITE, args.batch_size, device, args.num_workers)
        synchronize(device)
        start = time.perf_counter()
        train_epoch(head, source, optimizer, loss_fn)
        synchronize(device)
        uncached = time.perf_counter() - start

        start = time.perf_counter()
        cached = extract_or_load(model, records, SITE, root / "cache", batch_size=args.batch_size, device=device,
                                 num_workers=args.num_workers, progress=False)
        extraction = time.perf_counter() - start
        start = time.perf_counter()
        hit = extract_or_load(model, records, SITE, root / "cache", batch_size=args.batch_size, device=device,
                              progress=False)
        load = time.perf_counter() - start
        assert hit.summary.hit
        tensors = TensorFeatureSource(cached.features, cached.labels, args.batch_size, device)
        train_epoch(head, tensors, optimizer, loss_fn)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.cached_epochs):
            train_epoch(head, tensors, optimizer, loss_fn)
        synchronize(device)
        cached_epoch = (time.perf_counter() - start) / args.cached_epochs
        size_mb = cached.features.numel() * cached.features.element_size() / 2**20

    print(f"uncached epoch (decode + augment + backbone + head): {uncached:8.3f} s  "
          f"({args.n_images / uncached:7.1f} img/s)")
    print(f"cache extraction (first call, one backbone pass):    {extraction:8.3f} s  ({size_mb:.1f} MiB float32)")
    print(f"cache hit (load, key check):                         {load:8.3f} s")
    print(f"cached epoch (head only, mean of {args.cached_epochs}):                {cached_epoch:8.3f} s  "
          f"({args.n_images / cached_epoch:7.1f} img/s)")
    print(f"speed-up per epoch: {uncached / cached_epoch:.1f}x (target >= 10x); "
          f"break-even after {extraction / max(uncached - cached_epoch, 1e-9):.2f} epochs")


if __name__ == "__main__":
    main()
