"""Hugging Face style Parquet shards: a ``.parquet`` file or a folder of them (searched recursively,
sorted), with an image column (binary, or a struct with ``bytes``/``path`` as the ``datasets``
library writes images), a label column (int or string; a ``label_map`` maps other values, e.g.
SID-Set's ``0`` real / ``1`` full synthetic / ``2`` tampered as ``0=real,1=fake,2=fake``) and an
optional mask column (bytes, struct, or null = no mask).

Listing reads only the small columns (label, and ``source``/``split`` where present) one row group
at a time; no image is decoded or even read. Each record points at its cells
(:class:`~forensics.data.records.ParquetCell`), read when the image is scored, one row group at a
time, so memory does not depend on the file's size. An unreadable file or a missing column is an
error naming it; an unknown label value is an error naming the file and row; a row whose image
cannot be read is skipped and listed at scoring time. Sets: one per ``split`` value when the
table has a ``split`` column, else one named after the file or folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ...errors import DatasetLayoutError
from ..layout_options import DEFAULT_LABELS, parse_label
from ..records import ImageRecord, ParquetCell

IMAGE_COLUMN = "image"
MASK_COLUMN = "mask"


def parquet_files(root: Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise DatasetLayoutError(f"{root}: no .parquet file" + ("" if root.exists() else " (no such file or folder)"))
    return files


def _open(path: Path):
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...: one clear error naming the file
        raise DatasetLayoutError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc


def _is_image_type(kind) -> bool:
    import pyarrow as pa
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0))


def resolve_columns(path: Path, schema, image: str | None, label: str, mask: str | None) -> tuple[str, str, str | None]:
    """``(image, label, mask)`` column names of one file, checked against its schema."""
    names = list(schema.names)
    if image is None:
        candidates = [n for n in names if _is_image_type(schema.field(n).type)]
        image = IMAGE_COLUMN if IMAGE_COLUMN in names else (candidates[0] if len(candidates) == 1 else None)
        if image is None:
            raise DatasetLayoutError(f"{path}: cannot tell the image column (columns: {', '.join(names)}); "
                                     "pass --image_column")
    if mask is None:
        mask = MASK_COLUMN if MASK_COLUMN in names else ""
    for what, column in (("image", image), ("label", label), ("mask", mask)):
        if column and column not in names:
            raise DatasetLayoutError(f"{path}: no {what} column {column!r} (columns: {', '.join(names)}); "
                                     f"pass --{what}_column")
    return image, label, mask or None


def _set_of(path: Path, root: Path) -> str:
    return path.stem if root.is_file() else root.name


def parquet_names(root: Path) -> list[str]:
    root = Path(root)
    names: dict[str, None] = {}
    for path in parquet_files(root):
        pf = _open(path)
        if "split" in pf.schema_arrow.names:
            for batch in pf.iter_batches(columns=["split"]):
                for value in batch.column(0).to_pylist():
                    names.setdefault(str(value))
        else:
            names.setdefault(_set_of(path, root))
    return list(names)


def parquet(root: Path, name: str | None = None, cap: int | None = None, labels: Mapping[str, int] = DEFAULT_LABELS,
            image_column: str | None = None, label_column: str = "label", mask_column: str | None = None
            ) -> list[ImageRecord]:
    """The rows of set ``name`` (``None``: all), reals first; ``cap`` keeps the first N of each label.
    ``source``: the ``source`` (or ``generator``) column where present, else the file's stem."""
    root = Path(root)
    sides: dict[int, list[ImageRecord]] = {0: [], 1: []}
    for path in parquet_files(root):
        pf = _open(path)
        schema = pf.schema_arrow
        image, label, mask = resolve_columns(path, schema, image_column, label_column, mask_column)
        extra = [c for c in ("split", "source", "generator") if c in schema.names]
        row = 0
        for group in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(group, columns=[label, *extra])
            except Exception as exc:  # a corrupt row group: one error naming the file and group
                raise DatasetLayoutError(f"{path}: row group {group} is unreadable ({type(exc).__name__}: "
                                         f"{exc})") from exc
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            for i, value in enumerate(cols[label]):
                r = row + i
                split = str(cols["split"][i]) if "split" in cols else _set_of(path, root)
                if name is not None and split != name:
                    continue
                y = parse_label(value, labels) if value is not None else None
                if y is None:
                    raise DatasetLayoutError(f"{path}: row {r}: label {value!r} is not one of {', '.join(sorted(labels))}"
                                             " (pass --label_map to map other values)")
                if cap is not None and len(sides[y]) >= cap:
                    continue
                source = next((str(cols[c][i]) for c in ("source", "generator") if c in cols and cols[c][i]), path.stem)
                sides[y].append(ImageRecord(path, y, source, image=ParquetCell(path, group, i, r, image),
                                            mask=ParquetCell(path, group, i, r, mask) if mask else None))
            row += table.num_rows
    if not sides[0] and not sides[1]:
        raise DatasetLayoutError(f"{root}: no row of set {name!r}")
    return sides[0] + sides[1]
