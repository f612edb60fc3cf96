"""Grad-CAM / Guided Grad-CAM (forensics.explain.cam), the overlay helpers (forensics.plots) and the
analyses/gradcam.py and analyses/lrp_heatmaps.py CLIs on tiny models and a generated folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.explain.cam import gradcam, guided_gradcam, input_gradient, relu_network
from forensics.explain.figures import to_uint8
from forensics.plots import TFF_CMAP, image_grid, overlay, positive_heatmap, save_figure
from helpers import (assert_restored, calibrated, calibrated_cached, no_hooks, run_script as run_helper, single_thread,
                     snapshot, tiny_rine)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    """Models and input sizes: 64 px gives 2x2 maps at the CNNs' Grad-CAM layers (at 32 px they are
    1x1 and every min-max-scaled CAM is 0). BN calibrated at 32 px (cheaper; only the statistics)."""
    with single_thread():
        return {"resnet50": (calibrated_cached("resnet50", 0, 32), 64), "efb0": (calibrated("efb0", size=32), 64),
                "rine": (tiny_rine(nproj=1), 56)}


@pytest.mark.parametrize("name", ["resnet50", "efb0", "rine"])
def test_gradcam_targets_shapes_and_restoration(models, name):
    model, size = models[name]
    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    # mark one parameter trainable and give it a grad: both must survive (grad-cam calls zero_grad)
    param = next(model.parameters())
    param.requires_grad_(True)
    param.grad = torch.ones_like(param)
    with torch.no_grad():
        before_out = model(x)
    grad = param.grad
    before = snapshot(model)
    with single_thread():
        fake = gradcam(model, x, "fake")
        real = gradcam(model, x, "real")
        guided = guided_gradcam(model, x, "fake")
    assert fake.shape == real.shape == (3, size, size) and fake.dtype == torch.float32
    assert float(fake.min()) >= 0 and float(fake.max()) <= 1 + 1e-6 and float(fake.max()) > 0.99
    assert not torch.allclose(fake, real)  # the real CAM is the Grad-CAM of the negated logit
    assert guided.cam.shape == (3, size, size) and guided.product.shape == x.shape
    assert guided.guided == (name == "resnet50")
    assert guided.label == ("Guided Grad-CAM" if name == "resnet50" else "Grad-CAM x gradient")
    with torch.no_grad():
        after_out = model(x)
    assert torch.equal(before_out, after_out)
    assert_restored(before, model)
    assert no_hooks(model) and param.grad is grad  # the same gradient tensor, untouched
    param.grad = None
    param.requires_grad_(False)


def test_gradcam_rejects_implicit_targets(models):
    model, size = models["resnet50"]
    with pytest.raises(ValueError, match="target"):
        gradcam(model, torch.randn(1, 3, size, size), None)  # type: ignore[arg-type]


def test_real_cam_is_gradcam_of_negated_logit(models):
    model, size = models["resnet50"]
    x = torch.randn(2, 3, size, size)

    class Negated(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return -self.inner(z)
    neg = Negated(model)
    neg.gradcam_layers, neg.gradcam_reshape = model.gradcam_layers, model.gradcam_reshape
    neg.explain_mode, neg.name = model.explain_mode, model.name
    neg.device = model.device
    with single_thread():
        assert torch.allclose(gradcam(model, x, "real"), gradcam(neg, x, "fake"), atol=1e-6)


def test_guided_backprop_is_relu_only(models):
    r50, size = models["resnet50"]
    assert relu_network(r50) and not relu_network(models["efb0"][0]) and not relu_network(models["rine"][0])
    x = torch.randn(2, 3, size, size)
    with single_thread():
        guided = input_gradient(r50, x, "fake", guided=True)
        plain = input_gradient(r50, x, "fake", guided=False)
        assert not torch.allclose(guided, plain)
        assert torch.allclose(input_gradient(r50, x, "real", guided=False), -plain)
        with pytest.raises(ValueError, match="not a ReLU network"):
            input_gradient(models["efb0"][0], x, guided=True)


def test_overlay_and_figures(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    heat = np.linspace(0, 1, 600).reshape(20, 30)
    out = overlay(img, heat)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    black = overlay(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2)))
    assert np.array_equal(black[0, 0], np.rint(0.55 * np.array(TFF_CMAP(1.0)[:3]) * 255).astype(np.uint8))
    assert np.abs(overlay(img, np.zeros((20, 30))).astype(int) - 0.45 * img).max() <= 0.5 + 1e-9  # black heat
    with pytest.raises(ValueError):
        overlay(img, np.zeros((5, 5)))
    rel = np.zeros((3, 9, 9))
    rel[0, 4, 4] = 2.0
    rel[1, 0, 0] = -5.0
    assert positive_heatmap(rel).max() == 1.0 and positive_heatmap(rel).min() == 0.0
    assert positive_heatmap(rel, median=5).max() == 0.0  # an isolated pixel is removed by the median
    paths = save_figure(image_grid([[img, heat], [img]], row_labels=["a", "b"]), tmp_path / "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    again = save_figure(image_grid([[img, heat], [img]], row_labels=["a", "b"]), tmp_path / "again")
    assert [a.read_bytes() for a in again] == [p.read_bytes() for p in paths]  # no date stamp: byte-identical
    x = torch.zeros(1, 3, 4, 4)
    assert (to_uint8(x, (0.5,) * 3, (0.5,) * 3) == 128).all()


def run_script(name: str, argv: list[str]) -> int:
    return run_helper(ROOT / "analyses" / name, argv)


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam_cli")
    rng = np.random.default_rng(0)
    for sub in ("0_real", "1_fake"):
        d = root / "data" / "gen" / sub
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    with single_thread():
        model = calibrated_cached("resnet50", 0, 32)
    torch.save({"model": model.net.state_dict()}, root / "r50.pth")
    return root


@pytest.mark.parametrize("script,extra,subdir,maps", [
    ("gradcam.py", ["--target", "real", "--guided"], "resnet50/gen/real", ["cam", "cam_gb"]),
    ("lrp_heatmaps.py", ["--sign", "correct", "--explain_all"], "resnet50/gen", ["lrp"]),
])
def test_cli_writes_overlays(cli_data, script, extra, subdir, maps, capsys):
    out = cli_data / f"out_{script}"
    with single_thread():
        code = run_script(script, ["--arch", "resnet50", "--weights", str(cli_data / "r50.pth"), "--dataset_dir",
                                   str(cli_data / "data"), "--gan_name", "gen", "--crop", "none", "--max_images", "2",
                                   "--bsize", "2", "--device", "cpu", "--out", str(out), *extra])
    assert code == 0
    base = out / subdir
    images = sorted(p for p in base.iterdir() if p.is_dir())
    assert [p.name for p in images] == ["000_0", "001_1"]
    for folder in images:
        for key in ["image", *maps]:
            for suffix in ("png", "pdf"):
                assert (folder / f"{key}.{suffix}").stat().st_size > 0
        png = np.asarray(Image.open(folder / f"{maps[0]}.png").convert("RGB"))
        assert png.shape == (256, 256, 3)  # 64 px upscaled x4
    assert (base / "grid.png").stat().st_size > 0 and (base / "grid.pdf").stat().st_size > 0
    assert str(base) in capsys.readouterr().out


def test_cli_help():
    for script in ("gradcam.py", "lrp_heatmaps.py"):
        assert run_script(script, ["--help"]) == 0


def test_cli_embedded_default_path(cli_data, monkeypatch, tmp_path):
    """With no arguments the CLIs explain the first fakes of the benchmark's training-family test set
    (flat layout, full images); the benchmark and its trained detector are stubbed here (building them
    is the slow test of the defaults)."""
    from types import SimpleNamespace

    import forensics.cli.inputs as cli_inputs
    model = calibrated_cached("resnet50", 0, 32)
    bench = SimpleNamespace(test_root=cli_data / "data", train_family="gen", families=["gen"],
                            manifest={"image_size": 64})
    monkeypatch.setattr(cli_inputs, "embedded_default", lambda args: (model, bench))
    monkeypatch.chdir(tmp_path)
    with single_thread():
        assert run_script("gradcam.py", []) == 0
        assert run_script("lrp_heatmaps.py", ["--max_images", "1"]) == 0
    cams = sorted((tmp_path / "figures" / "gradcam" / "resnet50" / "gen" / "fake").glob("*/cam.png"))
    assert [p.parent.name for p in cams] == ["000_0", "001_1", "002_2"]  # the 3 fakes (< 8), reals not read
    assert (tmp_path / "figures" / "lrp_heatmaps" / "resnet50" / "gen" / "000_0" / "lrp.pdf").is_file()
