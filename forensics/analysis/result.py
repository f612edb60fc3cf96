"""The one shape every analysis returns (docs/adding_an_analysis.md).

An analysis is a function of ``forensics.analysis`` that takes a detector (or a head, a backbone) and data and
returns an :class:`AnalysisResult`: the numbers, in memory, plus :attr:`~AnalysisResult.record`, what its summary
JSON records beside them (the run's arguments, the weights, the provenance of software, machine, data and
checkpoint, the torchrun layout). ``result.write(out_dir)`` writes everything a reader needs (CSV tables,
figures as PNG and PDF, the summary JSON with the record) atomically and returns ``{name: path}`` of the files
written; options of ``write`` (file stems, titles, formats) are keyword-only and have defaults, so
``result.write(out_dir)`` is always a complete call.

Who fills the record: an analysis records the provenance of what it read where it has it (the detector and the
files); the command line adds the run's arguments with :meth:`AnalysisResult.annotate` (see
``forensics.cli.analysis_args.record_run``). Entries keep the order they were added in, so a summary reads the
same from run to run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class AnalysisResult:
    """Base class of every analysis result: :attr:`record` + :meth:`annotate` + :meth:`write`.

    Subclasses (mostly dataclasses) implement :meth:`write`; a subclass whose summary already keeps its settings
    in a dict of its own overrides :attr:`record` to return that dict, so annotations land where its summary has
    always shown them.
    """

    @property
    def record(self) -> dict[str, Any]:
        """What the summary JSON records beside the numbers (arguments, weights, provenance, ...), in insertion
        order."""
        return self.__dict__.setdefault("_record", {})

    def annotate(self, **entries: Any):
        """Add ``entries`` to :attr:`record` (a key given again replaces its value, in place); returns ``self``."""
        self.record.update(entries)
        return self

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the result's tables, figures and summary (with :attr:`record`) under ``out_dir``, atomically;
        return ``{name: path}`` of the files written."""
        raise NotImplementedError(f"{type(self).__name__} does not implement write(out_dir)")


__all__ = ["AnalysisResult"]
