"""Training code for every detector (library side; ``analyses/train.py`` is the thin CLI).

Each trainer module registers itself with :func:`register_trainer` under the detector name it
trains, giving an ``add_arguments(parser)`` and a ``run(args) -> Path`` (the final checkpoint,
loadable through ``forensics.detectors.create``). Shared pieces: :mod:`.checkpoint` (atomic
checkpoints, resume), :mod:`.earlystop` (CNNDetection's early stopping and lr/10 drops),
:mod:`.common` (seeding, run folders, logs).
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class TrainerSpec:
    detectors: tuple[str, ...]
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Path]


_TRAINERS: dict[str, TrainerSpec] = {}

# Modules that register trainers on import (one concept per file).
TRAINER_MODULES = ("universal", "rine", "ufd")


def register_trainer(spec: TrainerSpec) -> TrainerSpec:
    for name in spec.detectors:
        if name in _TRAINERS:
            raise ValueError(f"a trainer for {name!r} is registered twice")
        _TRAINERS[name] = spec
    return spec


def _load_all() -> None:
    for mod in TRAINER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise


def list_trainers() -> list[str]:
    _load_all()
    return sorted(_TRAINERS)


def get_trainer(detector: str) -> TrainerSpec:
    _load_all()
    try:
        return _TRAINERS[detector]
    except KeyError:
        raise KeyError(f"no trainer for detector {detector!r}; available: {', '.join(sorted(_TRAINERS))}") from None
