"""``python -m forensics <command>``: ``predict`` and ``weights``.

Each sub-command is one module exposing ``add_parser(subparsers)`` which registers its parser
and sets ``func`` (called with the parsed namespace, returns an exit code).
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import ForensicsError

COMMANDS = ("predict", "weights")


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ForensicsError as exc:
        logging.getLogger("forensics").error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
