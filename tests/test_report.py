"""``python -m forensics report``: discovery from summary JSON files, the self-contained page, what it
skips, atomic overwrite, and the page as a real browser (headless Chromium) renders it."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forensics.cli import main as cli_main
from forensics.report import Options, discover, write_report

PROVENANCE = {
    "command": ["rank_fmaps.py", "--detector", "resnet50", "--num_real", "8"],
    "software": {"python": "3.11.2", "forensics": "0.1.0", "git": {"commit": "0123456789abcdef", "dirty": False},
                 "packages": {"torch": "2.14.1"}, "lock": {"file": "requirements.lock", "sha256": "ab" * 32,
                                                           "matches": True, "differences": []}},
    "machine": {"cpu": "Test CPU", "torch_cpu_capability": "AVX2", "torch_threads": 2, "device": "cpu"},
    "data": {"roots": ["/data/val"], "files": 16, "listing_sha256": "cd" * 32,
             "benchmarks": [{"root": "/data", "images_sha256": "ef" * 32, "seed": 0, "version": 1}]},
    "checkpoints": [{"module": "", "source": "/cache/r50.pth", "file": "/cache/r50.pth", "sha256": "12" * 32}],
}


def png_bytes(size=(120, 80), seed=0) -> bytes:
    """A PNG with a gradient and noise: decodes, and is far from blank."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    arr = np.clip(x + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path) -> Path:
    """An output folder: two runs (one with a large figure), a corrupt PNG, a malformed JSON and a run
    folder that never got its summary."""
    run = root / "rank_fmaps" / "resnet50" / "val_default"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "detector": "resnet50", "weights": "/cache/r50.pth", "provenance": PROVENANCE,
        "summary": {"total": 17, "used": 16, "skipped": [{"path": "val/1_fake/bad.png", "reason": "truncated"}]}}))
    (run / "val-fake.csv").write_text("key,mean_relevance\n" + "".join(f"layer{i % 4}.{i},{1 / (i + 1):.6f}\n"
                                                                         for i in range(40)))
    (run / "val-real.csv").write_text("key,mean_relevance\nlayer1.0,0.5\n")
    (run / "val-omega.png").write_bytes(png_bytes())
    (run / "val-omega.pdf").write_bytes(b"%PDF-1.4\n")
    (run / "broken.png").write_bytes(png_bytes()[:60])  # truncated: does not decode
    (run / ".val-omega.png.tmp123.png").write_bytes(b"")  # an atomic write's temporary: ignored
    big = root / "color_ablation" / "resnet50" / "gray_default"
    (big / "whisker").mkdir(parents=True)
    (big / "color-ablation.json").write_text(json.dumps({"label": "resnet50", "settings": {
        "provenance": {**PROVENANCE, "command": ["color_ablation.py"]}},
        "report": {"title": "Colour ablation", "table": "color-ablation.csv", "figures": ["whisker/all.png"]}}))
    (big / "color-ablation.csv").write_text("set,ap_rgb,ap_gray\ntconv,0.99,0.70\n")
    (big / "predictions.csv").write_text("set,path\n")
    (big / "whisker" / "tconv.png").write_bytes(png_bytes(seed=1))
    (big / "whisker" / "all.png").write_bytes(png_bytes((2400, 1600), seed=2))
    (big / "patches.json").write_text(json.dumps([{"key": "a"}]))  # data, not a run summary
    bad = root / "explain" / "resnet50"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text('{"provenance": {"command": ["explain.py"]')  # cut off mid-write
    (bad / "heatmaps.png").write_bytes(png_bytes(seed=3))
    return root


def test_discovery_is_keyed_off_summaries_and_assigns_assets(tmp_path):
    root = make_folder(tmp_path / "figures")
    found = discover(root)
    assert [r.summary_path.relative_to(root).as_posix() for r in found.runs] == [
        "color_ablation/resnet50/gray_default/color-ablation.json", "rank_fmaps/resnet50/val_default/summary.json"]
    colour, ffrs = found.runs
    assert ffrs.analysis == "rank_fmaps" and ffrs.detector == "resnet50" and ffrs.status == "done"
    assert ffrs.command_line() == "rank_fmaps.py --detector resnet50 --num_real 8"
    assert [p.name for p in ffrs.tables] == ["val-fake.csv", "val-real.csv"] and ffrs.key_table().name == "val-fake.csv"
    assert [p.name for p in ffrs.figures] == ["broken.png", "val-omega.png"]
    assert ffrs.weights == ["/cache/r50.pth (sha256 1212121212121212...)"]
    assert ffrs.skipped_inputs() == [{"path": "val/1_fake/bad.png", "reason": "truncated"}]
    # presentation hints declared in the summary: title, key table, figure order
    assert colour.title(root) == "Colour ablation" and colour.key_table().name == "color-ablation.csv"
    assert [p.relative_to(colour.folder).as_posix() for p in colour.ordered_figures()] == ["whisker/all.png",
                                                                                           "whisker/tconv.png"]
    reasons = {s.path.relative_to(root).as_posix(): s.reason for s in found.skipped}
    assert set(reasons) == {"explain/resnet50/summary.json", "explain/resnet50"}
    assert reasons["explain/resnet50/summary.json"].startswith("malformed JSON")
    assert "no run summary" in reasons["explain/resnet50"]


def test_report_embeds_figures_tables_and_provenance_and_names_what_it_skipped(tmp_path):
    root = make_folder(tmp_path / "figures")
    out = write_report(root, options=Options(max_figures=6, max_side=500, max_rows=10))
    assert out == root / "report.html"
    page = out.read_text()
    # self-contained: no network references, images are data URIs that decode
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert len(uris) == 3  # val-omega, whisker/all (thumbnail), whisker/tconv; broken.png is not embedded
    sizes = sorted(Image.open(io.BytesIO(base64.b64decode(u))).size for u, _, _ in uris)
    assert sizes == [(120, 80), (120, 80), (500, 333)]  # the 2400x1600 figure shrunk to a 500 px thumbnail
    assert "rank_fmaps.py --detector resnet50 --num_real 8" in page
    assert "/cache/r50.pth" in page and f"sha256 {'12' * 32}" in page  # the checkpoint's hash
    assert f"images sha256 {'ef' * 8}..." in page and "ef" * 32 in page  # + the full JSON
    assert "environment = requirements.lock" in page and "Test CPU (AVX2, 2 threads)" in page
    # key table: first 10 of 40 rows, sortable; the other tables linked
    assert "first 10 of 40 rows" in page and "layer0.0" in page and "layer1.13" not in page
    assert 'href="rank_fmaps/resnet50/val_default/val-real.csv"' in page
    assert 'href="rank_fmaps/resnet50/val_default/val-omega.pdf"' in page
    assert "1 input(s) skipped by the run: val/1_fake/bad.png" in page
    # the skipped items are named: malformed JSON, corrupt PNG, outputs without a summary
    skipped = page.split('id="skipped"', 1)[1].split("</ul>", 1)[0]
    assert "explain/resnet50/summary.json</code>: malformed JSON" in skipped
    assert "rank_fmaps/resnet50/val_default/broken.png</code>: unreadable image" in skipped
    assert "explain/resnet50</code>: 1 output file(s) (png) but no run summary" in skipped
    assert "2 run(s), 3 skipped item(s)" in page
    assert 'href="#run-1">Colour ablation</a>' in page and 'href="#run-2">rank_fmaps/resnet50/val_default</a>' in page


def test_large_runs_embed_a_few_figures_and_link_the_rest(tmp_path):
    root = tmp_path / "figures"
    run = root / "patches"
    (run / "patches").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"provenance": PROVENANCE}))
    for i in range(9):
        (run / "patches" / f"{i}.png").write_bytes(png_bytes((16, 16), seed=i))
    page = write_report(root, options=Options(max_figures=2)).read_text()
    assert page.count("<img ") == 2 and "7 more figure(s), linked" in page
    assert 'href="patches/patches/8.png"' in page


def test_rerun_overwrites_atomically_and_ignores_its_own_page(tmp_path):
    root = make_folder(tmp_path / "figures")
    first = write_report(root).read_text()
    second = write_report(root).read_text()
    strip = lambda p: re.sub(r"written [0-9: -]+UTC", "", p)  # noqa: E731
    assert strip(first) == strip(second)
    assert sorted(p.name for p in root.iterdir()) == ["color_ablation", "explain", "rank_fmaps", "report.html"]


def test_cli_writes_the_page_and_refuses_a_missing_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "figures")
    out = tmp_path / "elsewhere" / "r.html"
    assert cli_main(["report", str(root), "--out", str(out), "--max_rows", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    assert "first 3 of 40 rows" in page
    assert 'href="../figures/rank_fmaps/resnet50/val_default/val-real.csv"' in page  # relative to the page
    from forensics.errors import ForensicsError
    with pytest.raises(ForensicsError, match="no such folder"):
        cli_main(["report", str(tmp_path / "missing")])


def test_empty_folder_gives_a_page_that_says_so(tmp_path):
    page = write_report(tmp_path).read_text()
    assert "No run summary found" in page and "0 run(s)" in page


# ----------------------------------------------------------------------------- a real browser
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=10000")


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def run_chromium(browser: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                              capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(chromium() is None, reason="headless Chromium is not installed (.ci/run installs Debian's chromium)")
def test_chromium_renders_the_page_and_decodes_every_image(tmp_path):
    root = make_folder(tmp_path / "figures")
    page = write_report(root)
    browser = chromium()
    dom = run_chromium(browser, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    decoded = re.search(r'data-images-decoded="(\d+)"', dom.stdout)
    assert total and decoded, "the page's load script did not run"
    assert int(total.group(1)) == 3 and int(decoded.group(1)) == 3
    shot = tmp_path / "shot.png"
    res = run_chromium(browser, page, f"--screenshot={shot}", "--window-size=1200,1600")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200)
    dark = pixels < 128
    assert dark.mean() > 0.01 and pixels.std() > 20  # text, tables and figures: not a blank page
    assert dark[:200].any() and dark[200:].any()
