"""``--resume`` / ``--checkpoint_every`` / ``--checkpoint_dir`` of the pass-based CLIs, and the
:func:`forensics.distributed.session` they open (sharded under ``torchrun``; docs/distributed.md)."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from .options import add_option

#: Arguments that do not change a run's results (a resumed run may change them).
NOT_RESULTS = ("resume", "checkpoint_every", "checkpoint_dir", "workers", "verbose", "max_rows", "func")


def add_resume_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    from ..distributed import DEFAULT_EVERY
    g = parser.add_argument_group("long runs (also under torchrun; docs/distributed.md)")
    g.add_argument("--resume", action="store_true",
                   help="checkpoint the partial state every --checkpoint_every batches and continue a killed run "
                        "from its last checkpoint (same files, settings and number of processes)")
    add_option(g, "--checkpoint_every", "--checkpoint-every", type=int, default=DEFAULT_EVERY, metavar="N",
               help="batches between checkpoints with --resume (default: %(default)s)")
    add_option(g, "--checkpoint_dir", "--checkpoint-dir", type=Path, default=None,
               help="where --resume keeps its checkpoints (default: a .resume folder beside the outputs)")
    return g


def result_settings(args: argparse.Namespace, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The arguments that change the results (what a resumed run must share with the killed one)."""
    from .analysis_args import describe
    return {k: v for k, v in describe(args).items() if k not in (*NOT_RESULTS, *ignore)}


@contextlib.contextmanager
def sharded_session(args: argparse.Namespace) -> Iterator[Any]:
    """Open the run's :func:`~forensics.distributed.session` (device ``args.device``; with ``--resume``,
    checkpoints in ``--checkpoint_dir``, else where the script says with ``run.checkpoint_in(dir)``) and
    yield the :class:`~forensics.distributed.Run`. Under ``torchrun`` the device becomes the rank's GPU
    (``args.device`` is updated)."""
    from ..distributed import Checkpointing, local_device, session
    if hasattr(args, "device"):
        args.device = local_device(args.device)
    checkpointing = None
    if getattr(args, "resume", False):
        checkpointing = Checkpointing(args.checkpoint_dir, args.checkpoint_every, result_settings(args))
    with session(getattr(args, "device", None), checkpointing) as run:
        yield run
