"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn

from forensics.detectors import Detector, create


def calibrated(name: str, seed: int = 0, size: int = 32, **options) -> Detector:
    """A random-weight detector whose BatchNorm running statistics come from 3 random batches, so
    that its activations (and output) depend on the input: plain random EfficientNet activations
    vanish in eval mode because its BN statistics start at 0/1 with momentum 0.01."""
    torch.manual_seed(seed)
    model = create(name, **options)
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


def snapshot(model: nn.Module) -> dict:
    """Everything an explainer could leave behind."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [n for n, _ in model.named_modules()],
        "params": [(n, id(p), p.requires_grad) for n, p in model.named_parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(m._backward_pre_hooks) for m in model.modules()),
        "forward_overrides": [n for n, m in model.named_modules() if "forward" in m.__dict__],
        "training": model.training,
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    for key in ("modules", "params", "hooks", "forward_overrides", "training"):
        assert before[key] == after[key], key
    for (n, a), (_, b) in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b)), n


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
