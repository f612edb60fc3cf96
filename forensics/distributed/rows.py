"""The analyses' shared batch loop: one pass of the current run over a record list, per-image rows back in
input order."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from ..data import Batch, ImageRecord, RunSummary
from .run import current


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
    for batch in shard.batches(transform, batch_size, num_workers=num_workers, progress=progress, **loader_kwargs):
        if batch.images is not None and len(batch.indices):
            out = step(batch)
            for name in names:
                shard.state[name].append(out[name].detach().cpu())
            shard.state["indices"].extend(batch.indices)
    summary = shard.finish()
    indices = list(shard.state["indices"])
    rows = {n: torch.cat(shard.state[n]) if shard.state[n] else None for n in names}
    if run.sharded:
        per_image = list(zip(*(list(rows[n]) if rows[n] is not None else [] for n in names)))
        indices, merged = run.gather_rows(indices, per_image)
        rows = {n: torch.stack([r[j] for r in merged]) if merged else None for j, n in enumerate(names)}
    return indices, rows, summary
