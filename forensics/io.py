"""File I/O shared by the whole package: atomic writes and safe reading of weight files.

Every output is written to a temporary file in the destination folder and renamed into place,
so an interrupted run never leaves a half-written CSV, figure or checkpoint. Weight files are
read with ``torch.load(..., map_location="cpu", weights_only=True)`` or safetensors, never by
unpickling arbitrary objects.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .errors import CheckpointError

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the destination's suffix (``suffix`` overrides it) so that writers
    that infer a format from the extension (matplotlib, PIL) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False, hint: str = "overwrite=True") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to build into; if the block succeeds it takes
    ``path``'s place (an existing ``path`` is first moved aside, then removed), otherwise it is removed and
    ``path`` is left as it was. An existing ``path`` without ``overwrite`` raises ``FileExistsError``
    (naming ``hint``, how to allow it) before anything is built."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass {hint} to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: PathLike, frame: Any, *, index: bool = True) -> Path:
    """A pandas DataFrame as CSV (floats as ``%.6f``), written atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index, float_format="%.6f")
    return Path(path)


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively through dicts and lists."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through a temporary file + rename (checkpoints survive interruption)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_weight_file(path: PathLike, expected: str = "a checkpoint") -> dict[str, Any]:
    """Read a ``.pth``/``.pt``/``.ckpt``/``.bin`` (torch zip) or ``.safetensors`` file safely.

    Returns the top-level mapping. Raises :class:`CheckpointError` naming the file and what was
    expected when it is missing, truncated, not a weight file, or holds pickled objects that
    ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (expected {expected})")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (expected {expected})")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); expected {expected}") from exc
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript archive (e.g. OpenAI's original CLIP release), which is not read by "
            f"unpickling; convert it once with `python -m forensics weights convert {path} OUT.safetensors` "
            f"(expected {expected})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        kind = type(exc).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: cannot read as {expected} ({kind}: {first}). The file may be truncated "
                              "or corrupt (compare its sha256 with `python -m forensics weights list`), or it "
                              "holds pickled Python objects, which are never loaded.") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: top-level object is a {type(obj).__name__}, expected {expected} "
                              "(a mapping of tensors)")
    return dict(obj)


def is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or n.split("/", 1)[-1].startswith("code/")
                       for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
