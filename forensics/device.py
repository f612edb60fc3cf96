"""Device selection shared by the library and every CLI (``--device auto|cpu|cuda[:N]``)."""
from __future__ import annotations

import logging

import torch

from .errors import ForensicsError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a :class:`torch.device`.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA on a machine without it is
    an error rather than a silent fallback, so that timings and numbers are never attributed to
    the wrong device.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ForensicsError(f"--device {spec} was requested but CUDA is not available on this machine; "
                             "use --device cpu or --device auto")
    return dev


def reference_precision(enabled: bool = True) -> None:
    """Disable TF32 so GPU numbers match the reference implementations (TF32 moves LRP omega ~3e-3)."""
    torch.backends.cuda.matmul.allow_tf32 = not enabled
    torch.backends.cudnn.allow_tf32 = not enabled
