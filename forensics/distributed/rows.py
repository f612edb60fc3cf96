"""The analyses' shared batch loop: one pass of the current run over a record list, per-image rows back in
input order."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..data import Batch, ImageRecord, RunSummary
from .run import current

#: Rows are buffered as numpy arrays and moved into the pass's state (one tensor per name) every this many
#: images, before a checkpoint and at the end. Measured (bench/README.md, "Streaming at scale"): keeping one
#: small torch tensor per batch (a batch's 64 logits) between the large transient image batches fragmented the C
#: heap, and peak memory grew by ~0.4 GB over 100,000 images; with the buffer it stays flat.
FLUSH_ROWS = 16384


class _Buffer:
    """Rows of the batches since the last flush, as numpy arrays (tensors of dtypes numpy lacks: clones)."""

    def __init__(self, names: Sequence[str]):
        self.names, self.indices = list(names), []
        self.rows: dict[str, list] = {n: [] for n in names}

    def add(self, indices: Sequence[int], out: Mapping[str, torch.Tensor]) -> None:
        self.indices.extend(indices)
        for name in self.names:
            t = out[name].detach().cpu()
            try:
                self.rows[name].append(t.numpy().copy())
            except TypeError:  # e.g. bfloat16
                self.rows[name].append(t.clone())

    def flush_into(self, state: dict[str, Any]) -> None:
        if not self.indices:
            return
        for name in self.names:
            parts = self.rows[name]
            state[name].append(torch.from_numpy(np.concatenate(parts)) if isinstance(parts[0], np.ndarray)
                               else torch.cat(parts))
            parts.clear()
        state["indices"].extend(self.indices)
        self.indices = []


def collect_rows(records: Sequence[ImageRecord], step: Callable[[Batch], Mapping[str, torch.Tensor]],
                 names: Sequence[str], *, transform: Callable | None, batch_size: int, num_workers: int = 0,
                 label: str = "", progress: str | None = None, **loader_kwargs: Any
                 ) -> tuple[list[int], dict[str, torch.Tensor | None], RunSummary]:
    """Run ``step`` on every batch of readable images of ``records`` (read with ``transform``, batched by
    :meth:`ShardPass.batches`: skipped files listed, a tqdm bar named ``progress``) and keep its rows.

    ``step(batch)`` returns ``{name: tensor}`` for every name of ``names``, each with one row per image of
    the batch (first dimension ``len(batch)``). Returns the global indices of the images kept (input
    order), each name's rows concatenated in that order on the CPU (``None`` when no image was
    readable) and the pass's :class:`RunSummary`. Inside a :func:`session` (``torchrun``) each rank runs
    its shard and every rank returns the rows of the whole list; with ``--resume`` the rows are
    checkpointed (pass ``label``). In a plain run it is the one-process loop, in input order."""
    run = current()
    shard = run.shard(records, block=batch_size, state={"indices": [], **{n: [] for n in names}}, label=label)
    buffer = _Buffer(names)
    for batch in shard.batches(transform, batch_size, num_workers=num_workers, progress=progress, **loader_kwargs):
        if batch.images is not None and len(batch.indices):
            buffer.add(batch.indices, step(batch))
        if shard.saving or len(buffer.indices) >= FLUSH_ROWS:
            buffer.flush_into(shard.state)
    buffer.flush_into(shard.state)
    summary = shard.finish()
    indices = list(shard.state["indices"])
    rows = {n: torch.cat(shard.state[n]) if shard.state[n] else None for n in names}
    if run.sharded:
        per_image = list(zip(*(list(rows[n]) if rows[n] is not None else [] for n in names)))
        indices, merged = run.gather_rows(indices, per_image)
        rows = {n: torch.stack([r[j] for r in merged]) if merged else None for j, n in enumerate(names)}
    return indices, rows, summary
