"""The documentation site (mkdocs.yml, ``make docs``) builds with ``mkdocs build --strict``, offline: every page
under docs/ is in the navigation, every link and anchor resolves, the API reference renders from the docstrings,
and nothing is fetched from the network when the site is opened. The README stays short and its links resolve."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs comes with requirements.txt (the `docs` extra): make venv")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python comes with requirements.txt")

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}   # Material's banner about MkDocs 2.0; not a build warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    run = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_the_site_builds_strict_with_its_pages(site):
    for page in ("index.html", "detectors.html", "analyses.html", "findings.html", "faithfulness_results.html",
                 "rine_results.html", "methods.html", "ffrs.html", "tutorials.html", "results/seed_study/summary.html",
                 "api/index.html", "api/detectors.html", "api/explain.html", "api/faithfulness.html",
                 "api/data.html"):
        assert (site / page).is_file(), page
    # the notebooks are offered for download, not executed; the figures of moved text resolve from docs/
    for name in ("01_detectors_and_explainers.ipynb", "02_ffrs_dropout_colour.ipynb",
                 "03_rine_tie_lrp_attribution.ipynb"):
        assert (site / "tutorials" / name).read_bytes() == (ROOT / "docs" / "tutorials" / name).read_bytes()
    findings = (site / "faithfulness_results.html").read_text()
    assert 'src="figures/faithfulness_curves_resnet50.png"' in findings
    assert (site / "figures" / "faithfulness_curves_resnet50.png").is_file()


def test_the_api_reference_renders_the_docstrings(site):
    detectors = (site / "api" / "detectors.html").read_text()
    for name in ("forensics.detectors.create", "forensics.detectors.Detector", "forensics.detectors.Detector.record",
                 "forensics.detectors.list_detectors"):
        assert f'id="{name}"' in detectors, name
    assert "Detectors behind one interface" in detectors          # the package docstring
    faithfulness = (site / "api" / "faithfulness.html").read_text()
    assert 'id="forensics.analysis.faithfulness.srg"' in faithfulness
    explain = (site / "api" / "explain.html").read_text()
    assert 'id="forensics.explain.create_explainer"' in explain
    # the hook drops the Sphinx roles of the docstrings' cross-references (":func:" before a code span)
    for page in (site / "api").glob("*.html"):
        assert not re.search(r":(func|mod|class|meth|data|attr):<code>", page.read_text()), page.name


def test_the_site_loads_nothing_from_the_network(site):
    """No web fonts, stylesheets or scripts from a CDN: the built site opens offline."""
    remote = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=\"(?:https?:)?//", re.I)
    pages = list(site.rglob("*.html"))
    assert len(pages) > 30
    for page in pages:
        html = page.read_text()
        assert not remote.search(html), f"{page.relative_to(site)} loads {remote.search(html).group(0)}"
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html


def test_strict_fails_on_a_broken_link_and_on_a_page_left_out_of_the_navigation(tmp_path):
    """The project's settings (inherited from mkdocs.yml) turn both into build failures."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [a note](missing.md).\n")
    (docs / "orphan.md").write_text("# Not in the navigation\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks: []\nnav:\n  - Home: index.md\n")
    run = mkdocs_build(config, tmp_path / "site")
    log = run.stdout + run.stderr
    assert run.returncode != 0
    assert "missing.md" in log and "orphan.md" in log, log


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = ROOT / target.split("#")[0]
        assert path.exists(), f"README links to {target}, which does not exist"
