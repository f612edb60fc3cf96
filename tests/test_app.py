"""The explorer's library side (forensics.app.sources, forensics.app.session) and page handler without a browser:
uploads refused with a message, the same numbers as the library (predict_records, explain_records), failing
methods isolated in their cells, masks found beside a data set's class folders, downloads that read back.
The page in a real browser: tests/test_app_browser.py."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.analysis.heatmaps import explain_records
from forensics.analysis.inference import predict_records
from forensics.app.session import THRESHOLD, cell_overlay, image_figure, run_explorer, write_downloads
from forensics.app.sources import (DetectorCache, DetectorSource, check_upload, dataset_records, ground_truth_mask,
                                   method_options, split_uploads)
from forensics.data import ImageRecord

from helpers import calibrated, tiny_rine

pytestmark = pytest.mark.usefixtures("one_thread")


def write_png(path: Path, seed: int = 0, side: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def loaded(source: DetectorSource, detector) -> DetectorCache:
    """A cache that already holds ``detector`` for ``source`` (no weights to load in tests)."""
    cache = DetectorCache()
    cache._loaded[source] = detector
    return cache


@pytest.fixture(scope="module")
def r50():
    return calibrated("resnet50", preprocessing={"crop": "none"})


def test_uploads_are_checked_with_a_message_per_refused_file(tmp_path):
    good = write_png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    records, refused = split_uploads([good, bad, cut, text, tmp_path / "gone.png"])
    assert [r.path for r in records] == [good] and records[0].source == "upload"
    assert [m.split(":")[0] for m in refused] == ["bad.png", "cut.png", "notes.png", "gone.png"]
    assert "cannot be read" in refused[-1]
    assert check_upload(good) is None
    too_big = check_upload(good, max_bytes=100)
    assert too_big.startswith("good.png:") and "over the explorer's limit" in too_big
    bomb = tmp_path / "bomb.png"  # a small file of 108 M pixels: refused before decoding
    Image.new("L", (12000, 9000)).save(bomb)
    assert bomb.stat().st_size < 1_000_000 and "exceeds the limit" in check_upload(bomb)


def test_method_options_come_from_the_methods_themselves():
    assert method_options("lrp")["composite"] == "beta0"
    assert method_options("integrated_gradients")["n_steps"] == 50
    assert method_options("gradcam") == {}


def test_run_equals_the_library_and_isolates_a_failing_method(tmp_path, r50):
    images = [write_png(tmp_path / f"img{i}.png", seed=i) for i in range(2)]
    records = [ImageRecord(p, None, "upload") for p in images]
    source = DetectorSource("random r50", "resnet50", weights="unused")
    steps = []
    run = run_explorer(records, [source], ["lrp", "saliency", "gradcam", "cp_lrp"], loaded(source, r50),
                       options={"lrp": {"composite": "nope"}}, progress=lambda f, t: steps.append((f, t)))
    assert steps[-1] == (1.0, "done") and all(0 <= f <= 1 for f, _ in steps)
    preds = predict_records(r50, records, progress=False)
    # analyses/explain.py's computation on the same images (batched as the page batches them)
    library = {m: explain_records(r50, records, [m], "fake").pixel(m).numpy() for m in ("saliency", "gradcam")}
    for i, result in enumerate(run.images):
        v = result.verdicts["random r50"]
        assert v.logit == pytest.approx(float(preds.logits[i]), abs=0) and v.threshold == THRESHOLD
        assert v.p_fake == pytest.approx(float(preds.probs[i]), rel=1e-6)
        assert v.label == ("fake" if v.p_fake >= 0.5 else "real") and f"{v.p_fake:.3f}" in v.text()
        cells = {c.method: c for c in result.cells}
        assert list(cells) == ["lrp", "saliency", "gradcam", "cp_lrp"]
        assert cells["lrp"].error.startswith("ValueError: composite must be one of")
        assert cells["cp_lrp"].error == "not defined on resnet50"
        for m in ("saliency", "gradcam"):
            np.testing.assert_array_equal(cells[m].pixel, library[m][i])
            assert cells[m].error is None and cells[m].seconds > 0 and cells[m].image.shape == (64, 64, 3)
            overlay = cell_overlay(cells[m])
            assert overlay.shape == (256, 256, 3) and overlay.std() > 0
    fig = image_figure(run.images[0], run)
    assert len(fig.axes) == 1 * 5 + 1  # input + 4 methods (two of them errors), and the colour bar

    files = write_downloads(run, tmp_path / "out")
    from safetensors.torch import load_file
    maps = load_file(str(files["maps"]))
    assert set(maps) == {f"{r.name}/random r50/{m}" for r in run.images for m in ("logit", "saliency.pixel", "gradcam.pixel")}
    assert torch.equal(maps["000_img0/random r50/saliency.pixel"], torch.from_numpy(run.images[0].cells[1].pixel))
    with zipfile.ZipFile(files["zip"]) as z:
        assert sorted(z.namelist()) == ["000_img0.png", "001_img1.png", "maps.safetensors"]
        assert Image.open(z.open("000_img0.png")).size[0] > 300


def test_rine_gets_its_tie_block_importances(tmp_path):
    rine = tiny_rine()
    source = DetectorSource("tiny rine", "rine", weights="unused")
    records = [ImageRecord(write_png(tmp_path / "a.png"), None, "upload")]
    run = run_explorer(records, [source], ["cp_lrp"], loaded(source, rine))
    mean = run.tie["tiny rine"].mean
    assert mean.shape == (4,) and mean.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(mean, rine.importances().mean(1).detach().numpy(), rtol=1e-6)
    assert run.images[0].cells[0].error is None


def test_dataset_picker_and_ground_truth_masks(tmp_path):
    root = tmp_path / "data"
    fake = write_png(root / "tconv_local" / "1_fake" / "x1.png", 1)
    write_png(root / "tconv_local" / "0_real" / "r1.png", 2)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 5:30] = 255
    (root / "tconv_local" / "masks").mkdir()
    Image.fromarray(mask).save(root / "tconv_local" / "masks" / "x1.png")
    write_png(root / "plain" / "1_fake" / "y.png", 3)
    write_png(root / "plain" / "0_real" / "z.png", 4)
    found = dataset_records(root, have_classes=False)
    assert set(found) == {"tconv_local/1_fake/x1.png", "tconv_local/0_real/r1.png", "plain/1_fake/y.png",
                          "plain/0_real/z.png"}
    assert found["tconv_local/1_fake/x1.png"].path == fake and found["tconv_local/1_fake/x1.png"].label == 1
    got = ground_truth_mask(found["tconv_local/1_fake/x1.png"])
    assert got.dtype == bool and got.sum() == 10 * 25 and got[15, 10]
    assert ground_truth_mask(found["tconv_local/0_real/r1.png"]) is None
    assert ground_truth_mask(found["plain/1_fake/y.png"]) is None


def test_page_handler_answers_with_messages(tmp_path, r50):
    pytest.importorskip("gradio", reason="the explorer needs the app extra")
    from forensics.app.ui import Explorer, options_help, verdict_table
    source = DetectorSource("random r50", "resnet50", weights="unused")
    explorer = Explorer([source], work_dir=tmp_path)
    explorer.cache = loaded(source, r50)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    no_progress = lambda *a, **k: None  # noqa: E731
    message, *_ = explorer.explain([str(bad)], [], ["random r50"], ["lrp"], "beta0", "", progress=no_progress)
    assert "Refused: bad.jpg" in message and "Upload an image" in message
    good = str(write_png(tmp_path / "good.png"))
    message, *_ = explorer.explain([good], [], ["random r50"], [], "beta0", "", progress=no_progress)
    assert message == "Choose a method."
    message, *_ = explorer.explain([good], [], ["random r50"], ["lrp"], "beta0", "lrp:colour=1", progress=no_progress)
    assert "lrp has no option 'colour'" in message and "composite" in message
    message, verdicts, gallery, figures, tie, download = explorer.explain(
        [good], [], ["random r50"], ["lrp", "gradcam"], "epsilon_plus_flat", "", progress=no_progress)
    assert message.startswith("Explained 1 image(s) with 1 detector(s) x 2 method(s)")
    assert [c.split(" · ")[-1].split(" (")[0] for _, c in gallery] == ["LRP epsilon_plus_flat", "Grad-CAM"]
    assert verdicts["value"][0][:3] == ["000_good", "random r50", verdicts["value"][0][2]]
    assert len(figures) == 1 and download["visible"] and Path(download["value"]).name == "explorer.zip"
    assert verdicts["value"] == verdict_table(explorer.last_run)
    assert "`n_steps=50`" in options_help(["gradcam", "integrated_gradients"]) and options_help(["gradcam"]) == ""


def test_cli_registers_the_app_and_checks_its_options():
    from forensics.cli import build_parser
    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.share, args.dataset_dir) == ("127.0.0.1", 7860, False, None)
    res = subprocess.run([sys.executable, "-m", "forensics", "app", "--detector", "resnet50"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "--detector and --weights go together" in res.stderr


@pytest.mark.slow
def test_the_command_serves_the_page_on_localhost(tmp_path):
    """``make app``'s command: ``python -m forensics app`` serves the page on 127.0.0.1 (a free port here)."""
    pytest.importorskip("gradio", reason="the explorer needs the app extra")
    import socket
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "forensics", "app", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline, page = time.monotonic() + 180, None
        while page is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        assert page is not None, log.read_text()
        assert '"title":"forensics explorer"' in page and "default resnet50" in page
        assert '"analytics_enabled":false' in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
