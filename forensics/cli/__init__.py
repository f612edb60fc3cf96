"""``python -m forensics <command>``: ``app``, ``predict``, ``report`` and ``weights``; and :func:`run`, the one boundary
between a command-line entry point and the library, which every ``analyses/*.py`` script and
``python -m forensics`` go through.

Each sub-command is one module exposing ``add_parser(subparsers)`` which registers its parser
and sets ``func`` (called with the parsed namespace, returns an exit code).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, NoReturn, Sequence

from ..errors import ForensicsError

#: Exit code of a run stopped by an expected error (a :class:`ForensicsError`, or one of the
#: ``expected`` types a script names): one log line, no traceback.
ERROR_EXIT = 2

log = logging.getLogger("forensics")

COMMANDS = ("app", "predict", "report", "weights")


def build_parser() -> argparse.ArgumentParser:
    import importlib
    parser = argparse.ArgumentParser(prog="python -m forensics",
                                     description="Explain and stress-test synthetic-image detectors.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr and, first, the versions and machine facts that change numbers (provenance)."""
    from ..provenance import environment_line
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("forensics.provenance").info("%s", environment_line())


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None, *,
        expected: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Call ``main(argv)`` and exit with its code (``None``: 0).

    Every :class:`~forensics.errors.ForensicsError` (and any of ``expected``, the other exception
    types a script treats as a user error, e.g. ``ValueError`` for a bad split name) becomes one
    ``ERROR`` log line and exit code :data:`ERROR_EXIT`; anything else propagates with its traceback
    (a bug). ``SystemExit`` (argparse's usage errors, ``--help``) passes through unchanged. Under
    ``torchrun`` a bug's traceback also goes to the launcher's error file, so that its failure report names
    the rank and the cause (docs/distributed.md).
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # under torchrun: its failure report carries this rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record
        main = record(main)
    try:
        code = main(argv)
    except (ForensicsError, *expected) as exc:
        log.error("%s", exc)
        code = ERROR_EXIT
    sys.exit(0 if code is None else int(code))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    run(main)
