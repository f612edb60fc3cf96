"""One pass of a run over a record list: this rank's shard, its batches and its checkpoints."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from ..data import ImageRecord, RunSummary, iter_batches
from ..data.images import DEFAULT_MAX_PIXELS
from .checkpoints import CHECKPOINT_VERSION, ResumeMismatch, files_digest, settings_digest
from .sharding import _ShardDataset, shard_range

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger(__name__)


class ShardPass:
    """One pass of a :class:`Run` over a record list: this rank's shard, its batches, its checkpoints.

    ``state``: the pass's partial results (tensors, lists of numbers/strings; what ``torch.save`` stores
    and ``torch.load(weights_only=True)`` reads), updated in place by the caller between batches; on a
    resumed run it is replaced by the checkpoint's (``pass_.state``), as is :attr:`summary`. Use::

        pass_ = current().shard(records, block=batch_size, state={"rows": []})
        for batch in pass_.batches(transform, batch_size):
            pass_.state["rows"] += ...           # batch.indices are global
        pass_.finish()
    """

    def __init__(self, run: Run, records: list[ImageRecord], name: str, block: int, state: dict[str, Any],
                 label: str):
        self.run, self.records, self.name, self.label = run, records, name, label
        self.indices = list(shard_range(len(records), run.rank, run.world_size, max(1, block)))
        self.state = state
        self.summary = RunSummary()
        self.done = 0  # shard items consumed (readable or not) as of the last completed batch
        self.complete = False
        #: True while the caller processes a batch after which a checkpoint is saved (the caller's own
        #: buffers must be in :attr:`state` by then).
        self.saving = False
        self._files = files_digest(records) if run.checkpointing is not None else ""
        self._settings = (settings_digest(dict(run.checkpointing.settings)) if run.checkpointing is not None
                          else "")
        self._rng: torch.Tensor | None = None
        self._load()

    @property
    def path(self) -> Path | None:
        return self.run.checkpoint_path(self.name)

    # -- checkpoints
    def _load(self) -> None:
        path = self.path
        if path is None or not path.is_file():
            return
        blob = torch.load(path, map_location="cpu", weights_only=True)
        problems = []
        if blob.get("version") != CHECKPOINT_VERSION:
            problems.append(f"checkpoint format {blob.get('version')} (expected {CHECKPOINT_VERSION})")
        if blob.get("files") != self._files:
            problems.append(f"the file list changed ({blob.get('num_files')} files then, {len(self.records)} now, "
                            "or other paths/labels/order)")
        if blob.get("settings") != self._settings:
            then = blob.get("settings_values", {})
            now = {k: v for k, v in json.loads(json.dumps(dict(self.run.checkpointing.settings), default=str)).items()}
            changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
            problems.append(f"the settings changed ({', '.join(changed) or 'values'})")
        if problems:
            raise ResumeMismatch(f"cannot resume from {path.parent}: {'; '.join(problems)}. Resume with the "
                                 f"original files and settings, or remove {path.parent} to start over.")
        self.state = blob["state"]
        self.done = int(blob["done"])
        self.complete = bool(blob["complete"])
        s = blob["summary"]
        self.summary = RunSummary(int(s["total"]), int(s["used"]), [tuple(x) for x in s["skipped"]])
        self._rng = blob["rng"]
        self.run.resumed = True
        log.info("resuming pass %r at item %d of this rank's %d (%s)", self.label, self.done, len(self.indices), path)

    def save(self) -> None:
        """Write the checkpoint now (atomic); a no-op without ``--resume``."""
        path = self.path
        if path is None:
            return
        from ..io import atomic_torch_save
        settings = json.loads(json.dumps(dict(self.run.checkpointing.settings), default=str))
        atomic_torch_save({
            "version": CHECKPOINT_VERSION, "label": self.label, "rank": self.run.rank,
            "world_size": self.run.world_size, "files": self._files, "num_files": len(self.records),
            "settings": self._settings, "settings_values": settings, "done": self.done,
            "complete": self.complete, "state": self.state,
            "summary": {"total": self.summary.total, "used": self.summary.used,
                        "skipped": [list(x) for x in self.summary.skipped]},
            "rng": self._rng if self._rng is not None else torch.get_rng_state()}, path)

    # -- iteration
    def batches(self, transform: Callable | None, batch_size: int, num_workers: int = 0,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: str | None = None, leave: bool = True,
                masks: bool = False, mask_resize: bool = False, **loader_kwargs: Any) -> Iterator:
        """This rank's remaining batches (``batch.indices`` global), each added to :attr:`summary`; a
        checkpoint every ``every`` batches once the caller has processed the batch. ``progress``: the
        description of a tqdm bar over this rank's images (rank 0 only; ``None``: no bar), advanced by
        each batch's images, readable or not, once the caller has processed it. ``masks``/``mask_resize``: the
        batches carry the records' masks through the transform (:class:`~forensics.data.ImageDataset`)."""
        with tqdm(total=len(self.indices), initial=self.done, desc=progress, unit="img", leave=leave,
                  disable=progress is None or not self.run.is_main) as bar:
            for batch in self._batches(transform, batch_size, num_workers, max_pixels, masks, mask_resize,
                                       **loader_kwargs):
                yield batch
                bar.update(len(batch) + len(batch.skipped))

    def _batches(self, transform: Callable | None, batch_size: int, num_workers: int,
                 max_pixels: int | None, masks: bool = False, mask_resize: bool = False,
                 **loader_kwargs: Any) -> Iterator:
        if self.complete:
            return
        start = self.done
        remaining = self.indices[start:]
        sharded = self.run.sharded
        every = self.run.checkpointing.every if self.run.checkpointing is not None else 0
        dataset = _ShardDataset([self.records[i] for i in remaining], remaining, transform, max_pixels,
                                seed=torch.initial_seed() if sharded else None,
                                restore=None if sharded else self._rng, track=bool(every) and not sharded,
                                masks=masks, mask_resize=mask_resize)
        count = 0
        for batch in iter_batches(dataset, batch_size=batch_size, num_workers=num_workers, **loader_kwargs):
            self.summary.add(batch)
            self.saving = bool(every) and (count + 1) % every == 0
            yield batch
            consumed = len(batch) + len(batch.skipped)
            self.done += consumed
            self.run.processed += consumed
            count += 1
            if every and count % every == 0:
                self._rng = dataset.rng_before(self.done - start)
                self.save()

    def finish(self) -> RunSummary:
        """Mark the pass complete (checkpointed, so a resumed multi-pass run skips it) and return the
        summary merged over ranks."""
        if not self.complete:
            self.complete = True
            self.save()
        return self.run.merge_summary(self.summary)
