"""Sharded, resumable passes over image lists: the one module that talks to ``torch.distributed``
(docs/distributed.md).

Launch any pass-based analysis with ``torchrun`` (one node or many, e.g.
``torchrun --nproc_per_node 2 analyses/rank_fmaps.py ...``): :func:`session` reads the launcher's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (gloo on CPU, NCCL when
the run's device is CUDA, each rank on ``cuda:LOCAL_RANK``) and makes a :class:`Run` current. The
library's loops (FF-RS, prediction, evaluation, dropout, the feature cache) open a :class:`ShardPass`
with :func:`current`, which

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
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .data import ImageDataset, ImageRecord, RunSummary, iter_batches
from .data.images import DEFAULT_MAX_PIXELS
from .errors import ForensicsError

log = logging.getLogger(__name__)

#: Environment variables ``torchrun`` sets for every worker.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
CHECKPOINT_VERSION = 1
#: Default checkpoint interval (batches) of ``--checkpoint_every``.
DEFAULT_EVERY = 20


class ResumeMismatch(ForensicsError):
    """A checkpoint does not belong to this run (other files, settings or number of processes)."""


# ---------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a ``torchrun`` launch (``launched=False``: a plain run, rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """The launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (all three, or none: a plain run)."""
    env = os.environ if environ is None else environ
    present = [k for k in LAUNCH_ENV if k in env]
    if not present:
        return LaunchEnv()
    if len(present) != len(LAUNCH_ENV):
        raise ForensicsError(f"incomplete launcher environment: {', '.join(present)} set but not "
                             f"{', '.join(k for k in LAUNCH_ENV if k not in env)}; launch with torchrun")
    rank, world, local = (int(env[k]) for k in LAUNCH_ENV)
    if not (0 <= rank < world and 0 <= local):
        raise ForensicsError(f"bad launcher environment RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return LaunchEnv(rank, world, local, True)


def local_device(spec: str | torch.device | None) -> str | torch.device | None:
    """Under ``torchrun``, a CUDA device without an index (``cuda``, or ``auto`` on a CUDA machine) becomes
    ``cuda:LOCAL_RANK``, one GPU per process; anything else is returned unchanged."""
    env = launch_env()
    if not env.launched or isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if text == "cuda" or (text == "auto" and torch.cuda.is_available()):
        return f"cuda:{env.local_rank}"
    return spec


# ---------------------------------------------------------------------------- sharding
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


def files_digest(records: Sequence[ImageRecord]) -> str:
    """sha256 of the ordered (path, label) list: what a checkpoint is tied to."""
    h = hashlib.sha256()
    for rec in records:
        h.update(f"{rec.path}\0{rec.label}\n".encode())
    return h.hexdigest()


def settings_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------- the run
@dataclass
class Checkpointing:
    """``--resume`` settings: checkpoints under ``directory`` every ``every`` batches; ``settings``: what
    must not change between the killed run and its resumption (hashed)."""

    directory: Path | None = None
    every: int = DEFAULT_EVERY
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 batch, got {self.every}")
        self.directory = None if self.directory is None else Path(self.directory)


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


def pass_key(label: str) -> str:
    """File-name key of a pass: its label made safe, plus a short hash of it (passes are told apart by label
    and by their order among passes of the same label, so a pass that a resumed run skips, e.g. an FF-RS
    ranking already written, does not shift the others)."""
    safe = re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_")[:40] or "pass"
    return f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


class _ShardDataset(ImageDataset):
    """The shard's remaining records; samples carry GLOBAL indices. ``seed`` (sharded runs): each
    image's transform draws from torch's generator seeded by ``(seed, global index)``. Otherwise
    (one process), ``restore`` is the global generator's state to set before the first item (a resumed
    run: the data loader draws its own seed from the generator first), and, with ``track``, the state
    before each item is kept (:meth:`rng_before`) so that a checkpoint stores the state before the next
    batch's first image although :func:`iter_batches` has already read it. Both only in-process
    (``num_workers=0``), as the reference's seeded runs."""

    def __init__(self, records, indices: Sequence[int], transform, max_pixels, seed: int | None,
                 restore: torch.Tensor | None = None, track: bool = False):
        super().__init__(records, transform, max_pixels=max_pixels)
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
        from .io import atomic_torch_save
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
                max_pixels: int | None = DEFAULT_MAX_PIXELS, **loader_kwargs: Any) -> Iterator:
        """This rank's remaining batches (``batch.indices`` global), each added to :attr:`summary`; a
        checkpoint every ``every`` batches once the caller has processed the batch."""
        if self.complete:
            return
        start = self.done
        remaining = self.indices[start:]
        sharded = self.run.sharded
        every = self.run.checkpointing.every if self.run.checkpointing is not None else 0
        dataset = _ShardDataset([self.records[i] for i in remaining], remaining, transform, max_pixels,
                                seed=torch.initial_seed() if sharded else None,
                                restore=None if sharded else self._rng, track=bool(every) and not sharded)
        count = 0
        for batch in iter_batches(dataset, batch_size=batch_size, num_workers=num_workers, **loader_kwargs):
            self.summary.add(batch)
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
        from .device import resolve_device
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


def _check_world_size(directory: Path, world_size: int) -> None:
    """Refuse to resume checkpoints written by another number of processes (the shards differ)."""
    others = sorted({p.stem.rsplit("-of-", 1)[-1] for p in Path(directory).glob("*-rank*-of-*.pt")}
                    - {str(world_size)})
    if others:
        raise ResumeMismatch(f"cannot resume from {directory}: its checkpoints were written by {others[0]} "
                             f"process(es), this run has {world_size}; resume with the same number of processes "
                             f"or remove {directory} to start over")
