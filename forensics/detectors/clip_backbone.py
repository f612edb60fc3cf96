"""Frozen CLIP vision towers (open_clip) shared by the ``rine`` and ``ufd`` detectors.

The backbone is an open_clip ``VisionTransformer`` built from a model name, with random weights,
then (optionally) loaded from a **local file only**; nothing is ever downloaded:

- ``ViT-L-14-quickgelu`` (default): OpenAI CLIP ViT-L/14 at 224 px, 24 blocks, width 1024,
  patch 14 (16x16 grid), 768-d embedding. OpenAI weights need QuickGELU; plain ``ViT-L-14``
  silently runs GELU and shifts the CLS tokens by ~5e-2, so never pair it with OpenAI weights.
- ``ViT-B-32-quickgelu``: RINE's other backbone (12 blocks, width 768).
- ``forensics-tiny-vit`` (``configs/forensics-tiny-vit.json``): 56 px, patch 14 (4x4 grid),
  4 blocks, width 64, 2 heads. For tests: builds and runs in milliseconds.
- ``forensics-bench-vit`` (``configs/forensics-bench-vit.json``): 64 px, patch 8 (8x8 grid), 6 blocks,
  width 64, 2 heads. The embedded default's seeded CLIP stand-in (``forensics.defaults``): it sees the
  synthetic benchmark's full 64x64 images.
- ``forensics-small-vit`` (``configs/forensics-small-vit.json``): 224 px, patch 14 (16x16 grid,
  as ViT-L/14), 6 blocks, width 256, 4 heads. A small backbone for CPU-sized experiments and
  training from scratch.

The project configs project to a 768-d embedding, as ViT-L/14 does, so UFD's released ``fc``
(Linear(768, 1)) loads on them too.

The project configs carry a minimal text tower only because open_clip's config registry
requires one; only the vision tower is ever built.

Weights (``weights=``): a release tag or path, resolved through :func:`forensics.weights.resolve`
and read with :func:`forensics.io.read_weight_file` (``weights_only`` torch.load / safetensors).
Accepted layouts: a full CLIP state dict in OpenAI / open_clip key format (``visual.conv1.weight``,
``visual.transformer.resblocks.N.ln_2.weight``, ... plus text keys, which are dropped), a
visual-only state dict with or without the ``visual.`` prefix, and open_clip training checkpoints
(``{'state_dict': ...}``, ``module.`` prefix). The visual tower is loaded strictly; fp16 files
(OpenAI's release) are cast to the model's fp32, as ``clip.load(..., device='cpu')`` does.

Numerics: with identical weights, open_clip and the OpenAI ``clip`` package agree to ~2e-6 on
the CLS tokens. The gap is PyTorch's fused ``nn.MultiheadAttention`` fast path (taken in eval
mode when no gradient is needed); ``torch.backends.mha.set_fastpath_enabled(False)`` makes the two
bit-identical. The same fast path means a forward pass whose input requires grad (explain mode)
may differ from a plain one at that ~1e-6 level.

The backbone is frozen with ``requires_grad_(False)``; its forward never runs under
``torch.no_grad`` (that would break every gradient-based explanation).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .. import weights as weight_registry
from ..errors import CheckpointError
from ..io import read_weight_file
from .base import Detector, load_strict
from .config import DetectorConfig
from .resnet50 import unwrap_training_checkpoint

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_BACKBONE = "ViT-L-14-quickgelu"
DEFAULT_BACKBONE_WEIGHTS = "clip.vit_l14_openai"
VISUAL_PREFIX = "visual."


@functools.cache
def open_clip_module():
    """Import open_clip (slow: ~3 s) on first use and register the project's model configs once."""
    import open_clip
    open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def build_visual_tower(model_name: str) -> nn.Module:
    """A randomly initialised open_clip ``VisionTransformer`` for ``model_name`` (no text tower).

    Uses open_clip's own vision-tower builder (``open_clip.model._build_vision_tower``, the function
    ``CLIP.__init__`` calls; open_clip is pinned) so the text tower, ~123M parameters for ViT-L/14,
    is never allocated.
    """
    open_clip = open_clip_module()
    from open_clip.model import _build_vision_tower
    from open_clip.transformer import VisionTransformer

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise KeyError(f"unknown open_clip model {model_name!r}; e.g. {DEFAULT_BACKBONE!r}, 'ViT-B-32-quickgelu', "
                       f"'forensics-tiny-vit' (all: open_clip.list_models())")
    quick_gelu = bool(cfg.get("quick_gelu", False))
    if not quick_gelu:
        log.warning("open_clip model %s uses GELU, not QuickGELU: OpenAI CLIP weights need the '-quickgelu' "
                    "variant (e.g. %s); with OpenAI weights this shifts the CLS tokens by ~5e-2",
                    model_name, DEFAULT_BACKBONE)
    visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu)
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"{model_name}: vision tower is a {type(visual).__name__}; the CLIP detectors need a "
                         "plain ViT (open_clip VisionTransformer)")
    return visual


def visual_state(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The visual-tower tensors of a CLIP checkpoint, keyed relative to the vision tower.

    A state dict with ``visual.`` keys (full OpenAI / open_clip CLIP, or visual-only with the
    prefix) gives those keys minus the prefix; text keys are dropped. A dict without any
    ``visual.`` key is taken as a visual-only state dict as it is.
    """
    state = dict(state)
    if isinstance(state.get("state_dict"), Mapping):  # open_clip training checkpoint
        state = dict(state["state_dict"])
    state = dict(unwrap_training_checkpoint(state))
    if not any(k.startswith(VISUAL_PREFIX) for k in state):
        return state
    kept = {k[len(VISUAL_PREFIX):]: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
    log.debug("visual tower: kept %d tensors, dropped %d non-visual ones (text tower)", len(kept),
              len(state) - len(kept))
    return kept


def tokens_to_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Batch-first ViT tokens ``[B, 1 + grid*grid, D]`` -> patch map ``[B, D, grid, grid]`` (CLS dropped).

    The Grad-CAM reshape transform for a token-grid target layer (e.g. a block's ``ln_1``).
    """
    patches = tokens[:, 1:, :]
    b, n, d = patches.shape
    if n != grid * grid:
        raise ValueError(f"expected 1 + {grid}x{grid} tokens, got {tokens.shape[1]} (input not at the backbone's "
                         "image size?)")
    return patches.reshape(b, grid, grid, d).permute(0, 3, 1, 2)


class ClipVisionBackbone(nn.Module):
    """A frozen open_clip vision tower (``self.visual``) with its geometry exposed.

    ``weights``: ``None`` (random initialisation: tests, training from scratch) or a release tag /
    file path (see the module docstring for the accepted layouts).
    """

    def __init__(self, model_name: str = DEFAULT_BACKBONE, weights: str | os.PathLike | None = None):
        super().__init__()
        self.model_name = model_name
        self.visual = build_visual_tower(model_name)
        self.weights_source: str | None = None
        if weights is not None:
            self.load_weights(weights)
        self.requires_grad_(False)

    # ------------------------------------------------------------------ geometry
    @property
    def resblocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def blocks(self) -> int:
        """Number of residual attention blocks (24 for ViT-L/14)."""
        return len(self.resblocks)

    @property
    def width(self) -> int:
        """Transformer hidden size (1024 for ViT-L/14), the size of each captured token."""
        return self.visual.transformer.width

    @property
    def grid(self) -> int:
        """Side of the patch-token grid (16 for ViT-L/14 at 224 px)."""
        return self.visual.grid_size[0]

    @property
    def image_size(self) -> int:
        """Input side the positional embedding was built for (224 for ViT-L/14)."""
        return self.visual.image_size[0]

    @property
    def embed_dim(self) -> int:
        """Size of the projected image embedding (768 for ViT-L/14)."""
        return self.visual.output_dim

    @property
    def arch(self) -> str:
        return f"open_clip {self.model_name} visual tower ({self.blocks} blocks, width {self.width})"

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP ``encode_image``: ln_post(CLS after the last block) @ proj, not L2-normalised."""
        return self.visual(x)

    def forward_with_cls_tokens(self, x: torch.Tensor, site: str = "ln_2"
                                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and, per block in order, the CLS token ``[B, width]`` of the output of the
        block's submodule ``site`` (``"ln_2"``: the normalised MLP input RINE reads; ``""``: the
        block output, the residual stream UFD's vendored CLIP exposes).

        Hooks live only for this call (open_clip is batch-first: CLS = ``out[:, 0]``).
        """
        captured: dict[int, torch.Tensor] = {}

        def make_hook(index: int) -> Callable:
            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
                captured[index] = output[:, 0]
            return hook

        handles = [block.get_submodule(site).register_forward_hook(make_hook(i))
                   for i, block in enumerate(self.resblocks)]
        try:
            embedding = self.visual(x)
        finally:
            for h in handles:
                h.remove()
        return embedding, [captured[i] for i in range(self.blocks)]

    # ------------------------------------------------------------------ weights
    def load_weights(self, tag_or_path: str | os.PathLike) -> Path:
        """Load the visual tower from a release tag or a local file (strict)."""
        path = weight_registry.resolve(tag_or_path)
        state = read_weight_file(path, expected=f"CLIP weights for {self.model_name} (OpenAI/open_clip state dict)")
        self.load_state(state, source=str(path))
        self.weights_source = str(path)
        log.info("%s: backbone weights from %s", self.model_name, path)
        return path

    def load_state(self, state: Mapping[str, Any], source: str = "<state dict>") -> None:
        """Load a CLIP / visual-only state dict strictly into the visual tower (see :func:`visual_state`)."""
        load_strict(self.visual, visual_state(state), source=source, arch=self.arch)


def split_prefixed(state: Mapping[str, Any], prefixes: tuple[str, ...]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``state`` into (keys starting with one of ``prefixes``, prefix removed; the others)."""
    matched: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            rest[key] = value
        else:
            matched[key[len(prefix):]] = value
    return matched, rest


class ClipDetector(Detector):
    """Shared part of the CLIP-based detectors: a frozen backbone ``self.clip`` built from the
    ``backbone``/``backbone_weights`` options, preprocessing sized to the backbone, Grad-CAM on a
    block's ``ln_1`` (option ``cam_block``, default the last block).

    ``BACKBONE_PREFIXES``: key prefixes under which a detector checkpoint may hold backbone tensors
    (RINE's reference saves ``clip.*``; UFD's training checkpoint ``model.*``).
    """

    BACKBONE_PREFIXES: tuple[str, ...] = ("clip.",)

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        opts = config.options
        self.clip = ClipVisionBackbone(opts["backbone"], opts["backbone_weights"])
        size = self.clip.image_size
        # The positional embedding fixes the input size: crop at the backbone's size (224 for the
        # OpenAI backbones, the reference's CenterCrop(224) without resize).
        self.config = dataclasses.replace(config.with_preprocessing(crop_size=size), input_size=size)
        blocks = self.clip.blocks
        self.cam_block = int(opts["cam_block"])
        if not -blocks <= self.cam_block < blocks:
            raise ValueError(f"{config.name}: cam_block={self.cam_block} out of range for {blocks} blocks")

    def gradcam_layers(self) -> list[nn.Module]:
        """The chosen block's ``ln_1`` (batch-first tokens; use :meth:`gradcam_reshape`)."""
        return [self.clip.resblocks[self.cam_block].ln_1]

    def gradcam_reshape(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return functools.partial(tokens_to_grid, grid=self.clip.grid)

    def _split_backbone(self, state: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Load any backbone tensors in ``state`` into ``self.clip`` (strict) and return the rest."""
        backbone, rest = split_prefixed(unwrap_training_checkpoint(state), self.BACKBONE_PREFIXES)
        if backbone:
            log.info("%s: %s also holds backbone weights (%d tensors); loading them", self.name, source,
                     len(backbone))
            self.clip.load_state(backbone, source=source)
            self.clip.weights_source = source
        return rest


def clip_options(**extra: Any) -> dict[str, Any]:
    """Builder options shared by the CLIP detectors, plus ``extra``."""
    return {"backbone": DEFAULT_BACKBONE, "backbone_weights": DEFAULT_BACKBONE_WEIGHTS, "cam_block": -1, **extra}


def check_state_complete(state: Mapping[str, Any], required: tuple[str, ...], source: str, what: str) -> None:
    """Raise :class:`CheckpointError` when ``state`` lacks one of the ``required`` keys."""
    missing = [k for k in required if k not in state]
    if missing:
        sample = ", ".join(list(state)[:6]) or "none"
        raise CheckpointError(f"{source}: not {what} (missing {', '.join(missing)}; keys found: {sample}"
                              f"{' ...' if len(state) > 6 else ''})")
