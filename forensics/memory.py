"""Process memory behaviour that long streaming runs depend on.

glibc's ``malloc`` serves large blocks (over ``M_MMAP_THRESHOLD``) with ``mmap`` and returns them to the
operating system on ``free``; but its threshold is *dynamic*: each time a large mmapped block is freed,
the threshold rises to that block's size (up to 32 MiB), so later blocks of that size come from the heap,
whose freed memory stays in the process. A loop that allocates and frees the same large tensors per batch
(LRP's relevance of every layer) therefore sees its resident size climb over the first batches even though
what it keeps is constant. Fixing the threshold low (which also turns the dynamic adjustment off) keeps
large tensors mmapped, so peak memory stays flat, but every large tensor is then fresh pages that the kernel
must fault in and zero: FF-RS of the default ResNet-50 took 112 s instead of 42 s, and a ResNet-50 training
step twice as long (bench/README.md). :func:`mmap_threshold` therefore scopes the low threshold to the run
that needs it and leaves the process in heap mode afterwards.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value
#: glibc's ceiling of the dynamic threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); the dynamic
#: adjustment, once off, cannot be turned back on, so "heap mode" sets the state it converges to:
#: this threshold and a trim threshold of twice it.
HEAP_MMAP_THRESHOLD = 32 * 1024 * 1024
ENV_MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None), "mallopt", None)


def fix_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with ``mmap`` from now on (process-wide,
    as ``MALLOC_MMAP_THRESHOLD_`` would). Returns whether the allocator accepted it; ``False`` (and no
    change) on platforms without glibc's ``mallopt``."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    accepted = bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))
    log.debug("malloc mmap threshold fixed at %d bytes: %s", threshold, accepted)
    return accepted


def heap_mode() -> bool:
    """Let large blocks come from the heap again after :func:`fix_mmap_threshold`: the threshold the
    process started with if ``MALLOC_MMAP_THRESHOLD_`` set one, else glibc's dynamic state at its ceiling
    (threshold 32 MiB, trim threshold 64 MiB). Returns whether the allocator accepted it."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    env = os.environ.get(ENV_MMAP_THRESHOLD)
    if env is not None and env.strip().isdigit():
        return bool(mallopt(M_MMAP_THRESHOLD, int(env)))
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * HEAP_MMAP_THRESHOLD))


@contextmanager
def mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD, enabled: bool = True) -> Iterator[bool]:
    """Within the block, allocations of ``threshold`` bytes or more are mmapped (flat peak memory, more
    page faults); on exit, even on error, the process returns to :func:`heap_mode`. Yields whether the
    threshold was set (``False`` when ``enabled`` is false or the platform has no ``mallopt``)."""
    accepted = enabled and fix_mmap_threshold(threshold)
    try:
        yield accepted
    finally:
        if accepted:
            heap_mode()
