"""Fetch one file from a URL into place, safely: stream, hash, verify, rename.

The file is streamed (with a tqdm progress bar) into a temporary file in the destination folder,
hashed on the way, compared with the expected sha256 where one is known, and only then renamed
onto the destination. On any failure the temporary file is removed and a :class:`DownloadError`
(or :class:`ChecksumError`) says what went wrong; the destination is never left half-written.

Only ``http``, ``https`` and ``file`` URLs are accepted (``file://`` makes the logic testable
offline). Uses the standard library only.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import ForensicsError
from .io import atomic_path

log = logging.getLogger(__name__)

SCHEMES = ("http", "https", "file")
USER_AGENT = "forensics-weights/0.1 (python urllib)"


class DownloadError(ForensicsError):
    """A file could not be fetched (no network, HTTP error, truncated transfer, disk full...)."""


class ChecksumError(ForensicsError, ValueError):
    """A file's sha256 differs from the published one (corrupt, truncated or a different file)."""


def checksum_message(what: str, path: os.PathLike | str, expected: str, actual: str) -> str:
    return (f"sha256 mismatch for {what}: {path}\n  expected: {expected}\n  actual:   {actual}\n"
            "  The file is corrupt, truncated or a different release; delete it and fetch it again.")


def fetch(url: str, dest: os.PathLike | str, sha256: str | None = None, *, progress: bool = True,
          timeout: float = 60.0, chunk: int = 1 << 20) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's sha256.

    ``sha256``: expected hex digest; on mismatch :class:`ChecksumError` is raised and ``dest`` is
    left as it was. Network and file-system failures raise :class:`DownloadError`.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise DownloadError(f"cannot download {url!r}: only {', '.join(SCHEMES)} URLs are supported")
    log.info("downloading %s -> %s", url, dest)
    try:
        with atomic_path(dest, suffix=".part") as tmp:
            digest, size = _stream(url, tmp, progress=progress, timeout=timeout, chunk=chunk, desc=dest.name)
            if sha256 is not None and digest != sha256.lower():
                raise ChecksumError(checksum_message(f"the file downloaded from {url}", dest, sha256, digest))
    except (OSError, http.client.HTTPException) as exc:  # URLError/HTTPError are OSErrors
        raise DownloadError(_describe_failure(url, exc)) from exc
    log.info("wrote %s (%d bytes, sha256 %s%s)", dest, size, digest,
             ", verified" if sha256 is not None else "; no published checksum to compare")
    return digest


def _stream(url: str, out: Path, *, progress: bool, timeout: float, chunk: int, desc: str) -> tuple[str, int]:
    """Copy the body of ``url`` into ``out``; return (sha256, number of bytes)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    h = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with open(out, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                        desc=desc, disable=not progress) as bar:
            while block := response.read(chunk):
                f.write(block)
                h.update(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise DownloadError(f"{url}: transfer stopped after {received} of {total} bytes; try again")
    return h.hexdigest(), received


def _describe_failure(url: str, exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: the server answered HTTP {exc.code} {exc.reason} (the link may have moved)"
    if isinstance(exc, urllib.error.URLError):
        host = urllib.parse.urlsplit(url).hostname or url
        return (f"cannot reach {host} ({exc.reason}); this machine seems to be offline or the host is "
                "unreachable")
    if isinstance(exc, TimeoutError):
        return f"{url}: no answer within the time limit; the network is slow or unavailable"
    return f"{url}: download failed ({type(exc).__name__}: {exc})"
