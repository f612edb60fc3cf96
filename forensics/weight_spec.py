"""What one released weight file is (data; a leaf module): :class:`WeightSpec`. The releases are
declared in :mod:`forensics._releases` and registered by :mod:`forensics.weights`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class WeightSpec:
    """One released weight file.

    ``tag``: registry name (``detector.release``). ``relpath``: where it goes under the weights
    folder. ``url``: public source; ``sha256``: checksum where known (``None`` otherwise).
    ``detector``: the registered detector it loads into (``None`` for backbones / init weights).
    ``format``: what the file holds (documentation for users). ``direct``: ``url`` serves the file
    itself (``download`` can fetch it); ``False`` where it is a page or shared folder from which
    the file must be fetched by hand. ``requires``: tags of other releases needed to use this one
    (e.g. the CLIP backbone under a RINE head). ``options``: detector options the file implies.
    ``converted``: where ``weights convert`` puts a safetensors copy of a file the toolkit cannot
    read directly (OpenAI's TorchScript CLIP archive); :func:`resolve` prefers that copy.
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
    direct: bool = True
    requires: tuple[str, ...] = ()
    converted: str | None = None

    @property
    def filename(self) -> str:
        return Path(self.relpath).name
