"""Finding the analysis runs under an output folder, from their summary JSON files.

A **run summary** is any ``*.json`` file under the folder whose top level is an object recording a
``"provenance"`` block (:func:`forensics.provenance.collect`), either at the top level or one level
down (e.g. ``settings.provenance``): every analysis writes one, so discovery needs no list of analysis
names. The run's folder is the summary's folder; its **assets** are the figures (PNG/JPEG, with their
PDF twins), CSV tables and PDFs under that folder, less those under a deeper run's folder. Where several
summaries share a folder, each claims the assets whose name starts with its own stem.

An analysis may add presentation hints to its summary under the key ``"report"`` (all optional):
``{"title": str, "table": "relative/path.csv", "figures": ["relative/path.png", ...]}``.

What cannot be used is listed, never dropped: a JSON file that does not parse, a figure Pillow cannot
decode (found when the page is rendered), and folders with outputs but no run summary (a run that
failed or stopped before writing it, or an analysis that records no provenance).
"""
from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

#: Files a run's section shows or links.
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv",)
LINK_SUFFIXES = (".pdf",)
ASSET_SUFFIXES = FIGURE_SUFFIXES + TABLE_SUFFIXES + LINK_SUFFIXES
#: Summary values of ``"status"`` that mark a run as not done.
FAILED_STATUSES = frozenset({"failed", "error", "skipped", "incomplete", "interrupted"})


@dataclass
class Skip:
    """Something under the folder the report could not use, and why."""

    path: Path
    reason: str


@dataclass
class Run:
    """One analysis run: its summary and the files it wrote."""

    summary_path: Path
    summary: Mapping[str, Any]
    provenance: Mapping[str, Any]
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.summary_path.parent

    @property
    def hints(self) -> Mapping[str, Any]:
        hints = self.summary.get("report")
        return hints if isinstance(hints, Mapping) else {}

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.provenance.get("command") or []]

    @property
    def analysis(self) -> str:
        """The script's name (``rank_fmaps``) from the recorded command, else the summary's stem."""
        return Path(self.command[0]).stem if self.command else self.summary_path.stem

    def title(self, root: Path) -> str:
        """The summary's hint, else the run's folder relative to ``root``."""
        rel = self.folder.relative_to(root).as_posix() if self.folder != root else self.summary_path.name
        return str(self.hints.get("title") or rel)

    def command_line(self) -> str:
        return shlex.join(self.command) if self.command else ""

    @property
    def detector(self) -> str | None:
        args = self.summary.get("args") if isinstance(self.summary.get("args"), Mapping) else {}
        for value in (self.summary.get("detector"), self.summary.get("label"), args.get("detector"),
                      args.get("arch")):
            if isinstance(value, str) and value:
                return value
        return None

    @property
    def weights(self) -> list[str]:
        """Where the weights came from: the summary's ``weights`` or the provenance's checkpoints."""
        found = [f"{c.get('source')}" + (f" (sha256 {c['sha256'][:16]}...)" if c.get("sha256") else "")
                 for c in self.provenance.get("checkpoints") or [] if isinstance(c, Mapping)]
        weights = self.summary.get("weights")
        if not found and isinstance(weights, str):
            found = [weights]
        return found

    @property
    def status(self) -> str:
        value = self.summary.get("status")
        return str(value) if isinstance(value, str) and value.lower() in FAILED_STATUSES else "done"

    def skipped_inputs(self) -> list[Mapping[str, Any]]:
        """Inputs the run itself skipped (``"skipped"`` lists anywhere in its summary)."""
        return [item for item in _find_lists(self.summary, "skipped") if isinstance(item, Mapping)]

    def key_table(self) -> Path | None:
        hinted = self.hints.get("table")
        if isinstance(hinted, str) and (self.folder / hinted).is_file():
            return self.folder / hinted
        return self.tables[0] if self.tables else None

    def ordered_figures(self) -> list[Path]:
        """Hinted figures first (in the hint's order), then the rest, shallowest first."""
        hinted = [self.folder / f for f in self.hints.get("figures") or [] if (self.folder / f) in self.figures]
        return hinted + [f for f in self.figures if f not in hinted]


@dataclass
class Discovery:
    """Everything :func:`discover` found under ``root``."""

    root: Path
    runs: list[Run]
    skipped: list[Skip]


def find_provenance(obj: Any) -> Mapping[str, Any] | None:
    """The ``"provenance"`` block of a summary (top level, or one level down), else ``None``."""
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("provenance"), Mapping):
        return obj["provenance"]
    for value in obj.values():
        if isinstance(value, Mapping) and isinstance(value.get("provenance"), Mapping):
            return value["provenance"]
    return None


def _find_lists(obj: Any, key: str, depth: int = 3) -> list[Any]:
    if depth < 0 or not isinstance(obj, Mapping):
        return []
    found = list(obj[key]) if isinstance(obj.get(key), list) else []
    for name, value in obj.items():
        if name != key and isinstance(value, Mapping):
            found += _find_lists(value, key, depth - 1)
    return found


def _visible_files(root: Path, exclude: Iterable[Path]) -> list[Path]:
    """Files under ``root``, sorted, less hidden ones (atomic writes' temporaries) and ``exclude``."""
    excluded = {p.resolve() for p in exclude}
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
                  and p.resolve() not in excluded)


def _depth_then_name(root: Path):
    return lambda p: (len(p.relative_to(root).parts), p.as_posix())


def discover(root: str | Path, exclude: Iterable[Path] = ()) -> Discovery:
    """Runs under ``root`` (each with its assets) and what was skipped, in a stable order."""
    root = Path(root)
    files = _visible_files(root, exclude)
    runs: list[Run] = []
    skipped: list[Skip] = []
    for path in (p for p in files if p.suffix.lower() == ".json"):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append(Skip(path, f"malformed JSON ({exc})"))
            continue
        prov = find_provenance(obj)
        if prov is not None:
            runs.append(Run(path, obj, prov))
    # each asset goes to the deepest run folder that holds it; within a folder, to the summary whose stem
    # starts its name (else the folder's first summary)
    by_folder: dict[Path, list[Run]] = {}
    for run in runs:
        by_folder.setdefault(run.folder, []).append(run)
    orphans: dict[Path, list[Path]] = {}
    for path in (p for p in files if p.suffix.lower() in ASSET_SUFFIXES):
        folder = next((f for f in (path.parent, *path.parent.parents) if f in by_folder), None)
        if folder is None:
            orphans.setdefault(path.parent, []).append(path)
            continue
        candidates = by_folder[folder]
        rel = path.relative_to(folder).as_posix()
        owner = next((r for r in candidates if rel.startswith(r.summary_path.stem)), candidates[0])
        suffix = path.suffix.lower()
        (owner.figures if suffix in FIGURE_SUFFIXES else owner.tables if suffix in TABLE_SUFFIXES
         else owner.links).append(path)
    for run in runs:
        for items in (run.figures, run.tables, run.links):
            items.sort(key=_depth_then_name(run.folder))
    for folder, items in sorted(orphans.items()):
        kinds = sorted({p.suffix.lower().lstrip(".") for p in items})
        skipped.append(Skip(folder, f"{len(items)} output file(s) ({', '.join(kinds)}) but no run summary "
                                    "(no JSON with a provenance block): a failed or unfinished run, or an "
                                    "analysis that records no provenance"))
    runs.sort(key=lambda r: r.summary_path.as_posix())
    skipped.sort(key=lambda s: s.path.as_posix())
    log.info("report: %d run(s) and %d skipped item(s) under %s", len(runs), len(skipped), root)
    return Discovery(root, runs, skipped)
