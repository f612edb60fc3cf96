"""forensics.memory: the low mmap threshold is scoped to the block that asks for it (a recording
stand-in for glibc's mallopt; the speed and memory effects are measured in bench/README.md)."""
from __future__ import annotations

import pytest

from forensics import memory


@pytest.fixture
def calls(monkeypatch):
    recorded: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        recorded.append((param, value))
        return 1

    monkeypatch.setattr(memory, "_mallopt", lambda: mallopt)
    monkeypatch.delenv(memory.ENV_MMAP_THRESHOLD, raising=False)
    return recorded


def test_threshold_is_set_inside_and_heap_mode_restored_after(calls):
    with memory.mmap_threshold() as accepted:
        assert accepted and calls == [(memory.M_MMAP_THRESHOLD, 128 * 1024)]
    assert calls[1:] == [(memory.M_MMAP_THRESHOLD, 32 * 1024 * 1024), (memory.M_TRIM_THRESHOLD, 64 * 1024 * 1024)]


def test_heap_mode_is_restored_on_error_and_honours_the_environment(calls, monkeypatch):
    monkeypatch.setenv(memory.ENV_MMAP_THRESHOLD, "1048576")
    with pytest.raises(RuntimeError), memory.mmap_threshold(4096):
        raise RuntimeError("boom")
    assert calls == [(memory.M_MMAP_THRESHOLD, 4096), (memory.M_MMAP_THRESHOLD, 1048576)]


def test_disabled_or_unsupported_leaves_the_allocator_alone(calls, monkeypatch):
    with memory.mmap_threshold(enabled=False) as accepted:
        assert not accepted
    assert calls == []
    monkeypatch.setattr(memory, "_mallopt", lambda: None)
    with memory.mmap_threshold() as accepted:
        assert not accepted


def test_compute_ffrs_scopes_the_threshold(calls, monkeypatch):
    import torch
    from forensics.analysis import ffrs
    from forensics.detectors import create

    seen = []

    class Stop(Exception):
        pass

    def explainer(*args, **kwargs):
        seen.append(list(calls))
        raise Stop

    monkeypatch.setattr(ffrs, "LRPExplainer", explainer)
    torch.manual_seed(0)
    with pytest.raises(Stop):
        ffrs.compute_ffrs(create("resnet50"), [], progress=False)
    assert seen == [[(memory.M_MMAP_THRESHOLD, 128 * 1024)]]
    assert calls[-1] == (memory.M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    calls.clear()
    with pytest.raises(Stop):
        ffrs.compute_ffrs(create("resnet50"), [], progress=False, fixed_mmap_threshold=False)
    assert calls == []
