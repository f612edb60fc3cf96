"""One self-contained HTML page per output folder (``python -m forensics report [FOLDER]``).

:func:`discover` finds every analysis run under a folder from its summary JSON (any JSON recording a
provenance block), :func:`write_report` renders them, each with its title, command line, detector and
weights, provenance, key table and figures, behind an index, and lists what it skipped (malformed JSON,
undecodable figures, outputs without a summary). The page embeds its images, needs no server or
network, and is written atomically. docs/report.md describes it.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .discover import Discovery, Run, Skip, discover
from .html import Options, render

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"

__all__ = ["Discovery", "Options", "Run", "Skip", "discover", "render", "write_report", "REPORT_NAME"]


def write_report(folder: str | Path = "figures", out: str | Path | None = None,
                 options: Options = Options()) -> Path:
    """Render the runs under ``folder`` into ``out`` (default ``<folder>/report.html``); atomic."""
    from ..errors import ForensicsError
    from ..io import atomic_write_text
    folder = Path(folder)
    if not folder.is_dir():
        raise ForensicsError(f"{folder}: no such folder (expected an output folder such as figures/)")
    out = Path(out) if out is not None else folder / REPORT_NAME
    found = discover(folder, exclude=[out])
    atomic_write_text(out, render(found, out, options))
    log.info("report of %d run(s) written to %s", len(found.runs), out)
    return out
