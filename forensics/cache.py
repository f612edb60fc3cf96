"""The toolkit's on-disk cache (a leaf): where it lives, how an entry is keyed, the lock that builds an entry
once, and the guard that keeps a build from moving the caller's random streams.

``$FORENSICS_CACHE`` (default ``$XDG_CACHE_HOME/forensics`` or ``~/.cache/forensics``) holds the embedded
default (:mod:`forensics.defaults`) and the feature caches; an entry's folder is named by :func:`settings_key`
of every setting that built it, so a changed setting builds anew and an unchanged one is reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

CACHE_ENV = "FORENSICS_CACHE"


def cache_dir() -> Path:
    """The cache's root: ``$FORENSICS_CACHE``, else ``$XDG_CACHE_HOME/forensics``, else ``~/.cache/forensics``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "forensics"


def settings_key(*parts: Any) -> str:
    """12 hex digits of the SHA-256 of ``parts`` as sorted JSON (``str`` for what JSON lacks)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Building the benchmark or training a default detector seeds and draws from the global random
    streams (python, numpy, torch CPU and initialised CUDA devices) and sets cuDNN's flags; this restores
    them, so a caller that seeded before asking for the embedded default (``analyses/rank_fmaps.py``'s
    RandomResizedCrop) draws the same numbers whether the default was built in this process or cached."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@contextmanager
def building(entry: Path) -> Iterator[None]:
    """Hold the inter-process lock of cache entry ``entry`` (a hidden ``.<name>.lock`` beside it) while it is
    built; a process that finds it held logs that it waits, then re-checks the entry under the lock."""
    from filelock import FileLock, Timeout

    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry.parent / f".{entry.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("cache: another process is building %s; waiting for it", entry)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
