"""Training code for every detector (library side; ``analyses/train.py`` is the thin CLI).

Each trainer module registers itself with :func:`register_trainer` for the detectors it trains
(stored as the ``"trainer"`` fact of each detector's registry entry, see
:func:`forensics.detectors.registry.register_fact`), giving its ``options`` dataclass (defaults and
validation; :mod:`.options`) and a ``run(options) -> Path`` (the final checkpoint, loadable through
``forensics.detectors.create``). Training knows nothing of command lines: :mod:`forensics.cli.train_args`
builds a parser from the options and :meth:`~.options.TrainOptions.from_args` reads it back. Shared
pieces: :mod:`.checkpoint` (atomic checkpoints, resume), :mod:`.earlystop` (CNNDetection's early stopping
and lr/10 drops), :mod:`.common` (seeding, run folders, logs).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..detectors.registry import FactView, register_fact
from .options import TrainOptions


@dataclass(frozen=True)
class TrainerSpec:
    detectors: tuple[str, ...]
    description: str
    options: type[TrainOptions]
    run: Callable[[Any], Path]


TRAINER_FACT = "trainer"
#: ``{detector name: TrainerSpec}``, read live from the detector registry.
_TRAINERS = FactView(TRAINER_FACT)

# Modules that register trainers on import (one concept per file).
TRAINER_MODULES = ("universal", "rine", "ufd")


def register_trainer(spec: TrainerSpec) -> TrainerSpec:
    return register_fact(TRAINER_FACT, *spec.detectors)(spec)


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
