"""forensics: explain and stress-test synthetic-image detectors.

Layers (see the README; method notes in ``docs/``): ``detectors`` (one interface, a registry, the
official checkpoints), ``data`` (model-agnostic readers), ``explain`` and ``analysis``
(run uniformly on every detector), ``train``, ``attribution``; ``weights``, ``metrics`` and
``plots`` are leaves.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
