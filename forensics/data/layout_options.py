"""What the layouts beyond the folder conventions need to know: :class:`LayoutOptions` (the
``--real_dir --image_dir --mask_dir --mask_pattern --annotations --label_map --image_column
--label_column --mask_column`` options) and how labels are read (:func:`parse_label`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

#: Label values every reader understands (compared as lower-case text): 0/1 and real/fake.
DEFAULT_LABELS: dict[str, int] = {"0": 0, "1": 1, "real": 0, "fake": 1}


@dataclass(frozen=True)
class LayoutOptions:
    """Options of the layouts that need more than a root folder; every field has a default.

    ``real_dir``: the reals' folder (synthbuster: required; pairs: default ``real``/``authentic``
    beside the images). ``image_dir``/``mask_dir``: pairs' image and mask folders (relative to the
    root or absolute; default: looked up by name). ``mask_pattern``: a mask's file name from its
    image's ``{stem}``/``{name}``/``{suffix}``. ``annotations``: the polygons JSON (default: the
    only ``*.json`` in the root). ``label_map``: value -> 0/1 for manifest/Parquet labels (e.g.
    SID-Set's ``{"0": 0, "1": 1, "2": 1}``), replacing :data:`DEFAULT_LABELS`. Parquet columns:
    ``image_column`` (default ``image``, else the only binary/struct column), ``label_column``,
    ``mask_column`` (default ``mask`` when present; ``""`` = none).
    """

    real_dir: Path | None = None
    image_dir: Path | None = None
    mask_dir: Path | None = None
    mask_pattern: str = "{stem}.png"
    annotations: Path | None = None
    label_map: Mapping[str, int] | None = None
    image_column: str | None = None
    label_column: str = "label"
    mask_column: str | None = None

    def __post_init__(self) -> None:
        if not any(key in self.mask_pattern for key in ("{stem}", "{name}")):
            raise ValueError(f"mask_pattern must contain {{stem}} or {{name}}, got {self.mask_pattern!r}")
        if self.label_map is not None:
            bad = {k: v for k, v in self.label_map.items() if v not in (0, 1)}
            if bad:
                raise ValueError(f"label_map values must be 0 (real) or 1 (fake), got {bad}")

    @property
    def labels(self) -> Mapping[str, int]:
        return {str(k).lower(): v for k, v in self.label_map.items()} if self.label_map else DEFAULT_LABELS


def parse_label(value: Any, labels: Mapping[str, int]) -> int | None:
    """0/1 for ``value`` (an int, a bool, a string; compared as lower-case text) or ``None`` when it is
    not one of ``labels``."""
    text = str(int(value)) if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer()) \
        else str(value).strip()
    return labels.get(text.lower())


def parse_label_map(text: str) -> dict[str, int]:
    """``"0=real,1=fake,2=fake"`` (or ``=0``/``=1``) -> ``{"0": 0, "1": 1, "2": 1}``; ValueError otherwise."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        label = DEFAULT_LABELS.get(value.strip().lower())
        if not sep or not key.strip() or label is None:
            raise ValueError(f"expected VALUE=real|fake|0|1 items separated by commas, got {item!r}")
        out[key.strip().lower()] = label
    if not out:
        raise ValueError("empty label map")
    return out
