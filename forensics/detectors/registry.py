"""Detector registry: ``create(name, weights=...)`` and ``list_detectors()``.

The registry holds ONE entry per detector (:class:`DetectorEntry`): the declaration its module
makes (:class:`DetectorConfig`: builder options, preprocessing, default release, head, ImageNet
initialisation, label, paper) and the :class:`Detector` class. Facts that belong to a higher layer
(the LRP spec and single-unit relevance of :mod:`forensics.explain`, the trainer of
:mod:`forensics.train`) are attached to the same entry from that layer with :func:`register_fact`;
every per-detector lookup (``lrp_spec``, ``get_trainer``, ...) reads the entry, so no table keyed by
detector name exists anywhere else (docs/adding_a_detector.md).

A new detector is one module defining a :class:`Detector` subclass decorated with
``@register_detector(CONFIG)`` plus an import line in ``forensics/detectors/__init__.py``.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import torch

from .. import weights as weight_registry
from ..device import resolve_device
from ..io import read_weight_file
from .base import Detector
from .config import DetectorConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DetectorEntry:
    """Everything known about one registered detector: its declaration (``config``), its class, and
    the ``facts`` higher layers declared for it with :func:`register_fact` (e.g. ``"lrp"``,
    ``"unit_relevance"``, ``"trainer"``)."""

    config: DetectorConfig
    cls: type[Detector]
    facts: dict[str, Any] = field(default_factory=dict)


_DETECTORS: dict[str, DetectorEntry] = {}


def register_detector(config: DetectorConfig):
    """Class decorator registering ``cls`` under ``config.name``."""
    def deco(cls: type[Detector]) -> type[Detector]:
        if config.name in _DETECTORS:
            raise ValueError(f"detector {config.name!r} registered twice")
        _DETECTORS[config.name] = DetectorEntry(config, cls)
        cls.default_config = config
        return cls
    return deco


def register_fact(fact: str, *names: str) -> Callable[[T], T]:
    """Declare ``value`` as fact ``fact`` of the registered detectors ``names``; returns ``value``.

    For facts owned by a layer above the detectors, which a detector module may not import: the
    layer declares them where it defines them, as a decorator or a call::

        @register_fact("unit_relevance", "rine")
        def vit_unit_relevance(detector, images, key, **options): ...

        register_fact("lrp", "resnet50")(LRPSpec(...))

    A fact is declared once per detector; the detector must be registered first (a misspelt name
    fails here, not at lookup). A fact exists once the module declaring it has been imported, so read
    it through the owning layer's lookup (``lrp_spec``, ``get_trainer``, ``default_recipe``), which
    imports it."""
    if not names:
        raise TypeError("register_fact needs at least one detector name")

    def deco(value: T) -> T:
        for name in names:
            facts = detector_entry(name).facts
            if fact in facts:
                raise ValueError(f"{fact!r} of detector {name!r} declared twice")
            facts[fact] = value
        return value
    return deco


def detector_entry(name: str) -> DetectorEntry:
    """The registry entry of detector ``name`` (``KeyError`` naming the registered ones)."""
    try:
        return _DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; registered: {', '.join(list_detectors())}") from None


class FactView(Mapping[str, Any]):
    """Read-only, live view ``{detector name: value}`` of one fact over the registered detectors
    that declare it (what :data:`forensics.explain.lrp.LRP_CONFIGS` and the like are)."""

    def __init__(self, fact: str):
        self.fact = fact

    def __getitem__(self, name: str) -> Any:
        entry = _DETECTORS.get(name)
        if entry is None or self.fact not in entry.facts:
            raise KeyError(name)
        return entry.facts[self.fact]

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in sorted(_DETECTORS) if self.fact in _DETECTORS[n].facts])

    def __len__(self) -> int:
        return sum(self.fact in e.facts for e in _DETECTORS.values())

    def __repr__(self) -> str:
        return f"FactView({self.fact!r}: {sorted(self)})"


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def get_config(name: str) -> DetectorConfig:
    return detector_entry(name).config


def _entry(name: str) -> tuple[DetectorConfig, type[Detector]]:
    entry = detector_entry(name)
    return entry.config, entry.cls


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
