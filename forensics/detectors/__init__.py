"""Detectors behind one interface: ``create(name, weights=...)``, ``list_detectors()``.

Each detector module declares everything about its detector in one :class:`DetectorConfig`; higher
layers attach their per-detector facts to the same registry entry with :func:`register_fact`
(docs/adding_a_detector.md).

Registered: ``resnet50`` and ``efb0`` (universal detectors), ``rine`` (CLIP ViT intermediate
CLS tokens + TIE head), ``ufd`` (linear probe on the CLIP image embedding).
"""
from .base import Detector, load_strict
from .config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, DetectorConfig, Preprocessing
from .keys import FeatureMapKey, group_by_layer, parse_keys
from .probes import POINTS, ActivationRecord, FeatureLayer
from .registry import (DetectorEntry, FactView, PretrainedConfig, create, detector_class, detector_entry, get_config,
                       list_detectors, list_pretrained, pretrained_config, register_detector, register_fact)

# Each import registers one detector.
from . import resnet50, efb0, rine, ufd  # noqa: E402,F401

__all__ = ["Detector", "DetectorConfig", "Preprocessing", "FeatureMapKey", "FeatureLayer", "ActivationRecord",
           "POINTS", "PretrainedConfig", "pretrained_config", "list_pretrained", "create", "get_config",
           "list_detectors", "detector_class", "register_detector", "register_fact", "detector_entry", "DetectorEntry",
           "FactView", "parse_keys", "group_by_layer", "load_strict",
           "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD"]
