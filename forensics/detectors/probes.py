"""Context-managed probes: record activations at chosen feature maps, or zero chosen channels.

Both work through forward hooks on the module that a :class:`FeatureLayer` names for the chosen
measurement point, and remove every hook on exit (also on error), so the model is restored
exactly. Channels are on axis 1 for every layer kind (conv maps ``[B, C, H, W]``, token
features ``[B, C]``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

POINTS = ("pre_bn", "post_bn")
"""Measurement points. ``pre_bn``: the raw layer output (the conv before its BatchNorm), where the
T-FF reference masks and measures activations; ``post_bn``: after the normalisation that follows
it. For token features (RINE's captured ``ln_2`` CLS tokens) both are the captured tensor."""


@dataclass(frozen=True)
class FeatureLayer:
    """A layer whose output channels are feature maps.

    ``modules`` maps each measurement point to the qualified name (relative to the detector) of
    the module whose forward output is that point.
    """

    name: str
    channels: int
    modules: Mapping[str, str]

    def module_name(self, point: str) -> str:
        if point not in POINTS:
            raise ValueError(f"unknown measurement point {point!r}; choose from {POINTS}")
        try:
            return self.modules[point]
        except KeyError:
            raise ValueError(f"layer {self.name!r} has no {point!r} measurement point") from None


def spatial_max(t: torch.Tensor) -> torch.Tensor:
    """Spatial maximum per channel (``AdaptiveMaxPool2d(1)``); token features pass through."""
    return t.amax(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


def spatial_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


REDUCERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"spatial_max": spatial_max,
                                                               "spatial_mean": spatial_mean}


class ActivationRecord:
    """What an :func:`record_activations` probe saw in the latest forward pass.

    ``record[layer]`` is the (channel-selected, reduced) tensor of that layer; ``record.key(k)``
    the tensor of one feature map (``[B, ...]``).
    """

    def __init__(self, channels: Mapping[str, Sequence[int] | None]):
        self.channels = dict(channels)
        self.tensors: dict[str, torch.Tensor] = {}

    def __getitem__(self, layer: str) -> torch.Tensor:
        try:
            return self.tensors[layer]
        except KeyError:
            raise KeyError(f"no activation recorded for layer {layer!r} (did a forward pass run?)") from None

    def key(self, key) -> torch.Tensor:
        from .keys import FeatureMapKey
        k = FeatureMapKey.parse(key)
        chans = self.channels[k.layer]
        idx = k.channel if chans is None else list(chans).index(k.channel)
        return self[k.layer][:, idx]

    def clear(self) -> None:
        self.tensors.clear()


@contextlib.contextmanager
def record_activations(root: nn.Module, targets: Mapping[str, tuple[str, Sequence[int] | None]],
                       reduce: str | Callable | None = None, detach: bool = True) -> Iterator[ActivationRecord]:
    """Record outputs of modules of ``root``.

    ``targets``: ``{layer_name: (module_qualified_name, channels or None for all)}``.
    ``reduce``: ``None``, ``"spatial_max"``, ``"spatial_mean"`` or a callable applied after channel selection.
    """
    fn = REDUCERS[reduce] if isinstance(reduce, str) else reduce
    record = ActivationRecord({layer: chans for layer, (_, chans) in targets.items()})
    handles = []

    def make_hook(layer: str, chans: Sequence[int] | None):
        index = None if chans is None else torch.as_tensor(list(chans), dtype=torch.long)

        def hook(_module, _inputs, output):
            out = output
            if index is not None:
                out = out.index_select(1, index.to(out.device))
            if fn is not None:
                out = fn(out)
            if out is output or out._is_view():
                # in-place activations that follow (torchvision's ReLU(inplace=True)) would
                # overwrite an aliased record
                out = out.clone()
            record.tensors[layer] = out.detach() if detach else out
        return hook

    try:
        for layer, (module_name, chans) in targets.items():
            handles.append(root.get_submodule(module_name).register_forward_hook(make_hook(layer, chans)))
        yield record
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def mask_channels(root: nn.Module, targets: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """Zero the given output channels of modules of ``root`` (``{module_name: channels}``).

    The hook returns a new tensor (the module's own output is not modified in place), so it is
    safe under autograd and with modules whose outputs are reused.
    """
    handles = []

    def make_hook(chans: Sequence[int]):
        index = torch.as_tensor(sorted(set(chans)), dtype=torch.long)

        def hook(_module, _inputs, output):
            keep = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
            keep[index.to(output.device)] = 0
            shape = (1, -1) + (1,) * (output.ndim - 2)
            return output * keep.view(shape)
        return hook

    try:
        for module_name, chans in targets.items():
            if len(chans):
                handles.append(root.get_submodule(module_name).register_forward_hook(make_hook(chans)))
        yield
    finally:
        for h in handles:
            h.remove()
