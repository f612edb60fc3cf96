"""Training checkpoints: ``{'model', 'optimizer', 'total_steps', 'epoch', ...}`` written atomically,
read back with ``weights_only=True``; resume from the latest.

The format extends CNNDetection's (``{'model': state_dict, 'optimizer': ..., 'total_steps': int}``),
so every checkpoint loads through ``forensics.detectors.create(name, weights=path)``.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..io import atomic_torch_save, read_weight_file

log = logging.getLogger(__name__)

LATEST = "model_epoch_latest.pth"
BEST = "model_epoch_best.pth"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | Path, model_state: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer | None,
                    total_steps: int, epoch: int, **extra: Any) -> Path:
    """Write a training checkpoint atomically (temp file + rename)."""
    obj = {"model": dict(model_state), "optimizer": optimizer.state_dict() if optimizer is not None else None,
           "total_steps": int(total_steps), "epoch": int(epoch), "rng": rng_state(), **extra}
    atomic_torch_save(obj, path)
    log.debug("checkpoint %s (step %d, epoch %d)", path, total_steps, epoch)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``)."""
    return read_weight_file(path, expected="a training checkpoint {'model', 'optimizer', 'total_steps', ...}")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``<run_dir>/model_epoch_latest.pth`` if it exists."""
    path = Path(run_dir) / LATEST
    return path if path.is_file() else None
