"""Where this process sits in a ``torchrun`` launch: the launcher's environment and the per-process device."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import ForensicsError

#: Environment variables ``torchrun`` sets for every worker.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a ``torchrun`` launch (``launched=False``: a plain run, rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """The launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (all three, or none: a plain run)."""
    env = os.environ if environ is None else environ
    present = [k for k in LAUNCH_ENV if k in env]
    if not present:
        return LaunchEnv()
    if len(present) != len(LAUNCH_ENV):
        raise ForensicsError(f"incomplete launcher environment: {', '.join(present)} set but not "
                             f"{', '.join(k for k in LAUNCH_ENV if k not in env)}; launch with torchrun")
    rank, world, local = (int(env[k]) for k in LAUNCH_ENV)
    if not (0 <= rank < world and 0 <= local):
        raise ForensicsError(f"bad launcher environment RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return LaunchEnv(rank, world, local, True)


def local_device(spec: str | torch.device | None) -> str | torch.device | None:
    """Under ``torchrun``, a CUDA device without an index (``cuda``, or ``auto`` on a CUDA machine) becomes
    ``cuda:LOCAL_RANK``, one GPU per process; anything else is returned unchanged."""
    env = launch_env()
    if not env.launched or isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if text == "cuda" or (text == "auto" and torch.cuda.is_available()):
        return f"cuda:{env.local_rank}"
    return spec
