"""Feature-map keys, in the reference's string format and a structured form.

A feature map is one output channel of one layer. Its key, as used in every T-FF CSV, is
``<layer>.#<channel>(T=<channels of that layer>)``, e.g. ``layer1.0.conv1.#63(T=64)``; for RINE the
per-block CLS features are keyed ``blocks.<b>.#<c>(T=<width>)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

_KEY_RE = re.compile(r"^(?P<layer>.*?)\.?#(?P<channel>\d+)\(T=(?P<total>\d+)\)$")


@dataclass(frozen=True, order=True)
class FeatureMapKey:
    """Structured feature-map key: ``layer`` name, ``channel`` index, ``total`` channels of the layer."""

    layer: str
    channel: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.channel < self.total:
            raise ValueError(f"channel {self.channel} out of range for a layer of {self.total} channels")

    def __str__(self) -> str:
        return f"{self.layer}.#{self.channel}(T={self.total})"

    @classmethod
    def parse(cls, text: "str | FeatureMapKey") -> "FeatureMapKey":
        """Parse ``layer.#c(T=n)`` (the reference format). Layer = text before ``#`` minus its trailing dot."""
        if isinstance(text, FeatureMapKey):
            return text
        m = _KEY_RE.match(text.strip())
        if not m:
            raise ValueError(f"not a feature-map key: {text!r} (expected e.g. 'layer1.0.conv1.#63(T=64)')")
        return cls(m["layer"], int(m["channel"]), int(m["total"]))


def parse_keys(keys: Iterable["str | FeatureMapKey"]) -> list[FeatureMapKey]:
    return [FeatureMapKey.parse(k) for k in keys]


def group_by_layer(keys: Iterable["str | FeatureMapKey"]) -> dict[str, list[int]]:
    """``{layer: [channels...]}`` in first-seen order, channels in the given order (duplicates dropped)."""
    out: dict[str, list[int]] = {}
    for k in parse_keys(keys):
        chans = out.setdefault(k.layer, [])
        if k.channel not in chans:
            chans.append(k.channel)
    return out
