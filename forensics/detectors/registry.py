"""Detector registry: ``create(name, weights=...)`` and ``list_detectors()``.

A new detector is one module defining a :class:`Detector` subclass decorated with
``@register_detector(CONFIG)`` plus an import line in ``forensics/detectors/__init__.py``.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import weights as weight_registry
from ..device import resolve_device
from ..io import read_weight_file
from .base import Detector
from .config import DetectorConfig

log = logging.getLogger(__name__)

_DETECTORS: dict[str, tuple[DetectorConfig, type[Detector]]] = {}


def register_detector(config: DetectorConfig):
    """Class decorator registering ``cls`` under ``config.name``."""
    def deco(cls: type[Detector]) -> type[Detector]:
        if config.name in _DETECTORS:
            raise ValueError(f"detector {config.name!r} registered twice")
        _DETECTORS[config.name] = (config, cls)
        cls.default_config = config
        return cls
    return deco


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def get_config(name: str) -> DetectorConfig:
    return _entry(name)[0]


def _entry(name: str) -> tuple[DetectorConfig, type[Detector]]:
    try:
        return _DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; registered: {', '.join(list_detectors())}") from None


def create(name: str, weights: str | Path | None = None, *, device: str | torch.device | None = "cpu",
           preprocessing: Mapping[str, Any] | None = None, **options: Any) -> Detector:
    """Build a registered detector, load its weights, move it to ``device``, set eval mode.

    ``weights``: ``None`` (random initialisation, e.g. for tests or training from scratch),
    ``"default"`` (the config's default release tag), a release tag of :mod:`forensics.weights`,
    or a path to a checkpoint file. ``preprocessing`` overrides fields of the eval preprocessing
    (e.g. ``{"crop": "none"}`` for full-resolution evaluation). Options the checkpoint determines (e.g. RINE's ``nproj`` and
    ``proj_dim``) are inferred from its tensor shapes; ``options`` override the config defaults.
    """
    config, cls = _entry(name)
    state = None
    source = None
    if weights is not None:
        tag = config.default_weights if str(weights) == "default" else weights
        if tag is None:
            raise ValueError(f"{name} has no default weights; pass a release tag or a file path")
        path = weight_registry.resolve(tag)
        source = str(path)
        state = read_weight_file(path, expected=f"a {config.arch} checkpoint")
        inferred = cls.infer_options(state, source)
        clash = {k: (v, options[k]) for k, v in inferred.items() if k in options and options[k] != v}
        if clash:
            raise ValueError(f"{source}: options {clash} (file, requested) disagree with the checkpoint")
        options = {**inferred, **options}
    model = cls(config.with_options(**options))
    if state is not None:
        model.load_state(state, source=source)
        model.weights_source = source
        log.info("%s: loaded weights from %s", name, source)
    else:
        model.weights_source = None
        log.info("%s: random initialisation (no weights given)", name)
    if preprocessing:
        model.config = model.config.with_preprocessing(**preprocessing)
    model.to(resolve_device(device))
    model.eval()
    return model


@dataclass(frozen=True)
class PretrainedConfig:
    """A release tied to the detector it loads into (timm-style pretrained config): architecture,
    preprocessing and input size from the detector's config; file, source, sha256 and paper from
    the weights registry."""

    detector: DetectorConfig
    weights: "weight_registry.WeightSpec"

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.to_dict(), "weights": dataclasses.asdict(self.weights)}


def pretrained_config(tag: str) -> PretrainedConfig:
    """The :class:`PretrainedConfig` of a release tag, e.g. ``pretrained_config("rine.2class")``."""
    spec = weight_registry.get_spec(tag)
    if spec.detector is None:
        raise ValueError(f"{tag} is not a detector release (it is a backbone or initialisation file)")
    config = get_config(spec.detector)
    if spec.options:
        config = config.with_options(**{k: v for k, v in spec.options.items() if k in config.options})
    return PretrainedConfig(config, spec)


def list_pretrained(detector: str | None = None) -> list[str]:
    """Release tags that load into ``detector`` (all detector releases when ``None``)."""
    return [s.tag for s in weight_registry.list_specs(detector) if s.detector is not None]


def detector_class(name: str) -> type[Detector]:
    """The :class:`Detector` subclass registered as ``name`` (what an explainer checks it supports)."""
    return _entry(name)[1]
