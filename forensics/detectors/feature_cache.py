"""On-disk cache of frozen-CLIP features of deterministic image views (RINE tokens, UFD embeddings).

RINE and UFD train only a head on a **frozen** backbone (docs/tie.md), so the backbone's
output for a fixed view of an image never changes: extract it once, then every epoch, every run
of a hyper-parameter grid (docs/training.md) and every attribution probe costs only head time.

What is cached (``site``):

- ``"ln_2"``: per-block CLS token of each resblock's ``ln_2`` output, ``[N, blocks, width]``
  (RINE's g, docs/tie.md);
- ``"block"``: per-block CLS token of each resblock's output (the residual stream UFD's vendored
  CLIP exposes, and UniversalAttribution's per-block feature), ``[N, blocks, width]``;
- ``"ln_1"``: per-block CLS token of ``ln_1``, ``[N, blocks, width]``;
- ``"embedding"``: CLIP ``encode_image`` (UFD's feature, not L2-normalised), ``[N, embed_dim]``.

Views are **deterministic**: the detector's eval transform (CenterCrop at the backbone's size, no
resize, CLIP normalisation) unless a :class:`Preprocessing` is given (e.g. UFD's resize-to-256
first). No augmentation can be cached; a trainer run on cached features therefore changes the
recipe (see the trainers' ``--feature_cache``).

Key: SHA-256 of a canonical JSON of

- the format version, ``site`` and storage ``dtype``;
- the backbone: open_clip model name, and its weights: for a backbone loaded from a file, the
  file's resolved path, size and mtime; otherwise (random initialisation, or the file is gone) a
  hash of every tensor of its state dict, so two random backbones never share a cache;
- the preprocessing (:class:`Preprocessing` fields) and the decoder's ``max_pixels``;
- the ordered file list: absolute path, size, mtime (ns) and label of every record.

Anything else (device, torch version) is not in the key: CPU and CUDA features differ at the
~1e-6 level and are interchangeable. Files, in ``cache_dir``::

    <site>-<key[:20]>.safetensors   features [K, ...] (float16/float32), indices [K] (int64, position in
                                    ``records`` of each row), labels [K] (int64, -1 unknown)
    <site>-<key[:20]>.json          sidecar: full key, key inputs, files, skipped files with reasons,
                                    shapes, extraction time and device. Written last: its presence
                                    marks a complete entry.

Both are written atomically (temp file + rename). Unreadable images are skipped and listed (their
rows are absent; ``indices`` maps rows back to records). Size: ``N * blocks * width * bytes``, e.g.
36k ProGAN images on ViT-L/14 (24 x 1024) are 1.8 GB in float16, 3.5 GB in float32.

Inside a :func:`forensics.distributed.session` launched by ``torchrun`` the extraction is sharded over the
processes (docs/distributed.md): every rank ends with all features in input order and rank 0 stores the entry.

API: :func:`extract_or_load` (cached), :func:`extract_features` (no cache), :func:`backbone_features`
(one batch), :func:`cache_key`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch

from .. import distributed
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import ImageRecord
from .clip_backbone import ClipDetector, ClipVisionBackbone
from .config import CLIP_MEAN, CLIP_STD, Preprocessing
from .preprocess import build_eval_transform
from ..device import resolve_device
from ..errors import CheckpointError
from ..io import atomic_path, atomic_write_json, read_weight_file

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: Token sites: cache name -> resblock submodule whose output's CLS token is taken ("" = the block).
TOKEN_SITES: dict[str, str] = {"ln_2": "ln_2", "ln_1": "ln_1", "block": ""}
EMBEDDING = "embedding"
SITES: tuple[str, ...] = (*TOKEN_SITES, EMBEDDING)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


# ---------------------------------------------------------------------------- features of one batch
def backbone_of(model: ClipDetector | ClipVisionBackbone) -> ClipVisionBackbone:
    """The frozen backbone of a CLIP detector (``model.clip``), or ``model`` itself."""
    if isinstance(model, ClipVisionBackbone):
        return model
    if isinstance(model, ClipDetector):
        return model.clip
    raise TypeError(f"expected a CLIP detector (rine/ufd) or a ClipVisionBackbone, got {type(model).__name__}")


def check_site(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"unknown feature site {site!r}; one of {', '.join(SITES)}")
    return site


def backbone_features(backbone: ClipVisionBackbone, x: torch.Tensor, site: str) -> torch.Tensor:
    """The backbone's features of a normalised batch: ``[B, blocks, width]`` for a token site,
    ``[B, embed_dim]`` for ``"embedding"``. Gradient mode is the caller's (wrap in ``no_grad``)."""
    if check_site(site) == EMBEDDING:
        return backbone(x)
    _, tokens = backbone.forward_with_cls_tokens(x, site=TOKEN_SITES[site])
    return torch.stack(tokens, dim=1)


def feature_shape(backbone: ClipVisionBackbone, site: str) -> tuple[int, ...]:
    """Per-image feature shape of ``site``."""
    return (backbone.embed_dim,) if check_site(site) == EMBEDDING else (backbone.blocks, backbone.width)


def default_preprocessing(model: ClipDetector | ClipVisionBackbone) -> Preprocessing:
    """The detector's eval preprocessing, or CLIP normalisation + CenterCrop(image size) for a bare backbone."""
    if isinstance(model, ClipDetector):
        return model.config.preprocessing
    return Preprocessing(mean=CLIP_MEAN, std=CLIP_STD, crop="center", crop_size=model.image_size)


def _check_preprocessing(pre: Preprocessing, backbone: ClipVisionBackbone) -> None:
    if pre.crop != "center" or pre.crop_size != backbone.image_size:
        raise ValueError(f"cached views must be center crops at the backbone's input size {backbone.image_size} "
                         f"(the positional embedding fixes it); got crop={pre.crop!r}, crop_size={pre.crop_size}")


# ---------------------------------------------------------------------------- key
def weights_fingerprint(backbone: ClipVisionBackbone) -> dict[str, Any]:
    """Identity of the backbone's weights: its source file (path, size, mtime) when it was loaded
    from one that still exists, else a BLAKE2b hash of every state-dict tensor (name, dtype, shape,
    bytes), so a random backbone is keyed by its actual values."""
    source = backbone.weights_source
    if source is not None and Path(source).is_file():
        path = Path(source).resolve()
        st = path.stat()
        return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"tensors": tensor_hash(backbone.visual.state_dict())}


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """BLAKE2b-128 over the sorted (name, dtype, shape, raw bytes) of a state dict."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_entries(records: Sequence[ImageRecord]) -> list[list[Any]]:
    """``[absolute path, size, mtime_ns, label]`` per record, in order (size/mtime -1 when missing)."""
    out: list[list[Any]] = []
    for rec in records:
        path = Path(rec.path).absolute()
        st = path.stat() if path.exists() else None
        out.append([str(path), st.st_size if st else -1, st.st_mtime_ns if st else -1,
                    -1 if rec.label is None else int(rec.label)])
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_key(backbone: ClipVisionBackbone, files: list[list[Any]], site: str, preprocessing: Preprocessing,
              dtype: str, max_pixels: int | None) -> tuple[str, dict[str, Any]]:
    """(key, key inputs) of a cache entry; ``files`` from :func:`file_entries`."""
    inputs = {
        "version": CACHE_VERSION, "site": check_site(site), "dtype": dtype,
        "backbone": {"model_name": backbone.model_name, "weights": weights_fingerprint(backbone)},
        "preprocessing": dataclasses.asdict(preprocessing), "max_pixels": max_pixels,
        "files": {"count": len(files), "sha256": _digest(files)},
    }
    return _digest(inputs), inputs


# ---------------------------------------------------------------------------- results
@dataclass
class CacheSummary:
    """What :func:`extract_or_load` did: ``hit`` (loaded, no backbone forward), where the entry
    lives, how many files were met / kept, the ``skipped`` ones with reasons, and the seconds spent
    (extraction, or loading on a hit)."""

    key: str
    site: str
    path: Path | None
    hit: bool
    total: int
    used: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path) if self.path else None,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


class CachedFeatures(NamedTuple):
    """Features of the readable records: ``features`` ``[K, ...]`` (stored dtype, CPU), ``indices``
    ``[K]`` (int64 positions in ``records``), ``labels`` ``[K]`` (int64, -1 unknown), ``summary``."""

    features: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor
    summary: CacheSummary


# ---------------------------------------------------------------------------- extraction
def extract_features(model: ClipDetector | ClipVisionBackbone, records: Sequence[ImageRecord], site: str,
                     batch_size: int = 64, device: str | torch.device | None = None, dtype: str = "float32",
                     preprocessing: Preprocessing | None = None, num_workers: int = 0,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True) -> CachedFeatures:
    """Run the frozen backbone over deterministic views of ``records`` (no cache).

    ``device``: ``None`` = the backbone's device; otherwise the backbone is moved there (in place).
    Features are returned on the CPU in ``dtype``; unreadable files are skipped and listed.
    """
    backbone = backbone_of(model)
    pre = preprocessing or default_preprocessing(model)
    _check_preprocessing(pre, backbone)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device is not None:
        backbone.to(resolve_device(device))
    dev = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    records = list(records)
    run = distributed.current()
    shard = run.shard(records, block=batch_size, state={"features": [], "indices": [], "labels": []},
                      label=f"features ({site})")
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in shard.batches(build_eval_transform(pre), batch_size, num_workers=num_workers,
                                   max_pixels=max_pixels, progress=f"features ({site})" if progress else None,
                                   leave=False, pin_memory=dev.type == "cuda"):
            if len(batch) == 0:
                continue
            feats = backbone_features(backbone, batch.images.to(dev, non_blocking=True), site)
            shard.state["features"].append(feats.to("cpu", DTYPES[dtype]))
            shard.state["indices"] += batch.indices
            shard.state["labels"] += batch.labels.tolist()
    backbone.train(was_training)
    summary = shard.finish()
    summary.log(log)
    chunks, indices, labels = shard.state["features"], shard.state["indices"], shard.state["labels"]
    features = (torch.cat(chunks) if chunks
                else torch.empty((0, *feature_shape(backbone, site)), dtype=DTYPES[dtype]))
    if run.sharded:  # contiguous shards: rank order is input order
        parts = run.all_gather((features, indices, labels))
        features = torch.cat([p[0] for p in parts])
        indices = [i for p in parts for i in p[1]]
        labels = [y for p in parts for y in p[2]]
    result = CacheSummary(key="", site=site, path=None, hit=False, total=summary.total, used=summary.used,
                          skipped=list(summary.skipped), seconds=time.perf_counter() - start, device=str(dev))
    return CachedFeatures(features, torch.tensor(indices, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64),
                          result)


def extract_or_load(model: ClipDetector | ClipVisionBackbone, records: Sequence[ImageRecord], site: str,
                    cache_dir: str | Path, batch_size: int = 64, device: str | torch.device | None = None,
                    dtype: str = "float32", preprocessing: Preprocessing | None = None, num_workers: int = 0,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True) -> CachedFeatures:
    """Features of deterministic views of ``records`` at ``site``, from ``cache_dir`` when an entry
    with the same key exists (no backbone forward at all), else extracted and stored.

    ``model``: a ``rine``/``ufd`` detector or a :class:`ClipVisionBackbone`; ``preprocessing``
    defaults to the detector's eval preprocessing (CenterCrop at the backbone size, no resize).
    Returns :class:`CachedFeatures` (``features[i]`` is ``records[indices[i]]``); see the module
    docstring for the key and the files.
    """
    backbone = backbone_of(model)
    pre = preprocessing or default_preprocessing(model)
    files = file_entries(records)
    key, inputs = cache_key(backbone, files, site, pre, dtype, max_pixels)
    stem = Path(cache_dir) / f"{site}-{key[:20]}"
    data_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    hit = _load_entry(data_path, meta_path, key)
    if hit is not None:
        return hit
    result = extract_features(model, records, site, batch_size=batch_size, device=device, dtype=dtype,
                              preprocessing=pre, num_workers=num_workers, max_pixels=max_pixels, progress=progress)
    summary = dataclasses.replace(result.summary, key=key, path=data_path)
    run = distributed.current()
    if run.is_main:
        _store_entry(data_path, meta_path, result._replace(summary=summary), inputs, files)
    run.barrier()
    log.info("feature cache: stored %d x %s %s features in %s (%.1f s)", len(result.indices),
             tuple(result.features.shape[1:]), site, data_path, summary.seconds)
    return result._replace(summary=summary)


def _store_entry(data_path: Path, meta_path: Path, result: CachedFeatures, inputs: dict[str, Any],
                 files: list[list[Any]]) -> None:
    from safetensors.torch import save_file
    with atomic_path(data_path) as tmp:
        save_file({"features": result.features.contiguous(), "indices": result.indices, "labels": result.labels},
                  str(tmp))
    s = result.summary
    atomic_write_json(meta_path, {
        "key": s.key, "inputs": inputs, "data": data_path.name,
        "shape": list(result.features.shape), "dtype": inputs["dtype"],
        "total": s.total, "used": s.used, "skipped": [{"path": p, "reason": r} for p, r in s.skipped],
        "extraction_seconds": s.seconds, "device": s.device, "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "files": [f[0] for f in files],
    })


def _load_entry(data_path: Path, meta_path: Path, key: str) -> CachedFeatures | None:
    """The stored entry when its sidecar names ``key`` and its data file reads back; a damaged entry
    is reported and recomputed (``None``)."""
    if not meta_path.is_file():
        return None
    start = time.perf_counter()
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("key") != key:
        log.warning("feature cache: %s belongs to another key (prefix collision); recomputing", meta_path)
        return None
    try:
        tensors = read_weight_file(data_path, expected="a feature-cache entry")
    except CheckpointError as exc:
        log.warning("feature cache: %s is damaged (%s); recomputing", data_path, exc)
        return None
    features, indices, labels = tensors["features"], tensors["indices"], tensors["labels"]
    if list(features.shape) != meta["shape"] or len(indices) != len(features) or len(labels) != len(features):
        log.warning("feature cache: %s does not match its sidecar %s; recomputing", data_path, meta_path)
        return None
    skipped = [(s["path"], s["reason"]) for s in meta["skipped"]]
    summary = CacheSummary(key=key, site=meta["inputs"]["site"], path=data_path, hit=True, total=meta["total"],
                           used=meta["used"], skipped=skipped, seconds=time.perf_counter() - start,
                           device=meta["device"])
    for path, reason in skipped:
        log.warning("feature cache: %s was skipped at extraction: %s", path, reason)
    log.info("feature cache: loaded %d x %s features from %s", len(indices), tuple(features.shape[1:]), data_path)
    return CachedFeatures(features, indices, labels, summary)
