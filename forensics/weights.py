"""Registry of released weight files: what they are, where they come from, where they go.

Model weights cannot be bundled with the toolkit. Each known release is a :class:`WeightSpec`
naming its file, public source, sha256 (where known) and expected path under the weights folder
(``weights/`` in the project, or ``$FORENSICS_WEIGHTS``). :func:`resolve` turns a release tag or a
file path into a path, and stops with one clear message when the file is absent.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import WeightsNotFoundError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "FORENSICS_WEIGHTS"


@dataclass(frozen=True)
class WeightSpec:
    """One released weight file.

    ``tag``: registry name (``detector.release``). ``relpath``: where it goes under the weights
    folder. ``url``: public source; ``sha256``: checksum where known (``None`` otherwise).
    ``detector``: the registered detector it loads into (``None`` for backbones / init weights).
    ``format``: what the file holds (documentation for users).
    """

    tag: str
    relpath: str
    url: str
    detector: str | None
    description: str
    paper: str = ""
    sha256: str | None = None
    format: str = ""
    license: str = ""
    notes: str = ""
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


_RELEASES: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    if spec.tag in _RELEASES:
        raise ValueError(f"weight tag {spec.tag!r} registered twice")
    _RELEASES[spec.tag] = spec
    return spec


def get_spec(tag: str) -> WeightSpec:
    try:
        return _RELEASES[tag]
    except KeyError:
        raise KeyError(f"unknown weight tag {tag!r}; known: {', '.join(sorted(_RELEASES))}") from None


def list_specs(detector: str | None = None) -> list[WeightSpec]:
    return [s for s in _RELEASES.values() if detector is None or s.detector == detector]


def weights_dir() -> Path:
    """The weights folder: ``$FORENSICS_WEIGHTS`` if set, else ``weights/`` at the project root."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "weights"


def expected_path(tag: str) -> Path:
    return weights_dir() / get_spec(tag).relpath


def missing_message(spec: WeightSpec) -> str:
    return (f"weight file for '{spec.tag}' not found: {spec.filename}\n"
            f"  what:   {spec.description}\n"
            f"  source: {spec.url}\n"
            f"  put it at: {weights_dir() / spec.relpath}  (or set ${WEIGHTS_ENV} to another weights folder)"
            + (f"\n  sha256: {spec.sha256}" if spec.sha256 else ""))


def resolve(tag_or_path: str | os.PathLike) -> Path:
    """Return the file for a release tag or an explicit path; raise :class:`WeightsNotFoundError`
    with the file name, its source and where to put it when it is absent."""
    text = str(tag_or_path)
    if text in _RELEASES:
        spec = _RELEASES[text]
        path = weights_dir() / spec.relpath
        if not path.is_file():
            raise WeightsNotFoundError(missing_message(spec))
        return path
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise WeightsNotFoundError(f"{path} is not a file (expected a weight file)")
    raise WeightsNotFoundError(f"weight file not found: {path}\n  (neither an existing file nor a known tag; "
                               f"known tags: {', '.join(sorted(_RELEASES))}; `python -m forensics weights list`)")


# The releases themselves are declared in ._releases (data, not logic).
from . import _releases  # noqa: E402,F401  (registers on import)
