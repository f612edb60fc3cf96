"""RINE / UFD training and the frozen-CLIP feature cache, on the tiny backbone (56 px, 4 blocks,
width 64) and ~24 generated 64x64 images with trivially separable fakes (dark reals, bright fakes)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.data.layouts import ImageRecord, forensynths
from forensics.detectors import create
from forensics.detectors.clip_backbone import ClipVisionBackbone
from forensics.detectors.rine import RineHead
from forensics.cli.train_args import trainer_parser
from forensics.train import get_trainer
from forensics.detectors import feature_cache as fc_mod
from forensics.train import rine as rine_trainer
from forensics.train import ufd as ufd_trainer
from forensics.train.checkpoint import LATEST, load_checkpoint
from forensics.detectors.feature_cache import backbone_features, extract_or_load
from forensics.train.losses import supcon_loss

TINY = "forensics-tiny-vit"
CLASSES = ("a", "b")


# --------------------------------------------------------------------------- fixtures
def _write_split(root: Path, per_side: int, rng: np.random.Generator) -> None:
    for cls in CLASSES:
        for label_dir, lo, hi in (("0_real", 0, 90), ("1_fake", 165, 256)):
            folder = root / cls / label_dir
            folder.mkdir(parents=True)
            for i in range(per_side):
                Image.fromarray(rng.integers(lo, hi, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``train/{a,b}/{0_real,1_fake}`` (4 images each: 16) and ``val/...`` (2 each: 8)."""
    root = tmp_path_factory.mktemp("forensynths")
    rng = np.random.default_rng(0)
    _write_split(root / "train", 4, rng)
    _write_split(root / "val", 2, rng)
    return root


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    """A tiny backbone's visual state dict on disk, so trainer and reloaded model share it."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("backbone") / "tiny.pth"
    torch.save(ClipVisionBackbone(TINY).visual.state_dict(), path)
    return path


def trainer_args(detector: str, data: Path, backbone: Path, out: Path, *extra: str):
    options = get_trainer(detector).options
    argv = ["--dataroot", str(data), "--backbone", TINY, "--backbone_weights", str(backbone),
            "--checkpoints_dir", str(out), "--batch_size", "8", "--device", "cpu", "--num_threads", "0", *extra]
    return options.from_args(trainer_parser(options).parse_args(argv))


def probe_images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 56, 56, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- SupCon
def supcon_numpy(f: np.ndarray, y: np.ndarray, t: float = 0.07) -> float:
    """Khosla et al. (NeurIPS 2020) written out anchor by anchor (docs/training.md)."""
    losses = []
    for i in range(len(f)):
        s = f @ f[i] / t
        s = s - s.max()
        others = [k for k in range(len(f)) if k != i]
        log_den = np.log(sum(np.exp(s[k]) for k in others))
        pos = [j for j in others if y[j] == y[i]]
        losses.append(-np.mean([s[j] - log_den for j in pos]) if pos else 0.0)
    return float(np.mean(losses))


@pytest.mark.parametrize("labels", [[0, 0, 1, 1], [0, 1, 0, 2]])
def test_supcon_matches_hand_computation(labels):
    f = np.array([[1.0, 0.2, 0.0], [0.8, 0.5, 0.1], [-0.3, 1.0, 0.4], [0.1, -0.6, 1.0]])
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    expected = supcon_numpy(f, np.array(labels))
    got = supcon_loss(torch.tensor(f, dtype=torch.float64), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # one view given as [B, 1, D] is the same loss
    assert supcon_loss(torch.tensor(f).unsqueeze(1), torch.tensor(labels)).item() == pytest.approx(expected)


# --------------------------------------------------------------------------- RINE
def separable_tokens(n: int = 16, shape: tuple[int, ...] = (4, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(n) % 2
    feats = torch.randn(n, *shape, generator=gen) + labels.view(-1, *([1] * len(shape))) * 0.7
    return feats, labels


def test_rine_steps_decrease_loss():
    torch.manual_seed(0)
    head = RineHead(blocks=4, width=64, nproj=1, proj_dim=16)  # the tiny backbone's geometry
    tokens, labels = separable_tokens()
    source = rine_trainer.TensorFeatureSource(tokens, labels, batch_size=16, device=torch.device("cpu"))
    loss_fn = rine_trainer.rine_step_loss(factor=0.2)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)  # 10x the recipe: few steps
    before = rine_trainer.evaluate(head, source, loss_fn)["loss"]
    for _ in range(30):
        rine_trainer.train_epoch(head, source, optimizer, loss_fn)
    after = rine_trainer.evaluate(head, source, loss_fn)["loss"]
    assert after < 0.5 * before


def test_rine_train_save_reload_resume(data, backbone_file, tmp_path):
    args = trainer_args("rine", data, backbone_file, tmp_path, "--nproj", "1", "--proj_dim", "16",
                        "--classes", "a,b")
    result = rine_trainer.train(args)
    head = torch.load(result.weights, map_location="cpu", weights_only=True)
    assert result.weights.name == "model_rine_trainable.pth" and type(head) is dict
    assert set(head) == {"alpha", "proj1.1.weight", "proj1.1.bias", "proj2.1.weight", "proj2.1.bias",
                         "head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias", "head.6.weight",
                         "head.6.bias"}
    reloaded = create("rine", weights=result.weights, backbone=TINY, backbone_weights=backbone_file)
    assert reloaded.config.options["nproj"] == 1 and reloaded.config.options["proj_dim"] == 16
    x = probe_images()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), result.model(x), rtol=0, atol=1e-6)
    first = load_checkpoint(result.run_dir / LATEST)
    assert first["epoch"] == 1 and first["total_steps"] == 2  # 16 images, batch 8
    args2 = trainer_args("rine", data, backbone_file, tmp_path, "--nproj", "1", "--proj_dim", "16",
                         "--classes", "a,b", "--epochs", "2", "--resume")
    resumed = rine_trainer.train(args2)
    second = load_checkpoint(resumed.run_dir / LATEST)
    assert second["epoch"] == 2 and second["total_steps"] == 4
    assert [h["epoch"] for h in resumed.history] == [2]
    assert np.isfinite(resumed.history[0]["val_loss"]) and 0.0 <= resumed.history[0]["val_acc"] <= 1.0


def test_rine_lr_steps():
    assert [rine_trainer.lr_at_epoch(1e-3, e, [6, 11]) for e in (1, 5, 6, 10, 11, 15)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_rine_trains_on_feature_cache(data, backbone_file, tmp_path):
    cache = tmp_path / "cache"
    args = trainer_args("rine", data, backbone_file, tmp_path, "--nproj", "1", "--proj_dim", "16",
                        "--epochs", "2", "--feature_cache", str(cache), "--cache_dtype", "float16")
    result = rine_trainer.train(args)
    assert len(result.history) == 2 and len(list(cache.glob("ln_2-*.safetensors"))) == 2  # train + val
    assert load_checkpoint(result.run_dir / LATEST)["total_steps"] == 4


# --------------------------------------------------------------------------- UFD
def test_ufd_steps_decrease_loss():
    torch.manual_seed(0)
    fc = torch.nn.Linear(768, 1)  # the tiny backbone's embedding size
    ufd_trainer.reset_fc(fc)
    emb, labels = separable_tokens(shape=(768,))
    source = rine_trainer.TensorFeatureSource(emb, labels, batch_size=16, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(fc.parameters(), lr=1e-3, weight_decay=0.0)
    before = rine_trainer.evaluate(fc, source, ufd_trainer.ufd_step_loss)["loss"]
    for _ in range(10):
        rine_trainer.train_epoch(fc, source, optimizer, ufd_trainer.ufd_step_loss)
    after = rine_trainer.evaluate(fc, source, ufd_trainer.ufd_step_loss)["loss"]
    assert after < 0.8 * before


def test_ufd_train_save_reload_resume(data, backbone_file, tmp_path):
    args = trainer_args("ufd", data, backbone_file, tmp_path, "--niter", "1", "--loadSize", "64")
    result = ufd_trainer.train(args)
    sd = torch.load(result.weights, map_location="cpu", weights_only=True)
    assert result.weights.name == "fc_weights.pth" and isinstance(sd, OrderedDict)
    assert list(sd) == ["weight", "bias"] and sd["weight"].shape == (1, 768) and sd["bias"].shape == (1,)
    reloaded = create("ufd", weights=result.weights, backbone=TINY, backbone_weights=backbone_file)
    x = probe_images()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), result.model(x), rtol=0, atol=1e-6)
    assert load_checkpoint(result.run_dir / LATEST)["total_steps"] == 2
    args2 = trainer_args("ufd", data, backbone_file, tmp_path, "--niter", "2", "--loadSize", "64", "--resume")
    resumed = ufd_trainer.train(args2)
    ckpt = load_checkpoint(resumed.run_dir / LATEST)
    assert ckpt["epoch"] == 2 and ckpt["total_steps"] == 4 and [h["epoch"] for h in resumed.history] == [2]


def test_ufd_early_stopping_schedule_on_cache(data, backbone_file, tmp_path):
    """Patience 1 on a set the probe cannot improve on quickly: lr drops 1e-4 -> 1e-5 -> 1e-6, then stops."""
    args = trainer_args("ufd", data, backbone_file, tmp_path, "--niter", "30", "--loadSize", "64",
                        "--earlystop_epoch", "1", "--feature_cache", str(tmp_path / "cache"))
    history = ufd_trainer.train(args).history
    actions = [h["action"] for h in history]
    assert actions[-1] == "stop" and actions.count("lr_drop") == 2
    assert sorted({h["lr"] for h in history}, reverse=True) == pytest.approx([1e-4, 1e-5, 1e-6])


# --------------------------------------------------------------------------- feature cache
def count_forwards(model) -> list[int]:
    calls = [0]
    model.clip.visual.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_feature_cache_reuse_invalidation_and_values(data, backbone_file, tmp_path):
    records = forensynths(data / "train")
    model = create("rine", backbone=TINY, backbone_weights=backbone_file, nproj=1, proj_dim=16)
    calls = count_forwards(model)
    first = extract_or_load(model, records, "ln_2", tmp_path, batch_size=5, progress=False)
    assert not first.summary.hit and calls[0] == 4 and first.features.shape == (16, 4, 64)
    second = extract_or_load(model, records, "ln_2", tmp_path, batch_size=5, progress=False)
    assert second.summary.hit and calls[0] == 4  # no backbone forward
    assert torch.equal(second.features, first.features) and torch.equal(second.indices, torch.arange(16))
    # equal to fresh features of the eval transform
    transform = model.transform()
    x = torch.stack([transform(Image.open(records[i].path).convert("RGB")) for i in (0, 9)])
    with torch.no_grad():
        fresh = backbone_features(model.clip, x, "ln_2")
    torch.testing.assert_close(second.features[[0, 9]], fresh, rtol=0, atol=1e-5)
    # a different file list, a different backbone, a different site: recomputed
    assert not extract_or_load(model, records[:-1], "ln_2", tmp_path, batch_size=8, progress=False).summary.hit
    torch.manual_seed(99)
    other = create("rine", backbone=TINY, backbone_weights=None, nproj=1, proj_dim=16)
    torch.manual_seed(99)
    twin = create("rine", backbone=TINY, backbone_weights=None, nproj=1, proj_dim=16)
    assert not extract_or_load(other, records, "ln_2", tmp_path, batch_size=8, progress=False).summary.hit
    assert extract_or_load(twin, records, "ln_2", tmp_path, batch_size=8, progress=False).summary.hit  # same tensors
    emb = extract_or_load(model, records, "embedding", tmp_path, batch_size=8, progress=False)
    assert not emb.summary.hit and emb.features.shape == (16, 768)
    assert calls[0] == 4 + 1 + 2 + 2  # first extraction, the fresh batch, two recomputations


def test_feature_cache_backbone_file_change_invalidates(data, backbone_file, tmp_path):
    records = forensynths(data / "val")
    model = create("ufd", backbone=TINY, backbone_weights=backbone_file)
    assert not extract_or_load(model, records, "embedding", tmp_path / "c", progress=False).summary.hit
    changed = tmp_path / "tiny2.pth"
    torch.manual_seed(5)
    torch.save(ClipVisionBackbone(TINY).visual.state_dict(), changed)
    model2 = create("ufd", backbone=TINY, backbone_weights=changed)
    assert not extract_or_load(model2, records, "embedding", tmp_path / "c", progress=False).summary.hit
    assert fc_mod.weights_fingerprint(model.clip)["file"] == str(backbone_file.resolve())


def test_feature_cache_skips_and_lists_corrupt_image(data, backbone_file, tmp_path):
    records = forensynths(data / "val")
    bad = tmp_path / "1_fake" / "zz_corrupt.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records = records[:3] + [ImageRecord(bad, 1, "val")] + records[3:]
    backbone = ClipVisionBackbone(TINY, weights=backbone_file)
    out = extract_or_load(backbone, records, "block", tmp_path / "c", batch_size=4, progress=False)
    assert [p for p, _ in out.summary.skipped] == [str(bad)]
    assert len(out.features) == len(records) - 1 and 3 not in out.indices.tolist()
    assert out.labels.tolist() == [records[i].label for i in out.indices.tolist()]
    again = extract_or_load(backbone, records, "block", tmp_path / "c", batch_size=4, progress=False)
    assert again.summary.hit and [p for p, _ in again.summary.skipped] == [str(bad)]
    assert torch.equal(again.indices, out.indices)
