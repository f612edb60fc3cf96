"""How an option is declared on every command line of the project: one visible spelling per option
(the reference's name where it has one, e.g. ``--bsize``), the other spellings kept working as
hidden aliases, the one ``--crop`` option, and ``KEY=VALUE`` options.

Nearly a leaf (argparse and ast; the detectors' crop policies are read when ``--crop`` is added), so every
command line of :mod:`forensics.cli` and the scripts builds on it.
"""
from __future__ import annotations

import argparse
import ast
from typing import Any, Sequence

#: Keywords that only the visible spelling carries (an alias sets its value, never a default).
_VISIBLE_ONLY = ("help", "default", "required", "metavar")


def add_option(group: argparse._ActionsContainer, name: str, *aliases: str, **kwargs: Any) -> argparse.Action:
    """``group.add_argument(name, **kwargs)``, plus each of ``aliases`` as a hidden spelling of the
    same option (same ``dest``, type and action; absent from ``--help``; never sets a default)."""
    action = group.add_argument(name, **kwargs)
    shared = {k: v for k, v in kwargs.items() if k not in _VISIBLE_ONLY}
    for alias in aliases:
        group.add_argument(alias, **{**shared, "dest": action.dest, "help": argparse.SUPPRESS,
                                     "default": argparse.SUPPRESS})
    return action


def add_bsize_arg(group: argparse._ActionsContainer, default: int, help: str = "images per batch (default: "
                  "%(default)s)", dest: str = "bsize") -> argparse.Action:
    """``--bsize`` (the reference's name) with ``--batch_size`` and ``--batch-size`` as hidden aliases."""
    return add_option(group, "--bsize", "--batch_size", "--batch-size", dest=dest, type=int, default=default,
                      metavar="BSIZE", help=help)


#: ``--crop`` help by default: the detector's own policy (``None``), or full resolution (``"none"``, the
#: T-FF analyses that score full-resolution images as the reference does).
CROP_HELP = {None: "input crop (default: the detector's; the embedded default: none, full 64x64 images)",
             "none": "none = full resolution (the reference; default) or the detector's center crop"}


def add_crop_arg(group: argparse._ActionsContainer, help: str | None = None, *, default: str | None = None,
                 extra: Sequence[str] = (), size_help: str | None = None) -> argparse.Action:
    """The ``--crop`` option: the detectors' crop policies (``center``: the detector's CenterCrop;
    ``none``: full resolution) plus the ``extra`` ones an analysis adds (``ten``, ``random_resized``),
    the default listed first; ``None`` as default means the detector's own policy (``help``: by
    default :data:`CROP_HELP` of ``default``). With ``size_help``, also ``--crop_size`` (default: the
    detector's)."""
    from ..detectors.config import CROP_POLICIES
    known = [*CROP_POLICIES, *(c for c in extra if c not in CROP_POLICIES)]
    choices = [default, *(c for c in known if c != default)] if default in known else known
    action = group.add_argument("--crop", choices=choices, default=default, help=help or CROP_HELP[default])
    if size_help is not None:
        group.add_argument("--crop_size", type=int, default=None, help=size_help)
    return action


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE a Python literal where it parses as one (``nproj=4``, ``x=None``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value
