"""The explorer (``python -m forensics app``) in a real browser: headless Chromium driven by Playwright, every
request that leaves the machine blocked. Uploads an image, selects two methods, presses ``Explain`` and checks
the page against the library: the verdict is :func:`~forensics.analysis.inference.predict_records`'s, every
heatmap in the page decodes and is not blank, and the downloaded maps equal
:func:`~forensics.analysis.heatmaps.explain_records`'s (what ``analyses/explain.py`` computes); an unreadable
upload is refused with a message. Runs on the embedded default ResNet-50: the cached full-size one where it is
cached, else the ``smoke`` scale built into a private cache (about 3 minutes from nothing on 2 cores).

``FORENSICS_APP_SCREENSHOT=PATH`` also saves the page after the run there (README: docs/figures/app.png).
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from forensics import defaults

pytest.importorskip("gradio", reason="the explorer needs the app extra (pip install .[app])")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright comes with requirements.txt: make venv")

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs "
                                                          "Debian's chromium)")]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync", "--disable-default-apps"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def default_cache(smoke_cache):
    """The cached full-size default when there is one, else the smoke scale in the test session's private cache."""
    with pytest.MonkeyPatch.context() as mp:
        if not defaults.is_cached("resnet50"):
            mp.setenv(defaults.CACHE_ENV, str(smoke_cache))
            mp.setenv(defaults.SCALE_ENV, "smoke")
        yield defaults.default_detector_and_data("resnet50")


@pytest.fixture(scope="module")
def served(default_cache, tmp_path_factory):
    """The explorer with the page's own detector list, served on a free local port in this process."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from forensics.app.sources import available_sources
    from forensics.app.ui import THEME, Explorer, build
    explorer = Explorer(available_sources(), work_dir=tmp_path_factory.mktemp("app-work"))
    page = build(explorer).queue()
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=THEME, footer_links=[],
                quiet=True, ssr_mode=False, mcp_server=False)
    try:
        yield f"http://127.0.0.1:{port}", explorer
    finally:
        page.close()


@pytest.fixture()
def browser_page(served):
    """A fresh page in headless Chromium whose every non-local request is blocked (and listed)."""
    url, _ = served
    blocked: list[str] = []

    def route(r):
        parts = urlsplit(r.request.url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS:
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        context.route("**/*", route)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.get_by_role("button", name="Explain").wait_for()
        yield page, blocked
        browser.close()


def upload(page, path: Path) -> None:
    """Give the page's file input ``path`` and wait until the page lists it."""
    page.locator("#uploads input[type=file]").set_input_files(str(path))
    page.locator("#uploads").get_by_text(path.name).first.wait_for()


def sample_image(tmp_path: Path, bench) -> Path:
    """A fake test image of the benchmark (the detector's own 64 px inputs), copied under a new name."""
    from forensics.data import forensynths
    record = forensynths(bench.test_root, bench.train_family, False, 0, 1)[0]
    path = tmp_path / "upload.png"
    shutil.copy(record.path, path)
    return path


def test_page_verdict_and_maps_equal_the_library_offline(browser_page, default_cache, tmp_path):
    from forensics.analysis.heatmaps import explain_records
    from forensics.analysis.inference import predict_records
    from forensics.data import ImageRecord
    from safetensors.torch import load

    page, blocked = browser_page
    detector, bench = default_cache
    image = sample_image(tmp_path, bench)
    methods = page.locator("#methods")
    # the page opens ready: the embedded default ResNet-50 with LRP and Grad-CAM
    assert page.locator("#detectors input[type=checkbox]:checked").count() == 1
    checked = [methods.get_by_label(m, exact=True).is_checked() for m in ("lrp", "gradcam", "saliency")]
    assert checked == [True, True, False]
    # select two methods: LRP and saliency
    methods.get_by_label("gradcam", exact=True).uncheck()
    methods.get_by_label("saliency", exact=True).check()
    upload(page, image)
    page.get_by_role("button", name="Explain").click()
    page.locator("#heatmaps img").nth(1).wait_for()
    page.locator("#message").get_by_text("Explained 1 image").wait_for()

    # the verdict is the library's prediction for this image
    record = ImageRecord(image, None, "upload")
    p = float(1 / (1 + np.exp(-predict_records(detector, [record], progress=False).logits[0])))
    row = [c.strip() for c in page.locator("#verdicts td").evaluate_all("els => els.map(e => e.textContent)")]
    assert row[:4] == ["000_upload", "default resnet50", "fake" if p >= 0.5 else "real", f"{p:.3f}"]
    assert row[5] == "0.500" and float(row[4]) == pytest.approx(float(np.log(p / (1 - p))), abs=2e-3)

    # every heatmap in the page decodes and is not blank
    sources = page.locator("#heatmaps img").evaluate_all("els => els.map(e => e.src)")
    assert len(sources) == 2
    for src in sources:
        body = page.request.get(src).body()
        pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float64)
        assert pixels.shape[0] >= 64 and pixels.std() > 5.0, src

    # the downloaded maps are the library's (analyses/explain.py's explain_records)
    with page.expect_download() as info:
        page.locator("#download").click()
    archive = tmp_path / "explorer.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        assert any(n.endswith(".png") for n in z.namelist())
        maps = load(z.read("maps.safetensors"))
    for method in ("lrp", "saliency"):
        want = explain_records(detector, [record], [method], "fake").pixel(method)[0]
        got = next(v for k, v in maps.items() if k.endswith(f"/{method}.pixel"))
        assert got.shape == want.shape and np.allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6), method

    shot = os.environ.get("FORENSICS_APP_SCREENSHOT")
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if shot:
        shutil.copy(tmp_path / "app.png", shot)
    assert blocked == [], f"the page tried to reach the network: {blocked}"


def test_unreadable_upload_is_refused_with_a_message(browser_page, tmp_path):
    page, blocked = browser_page
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    upload(page, bad)
    page.get_by_role("button", name="Explain").click()
    message = page.locator("#message")
    message.get_by_text("Refused").wait_for()
    text = message.inner_text()
    assert "broken.png" in text and "Upload an image" in text
    assert "Traceback" not in page.content()
    assert page.locator("#heatmaps img").count() == 0
    assert blocked == []
