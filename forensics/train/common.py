"""Shared training utilities: seeding, run folders with their options, JSON-lines logs."""
from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..data import ImageRecord, forensynths
from ..io import atomic_write_json

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); deterministic cuDNN when asked."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def prepare_run_dir(run_dir: str | Path, options: Mapping[str, Any]) -> Path:
    """Create ``run_dir`` and write ``opt.json`` (the run's options), as CNNDetection writes opt.txt."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "opt.json", {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()})
    return run_dir


class TrainLog:
    """Append-only JSON-lines log (``train_log.jsonl``): one record per event, flushed at once, so a
    resumed run continues the same file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=float) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_records(dataroot: str | Path, split: str, classes: list[str] | None) -> list[ImageRecord]:
    """The records of ``<dataroot>/<split>``: ``classes=None`` detects flat vs class layout, ``[]``
    is flat (``--classes ''``), a list reads those class folders (CNNDetection: one ImageFolder per
    class, concatenated; docs/training.md)."""
    folder = Path(dataroot) / split
    if classes is None:
        return forensynths(folder)
    if not classes:
        return forensynths(folder, have_classes=False)
    return [rec for cls in classes for rec in forensynths(folder, gen=cls, have_classes=False)]
