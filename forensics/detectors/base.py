"""The Detector interface every analysis runs through.

A detector is an ``nn.Module`` whose ``forward`` maps a normalised image batch to one logit per
image (``[B]``; ``P(fake) = sigmoid``). Beyond that it exposes, uniformly:

- its eval transform (:meth:`Detector.transform`), from its :class:`DetectorConfig`;
- named feature maps (:meth:`feature_layers`, :meth:`feature_keys`) keyed as the T-FF reference;
- probes that record activations or zero channels at a measurement point (:meth:`record`,
  :meth:`mask`), which always restore the model;
- Grad-CAM target layers and, for token grids, the reshape transform;
- an explain mode (eval, parameters frozen, gradients still flowing to the input).

Analyses use only this interface; they never reach into one detector's insides.
"""
from __future__ import annotations

import contextlib
import logging
from functools import cached_property
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import CheckpointError
from .config import DetectorConfig
from .keys import FeatureMapKey, group_by_layer, parse_keys
from .probes import ActivationRecord, FeatureLayer, mask_channels, record_activations

log = logging.getLogger(__name__)


class Detector(nn.Module):
    """Base class of all detectors. Subclasses implement ``forward``, ``_feature_layers`` and
    ``gradcam_layers``; they may override ``_enter_explain``/``_exit_explain`` and ``load_state``."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) for a normalised batch."""
        return torch.sigmoid(self(x))

    def transform(self, crop: str | None = None, crop_size: int | None = None, grayscale: bool = False,
                  pixel_op: Callable | None = None):
        """The detector's eval transform (PIL RGB image -> normalised tensor).

        ``crop`` overrides the configured policy (``center``/``none``); ``grayscale`` inserts
        ITU-R 601-2 luma replicated to 3 channels before normalisation (T-FF colour ablation);
        ``pixel_op`` (PIL -> PIL, e.g. :class:`forensics.data.color.ColorAblation`) goes there too.
        """
        from .preprocess import build_eval_transform
        pre = self.config.preprocessing
        changes: dict[str, Any] = {}
        if crop is not None:
            changes["crop"] = crop
        if crop_size is not None:
            changes["crop_size"] = crop_size
        if changes:
            pre = self.config.with_preprocessing(**changes).preprocessing
        return build_eval_transform(pre, grayscale=grayscale, pixel_op=pixel_op)

    # ------------------------------------------------------------------ feature maps
    def _feature_layers(self) -> list[FeatureLayer]:  # pragma: no cover - abstract
        raise NotImplementedError

    @cached_property
    def _layer_index(self) -> dict[str, FeatureLayer]:
        return {fl.name: fl for fl in self._feature_layers()}

    def feature_layers(self) -> list[FeatureLayer]:
        """Every layer whose channels are analysed, in network order."""
        return list(self._layer_index.values())

    def feature_layer(self, name: str) -> FeatureLayer:
        try:
            return self._layer_index[name]
        except KeyError:
            raise KeyError(f"{self.name}: no feature layer {name!r}; it has {len(self._layer_index)} layers, "
                           f"e.g. {list(self._layer_index)[:3]}") from None

    def feature_keys(self, layers: Iterable[str] | None = None) -> list[FeatureMapKey]:
        """All feature-map keys (or those of ``layers``), in network order then channel order."""
        chosen = self.feature_layers() if layers is None else [self.feature_layer(n) for n in layers]
        return [FeatureMapKey(fl.name, c, fl.channels) for fl in chosen for c in range(fl.channels)]

    def num_feature_maps(self) -> int:
        return sum(fl.channels for fl in self.feature_layers())

    def check_keys(self, keys: Iterable[str | FeatureMapKey]) -> list[FeatureMapKey]:
        """Parse keys and check each names an existing layer with a matching channel count."""
        out = parse_keys(keys)
        for k in out:
            fl = self.feature_layer(k.layer)
            if fl.channels != k.total:
                raise ValueError(f"{self.name}: key {k} says T={k.total} but layer {k.layer} has "
                                 f"{fl.channels} channels (keys from another architecture?)")
        return out

    # ------------------------------------------------------------------ probes
    def record(self, what: Iterable[str | FeatureMapKey] | None = None, point: str = "pre_bn",
               reduce: str | Callable | None = None, detach: bool = True
               ) -> contextlib.AbstractContextManager[ActivationRecord]:
        """Record activations during forward passes inside the ``with`` block.

        ``what``: layer names (whole layers) and/or feature-map keys (those channels only);
        ``None`` = every feature layer. ``point``: ``pre_bn`` (reference) or ``post_bn``.
        ``reduce``: ``None``, ``"spatial_max"``, ``"spatial_mean"`` or a callable.
        """
        targets: dict[str, tuple[str, Sequence[int] | None]] = {}
        for layer, chans in self._resolve(what).items():
            targets[layer] = (self.feature_layer(layer).module_name(point), chans)
        return record_activations(self, targets, reduce=reduce, detach=detach)

    def mask(self, keys: Iterable[str | FeatureMapKey], point: str = "pre_bn"
             ) -> contextlib.AbstractContextManager[None]:
        """Zero the given feature maps (keys) during forward passes inside the ``with`` block."""
        targets: dict[str, list[int]] = {}
        for layer, chans in group_by_layer(self.check_keys(keys)).items():
            targets.setdefault(self.feature_layer(layer).module_name(point), []).extend(chans)
        return mask_channels(self, targets)

    def _resolve(self, what: Iterable[str | FeatureMapKey] | None) -> dict[str, list[int] | None]:
        if what is None:
            return {fl.name: None for fl in self.feature_layers()}
        if isinstance(what, (str, FeatureMapKey)):
            what = [what]
        out: dict[str, list[int] | None] = {}
        for item in what:
            if isinstance(item, str) and "#" not in item:
                self.feature_layer(item)
                out[item] = None
            else:
                k = self.check_keys([item])[0]
                if k.layer in out and out[k.layer] is None:
                    continue
                chans = out.setdefault(k.layer, [])
                if k.channel not in chans:
                    chans.append(k.channel)
        return out

    # ------------------------------------------------------------------ Grad-CAM
    def gradcam_layers(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """Target layers for Grad-CAM (R50 ``layer4``, EfB0 ``_conv_head``, CLIP a token-grid layer)."""
        raise NotImplementedError

    def gradcam_reshape(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Reshape transform for token-grid targets (``None`` for conv maps)."""
        return None

    # ------------------------------------------------------------------ explain mode
    @contextlib.contextmanager
    def explain_mode(self) -> Iterator["Detector"]:
        """Eval mode, every parameter frozen with ``requires_grad_(False)``, autograd left on so
        gradients reach the input; detector-specific switches (EfB0 swish -> ``nn.SiLU``).
        Everything is restored on exit."""
        was_training = self.training
        flags = [(p, p.requires_grad) for p in self.parameters()]
        self.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        state = self._enter_explain()
        try:
            yield self
        finally:
            self._exit_explain(state)
            for p, flag in flags:
                p.requires_grad_(flag)
            self.train(was_training)

    def _enter_explain(self) -> Any:
        return None

    def _exit_explain(self, state: Any) -> None:
        return None

    # ------------------------------------------------------------------ weights
    weights_source: str | None = None
    default_config: DetectorConfig

    @classmethod
    def infer_options(cls, state: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
        """Builder options a checkpoint determines (from tensor shapes, never from file names)."""
        return {}

    def load_state(self, state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> None:
        """Load a checkpoint's tensors strictly; subclasses adapt formats (e.g. ``{'model': ...}``)."""
        load_strict(self, state, source=source, arch=self.config.arch)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    """``load_state_dict(strict=True)`` with one clear error listing missing, unexpected and
    shape-mismatched keys (torch's own message stops at the first kind it meets)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{source} does not match {arch}:"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"  {label} ({len(items)}): {', '.join(items[:8])}{more}")
        raise CheckpointError("\n".join(parts))
    module.load_state_dict(state, strict=True)


def conv_bn_layers(net: nn.Module, prefix: str, include: Callable[[str, nn.Module], bool]) -> list[FeatureLayer]:
    """Feature layers of a CNN: every conv that ``include`` accepts, paired with the BatchNorm
    that follows it in module order (the pairing T-FF's canonisation uses). ``prefix`` is the
    qualified name of ``net`` inside the detector."""
    layers: list[FeatureLayer] = []
    pending: tuple[str, nn.Conv2d] | None = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d) and include(name, mod):
            pending = (name, mod)
            layers.append(FeatureLayer(name, mod.out_channels, {"pre_bn": f"{prefix}{name}"}))
        elif isinstance(mod, nn.BatchNorm2d) and pending is not None:
            conv_name, conv = pending
            if mod.num_features == conv.out_channels and layers[-1].name == conv_name:
                layers[-1] = FeatureLayer(conv_name, conv.out_channels,
                                          {"pre_bn": f"{prefix}{conv_name}", "post_bn": f"{prefix}{name}"})
            pending = None
        elif isinstance(mod, nn.Conv2d):
            pending = None
    return layers
