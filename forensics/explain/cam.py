"""Grad-CAM and Guided Grad-CAM of a detector's logit (tff.md §12.1), on pytorch-grad-cam.

Usage::

    cams = gradcam(detector, images, target="fake")        # [B, H, W] in [0, 1]
    res = guided_gradcam(detector, images, target="real")  # .cam, .gradient, .guided, .product

What is explained: the detector has ONE logit ``f`` (``P(fake) = sigmoid(f)``). ``target="fake"``
explains ``f`` (``BinaryClassifierOutputTarget(1)``), ``target="real"`` explains ``-f``
(``BinaryClassifierOutputTarget(0)``); the target is always explicit. (The reference passed
``targets=None``, i.e. the argmax over one output, which always explains ``f``.) The real CAM is
therefore the Grad-CAM of the negated logit: channel weights change sign, so after Grad-CAM's ReLU it
shows the regions the fake CAM suppresses.

Layers: each detector's :meth:`~forensics.detectors.Detector.gradcam_layers` with its
:meth:`~forensics.detectors.Detector.gradcam_reshape` (ResNet-50 ``layer4``, EfB0 ``_conv_head``,
CLIP detectors a block's ``ln_1`` token grid). Everything runs inside the detector's
:meth:`~forensics.detectors.Detector.explain_mode` with an input that requires grad (the parameters
are frozen there; a frozen backbone would otherwise give no gradient at the target layer).

Guided backprop (Springenberg et al.) replaces the backward pass of every ``nn.ReLU`` by the guided
rule. It is only defined for ReLU networks: :func:`relu_network` checks that the detector has
``nn.ReLU`` modules and no other activation module. On EfB0 (SiLU/swish) and the CLIP detectors
(QuickGELU/GELU, a ReLU only in RINE's head) there is no ReLU to guide, so the reference's "guided"
gradient is just the plain input gradient (tff.md §12.1 [inferred]). Here such a detector gets the
plain gradient, ``GuidedGradCAM.guided`` is ``False`` and the result is labelled
"Grad-CAM x gradient" (never "Guided Grad-CAM"), with a logged warning.

Restoration: hooks are removed, ReLU modules swapped for the guided ones are put back (the same
instances), parameter ``.grad`` (which pytorch-grad-cam's ``zero_grad`` clears), ``requires_grad``
flags and train/eval mode are restored; the detector's forward is bit-identical afterwards.

Differences from the reference: batched guided backprop (pytorch-grad-cam's
``GuidedBackpropReLUModel`` explains only the first image of a batch, argmax-indexes a 2-D output and
re-creates ``nn.ReLU()`` modules without ``inplace``, so it is not used as is; its
``GuidedBackpropReLUasModule`` is); CAMs are min-max scaled per image as pytorch-grad-cam does.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUasModule
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

from .. import plots
from ..data import ImageRecord, RunSummary, forensynths
from ..detectors import Detector
from ..errors import ForensicsError

log = logging.getLogger(__name__)

TARGETS = ("fake", "real")

#: Activation modules other than ReLU: a detector holding any of them is not a ReLU network.
_OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.PReLU, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Softplus)
_OTHER_ACTIVATION_NAMES = ("GELU", "Swish", "SiLU")  # e.g. open_clip's QuickGELU, efficientnet's Swish


# ---------------------------------------------------------------------------- targets and restoration
def target_sign(target: str) -> float:
    """+1 for ``"fake"`` (explain ``f``), -1 for ``"real"`` (explain ``-f``)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return 1.0 if target == "fake" else -1.0


def cam_targets(target: str, n: int) -> list[BinaryClassifierOutputTarget]:
    """pytorch-grad-cam targets for ``n`` images: ``BinaryClassifierOutputTarget(1)`` (fake) or ``(0)`` (real)."""
    category = 1 if target_sign(target) > 0 else 0
    return [BinaryClassifierOutputTarget(category) for _ in range(n)]


@contextlib.contextmanager
def _explaining(detector: Detector) -> Iterator[Detector]:
    """``explain_mode`` plus restoration of every parameter's ``.grad`` (pytorch-grad-cam calls
    ``model.zero_grad()``, which would drop them)."""
    grads = [(p, p.grad) for p in detector.parameters()]
    try:
        with detector.explain_mode():
            yield detector
    finally:
        for p, g in grads:
            p.grad = g


def _input(detector: Detector, images: torch.Tensor) -> torch.Tensor:
    """A fresh leaf copy of ``images`` on the detector's device and dtype that requires grad."""
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    dtype = next((p.dtype for p in detector.parameters() if p.is_floating_point()), torch.float32)
    return images.detach().to(detector.device, dtype).clone().requires_grad_(True)


# ---------------------------------------------------------------------------- Grad-CAM
def gradcam(detector: Detector, images: torch.Tensor, target: str = "fake") -> torch.Tensor:
    """Grad-CAM of ``images`` (normalised ``[B, C, H, W]``, one batch) for ``target``
    (``"fake"``: the logit, ``"real"``: the negated logit) at the detector's Grad-CAM layers.

    Returns float32 ``[B, H, W]`` on the CPU, each map min-max scaled to [0, 1] (an all-zero map
    stays 0). The detector is restored exactly afterwards.
    """
    x = _input(detector, images)
    targets = cam_targets(target, x.shape[0])
    with _explaining(detector), GradCAM(model=detector, target_layers=detector.gradcam_layers(),
                                        reshape_transform=detector.gradcam_reshape()) as cam:
        maps = cam(input_tensor=x, targets=targets)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))


# ---------------------------------------------------------------------------- guided backprop
def relu_network(detector: Detector) -> bool:
    """Whether guided backprop is meaningful: the detector has ``nn.ReLU`` modules and no other
    activation module (checked inside explain mode, where EfB0's swish is ``nn.SiLU``). Functional
    activations (``torch.sigmoid`` in a forward) cannot be seen."""
    with detector.explain_mode():
        mods = list(detector.modules())
    has_relu = any(type(m) is nn.ReLU for m in mods)
    other = any(isinstance(m, _OTHER_ACTIVATIONS) or any(s in type(m).__name__ for s in _OTHER_ACTIVATION_NAMES)
                for m in mods)
    return has_relu and not other


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[int]:
    """Swap every ``nn.ReLU`` child for pytorch-grad-cam's guided ReLU; put the SAME instances back
    on exit. Yields how many were swapped."""
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.ReLU]
    guided = GuidedBackpropReLUasModule()
    for parent, name, _ in swapped:
        setattr(parent, name, guided)
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def input_gradient(detector: Detector, images: torch.Tensor, target: str = "fake", guided: bool = True
                   ) -> torch.Tensor:
    """Gradient of ``sign * f`` (``sign`` from ``target``) with respect to the input, ``[B, C, H, W]``
    on the CPU, batched. ``guided``: guided backprop through every ``nn.ReLU`` (raises if the detector
    is not a :func:`relu_network`)."""
    if guided and not relu_network(detector):
        raise ValueError(f"{detector.name} is not a ReLU network: guided backprop would be a plain gradient "
                         "(pass guided=False, or use guided_gradcam, which labels it)")
    sign = target_sign(target)
    x = _input(detector, images)
    with _explaining(detector), (_guided_relus(detector) if guided else contextlib.nullcontext()):
        with torch.enable_grad():
            logits = detector(x)
            if logits.ndim != 1:
                raise ValueError(f"{detector.name}: expected one logit per image, got {tuple(logits.shape)}")
            (grad,) = torch.autograd.grad(logits, x, grad_outputs=torch.full_like(logits, sign))
    return grad.detach().cpu()


@dataclass
class GuidedGradCAM:
    """One explained batch: ``cam`` ``[B, H, W]`` in [0, 1]; ``gradient`` ``[B, C, H, W]`` (guided
    backprop when ``guided``, else the plain input gradient); ``product`` = ``cam[:, None] * gradient``
    (Guided Grad-CAM when ``guided``, else "Grad-CAM x gradient"); ``target`` ``fake``/``real``."""

    cam: torch.Tensor
    gradient: torch.Tensor
    guided: bool
    target: str

    @property
    def product(self) -> torch.Tensor:
        return self.cam[:, None] * self.gradient

    @property
    def label(self) -> str:
        return "Guided Grad-CAM" if self.guided else "Grad-CAM x gradient"


def guided_gradcam(detector: Detector, images: torch.Tensor, target: str = "fake") -> GuidedGradCAM:
    """Grad-CAM times guided backprop (tff.md §12.1) for a ReLU network; for any other detector the
    plain gradient replaces guided backprop and the result says so (``guided=False``, a warning)."""
    guided = relu_network(detector)
    if not guided:
        log.warning("%s has non-ReLU activations: guided backprop degenerates to the plain gradient; "
                    "computing Grad-CAM x gradient instead of Guided Grad-CAM", detector.name)
    cam = gradcam(detector, images, target)
    grad = input_gradient(detector, images, target, guided=guided)
    return GuidedGradCAM(cam=cam, gradient=grad, guided=guided, target=target)


# ---------------------------------------------------------------------------- figures (shared by the CLIs)
def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of ``images`` ``[B, 3, H, W]``: uint8 RGB ``[B, H, W, 3]`` (the pixels
    the detector saw, for overlays)."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.detach().cpu().float() * s + m).clamp(0, 1) * 255.0
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_heatmap_figures(out_dir: str | Path, names: Sequence[str], images: np.ndarray,
                          maps: dict[str, np.ndarray], title: str, formats: Sequence[str] = ("png", "pdf"),
                          scale: int = 4) -> dict[str, list[Path]]:
    """Per image ``out_dir/<name>/image.*`` and ``<map>.*`` (T-FF overlay of each ``[B, H, W]`` map in
    [0, 1]), and one ``out_dir/grid.*`` (rows = images; columns = image, then each map's overlay).
    ``scale``: per-image files are upscaled by pixel repetition (64 px images are tiny in a PDF).
    Returns ``{"image": [...], "<map>": [...], "grid": [...]}`` (all formats)."""
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {"image": [], **{k: [] for k in maps}, "grid": []}
    rows: list[list[np.ndarray]] = []
    for i, name in enumerate(names):
        overlays = {k: plots.overlay(images[i], m[i]) for k, m in maps.items()}
        row = [images[i], *overlays.values()]
        rows.append(row)
        for key, img in zip(("image", *overlays), row):
            big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1) if scale > 1 else img
            written[key] += plots.save_image(big, out_dir / name / key, formats=formats)
    fig = plots.image_grid(rows, row_labels=[n[:18] for n in names], col_labels=["image", *maps], title=title)
    written["grid"] = plots.save_figure(fig, out_dir / "grid", formats=formats, dpi=150)
    return written


def first_fakes(root: str | Path, gan: str | None, have_classes: bool | None = None, per_folder: int | None = None,
                max_images: int | None = None) -> list[ImageRecord]:
    """The first fakes of a ForenSynths-style set (sorted, as the reference's ``gradcam.py``):
    ``per_folder`` per class folder, then at most ``max_images`` in all."""
    records = forensynths(root, gan, have_classes=have_classes, num_real=0, num_fake=per_folder)
    return records if max_images is None else records[:max_images]


@dataclass
class Heatmaps:
    """Per-image heatmaps of a run: file-stem ``names``, the de-normalised ``images`` [N,H,W,3]
    uint8, ``maps`` (name -> [N,H,W]) and the ``summary`` of skipped files."""

    names: list[str]
    images: np.ndarray
    maps: dict[str, np.ndarray]
    summary: RunSummary


def collect_heatmaps(detector: Detector, records: Sequence[ImageRecord], explain, *, crop: str | None = None,
                     batch_size: int = 8, num_workers: int = 0) -> Heatmaps:
    """Run ``explain(batch) -> {name: [B,H,W] array}`` over ``records`` with the detector's transform
    and gather the maps with the images they explain (the loop behind the heatmap CLIs)."""
    from ..data import ImageDataset, iter_batches
    dataset = ImageDataset(list(records), detector.transform(crop=crop))
    pre = detector.config.preprocessing
    summary = RunSummary()
    names: list[str] = []
    images: list[np.ndarray] = []
    maps: dict[str, list[np.ndarray]] = {}
    for batch in iter_batches(dataset, batch_size=batch_size, num_workers=num_workers):
        summary.add(batch)
        if not len(batch):
            continue
        for key, value in explain(batch).items():
            maps.setdefault(key, []).append(value)
        images.append(to_uint8(batch.images, pre.mean, pre.std))
        names += [f"{len(names) + i:03d}_{Path(p).stem}" for i, p in enumerate(batch.paths)]
    if not names:
        raise ForensicsError("no readable image to explain")
    return Heatmaps(names, np.concatenate(images), {k: np.concatenate(v) for k, v in maps.items()}, summary)
