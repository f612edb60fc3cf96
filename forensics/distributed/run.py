"""The run: one process of a (possibly sharded) run, its collectives, and the session that makes it current."""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from ..data import ImageRecord, RunSummary
from .checkpoints import Checkpointing, _check_world_size, pass_key
from .launch import LaunchEnv, launch_env, local_device
from .passes import ShardPass

log = logging.getLogger(__name__)


class Run:
    """One process of a (possibly sharded) run; see the module docstring. Not built directly: use
    :func:`session` (CLIs) or :func:`current` (the library)."""

    def __init__(self, env: LaunchEnv = LaunchEnv(), backend: str | None = None,
                 checkpointing: Checkpointing | None = None):
        self.env = env
        self.backend = backend
        self.checkpointing = checkpointing
        self.processed = 0  # files met by this rank over all passes
        self.resumed = False
        self._passes: dict[str, int] = {}  # pass key -> passes opened with it
        self._checked = False
        self._cpu_group = None

    # -- identity
    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def sharded(self) -> bool:
        """Launched by ``torchrun`` (even with one process): shards, per-image seeds, collectives."""
        return self.env.launched

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes outputs."""
        return self.env.rank == 0

    # -- collectives (no-ops in a plain run)
    def barrier(self) -> None:
        if self.sharded:
            import torch.distributed as dist
            dist.barrier(group=self._cpu_group)

    def all_reduce(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: sum over ranks}`` of CPU tensors (one flattened float64/int64 all-reduce per dtype)."""
        out = {k: v.clone() for k, v in tensors.items()}
        if not self.sharded or not out:
            return out
        import torch.distributed as dist
        for dtype in sorted({v.dtype for v in out.values()}, key=str):
            names = [k for k, v in out.items() if v.dtype == dtype]
            flat = torch.cat([out[k].reshape(-1) for k in names])
            dist.all_reduce(flat, group=self._cpu_group)
            offset = 0
            for k in names:
                n = out[k].numel()
                out[k] = flat[offset:offset + n].reshape(out[k].shape)
                offset += n
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.sharded:
            return [obj]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._cpu_group)
        return out

    def gather_rows(self, indices: Sequence[int], rows: Sequence[Any]) -> tuple[list[int], list[Any]]:
        """This rank's per-image ``rows`` keyed by global ``indices``, merged over ranks and sorted by
        index (input order), on every rank. Duplicate indices are a bug and raise."""
        if len(indices) != len(rows):
            raise ValueError(f"{len(indices)} indices for {len(rows)} rows")
        parts = self.all_gather((list(indices), list(rows)))
        pairs = sorted(((i, r) for idx, rs in parts for i, r in zip(idx, rs)), key=lambda p: p[0])
        merged = [i for i, _ in pairs]
        if len(set(merged)) != len(merged):
            raise RuntimeError("an image was processed by two ranks")
        return merged, [r for _, r in pairs]

    def merge_summary(self, summary: RunSummary) -> RunSummary:
        """The ranks' :class:`RunSummary` of one pass added up (skipped files in rank = input order)."""
        if not self.sharded:
            return summary
        merged = RunSummary()
        for total, used, skipped in self.all_gather((summary.total, summary.used, summary.skipped)):
            merged.total += total
            merged.used += used
            merged.skipped.extend(tuple(s) for s in skipped)
        return merged

    def report(self) -> dict[str, Any]:
        """For summary JSONs (collective: call on every rank): world size, backend, files each rank
        processed (over all passes), whether a checkpoint was resumed."""
        return {"world_size": self.world_size, "backend": self.backend,
                "images_per_rank": [int(n) for n in self.all_gather(self.processed)],
                "resumed": any(self.all_gather(self.resumed))}

    # -- passes
    def shard(self, records: Sequence[ImageRecord], block: int = 1, state: Mapping[str, Any] | None = None,
              label: str = "") -> "ShardPass":
        """Open the next pass over ``records`` (see :class:`ShardPass`); ``block``: shard granularity
        (the batch size, so that batches match a one-process run)."""
        key = pass_key(label)
        index = self._passes.get(key, 0)
        self._passes[key] = index + 1
        return ShardPass(self, list(records), f"{key}-{index}", block, dict(state or {}), label)

    def checkpoint_in(self, directory: str | os.PathLike) -> None:
        """Where checkpoints go when ``--checkpoint_dir`` was not given (call before the first pass)."""
        if self.checkpointing is not None and self.checkpointing.directory is None:
            self.checkpointing.directory = Path(directory)

    def checkpoint_path(self, name: str) -> Path | None:
        """This rank's checkpoint of pass ``name`` (``None`` without ``--resume``)."""
        if self.checkpointing is None:
            return None
        if self.checkpointing.directory is None:
            raise RuntimeError("checkpointing without a directory: call Run.checkpoint_in first")
        if not self._checked:
            _check_world_size(self.checkpointing.directory, self.world_size)
            self._checked = True
        return self.checkpointing.directory / f"{name}-rank{self.rank}-of-{self.world_size}.pt"

    def clear_checkpoints(self) -> None:
        """Remove every rank's checkpoints and then (rank 0) the emptied folder, after the outputs are
        written (collective)."""
        if self.checkpointing is None or self.checkpointing.directory is None:
            return
        for key, count in self._passes.items():
            for index in range(count):
                path = self.checkpoint_path(f"{key}-{index}")
                if path is not None and path.exists():
                    path.unlink()
        self.barrier()  # every rank's files are gone
        directory = self.checkpointing.directory
        if self.is_main and directory.is_dir():
            if any(directory.iterdir()):
                log.info("left %s in place: it holds other files (e.g. of a write a kill interrupted)", directory)
            else:
                directory.rmdir()


# ---------------------------------------------------------------------------- current run
_CURRENT: Run | None = None


def current() -> Run:
    """The run opened by :func:`session`, or a plain one-process run without checkpoints."""
    return _CURRENT if _CURRENT is not None else Run()


@contextlib.contextmanager
def session(device: str | torch.device | None = None, checkpointing: Checkpointing | None = None,
            timeout_s: float = 1800.0) -> Iterator[Run]:
    """Make a :class:`Run` current for the block: under ``torchrun``, join the process group (NCCL when
    ``device`` resolves to CUDA, else gloo; CPU-side results always go over a gloo group) and leave it at
    the end. An exception names the rank and its cause in the log before it propagates (the launcher
    then stops the other ranks). ``checkpointing``: ``--resume`` (``None``: no checkpoints)."""
    global _CURRENT
    if _CURRENT is not None:
        raise RuntimeError("a distributed session is already open")
    env = launch_env()
    backend = None
    run = Run(env, None, checkpointing)
    if env.launched:
        import torch.distributed as dist
        from ..device import resolve_device
        dev = resolve_device(local_device(device))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend, timeout=timeout)
        run.backend = backend
        if backend != "gloo":
            run._cpu_group = dist.new_group(backend="gloo", timeout=timeout)
        log.info("rank %d of %d (local rank %d, %s)", env.rank, env.world_size, env.local_rank, backend)
    _CURRENT = run
    try:
        yield run
        if checkpointing is not None:
            run.barrier()  # every rank is past its last write before any checkpoint goes
            run.clear_checkpoints()
    except BaseException as exc:
        if env.launched and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            log.error("rank %d of %d failed: %s: %s", env.rank, env.world_size, type(exc).__name__, exc)
        raise
    finally:
        _CURRENT = None
        if env.launched:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
