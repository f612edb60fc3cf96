"""How a file list is dealt to the ranks (contiguous, batch-aligned shards) and how a shard's images are read
with global indices and per-image seeds."""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from ..data import ImageDataset


def shard_range(n: int, rank: int, world_size: int, block: int = 1) -> range:
    """Contiguous shard of ``range(n)`` for ``rank``: whole blocks of ``block`` items (e.g. a batch),
    dealt as evenly as possible, earlier ranks taking one more block where they do not divide; the last
    block may be short. Every index belongs to exactly one rank; nothing is padded."""
    if not 0 <= rank < world_size or block < 1 or n < 0:
        raise ValueError(f"need 0 <= rank < world_size and block >= 1, got rank={rank}, "
                         f"world_size={world_size}, block={block}, n={n}")
    blocks = -(-n // block)
    per, extra = divmod(blocks, world_size)
    first = rank * per + min(rank, extra)
    count = per + (rank < extra)
    return range(min(n, first * block), min(n, (first + count) * block))


def shard_indices(n: int, rank: int, world_size: int, mode: str = "contiguous", block: int = 1) -> list[int]:
    """Indices of ``range(n)`` owned by ``rank``: ``contiguous`` (:func:`shard_range`) or ``strided``
    (``rank, rank + world_size, ...``; ``block`` ignored). Both cover every index exactly once."""
    if mode == "contiguous":
        return list(shard_range(n, rank, world_size, block))
    if mode == "strided":
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return list(range(rank, n, world_size))
    raise ValueError(f"mode must be 'contiguous' or 'strided', got {mode!r}")


class _ShardDataset(ImageDataset):
    """The shard's remaining records; samples carry GLOBAL indices. ``seed`` (sharded runs): each
    image's transform draws from torch's generator seeded by ``(seed, global index)``. Otherwise
    (one process), ``restore`` is the global generator's state to set before the first item (a resumed
    run: the data loader draws its own seed from the generator first), and, with ``track``, the state
    before each item is kept (:meth:`rng_before`) so that a checkpoint stores the state before the next
    batch's first image although :func:`iter_batches` has already read it. Both only in-process
    (``num_workers=0``), as the reference's seeded runs."""

    def __init__(self, records, indices: Sequence[int], transform, max_pixels, seed: int | None,
                 restore: torch.Tensor | None = None, track: bool = False, masks: bool = False,
                 mask_resize: bool = False):
        super().__init__(records, transform, max_pixels=max_pixels, masks=masks, mask_resize=mask_resize)
        self.indices = list(indices)
        self.seed = seed
        self.restore = restore
        self.track = track
        self._states: dict[int, torch.Tensor] = {}

    def __getitem__(self, index: int):
        g = self.indices[index]
        if self.seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(image_seed(self.seed, g))
                sample = super().__getitem__(index)
        else:
            if self.restore is not None:
                torch.set_rng_state(self.restore)
                self.restore = None
            if self.track:
                self._states[index] = torch.get_rng_state()
            sample = super().__getitem__(index)
        sample["index"] = g
        return sample

    def rng_before(self, index: int) -> torch.Tensor:
        """The generator's state before item ``index`` was read (now, if it was not read yet); forgets
        earlier items."""
        for k in [k for k in self._states if k < index]:
            del self._states[k]
        return self._states.get(index, torch.get_rng_state())


def image_seed(seed: int, index: int) -> int:
    """The per-image seed of a sharded run: a 63-bit hash of (run seed, global index)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
