"""Registry of released weight files: what they are, where they come from, where they go.

Model weights cannot be bundled with the toolkit. Each known release is a :class:`WeightSpec`
naming its file, public source, sha256 (where known) and expected path under the weights folder
(``weights/`` in the project, or ``$FORENSICS_WEIGHTS``). :func:`resolve` turns a release tag or a
file path into a path, and stops with one clear message when the file is absent.

Beyond lookup: :func:`status` (is the file there, does its checksum match), :func:`verify`,
:func:`download` (where a network exists; see :mod:`forensics.download`) and
:func:`convert_to_safetensors` (e.g. OpenAI's TorchScript CLIP release to a plain state dict).
The command line front-end is ``python -m forensics weights ...``; the list of releases is in
:mod:`forensics._releases` and ``weights/README.md``.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file

from .download import ChecksumError, DownloadError, checksum_message, fetch
from .errors import CheckpointError, WeightsNotFoundError
from .io import is_torchscript_archive, atomic_path, read_weight_file, sha256_file
from ._releases import RELEASES
from .weight_spec import WeightSpec

log = logging.getLogger(__name__)

WEIGHTS_ENV = "FORENSICS_WEIGHTS"


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
    how = (f"python -m forensics weights download {spec.tag}" if spec.direct
           else "no direct link: download it by hand from the source above")
    return (f"weight file for '{spec.tag}' not found: {spec.filename}\n"
            f"  what:   {spec.description}\n"
            f"  source: {spec.url}\n"
            f"  put it at: {weights_dir() / spec.relpath}  (or set ${WEIGHTS_ENV} to another weights folder)"
            + (f"\n  sha256: {spec.sha256}" if spec.sha256 else "")
            + f"\n  fetch:  {how}"
            + (f"\n  then:   python -m forensics weights convert {weights_dir() / spec.relpath} "
               f"{weights_dir() / spec.converted}  (the toolkit reads the converted copy)"
               if spec.converted else ""))


def resolve(tag_or_path: str | os.PathLike) -> Path:
    """Return the file for a release tag or an explicit path; raise :class:`WeightsNotFoundError`
    with the file name, its source and where to put it when it is absent. For a release with a
    ``converted`` copy, that copy is returned when present."""
    text = str(tag_or_path)
    if text in _RELEASES:
        spec = _RELEASES[text]
        for relpath in filter(None, (spec.converted, spec.relpath)):
            path = weights_dir() / relpath
            if path.is_file():
                return path
        raise WeightsNotFoundError(missing_message(spec))
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise WeightsNotFoundError(f"{path} is not a file (expected a weight file)")
    raise WeightsNotFoundError(f"weight file not found: {path}\n  (neither an existing file nor a known tag; "
                               f"known tags: {', '.join(sorted(_RELEASES))}; `python -m forensics weights list`)")


# --- state of the files on disk -----------------------------------------------------------------

MISSING = "missing"              # no file at the expected path
PRESENT = "present"              # the file exists (not hashed, or no published checksum)
OK = "ok"                        # the file exists and its sha256 matches the published one
MISMATCH = "checksum-mismatch"   # the file exists and its sha256 differs


def _spec(tag_or_spec: str | WeightSpec) -> WeightSpec:
    return tag_or_spec if isinstance(tag_or_spec, WeightSpec) else get_spec(tag_or_spec)


def status(spec: str | WeightSpec, check: bool = False) -> str:
    """:data:`MISSING` or :data:`PRESENT`; with ``check=True`` a present file with a published
    sha256 is hashed (slow for multi-GB files) and reported as :data:`OK` or :data:`MISMATCH`.
    Only a ``converted`` copy (the release file itself deleted) counts as :data:`PRESENT`."""
    spec = _spec(spec)
    path = weights_dir() / spec.relpath
    if not path.is_file():
        return PRESENT if spec.converted and (weights_dir() / spec.converted).is_file() else MISSING
    if not (check and spec.sha256):
        return PRESENT
    return OK if sha256_file(path) == spec.sha256 else MISMATCH


def verify(tag: str | WeightSpec) -> str:
    """Hash the file of ``tag`` and return its sha256.

    Raises :class:`WeightsNotFoundError` when it is absent and :class:`ChecksumError` when it
    differs from the published checksum; with no published checksum the digest is only logged.
    """
    spec = _spec(tag)
    path = weights_dir() / spec.relpath
    if not path.is_file():
        raise WeightsNotFoundError(missing_message(spec))
    digest = sha256_file(path)
    if spec.sha256 is None:
        log.warning("%s: no published sha256 to compare with; this file's sha256 is %s", spec.tag, digest)
    elif digest != spec.sha256:
        raise ChecksumError(checksum_message(f"'{spec.tag}'", path, spec.sha256, digest))
    return digest


def download(tag: str | WeightSpec, force: bool = False, *, progress: bool = True) -> Path:
    """Fetch the file of ``tag`` into its expected path (needs a network) and return that path.

    An existing file is kept unless ``force``. The download goes to a temporary file in the
    destination folder, is checked against the published sha256 where known, and is renamed into
    place only then. Failures raise :class:`DownloadError` / :class:`ChecksumError` with the
    instructions for placing the file by hand.
    """
    spec = _spec(tag)
    dest = weights_dir() / spec.relpath
    if dest.is_file() and not force:
        log.info("%s is already present at %s (force=True fetches it again)", spec.tag, dest)
        return dest
    if not spec.direct:
        raise DownloadError(f"'{spec.tag}' has no direct download link; fetch it by hand.\n"
                            + missing_message(spec))
    try:
        fetch(spec.url, dest, sha256=spec.sha256, progress=progress)
    except (DownloadError, ChecksumError) as exc:
        raise type(exc)(f"{exc}\nTo install the file by hand:\n{missing_message(spec)}") from exc
    return dest


# --- conversion ---------------------------------------------------------------------------------

_WRAPPER_KEYS = ("model", "state_dict")


def convert_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike,
                           key: str | None = None) -> dict[str, torch.Tensor]:
    """Write the tensors of a weight file to ``dst`` (``.safetensors``) and return them.

    ``src`` is either a TorchScript archive (e.g. OpenAI's original CLIP release ``ViT-L-14.pt``),
    read with ``torch.jit.load(map_location="cpu").state_dict()`` -- TorchScript archives are never
    unpickled as arbitrary objects -- or any file :func:`forensics.io.read_weight_file` reads. A
    training checkpoint ``{'model': state_dict, ...}`` is reduced to its state dict; ``key`` picks
    another entry. Dtypes are kept. The output is written atomically.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the output name must end in .safetensors")
    if not src.is_file():
        raise WeightsNotFoundError(f"{src}: no such file (expected a weight file to convert)")
    if is_torchscript_archive(src):
        log.info("%s: TorchScript archive; reading its state_dict with torch.jit.load", src)
        with warnings.catch_warnings():  # the deprecation of TorchScript is moot for reading a release
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated",
                                    category=FutureWarning)
            state: Mapping[str, object] = torch.jit.load(str(src), map_location="cpu").state_dict()
    else:
        state = read_weight_file(src, expected="a weight file")
    tensors = _tensor_dict(state, key, src)
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata={"source": src.name})
    log.info("%s: wrote %d tensors to %s", src, len(tensors), dst)
    return tensors


def _tensor_dict(state: Mapping[str, object], key: str | None, src: Path) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` mapping to save: ``state[key]``, the ``model``/``state_dict``
    entry of a training checkpoint, or ``state`` itself. Tensors sharing storage (tied weights)
    are copied, since safetensors stores each tensor separately."""
    if key is not None:
        if not isinstance(state.get(key), Mapping):
            raise CheckpointError(f"{src}: no mapping under key {key!r}; "
                                  f"top-level keys: {', '.join(map(str, state))}")
        state = state[key]
    elif not all(isinstance(v, torch.Tensor) for v in state.values()):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if wrapper is not None:
            log.info("%s: converting the %r entry (other entries dropped: %s)", src, wrapper,
                     ", ".join(str(k) for k in state if k != wrapper))
            state = state[wrapper]
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{src}: entries {', '.join(bad[:5])} are not tensors; choose a sub-dictionary "
                              "with key=... (CLI: --key)")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.nbytes:
            tensor = tensor.clone()  # a view into shared / larger storage: store its own copy
        seen.add(tensor.untyped_storage().data_ptr())
        out[str(name)] = tensor.contiguous()
    return out

# The releases themselves are declared in ._releases (data, not logic).
for _release in RELEASES:
    register_weights(_release)
