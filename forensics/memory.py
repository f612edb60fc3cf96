"""Process memory behaviour that long streaming runs depend on.

glibc's ``malloc`` serves large blocks (over ``M_MMAP_THRESHOLD``) with ``mmap`` and returns them to the
operating system on ``free``; but its threshold is *dynamic*: each time a large mmapped block is freed,
the threshold rises to that block's size, so later blocks of that size come from the heap, whose freed
memory stays in the process. A loop that allocates and frees the same large tensors per batch (LRP's
relevance of every layer) therefore sees its resident size climb over the first batches even though
what it keeps is constant. Fixing the threshold (which also turns the dynamic adjustment off) keeps
large tensors mmapped: measured in ``bench/ffrs_memory.py``.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def fix_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with ``mmap`` from now on (process-wide,
    as ``MALLOC_MMAP_THRESHOLD_`` would). Returns whether the allocator accepted it; ``False`` (and no
    change) on platforms without glibc's ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    accepted = bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))
    log.debug("malloc mmap threshold fixed at %d bytes: %s", threshold, accepted)
    return accepted
