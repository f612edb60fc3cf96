"""Sharded, resumable passes over image lists: the one module that talks to ``torch.distributed``
(docs/distributed.md).

Launch any pass-based analysis with ``torchrun`` (one node or many, e.g.
``torchrun --nproc_per_node 2 analyses/rank_fmaps.py ...``): :func:`session` reads the launcher's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (gloo on CPU, NCCL when
the run's device is CUDA, each rank on ``cuda:LOCAL_RANK``) and makes a :class:`Run` current. The
library's loops (FF-RS, prediction, evaluation, dropout, the feature cache, activations, TIE vs LRP) open a
:class:`ShardPass` with :func:`current` (most through :func:`collect_rows`, the shared batch loop), which

- shards the file list deterministically: contiguous runs of whole batches (:func:`shard_range`),
  every image exactly once, uneven tails left uneven (no duplicate padding, unlike
  ``DistributedSampler``); a rank may receive nothing and still joins every collective;
- yields the shard's batches with GLOBAL indices (positions in the full list);
- writes, with ``--resume``, a checkpoint of the pass's partial state every N batches (atomic; per rank),
  and on a resumed run continues after the last checkpointed batch; a changed file list, setting or
  number of processes refuses to resume (:class:`ResumeMismatch`);
- merges at the end: :meth:`Run.all_reduce` (sums and counts) and :meth:`Run.gather_rows` (per-image
  rows back in input order), so every rank ends the pass holding the result of the whole list.

Only rank 0 writes outputs (:attr:`Run.is_main`; every output write goes through :mod:`forensics.io`'s
atomic writes). Failure: a rank that raises logs ``rank R of W failed: <cause>`` and exits non-zero;
``torchrun`` then stops the other ranks (they are blocked in the next collective at the latest) and
exits non-zero itself; as rank 0 writes only after the final collective, no output is written.

Numbers: with the contiguous, batch-aligned shards every batch holds the same images as in one process,
so per-image outputs are bit-identical and sums differ only by the order of their float64 additions.
A RANDOM transform (FF-RS's reference RandomResizedCrop) draws, under ``torchrun``, from a generator
seeded by ``(torch.initial_seed(), global index)`` per image, so the result does not depend on the number
of processes; a plain single-process run keeps torch's one global stream (the reference's behaviour), and
its resumed run restores that stream from the checkpoint.

A plain ``python analyses/x.py`` run (no launcher) is a :class:`Run` of world size 1 that shards nothing
and touches no process group: the single-process path is unchanged.

The package, one concept per module: :mod:`.launch` (the launcher's environment, the per-process device),
:mod:`.sharding` (shards, per-image seeds), :mod:`.checkpoints` (``--resume`` settings and what a checkpoint
is tied to), :mod:`.passes` (:class:`ShardPass`), :mod:`.run` (:class:`Run`, its collectives, :func:`session`,
:func:`current`), :mod:`.rows` (:func:`collect_rows`). Every name is importable from ``forensics.distributed``.
"""
from __future__ import annotations

from .checkpoints import (CHECKPOINT_VERSION, DEFAULT_EVERY, Checkpointing, ResumeMismatch, _check_world_size,  # noqa: F401
                          files_digest, pass_key, settings_digest)
from .launch import LAUNCH_ENV, LaunchEnv, launch_env, local_device
from .passes import ShardPass
from .rows import collect_rows
from .run import Run, current, session
from .sharding import _ShardDataset, image_seed, shard_indices, shard_range  # noqa: F401 (_ShardDataset: tests)

__all__ = ["CHECKPOINT_VERSION", "DEFAULT_EVERY", "LAUNCH_ENV", "Checkpointing", "LaunchEnv", "ResumeMismatch", "Run",
           "ShardPass", "collect_rows", "current", "files_digest", "image_seed", "launch_env", "local_device",
           "pass_key", "session", "settings_digest", "shard_indices", "shard_range"]
