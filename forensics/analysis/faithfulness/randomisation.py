"""Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018).

The detector's parameterised modules are grouped (:func:`cascade_groups`) and randomised
cumulatively from the head down: step 0 is the trained model, step ``k`` has the last ``k`` groups
randomised. At every step the method explains the same images for the same fixed target class with
a freshly created explainer (same options and seed: a seeded control such as ``random`` then gives
the same maps whatever the model), and each map is compared with the trained model's map by

- Spearman's rank correlation of the pixel values (scipy.stats.spearmanr), of the maps as given and of
  their absolute values (a signed map whose sign flips with a randomised head keeps its structure: the
  signed correlation turns negative, the absolute one stays high);
- SSIM (scikit-image) of the maps min-max scaled to ``[0, 1]``.

A method whose maps explain the model decorrelate as the model is destroyed; one whose maps stay
the same is "not sensitive to the model" (:func:`model_sensitive`: both correlations must fall). Each parameter tensor is redrawn
from a normal distribution with its own mean and standard deviation (so activations keep their scale;
BatchNorm running statistics are kept), with a generator seeded per group. The detector is restored
bit for bit on exit (:func:`restored`), also when an error interrupts the cascade.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: A method is "sensitive to the model" when the upper ends of the bootstrap CIs of its mean Spearman
#: correlations (signed and absolute maps) with the trained model's maps, after the whole model is
#: randomised, are below this.
SENSITIVE_BELOW = 0.5


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[nn.Module]:
    """Keep a copy of ``model``'s parameters and buffers and put it back on exit."""
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])


def cascade_groups(model: nn.Module, min_groups: int = 4) -> list[tuple[str, list[nn.Module]]]:
    """Groups of parameterised modules, head first: the modules owning parameters, grouped by the
    first ``d`` components of their names, with the smallest ``d`` giving at least ``min_groups``
    groups besides the blocks below (ResNet-50: ``fc, layer4, layer3, layer2, layer1, bn1, conv1``);
    frozen parameters count. A module inside an ``nn.ModuleList`` of blocks (a transformer's
    ``resblocks``) is grouped by its block instead, so the cascade walks down a ViT block by block, last
    block first, and randomises the rest of the backbone (embeddings, input norm) last (default RINE:
    ``rine_head.head, rine_head.proj2, rine_head.proj1, rine_head, clip.visual.transformer.resblocks.5,
    ..., resblocks.0, clip.visual``)."""
    owners = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise ValueError("the model has no parameters to randomise")
    depth = max(len(n.split(".")) for n, _ in owners)
    blocks = {n: _block_of(model, n) for n, _ in owners}
    for d in range(1, depth + 1):
        groups: dict[str, list[nn.Module]] = {}
        for n, m in owners:
            groups.setdefault(blocks[n] or ".".join(n.split(".")[:d]), []).append(m)
        if len(groups.keys() - set(blocks.values())) >= min_groups or d == depth:
            break
    return list(reversed(groups.items()))


def _block_of(model: nn.Module, name: str) -> str | None:
    """The name of the ``nn.ModuleList`` element that module ``name`` lies in (``a.b.3``), else ``None``."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), nn.ModuleList):
            return ".".join(parts[:i + 1])
    return None


@torch.no_grad()
def randomise_(modules: Sequence[nn.Module], seed: int) -> None:
    """Redraw every parameter owned by ``modules`` from N(its mean, its std), seeded."""
    g = torch.Generator().manual_seed(seed)
    for m in modules:
        for p in m.parameters(recurse=False):
            std = float(p.std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=g)
            p.copy_((noise * std + float(p.mean())).to(p))


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Spearman correlation of two map stacks ``[B, H, W]``. A constant map ranks nothing:
    against a different map it scores 0 (e.g. Grad-CAM of a randomised network, all zero after its
    ReLU), against an identical one 1."""
    from scipy.stats import spearmanr
    out = np.zeros(len(a))
    for i in range(len(a)):
        x, y = np.ravel(a[i]), np.ravel(b[i])
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = spearmanr(x, y).statistic
        elif np.array_equal(x, y):
            out[i] = 1.0
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    span = np.ptp(m)
    return (m - m.min()) / span if span > 0 else np.zeros_like(m, dtype=np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of two map stacks ``[B, H, W]`` min-max scaled to ``[0, 1]``."""
    from skimage.metrics import structural_similarity
    return np.array([structural_similarity(_unit(np.asarray(x, np.float64)), _unit(np.asarray(y, np.float64)),
                                           data_range=1.0) for x, y in zip(a, b)])


@dataclass
class CascadeResult:
    """``steps``: names (``"trained"``, then each randomised group, cumulative); ``spearman``,
    ``spearman_abs`` (of the absolute maps) and ``ssim`` ``[steps, B]`` against step 0; ``maps``
    ``[steps, B, H, W]``."""

    steps: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray


def cascading_randomisation(detector: nn.Module, method: str, images: torch.Tensor, target: Any = "fake",
                            options: Mapping[str, Any] | None = None, seed: int = 0, min_groups: int = 4,
                            groups: Sequence[tuple[str, Sequence[nn.Module]]] | None = None) -> CascadeResult:
    """Explain ``images`` with ``method`` on the trained detector and after each cumulative
    randomisation step (see the module docstring); the detector is restored afterwards."""
    from ...explain import create_explainer
    groups = list(groups) if groups is not None else cascade_groups(detector, min_groups)
    options = dict(options or {})

    def explain() -> np.ndarray:
        with create_explainer(method, detector, **options) as ex:
            return ex.attribute(images, target).pixel.numpy()

    maps = [explain()]
    names = ["trained"]
    with restored(detector):
        for k, (name, modules) in enumerate(groups):
            randomise_(modules, seed * 1_000_003 + k)
            maps.append(explain())
            names.append(name)
            log.debug("%s: randomised down to %s", method, name)
    ref = maps[0]
    return CascadeResult(names, np.stack([spearman(ref, m) for m in maps]),
                         np.stack([spearman(np.abs(ref), np.abs(m)) for m in maps]),
                         np.stack([ssim(ref, m) for m in maps]), np.stack(maps))


def model_sensitive(*final_spearman_ci_hi: float, threshold: float = SENSITIVE_BELOW) -> bool:
    """The verdict of the check: the maps of the fully randomised model are no longer like the trained
    model's (the upper CI bound of each given mean Spearman correlation, signed and absolute, below
    ``threshold``)."""
    return bool(all(np.isfinite(v) and v < threshold for v in final_spearman_ci_hi))
