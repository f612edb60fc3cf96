"""What a layout reader returns: :class:`ImageRecord` (one image to score, nothing decoded) and the
lazy references a record may carry instead of a plain file: a :class:`ParquetCell` (an image or
mask stored in a Parquet row, read on demand) and :class:`Polygons` (a mask given as polygons,
rasterised at the image's size with ``cv2.fillPoly``).

A record's ``mask`` is one of: ``None`` (no mask known), a path to a mask file, raw encoded bytes,
a :class:`ParquetCell` or :class:`Polygons`. Masks are always matched to their image by name or key
by the readers, never by sort order.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ParquetCell:
    """One cell of a Parquet file: ``column`` of row ``index`` of row group ``group`` (``row`` is the
    row's number in the whole file, for messages). ``field`` picks a struct's member (Hugging Face's
    ``{"bytes", "path"}`` images). :meth:`read` returns the encoded bytes (or ``None`` for a null
    cell); a struct with null ``bytes`` and a ``path`` reads that file (relative to the Parquet file)."""

    file: Path
    group: int
    index: int
    row: int
    column: str

    def read(self) -> bytes | None:
        value = _row_group_column(self.file, self.group, self.column)[self.index].as_py()
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return bytes(value["bytes"])
            if value.get("path"):
                return (self.file.parent / value["path"]).read_bytes()
            return None
        if value is None or isinstance(value, (bytes, bytearray)):
            return None if value is None else bytes(value)
        if isinstance(value, str):  # a path column
            return (self.file.parent / value).read_bytes()
        raise TypeError(f"column {self.column!r} holds {type(value).__name__} values, not image bytes")

    def __str__(self) -> str:
        return f"{self.file}#row={self.row}:{self.column}"


_cache = threading.local()


def _row_group_column(file: Path, group: int, column: str):
    """The column of one row group, as a pyarrow array; the last row group read per (file, column)
    is cached per thread/process, so memory is bounded by one row group whatever the file's size."""
    import pyarrow.parquet as pq
    store = getattr(_cache, "groups", None)
    if store is None:
        store = _cache.groups = {}
    key = (str(file), column)
    hit = store.get(key)
    if hit is not None and hit[0] == group:
        return hit[1]
    if len(store) > 8:
        store.clear()
    array = pq.ParquetFile(file).read_row_group(group, columns=[column]).column(0).combine_chunks()
    store[key] = (group, array)
    return array


@dataclass(frozen=True)
class Polygons:
    """A mask as polygons in image pixel coordinates (``points``: one tuple of ``(x, y)`` per
    polygon); :meth:`render` fills them (``cv2.fillPoly``) into an ``[H, W]`` uint8 0/1 array."""

    points: tuple[tuple[tuple[float, float], ...], ...]
    categories: tuple[str, ...] = ()

    def render(self, size: tuple[int, int]) -> np.ndarray:
        import cv2
        width, height = size
        mask = np.zeros((height, width), dtype=np.uint8)
        polys = [np.round(np.asarray(p, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
                 for p in self.points if len(p) >= 3]
        if polys:
            cv2.fillPoly(mask, polys, 1)
        return mask

    def __str__(self) -> str:
        return f"{len(self.points)} polygon(s)"


MaskRef = Union[Path, bytes, ParquetCell, Polygons, None]


@dataclass(frozen=True)
class ImageRecord:
    """One image to score: where it is and what is known about it.

    ``path``: the image file, or for an image stored inside a Parquet file that file (``image``
    then says which cell). ``mask``: see the module docstring. ``ref`` is the image's unique name
    (the path, plus ``#row=N`` for a Parquet row). ``skip``: why the reader met this entry but cannot
    offer it for scoring (e.g. an image without annotations, an annotation without an image); such a
    record is never decoded, and :class:`~forensics.data.ImageDataset` lists it as a skip with this
    reason, so the run's :class:`~forensics.data.RunSummary` counts it."""

    path: Path
    label: int | None  # 0 real, 1 fake, None unknown
    source: str  # generator / test-set name (or real source)
    category: str = ""  # class folder (e.g. LSUN "car"), or "" for flat sets
    mask: MaskRef = None
    image: ParquetCell | None = None
    skip: str = ""

    @property
    def ref(self) -> str:
        return str(self.path) if self.image is None else f"{self.path}#row={self.image.row}"
