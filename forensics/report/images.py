"""Figures as ``data:`` URIs: decoded with Pillow first (a corrupt file is reported, not embedded),
shrunk to a thumbnail when wider or taller than ``max_side`` pixels (so a folder of large figures gives a
page that still opens quickly), embedded as-is otherwise."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MIME = {"PNG": "image/png", "JPEG": "image/jpeg"}


@dataclass(frozen=True)
class Embedded:
    uri: str
    width: int
    height: int
    original: tuple[int, int]

    @property
    def shrunk(self) -> bool:
        return (self.width, self.height) != self.original


class ImageError(ValueError):
    """A figure that cannot be decoded."""


def embed(path: str | Path, max_side: int = 1000) -> Embedded:
    """``path`` as a data URI, thumbnailed to ``max_side``; :class:`ImageError` when it does not decode."""
    data = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # structure and checksums
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # every pixel (truncated files fail here)
            fmt, size = img.format, img.size
            if max(size) <= max_side and fmt in MIME:
                return Embedded(_uri(MIME[fmt], data), *size, original=size)
            thumb = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
            thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            thumb.save(buf, format="PNG", optimize=True)
            return Embedded(_uri("image/png", buf.getvalue()), *thumb.size, original=size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image ({type(exc).__name__}: {exc})") from exc


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
