"""CUDA path: identical weights and inputs give the same logits on CPU and CUDA (TF32 off), and
probes/masks/explain mode work on the GPU. Skipped where no CUDA device exists (CPU is the tested
path; run these on a GPU machine)."""
from __future__ import annotations

import pytest
import torch

from forensics.detectors import create
from forensics.device import reference_precision, resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TINY_CLIP = {"backbone": "forensics-tiny-vit", "backbone_weights": None}
CASES = [("resnet50", {}, 64), ("efb0", {}, 64), ("rine", {**TINY_CLIP, "nproj": 2, "proj_dim": 16}, 56),
         ("ufd", TINY_CLIP, 56)]


@pytest.fixture(autouse=True)
def _no_tf32():
    reference_precision(True)
    yield
    reference_precision(False)


@pytest.mark.parametrize("name,opts,size", CASES)
def test_cpu_and_cuda_logits_agree(name, opts, size):
    torch.manual_seed(0)
    cpu = create(name, device="cpu", **opts)
    gpu = create(name, device="cuda", **opts)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(4, 3, size, size)
    with torch.inference_mode():
        a, b = cpu(x), gpu(x.cuda()).cpu()
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a, b)


@pytest.mark.parametrize("name,opts,size", CASES)
def test_probes_and_explain_mode_on_cuda(name, opts, size):
    model = create(name, device=resolve_device("cuda"), **opts)
    layer = model.feature_layers()[0]
    keys = model.feature_keys([layer.name])[:2]
    x = torch.randn(2, 3, size, size, device="cuda")
    with model.mask(keys), model.record([layer.name]) as rec:
        model(x)
    assert rec[layer.name].is_cuda and torch.count_nonzero(rec[layer.name][:, :2]) == 0
    with model.explain_mode():
        xi = x.clone().requires_grad_(True)
        model(xi).sum().backward()
    assert xi.grad is not None and torch.isfinite(xi.grad).all()
