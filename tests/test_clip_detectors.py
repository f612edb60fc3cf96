"""The CLIP-based detectors ``rine`` and ``ufd`` on open_clip (tiny backbone; the released heads
are checked against /work/shared/reference-data when present)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from forensics.detectors import create, get_config, list_detectors
from forensics.detectors.clip_backbone import ClipVisionBackbone, open_clip_module
from forensics.detectors.rine import HeadGeometry, RineDetector, RineHead
from forensics.errors import CheckpointError, WeightsNotFoundError
from forensics.io import read_weight_file
from helpers import TINY_OPTIONS, no_hooks, tiny as tiny_detector, tiny_options

REFERENCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "reference-data"
RINE_2CLASS = REFERENCE_DATA / "rine" / "model_2class_trainable.pth"
UFD_FC = REFERENCE_DATA / "ufd" / "fc_weights.pth"

TINY = TINY_OPTIONS["backbone"]  # 56 px, patch 14 (4x4 grid), 4 blocks, width 64, 768-d embedding
BLOCKS, WIDTH, SIZE, GRID = 4, 64, 56, 4
CLIP_DETECTORS = [name for name in list_detectors() if tiny_options(name)]


def reference_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"reference data absent: {path}")
    return path


def tiny(name: str, **options) -> nn.Module:
    """The tiny detector with a small RINE head where the detector has one (nproj 2, proj_dim 16)."""
    small_head = {k: v for k, v in {"nproj": 2, "proj_dim": 16}.items() if k in get_config(name).options}
    return tiny_detector(name, **{**small_head, **options})


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def ln2_cls_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Independent capture: hook every resblock's ln_2, CLS = [:, 0] (batch-first), stack to [B, n, w]."""
    outs: dict[int, torch.Tensor] = {}
    handles = [blk.ln_2.register_forward_hook(lambda m, i, o, b=b: outs.__setitem__(b, o[:, 0]))
               for b, blk in enumerate(visual.transformer.resblocks)]
    try:
        visual(x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([outs[b] for b in range(len(outs))], dim=1)


def reference_rine_logit(sd: dict[str, torch.Tensor], g: torch.Tensor, nproj: int) -> torch.Tensor:
    """RINE's eval forward written out with torch.nn.functional from the head's state dict."""
    def proj(prefix: str, h: torch.Tensor) -> torch.Tensor:
        for k in range(nproj):
            h = F.relu(F.linear(h, sd[f"{prefix}.{3 * k + 1}.weight"], sd[f"{prefix}.{3 * k + 1}.bias"]))
        return h

    z = proj("proj2", torch.sum(torch.softmax(sd["alpha"], dim=1) * proj("proj1", g), dim=1))
    z = F.relu(F.linear(z, sd["head.0.weight"], sd["head.0.bias"]))
    z = F.relu(F.linear(z, sd["head.3.weight"], sd["head.3.bias"]))
    return F.linear(z, sd["head.6.weight"], sd["head.6.bias"])[:, 0]


# --------------------------------------------------------------------------- shapes, config
@pytest.mark.parametrize("name", CLIP_DETECTORS)
def test_forward_shapes_and_preprocessing(name):
    model = tiny(name)
    assert model.config.preprocessing.crop_size == SIZE and model.config.input_size == SIZE
    assert model.config.preprocessing.resize is None
    x = model.transform()(Image.new("RGB", (80, 70), (120, 30, 200))).unsqueeze(0)
    assert x.shape == (1, 3, SIZE, SIZE)
    assert model(images(3)).shape == (3,)
    assert no_hooks(model)


def test_rine_feature_layers_and_features():
    model = tiny("rine")
    assert [fl.name for fl in model.feature_layers()] == [f"blocks.{b}" for b in range(BLOCKS)]
    assert model.num_feature_maps() == BLOCKS * WIDTH
    assert str(model.feature_keys(["blocks.2"])[5]) == "blocks.2.#5(T=64)"
    f = model.forward_features(images())
    assert f.logit.shape == (2,) and f.z.shape == (2, 16) and f.tokens.shape == (2, BLOCKS, WIDTH)
    assert f.importances.shape == (BLOCKS, 16)


def test_ufd_feature_layer():
    model = tiny("ufd")
    assert [(fl.name, fl.channels) for fl in model.feature_layers()] == [("embedding", 768)]
    f = model.forward_features(images())
    assert f.embedding.shape == (2, 768)
    torch.testing.assert_close(f.logit, model.fc(model.clip(images()))[:, 0], rtol=0, atol=0)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", CLIP_DETECTORS)
def test_gradients_reach_input_in_explain_mode(name):
    model = tiny(name)
    model.train()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in before.items() if n.startswith("clip."))  # backbone frozen
    assert any(v for n, v in before.items() if not n.startswith("clip."))  # head trainable
    x = images().requires_grad_(True)
    with model.explain_mode():
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert model.training


# --------------------------------------------------------------------------- tokens and logit
def test_rine_tokens_and_logit_match_independent_computation():
    model = tiny("rine", nproj=2, proj_dim=16)
    x = images(3)
    g = ln2_cls_tokens(model.clip.visual, x)
    f = model.forward_features(x)
    assert torch.equal(f.tokens, g)
    sd = model.rine_head.state_dict()
    assert sorted(sd) == sorted(["alpha", "proj1.1.weight", "proj1.1.bias", "proj1.4.weight", "proj1.4.bias",
                                 "proj2.1.weight", "proj2.1.bias", "proj2.4.weight", "proj2.4.bias",
                                 "head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias",
                                 "head.6.weight", "head.6.bias"])
    torch.testing.assert_close(f.logit, reference_rine_logit(sd, g, nproj=2), rtol=1e-6, atol=1e-6)
    with model.record("blocks.3") as rec:
        model(x)
    assert torch.equal(rec["blocks.3"], g[:, 3])


def test_rine_importances_sum_to_one_over_blocks():
    model = tiny("rine")
    a = model.importances()
    assert a.shape == (BLOCKS, 16)
    torch.testing.assert_close(a.sum(dim=0), torch.ones(16))
    torch.testing.assert_close(a, torch.softmax(model.rine_head.alpha, dim=1)[0])


# --------------------------------------------------------------------------- probes
def test_rine_mask_zeroes_one_channel_of_one_block_only():
    model = tiny("rine")
    x = images()
    layers = [f"blocks.{b}" for b in range(BLOCKS)]
    seen: dict[str, torch.Tensor] = {}
    spy = [model.clip.visual.register_forward_hook(lambda m, i, o: seen.__setitem__("embedding", o)),
           model.clip.resblocks[2].register_forward_hook(lambda m, i, o: seen.__setitem__("block2", o))]
    with model.record(layers) as base:
        logit = model(x)
    clean = dict(seen)
    with model.mask(["blocks.2.#5(T=64)"]), model.record(layers) as masked:
        masked_logit = model(x)
    for h in spy:
        h.remove()
    assert torch.all(masked["blocks.2"][:, 5] == 0) and torch.any(base["blocks.2"][:, 5] != 0)
    keep = [c for c in range(WIDTH) if c != 5]
    assert torch.equal(masked["blocks.2"][:, keep], base["blocks.2"][:, keep])
    for b in (0, 1, 3):
        assert torch.equal(masked[f"blocks.{b}"], base[f"blocks.{b}"])
    assert torch.equal(seen["embedding"], clean["embedding"]) and torch.equal(seen["block2"], clean["block2"])
    assert not torch.equal(masked_logit, logit)  # the head sees the masked token
    assert no_hooks(model)
    assert torch.equal(model(x), logit)


def test_ufd_mask_embedding_channel():
    model = tiny("ufd")
    x = images()
    with model.mask(["embedding.#7(T=768)"]), model.record("embedding") as rec:
        masked = model(x)
    emb = model.clip(x)
    assert torch.all(rec["embedding"][:, 7] == 0)
    torch.testing.assert_close(masked, model.fc(emb * (torch.arange(768) != 7))[:, 0])
    assert no_hooks(model)


# --------------------------------------------------------------------------- Grad-CAM
def test_gradcam_layer_and_reshape():
    model = tiny("rine", cam_block=1)
    (layer,) = model.gradcam_layers()
    assert layer is model.clip.resblocks[1].ln_1
    ufd = tiny("ufd")
    assert ufd.gradcam_layers() == [ufd.clip.resblocks[BLOCKS - 1].ln_1]
    tokens = torch.arange(2 * (1 + GRID * GRID) * WIDTH, dtype=torch.float32).reshape(2, 1 + GRID * GRID, WIDTH)
    grid = model.gradcam_reshape()(tokens)
    assert grid.shape == (2, WIDTH, GRID, GRID)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2]) and torch.equal(grid[:, :, 1, 0], tokens[:, 1 + GRID])
    with pytest.raises(ValueError, match="cam_block"):
        tiny("rine", cam_block=BLOCKS)


@pytest.mark.parametrize("name", CLIP_DETECTORS)
def test_gradcam_runs_with_pytorch_grad_cam(name):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
    model = tiny(name)
    with model.explain_mode():
        cam = GradCAM(model=model, target_layers=model.gradcam_layers(), reshape_transform=model.gradcam_reshape())
        # explain mode freezes every parameter: the graph exists only if the input requires grad
        heat = cam(input_tensor=images().requires_grad_(True), targets=[BinaryClassifierOutputTarget(1)] * 2)
        cam.activations_and_grads.release()
    assert heat.shape == (2, SIZE, SIZE)
    assert no_hooks(model)


# --------------------------------------------------------------------------- released heads
def test_official_rine_2class_head_loads_strictly():
    path = reference_file(RINE_2CLASS)
    state = read_weight_file(path)
    assert RineDetector.infer_options(state, str(path)) == {"nproj": 4, "proj_dim": 128}
    assert HeadGeometry.of(state, str(path)) == HeadGeometry(blocks=24, width=1024, nproj=4, proj_dim=128)
    head = RineHead(blocks=24, width=1024, nproj=4, proj_dim=128)
    head.load_state(state, source=str(path))
    assert sum(p.numel() for p in head.parameters()) == 283_009
    own = head.state_dict()
    assert sorted(own) == sorted(state) and all(torch.equal(own[k], state[k]) for k in state)
    assert head.head[6].bias.item() == pytest.approx(0.0932, abs=1e-4)
    head.eval()
    g = torch.randn(2, 24, 1024)
    logit, z = head(g)
    assert logit.shape == (2,) and z.shape == (2, 128)
    torch.testing.assert_close(logit, reference_rine_logit(state, g, nproj=4), rtol=1e-5, atol=1e-5)


def test_rine_head_with_wrong_block_count_names_the_file():
    path = reference_file(RINE_2CLASS)
    with pytest.raises(CheckpointError, match=r"model_2class_trainable\.pth.*24 blocks x width 1024.*12 blocks"):
        RineHead(blocks=12, width=768, nproj=4, proj_dim=128).load_state(read_weight_file(path), source=str(path))
    with pytest.raises(CheckpointError, match=r"model_2class_trainable\.pth.*4 blocks x width 64"):
        create("rine", weights=path, **TINY_OPTIONS)


def test_rine_checkpoint_roundtrip_in_own_formats(tmp_path):
    model = tiny("rine", nproj=2, proj_dim=16)
    x = images()
    expected = model(x)
    head_file = tmp_path / "head.pth"
    torch.save(model.rine_head.state_dict(), head_file)  # the reference's format
    loaded = create("rine", weights=head_file, **TINY_OPTIONS)  # nproj / proj_dim inferred
    assert (loaded.config.options["nproj"], loaded.config.options["proj_dim"]) == (2, 16)
    loaded.load_state(model.state_dict(), source="detector state dict")  # clip.* + rine_head.*
    assert torch.equal(loaded(x), expected)
    with pytest.raises(CheckpointError, match="not a RINE head"):
        RineDetector.infer_options({"weight": torch.zeros(1, 768)}, "fc.pth")


def test_official_ufd_fc_loads(tmp_path):
    path = reference_file(UFD_FC)
    model = create("ufd", weights=path, **TINY_OPTIONS)
    assert model.fc.weight.shape == (1, 768)
    assert model.fc.bias.item() == pytest.approx(-0.5167, abs=1e-4)
    assert torch.equal(model.fc.weight, read_weight_file(path)["weight"])
    wrapped = tmp_path / "ufd_training.pth"  # UFD trainer format, fc under 'fc.' in {'model': ...}
    torch.save({"model": {"fc.weight": torch.ones(1, 768), "fc.bias": torch.zeros(1)}, "total_steps": 3}, wrapped)
    assert torch.equal(create("ufd", weights=wrapped, **TINY_OPTIONS).fc.weight, torch.ones(1, 768))
    bad = tmp_path / "fc32.pth"
    torch.save({"weight": torch.zeros(1, 32), "bias": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="fc32.pth"):
        create("ufd", weights=bad, **TINY_OPTIONS)


# --------------------------------------------------------------------------- backbone weights
def test_backbone_loads_openai_format_and_visual_only_dicts(tmp_path):
    torch.manual_seed(3)
    # full CLIP (visual + text keys); frozen like the backbone, so both take the same attention path
    source = open_clip_module().create_model(TINY, pretrained=None).eval().requires_grad_(False)
    full = source.state_dict()
    assert any(k.startswith("visual.transformer.resblocks.0.ln_2") for k in full) and "token_embedding.weight" in full
    x = images()
    expected_tokens = ln2_cls_tokens(source.visual, x)
    expected_embedding = source.encode_image(x)

    full_file = tmp_path / "clip_full.pt"
    torch.save(full, full_file)
    model = create("rine", backbone=TINY, backbone_weights=str(full_file), nproj=1, proj_dim=16)
    assert model.clip.weights_source == str(full_file)
    assert torch.equal(model.forward_features(x).tokens, expected_tokens)
    assert sorted(model.clip.state_dict()) == sorted(k for k in full if k.startswith("visual."))  # no text tower

    from safetensors.torch import save_file
    visual_file = tmp_path / "visual.safetensors"  # visual-only, no prefix
    save_file({k: v.contiguous() for k, v in source.visual.state_dict().items()}, str(visual_file))
    prefixed_file = tmp_path / "visual_prefixed.pth"  # visual-only, with the prefix
    torch.save({k: v for k, v in full.items() if k.startswith("visual.")}, prefixed_file)
    for f in (visual_file, prefixed_file):
        backbone = ClipVisionBackbone(TINY, f).eval()
        assert torch.equal(backbone(x), expected_embedding)
        assert not any(p.requires_grad for p in backbone.parameters())

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(full_file.read_bytes()[: full_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        ClipVisionBackbone(TINY, truncated)
    incomplete = tmp_path / "incomplete.pth"
    torch.save({k: v for k, v in full.items() if "resblocks.3" not in k}, incomplete)
    with pytest.raises(CheckpointError, match=r"(?s)incomplete\.pth.*missing keys"):
        ClipVisionBackbone(TINY, incomplete)


def test_missing_backbone_weights_and_unknown_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSICS_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError):
        create("rine", backbone=TINY)  # default backbone_weights: clip.vit_l14_openai
    with pytest.raises(KeyError, match="no-such-vit"):
        create("ufd", backbone="no-such-vit", backbone_weights=None)


@pytest.mark.slow
def test_official_rine_head_on_full_vit_l14():
    """Builds the real ViT-L/14 geometry (random backbone weights): ~1.2 GB, several seconds on CPU."""
    path = reference_file(RINE_2CLASS)
    model = create("rine", weights=path, backbone_weights=None)
    assert (model.clip.blocks, model.clip.width, model.clip.grid, model.clip.embed_dim) == (24, 1024, 16, 768)
    assert model.config.preprocessing.crop_size == 224
    assert model(torch.randn(1, 3, 224, 224)).shape == (1,)
