"""Determinism of the benchmark build: independent numpy streams and torch seeds per (seed, purpose), and
torch's deterministic algorithms with a fixed thread count."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import numpy as np
import torch


def _rng(seed: int, *stream: int | str) -> np.random.Generator:
    """Independent numpy stream for (seed, purpose...)."""
    key = [int(seed) & 0xFFFFFFFF] + [int(hashlib.sha256(str(s).encode()).hexdigest()[:8], 16) for s in stream]
    return np.random.default_rng(key)


def _torch_seed(seed: int, *stream: int | str) -> int:
    return int(_rng(seed, "torch", *stream).integers(0, 2**62))


@contextlib.contextmanager
def deterministic_torch(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count inside the block; restored afterwards."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)
