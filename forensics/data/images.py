"""Reading one image file as an 8-bit RGB ``PIL.Image``, strictly and safely.

:func:`load_rgb` is the only place the toolkit decodes image files. Compared with the reference
loaders (``Image.open(path).convert('RGB')``) it:

- decodes the whole file (``.load()``) and never accepts truncated data: Pillow's global
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never enabled by this package (the attribution reference
  enables it; we report such files instead of scoring zero-padded pixels);
- refuses images larger than ``max_pixels`` from the header, before any pixel is decoded;
- turns every failure into :class:`~forensics.errors.ImageReadError` naming the file and reason;
- applies the EXIF orientation tag (the reference code does not; this only changes JPEG/TIFF/WebP
  files that carry a rotation tag, which the common benchmark sets do not);
- maps 16-bit greyscale to 8 bit by scaling (``v >> 8``) instead of Pillow's clipping ``convert``,
  which turns almost every 16-bit pixel white.

Other modes follow Pillow's ``convert('RGB')``, exactly as the reference: alpha is dropped without
compositing (``RGBA``, ``LA``), palette images are expanded through ``RGBA`` (so a ``tRNS``
transparency never triggers Pillow's warning; the RGB values are the palette entries), ``CMYK``,
``YCbCr``, ``LAB``, ``HSV`` and 1-bit images use Pillow's conversions, and ``F`` (32-bit float) is
read on the 0..255 scale and clipped, like Pillow. Embedded ICC profiles are ignored, as in the
reference.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError, ImageTooLargeError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Default pixel limit (width x height): Pillow's own default ``MAX_IMAGE_PIXELS`` (about 89.5 M
#: pixels, i.e. ~256 MiB as RGB, ~1 GiB as a float tensor). Larger images are refused with
#: :class:`ImageTooLargeError` before decoding. Pass ``max_pixels=None`` to disable this check;
#: Pillow's own hard guard (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies and is reported the
#: same way (raise ``PIL.Image.MAX_IMAGE_PIXELS`` to go beyond it).
DEFAULT_MAX_PIXELS: int = 89_478_485

#: Suffixes (lower case, with the dot) of the formats the benchmarks use. Files are judged by their
#: real suffix (``Path.suffix``), case-insensitively; the UFD reference instead judges by the text
#: after the *first* dot of the name and accepts only png/jpg/JPEG/jpeg/bmp.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Suffixes of files that are clearly not images; folder readers skip them (and hidden files)
#: silently. Any other file found in a data folder is kept and, if it cannot be decoded, reported
#: as skipped at decode time, so nothing disappears unnoticed.
NON_IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".txt", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".md", ".rst", ".html",
    ".log", ".ini", ".cfg", ".toml", ".py", ".ipynb", ".sh", ".pkl", ".pickle", ".npy", ".npz",
    ".pt", ".pth", ".ckpt", ".safetensors", ".h5", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz",
    ".7z", ".rar", ".db", ".pdf", ".doc", ".docx", ".mp4", ".avi", ".mov", ".mkv", ".mp3", ".wav",
})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_truncation_warned = False


def is_image_file(path: PathLike) -> bool:
    """True when ``path``'s real suffix is one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_candidate_file(path: PathLike) -> bool:
    """True unless ``path`` is clearly not an image: a hidden name (``.DS_Store``, macOS ``._x.png``)
    or a suffix in :data:`NON_IMAGE_EXTENSIONS`. Folder readers list every candidate."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() not in NON_IMAGE_EXTENSIONS


def load_rgb(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully and return it as an RGB image, EXIF orientation applied.

    Raises :class:`ImageTooLargeError` when ``width * height > max_pixels`` (checked from the header,
    before decoding; ``None`` disables the check) and :class:`ImageReadError` for a missing or
    zero-byte file, a file that is not an image, truncated or corrupt data, or an unsupported mode.
    See the module docstring for the per-mode conversions and the differences from the reference.
    """
    path = Path(path)
    _check_file(path)
    _warn_if_truncation_allowed()
    try:
        fp = open(path, "rb")
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot open the file ({_describe(exc)})") from exc
    with fp:  # our handle, not Pillow's: the decoded image stays valid after it closes
        return _load_open(fp, path, max_pixels)


def load_rgb_bytes(data: bytes | None, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`load_rgb` for an encoded image held in memory (e.g. a Parquet cell); ``name`` names it in
    errors. ``None`` or empty bytes raise :class:`ImageReadError`."""
    if not data:
        raise ImageReadError(f"{name}: no image data (null or empty)")
    _warn_if_truncation_allowed()
    return _load_open(io.BytesIO(data), name, max_pixels)


def _load_open(fp: BinaryIO, path, max_pixels: int | None) -> Image.Image:
    im = _open_header(fp, path)
    check_pixels(path, im.size, max_pixels)
    _decode(im, path)
    _apply_exif_orientation(im, path)
    return to_rgb(im, path)


def _open_header(fp: BinaryIO, path) -> ImageFile.ImageFile:
    """Identify the format and read the header only (no pixel data)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its own limit; our max_pixels check decides instead.
            # (catch_warnings is process-global: fine for DataLoader worker processes.)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise _too_large_by_pillow(path, exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image, or a format Pillow cannot identify") from exc
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageReadError(f"{path}: cannot read the image header; the file is truncated or corrupt "
                             f"({_describe(exc)})") from exc


def _decode(im: ImageFile.ImageFile, path) -> None:
    """Decode every pixel now (``load``); truncated or corrupt data raises ImageReadError."""
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise _too_large_by_pillow(path, exc) from exc
    except Exception as exc:  # as above: decoders raise many types on bad data
        raise ImageReadError(f"{path}: cannot decode the {im.format or 'image'} data; the file is "
                             f"truncated or corrupt ({_describe(exc)})") from exc


def check_pixels(path: PathLike, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when ``size`` (width, height) exceeds ``max_pixels``."""
    if max_pixels is None:
        return
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard); pass a larger max_pixels, or None, to read it")


def to_rgb(im: Image.Image, path: PathLike = "<image>") -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit RGB (rules in the module docstring)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(np.asarray(im).astype(np.uint16) >> 8)
    if mode == "I":
        # 32-bit integer images are, in practice, 16-bit samples (older Pillow decoded 16-bit
        # PNG/TIFF as "I"): scale like I;16; values outside 0..65535 are clipped.
        return _grey_to_rgb(np.clip(np.asarray(im), 0, 65535).astype(np.uint16) >> 8)
    if mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageReadError(f"{path}: image mode {mode!r} cannot be converted to RGB ({exc})") from exc


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")


def _apply_exif_orientation(im: Image.Image, path) -> None:
    """Rotate/flip ``im`` in place as its EXIF orientation tag says. A malformed EXIF block leaves
    the pixels as stored (the reference never reads EXIF) and is logged, not raised."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as exc:  # malformed EXIF raises SyntaxError, struct.error, ValueError, KeyError...
        log.warning("%s: unreadable EXIF orientation (%s); using the pixels as stored", path, _describe(exc))


def _too_large_by_pillow(path, exc: Exception) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{path}: refused by Pillow's own decompression-bomb guard ({exc}); raise "
        "PIL.Image.MAX_IMAGE_PIXELS to read it")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _warn_if_truncation_allowed() -> None:
    """Log once if some other code enabled Pillow's global LOAD_TRUNCATED_IMAGES: truncated files
    would then be zero-padded silently instead of raising ImageReadError."""
    global _truncation_warned
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _truncation_warned:
        _truncation_warned = True
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled (not by forensics): truncated image "
                    "files will be padded silently instead of being reported; set it to False")
