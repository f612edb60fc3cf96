"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from forensics.detectors import Detector, create, get_config

#: Builder options that make any registered detector small: a detector built on a CLIP backbone gets
#: the seeded-random 56 px ``forensics-tiny-vit`` (4 blocks, width 64) instead of ViT-L/14.
TINY_OPTIONS = {"backbone": "forensics-tiny-vit", "backbone_weights": None}


def tiny_options(name: str) -> dict:
    """The :data:`TINY_OPTIONS` that the detector ``name`` has (none for the CNNs)."""
    return {k: v for k, v in TINY_OPTIONS.items() if k in get_config(name).options}


def tiny(name: str, seed: int = 0, **options) -> Detector:
    """A small random-weight instance of any registered detector (``options`` override)."""
    torch.manual_seed(seed)
    return create(name, **{**tiny_options(name), **options})


def tiny_rine(seed: int = 0, nproj: int = 2, proj_dim: int = 16) -> Detector:
    """A small random RINE on the tiny ViT (4 blocks, width 64, 56 px), in eval mode."""
    return tiny("rine", seed, nproj=nproj, proj_dim=proj_dim)


def input_side(model: Detector, side: int = 64) -> int:
    """``side``, or the model's own input size where its input size is fixed (a ViT's patch grid)."""
    return model.config.input_size if tiny_options(model.name) else side


def calibrated(name: str, seed: int = 0, size: int = 32, **options) -> Detector:
    """A small random-weight detector (:func:`tiny`) whose BatchNorm running statistics come from 3
    random batches, so that its activations (and output) depend on the input: plain random
    EfficientNet activations vanish in eval mode because its BN statistics start at 0/1 with
    momentum 0.01. ``size``: side of the calibration batches (a fixed-size ViT: its own)."""
    model = tiny(name, seed, **options)
    size = input_side(model, size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, size, size))
    return model.eval()


@functools.cache
def calibrated_cached(name: str, seed: int = 0, size: int = 32) -> Detector:
    """:func:`calibrated`, built once per process; tests must leave it as they found it."""
    return calibrated(name, seed, size)


def no_hooks(model: nn.Module) -> bool:
    """No forward, forward-pre, backward or backward-pre hook is left on any module."""
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                   for m in model.modules())


def snapshot(model: nn.Module) -> dict:
    """Everything an explainer, probe or mask could leave behind on a model (gradients included)."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "params": [(n, id(p), p.requires_grad) for n, p in model.named_parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(m._backward_pre_hooks) for m in model.modules()),
        "forward_overrides": [n for n, m in model.named_modules() if "forward" in m.__dict__],
        "training": model.training,
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    """Two :func:`snapshot` s are equal: same tensors and gradients bit for bit, modules, parameter flags,
    hooks, forward methods and mode."""
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    for key in ("modules", "params", "hooks", "forward_overrides", "training"):
        assert before[key] == after[key], key
    for (n, a), (_, b) in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b)), n


def assert_restored(before: dict, model: nn.Module) -> None:
    """``model`` is as :func:`snapshot` found it."""
    assert_same_snapshot(before, snapshot(model))


def save_cnndet_checkpoint(path: Path, detector: Detector | None = None, *, seed: int = 0, **extra) -> Path:
    """Write a checkpoint as CNNDetection writes them, ``{"model": state_dict}`` (plus ``extra``
    entries such as ``optimizer`` and ``total_steps``), of ``detector``'s network or, by default, of a
    random ResNet-50 drawn with ``seed``."""
    detector = detector if detector is not None else tiny("resnet50", seed)
    torch.save({"model": detector.net.state_dict(), **extra}, path)
    return path


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared, loaded 2-core machine torch's thread pool spins and runs
    small convs ~10x slower than a single thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def exit_code(main, argv: list[str], **kwargs) -> int:
    """The exit code of ``main(argv)`` behind the command-line boundary :func:`forensics.cli.run`
    (an expected error: 2)."""
    import pytest

    from forensics.cli import run
    with pytest.raises(SystemExit) as exc:
        run(main, argv, **kwargs)
    return exc.value.code


def run_script(script, argv: list[str]) -> int:
    """Run ``analyses/<script>`` as ``__main__`` with ``argv``; return its exit code."""
    import runpy
    import sys

    import pytest
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(script), run_name="__main__")
        return exc.value.code
    finally:
        sys.argv = saved
