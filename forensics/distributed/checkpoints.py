"""Resumable passes: ``--resume`` settings, what a checkpoint is tied to (file list, settings, number of
processes) and the refusal to resume a checkpoint of another run."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..data import ImageRecord
from ..errors import ForensicsError

CHECKPOINT_VERSION = 1
#: Default checkpoint interval (batches) of ``--checkpoint_every``.
DEFAULT_EVERY = 20


class ResumeMismatch(ForensicsError):
    """A checkpoint does not belong to this run (other files, settings or number of processes)."""


def files_digest(records: Sequence[ImageRecord]) -> str:
    """sha256 of the ordered (path, label) list: what a checkpoint is tied to."""
    h = hashlib.sha256()
    for rec in records:
        h.update(f"{rec.ref}\0{rec.label}\n".encode())
    return h.hexdigest()


def settings_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Checkpointing:
    """``--resume`` settings: checkpoints under ``directory`` every ``every`` batches; ``settings``: what
    must not change between the killed run and its resumption (hashed)."""

    directory: Path | None = None
    every: int = DEFAULT_EVERY
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 batch, got {self.every}")
        self.directory = None if self.directory is None else Path(self.directory)


def pass_key(label: str) -> str:
    """File-name key of a pass: its label made safe, plus a short hash of it (passes are told apart by label
    and by their order among passes of the same label, so a pass that a resumed run skips, e.g. an FF-RS
    ranking already written, does not shift the others)."""
    safe = re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_")[:40] or "pass"
    return f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def _check_world_size(directory: Path, world_size: int) -> None:
    """Refuse to resume checkpoints written by another number of processes (the shards differ)."""
    others = sorted({p.stem.rsplit("-of-", 1)[-1] for p in Path(directory).glob("*-rank*-of-*.pt")}
                    - {str(world_size)})
    if others:
        raise ResumeMismatch(f"cannot resume from {directory}: its checkpoints were written by {others[0]} "
                             f"process(es), this run has {world_size}; resume with the same number of processes "
                             f"or remove {directory} to start over")
