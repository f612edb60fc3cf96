"""Universal-detector training: Wang et al.'s augmentation (docs/training.md) and tiny CPU runs of
the ResNet-50 / EfficientNet-B0 trainer."""
from __future__ import annotations

import dataclasses
import logging
import random
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torchvision import transforms as T

from forensics.detectors import create
from forensics.train import augment as A
from forensics.train.checkpoint import BEST, LATEST, load_checkpoint
from forensics.train.common import TrainLog
from forensics.train.common import split_records
from forensics.cli.train_args import trainer_parser
from forensics.train.universal import LOG_FILE, UniversalOptions, UniversalTrainer, build_detector

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads per process made
    the tiny ResNet-50 steps 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _noise(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- augmentation
def test_blur_is_scipy_uint8_in_place_per_channel():
    img = _noise()
    expected = np.stack([gaussian_filter(img[:, :, c], 1.7) for c in range(3)], axis=2)  # uint8 passes
    out = A.gaussian_blur_uint8(img, 1.7)
    assert out is img and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    as_float = np.round(gaussian_filter(_noise().astype(np.float64), (1.7, 1.7, 0))).astype(np.uint8)
    assert (out != as_float).any()  # flooring after each 1-D pass differs from a float blur
    np.testing.assert_array_equal(A.gaussian_blur_uint8(_noise(), 0.0), _noise())


def test_quality_expansion():
    assert A.expand_quality([30, 100]) == tuple(range(30, 101)) and len(A.expand_quality([30, 100])) == 71
    assert A.expand_quality([75]) == (75,)
    assert A.expand_quality([30, 100], expand_range=False) == (30, 100)
    with pytest.raises(ValueError, match="one value or a range"):
        A.expand_quality([30, 60, 100])
    assert len(A.BlurJpeg(jpg_qual=(30, 100)).qualities) == 71
    assert A.BlurJpeg(jpg_qual=(30, 100), expand_quality_range=False).qualities == (30, 100)
    rine = A.BlurJpeg(jpg_prob=0.5, jpg_qual=(30, 100), expand_quality_range=False)
    assert dataclasses.replace(rine, jpg_prob=0.1).qualities == (30, 100)


@pytest.mark.parametrize("method", ["cv2", "pil"])
def test_jpeg_round_trip(method):
    img = _noise()
    out = A.jpeg_roundtrip(img, 50, method)
    assert out.shape == img.shape and out.dtype == np.uint8 and (out != img).any()


def test_blur_jpeg_identity_and_seeded():
    img = Image.fromarray(_noise())
    np.testing.assert_array_equal(np.array(A.BlurJpeg()(img)), np.array(img))
    aug = dict(blur_prob=0.5, blur_sig=(0.0, 3.0), jpg_prob=0.5, jpg_method=("cv2", "pil"), jpg_qual=(30, 100))
    first = A.BlurJpeg(**aug, rng=random.Random(3))
    second = A.BlurJpeg(**aug, rng=random.Random(3))
    outs = [[np.array(t(img)) for _ in range(6)] for t in (first, second)]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    assert any((o != np.array(img)).any() for o in outs[0])
    val = A.BlurJpeg(**aug).for_validation()  # get_val_opt: midpoint sigma and quality, PIL, probs kept
    assert (val.blur_sig, val.jpg_qual, val.jpg_method) == ((1.5,), (65,), ("pil",))
    assert (val.blur_prob, val.jpg_prob) == (0.5, 0.5)


def test_pipelines_order_grayscale_and_validation():
    img = Image.fromarray(_noise(40, 48))
    cfg = A.AugmentConfig(load_size=32, crop_size=28, gray_prob=1.0, blur_prob=0.5, jpg_prob=0.5)
    train = A.train_transform(cfg, normalize=False)
    kinds = [type(t) for t in train.transforms]
    assert kinds == [A.RandomResize, A.BlurJpeg, T.RandomCrop, T.RandomHorizontalFlip, T.RandomGrayscale, T.ToTensor]
    x = train(img)
    assert x.shape == (3, 28, 28) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert isinstance(A.train_transform(cfg).transforms[-1], T.Normalize)
    val = [type(t) for t in A.val_transform(cfg).transforms]  # stochastic blur/JPEG kept, no flip, no grayscale
    assert val == [A.RandomResize, A.BlurJpeg, T.CenterCrop, T.ToTensor, T.Normalize]
    clean = A.AugmentConfig(load_size=32, crop_size=28, gray_prob=1.0, gray_val=True, blur_prob=0.5, val_aug="none")
    assert [type(t) for t in A.val_transform(clean).transforms] == [A.RandomResize, T.CenterCrop, T.RandomGrayscale,
                                                                    T.ToTensor, T.Normalize]


# ---------------------------------------------------------------------------- model initialisation
def test_random_efb0_output_depends_on_input():
    torch.manual_seed(0)
    det = build_detector("efb0", init="random")
    ramp = torch.linspace(-2, 2, 64).expand(1, 3, 64, 64)
    checker = ((torch.arange(64)[:, None] + torch.arange(64)) % 2 * 4.0 - 2).expand(1, 3, 64, 64)
    x = torch.cat([ramp, checker, torch.randn(2, 3, 64, 64)])
    library = create("efb0")  # efficientnet_pytorch's from_name: PyTorch's per-layer defaults only
    with torch.no_grad():
        eval_spread = (det(x) - det(x)[0]).abs().max().item()
        library_spread = (library(x) - library(x)[0]).abs().max().item()  # 0.0 here: ~1e-13 features
        train_out = det.train()(x)
    assert eval_spread > max(100 * library_spread, 1e-7)
    assert train_out.std() > 1e-2


def test_imagenet_init_loads_body_or_falls_back_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FORENSICS_WEIGHTS", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="forensics.train.universal"):
        build_detector("efb0", init="imagenet")
    notices = [r for r in caplog.records if "ImageNet initialisation unavailable" in r.getMessage()]
    assert len(notices) == 1 and "efficientnet-b0-355c32eb.pth" in notices[0].getMessage()
    from efficientnet_pytorch import EfficientNet
    imagenet = EfficientNet.from_name("efficientnet-b0").state_dict()  # stands in for the 1000-class file
    (tmp_path / "init").mkdir()
    torch.save(imagenet, tmp_path / "init" / "efficientnet-b0-355c32eb.pth")
    det = build_detector("efb0", init="imagenet")
    assert torch.equal(det.net._conv_stem.weight, imagenet["_conv_stem.weight"])
    assert det.net._fc.weight.shape == (1, 1280)


def test_resnet50_head_init():
    torch.manual_seed(0)
    fc = build_detector("resnet50", init="random", init_gain=0.02).net.fc
    assert fc.weight.shape == (1, 2048) and abs(fc.weight.std().item() - 0.02) < 0.003


# ---------------------------------------------------------------------------- training runs
def _make_split(folder: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """n reals (smooth coloured ramps) and n fakes (the same plus a strong checkerboard)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for label in ("0_real", "1_fake"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.uniform(0.2, 1.0, 3) * ((xx + yy) / (2 * size) * 200)[..., None]
            if label == "1_fake":
                img = img + ((xx + yy) % 2 * 80)[..., None]
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / label / f"{i:03d}.png")


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    """train: 4 + 4 images and a corrupt file that sorts last, so with ``--batch_size 8
    --serial_batches`` every epoch is one step on the same 8 images followed by a batch holding
    only the corrupt file (no step); val: 2 + 2 images."""
    root = tmp_path_factory.mktemp("forensynths")
    _make_split(root / "train", 4)
    _make_split(root / "val", 2, seed=1)
    (root / "train" / "1_fake" / "zz_corrupt.png").write_bytes(b"not an image")
    return root


def _args(detector: str, root: Path, run: str, *extra: str) -> UniversalOptions:
    parser = trainer_parser(UniversalOptions)
    parser.add_argument("--detector")
    return UniversalOptions.from_args(parser.parse_args([
        "--detector", detector, "--dataroot", str(root), "--checkpoints_dir", str(root / "ck"), "--name", run,
        "--loadSize", "32", "--cropSize", "32", "--batch_size", "8", "--serial_batches", "--no_flip",
        "--init", "random", "--device", "cpu", "--loss_freq", "1", "--save_epoch_freq", "0",
        "--val_every", "1000", *extra]))


def _log(run_dir: Path, event: str) -> list[dict]:
    return [r for r in TrainLog(run_dir / LOG_FILE).read() if r["event"] == event]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _log(run_dir, "loss")}


def _assert_reloads(detector: str, best: Path, model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    reloaded = create(detector, weights=best)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model.eval()(x), rtol=0, atol=1e-5)


def test_r50_trains_skips_corrupt_file_and_reloads(dataroot):
    trainer = UniversalTrainer(_args("resnet50", dataroot, "r50", "--max_steps", "3"))
    best = trainer.fit()
    losses = _losses(trainer.run_dir)
    assert sorted(losses) == [1, 2, 3] and losses[3] < losses[2] < losses[1]
    # listed once per epoch; the run stopped in epoch 2 before reaching the corrupt file's batch
    corrupt = str(dataroot / "train" / "1_fake" / "zz_corrupt.png")
    data = [r for r in _log(trainer.run_dir, "data") if r["split"] == "train"]
    assert [[s["path"] for s in r["skipped"]] for r in data] == [[corrupt], [corrupt], []]
    assert all(r["used"] == 8 for r in data)
    # a single validation (at the end), so the best checkpoint holds the final weights
    assert best == trainer.run_dir / BEST and len(_log(trainer.run_dir, "val")) == 1
    _assert_reloads("resnet50", best, trainer.model)


def test_efb0_trains_and_resume_equals_uninterrupted_run(dataroot):
    straight = UniversalTrainer(_args("efb0", dataroot, "efb0_straight", "--max_steps", "3"))
    best = straight.fit()
    losses = _losses(straight.run_dir)
    assert losses[3] < losses[1]
    _assert_reloads("efb0", best, straight.model)

    UniversalTrainer(_args("efb0", dataroot, "efb0_split", "--max_steps", "1")).fit()  # stops inside epoch 0
    split = UniversalTrainer(_args("efb0", dataroot, "efb0_split", "--max_steps", "3", "--resume"))
    split.fit()
    ck = load_checkpoint(split.run_dir / LATEST)
    assert (ck["total_steps"], ck["epoch"], ck["epoch_batch"]) == (3, 2, 1)
    assert int(ck["optimizer"]["state"][0]["step"]) == 3  # Adam's moments continued, not restarted
    assert [r["step"] for r in _log(split.run_dir, "resume")] == [1]
    assert _losses(split.run_dir) == losses
    a, b = straight.model.net.state_dict(), split.model.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_drops_lr_then_stops_and_stays_stopped(dataroot):
    # patience 1 and a validation per step: the accuracy of an untrained model does not improve, so
    # lr 1e-5 -> 1e-6 (fresh stopper, which saves best on its first call) -> below 1e-6: stop (§B.6)
    args = ("--lr", "1e-5", "--earlystop_epoch", "1", "--val_every", "1", "--max_steps", "10")
    trainer = UniversalTrainer(_args("efb0", dataroot, "efb0_es", *args))
    trainer.fit()
    assert [r["acc"] for r in _log(trainer.run_dir, "val")] == [0.5] * 4
    assert [r["lr"] for r in _log(trainer.run_dir, "lr_drop")] == [pytest.approx(1e-6)]
    assert [r["step"] for r in _log(trainer.run_dir, "best")] == [1, 3]
    assert [r["step"] for r in _log(trainer.run_dir, "early_stop")] == [4]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert load_checkpoint(trainer.run_dir / LATEST)["stopped_by"] == "early_stop"
    UniversalTrainer(_args("efb0", dataroot, "efb0_es", *args, "--resume")).fit()
    assert sorted(_losses(trainer.run_dir)) == [1, 2, 3, 4]  # a finished schedule is not restarted


def test_list_split_layouts(tmp_path):
    for folder in ("flat/train", "cls/train/car", "cls/train/cat"):
        _make_split(tmp_path / folder, 1, size=8)
    assert len(split_records(tmp_path / "flat", "train", None)) == 2
    assert len(split_records(tmp_path / "flat", "train", [])) == 2
    assert len(split_records(tmp_path / "cls", "train", None)) == 4
    assert [r.source for r in split_records(tmp_path / "cls", "train", ["cat"])] == ["cat", "cat"]


def test_cli_help_lists_options(capsys):
    main = runpy.run_path(str(ROOT / "analyses" / "train.py"))["main"]
    with pytest.raises(SystemExit) as exc:
        main(["--detector", "resnet50", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataroot", "--blur_sig", "--jpg_qual", "--color_robust", "--gray_val", "--val_aug",
                   "--max_steps", "--val_every", "--resume", "--init", "--amp", "--earlystop_epoch"):
        assert option in text


def test_bn_momentum_option_sets_every_batchnorm(dataroot):
    default = UniversalTrainer(_args("efb0", dataroot, "efb0_bn_default"))
    bns = [m for m in default.model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.01) for m in bns)  # efficientnet_pytorch's own
    trainer = UniversalTrainer(_args("efb0", dataroot, "efb0_bn", "--bn_momentum", "0.1"))
    bns = [m for m in trainer.model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 49 and {m.momentum for m in bns} == {0.1}
    with pytest.raises(ValueError, match="momentum"):
        UniversalTrainer(_args("efb0", dataroot, "efb0_bn_bad", "--bn_momentum", "0"))
