"""The explorer's page (Gradio): inputs, the ``Explain`` button and the outputs, wired to :mod:`.session`.

Offline by construction: analytics off (set before Gradio is imported, by :mod:`forensics.cli.app`, and on the
Blocks), system fonts only (no web fonts), no share link unless asked. Every error a user can cause (an
unreadable or oversized upload, no detector or method chosen, a bad option) is a message in the page; a
method that fails shows its error in its cells.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import numpy as np

from .. import plots
from ..analysis.tie import block_bars_figure
from ..cli.analysis_args import parse_method_option
from ..explain.lrp_methods import COMPOSITES
from .session import ExplorerRun, cell_overlay, run_explorer, write_downloads
from .sources import DEFAULT_METHODS, DetectorCache, DetectorSource, method_options, split_uploads

log = logging.getLogger(__name__)

TITLE = "forensics explorer"
#: System fonts only: the page loads nothing from outside the machine.
THEME = gr.themes.Default(font=["system-ui", "Arial", "sans-serif"], font_mono=["ui-monospace", "monospace"])


class Explorer:
    """The state behind the page: the detector choices, loaded detectors, the data-set picker and where a
    run's files go."""

    def __init__(self, sources: Sequence[DetectorSource], dataset: dict | None = None, device: str = "cpu",
                 work_dir: str | Path | None = None):
        if not sources:
            raise ValueError("the explorer needs at least one detector")
        self.sources = {s.label: s for s in sources}
        self.dataset = dict(dataset or {})
        self.cache = DetectorCache(device)
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="forensics-app-"))
        self.runs = 0
        self.last_run: ExplorerRun | None = None

    def methods_for(self, labels: Sequence[str]) -> list[str]:
        """Every method defined on at least one of the chosen detectors, in registry order."""
        seen: list[str] = []
        for label in labels:
            seen += [m for m in self.sources[label].methods if m not in seen]
        return seen

    def explain(self, uploads, picks, detectors, methods, composite, option_text, progress=gr.Progress()):
        """The ``Explain`` button: ``(message, verdicts, heatmaps, figures, tie, download)``."""
        paths = [getattr(f, "name", f) for f in (uploads or [])]
        records, refused = split_uploads(paths)
        records += [self.dataset[p] for p in (picks or []) if p in self.dataset]
        notes = [f"Refused: {r}" for r in refused]
        problem = (None if records else "Upload an image (or pick one) first.") or \
            (None if detectors else "Choose a detector.") or (None if methods else "Choose a method.")
        try:
            options = self._options(composite, option_text, methods or [])
        except ValueError as exc:
            problem = problem or str(exc)
        if problem:
            return _outputs("\n\n".join([*notes, problem]))
        try:
            run = run_explorer(records, [self.sources[d] for d in detectors], list(methods), self.cache, options,
                               progress=lambda frac, text: progress(frac, desc=text))
        except Exception as exc:  # a detector that cannot load: its message in the page, the traceback in the log
            log.exception("explorer: run failed")
            return _outputs("\n\n".join([*notes, f"Failed: {type(exc).__name__}: {exc}"]))
        self.runs += 1
        self.last_run = run
        previous = self.work_dir / f"run{self.runs - 1:03d}"
        if previous.is_dir():  # the page shows Gradio's copies of its files
            shutil.rmtree(previous)
        out = self.work_dir / f"run{self.runs:03d}"
        files = write_downloads(run, out)
        gallery = self._gallery(run, out)
        tie = [(plots.save_figure(block_bars_figure(summary), out / f"tie-{i}", formats=("png",), dpi=120)[0],
                f"TIE: {label}") for i, (label, summary) in enumerate(run.tie.items())]
        errors = sum(c.error is not None for r in run.images for c in r.cells)
        notes.append(f"Explained {len(run.images)} image(s) with {len(run.detectors)} detector(s) x "
                     f"{len(run.methods)} method(s)" + (f"; {errors} cell(s) failed (their errors are in the figure)." if errors
                                                        else "."))
        return _outputs("\n\n".join(notes), verdict_table(run), gallery, [(str(p), p.stem) for p in files["figures"]],
                        tie, str(files["zip"]))

    def _options(self, composite: str, text: str, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
        options: dict[str, dict[str, Any]] = {}
        if composite and composite != "beta0" and "lrp" in methods:
            options["lrp"] = {"composite": composite}
        for line in (text or "").splitlines():
            if not line.strip():
                continue
            try:
                method, key, value = parse_method_option(line.strip())
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"Option {line.strip()!r}: {exc}") from None
            known = method_options(method) if method in self.methods_for(list(self.sources)) else None
            if known is None or key not in known:
                raise ValueError(f"Option {line.strip()!r}: {method} has no option {key!r} "
                                 f"(options: {', '.join(known or []) or 'none'})")
            options.setdefault(method, {})[key] = value
        return options

    def _gallery(self, run: ExplorerRun, out: Path) -> list[tuple[Any, str]]:
        from PIL import Image
        items = []
        for r in run.images:
            for k, c in enumerate(r.cells):
                caption = f"{r.name} · {c.caption()}"
                if c.error is None:  # a failed cell: its error is in the figure and the verdict table
                    path = out / "cells" / f"{r.name}-{k:02d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(cell_overlay(c)).save(path)
                    items.append((str(path), caption))
            if r.mask is not None:
                path = out / "cells" / f"{r.name}-mask.png"
                Image.fromarray(r.mask.astype(np.uint8) * 255).save(path)
                items.append((str(path), f"{r.name} · ground-truth mask"))
        return items


def verdict_table(run: ExplorerRun) -> list[list[Any]]:
    """Rows of the verdict table: image, detector, verdict, P(fake) (3 decimals), logit, threshold, errors."""
    rows = []
    for r in run.images:
        for det in run.detectors:
            v = r.verdicts.get(det)
            failed = [c.method for c in r.cells if c.detector == det and c.error is not None]
            if v is None:
                rows.append([r.name, det, "skipped", "", "", "", r.skipped.get(det, "")])
            else:
                rows.append([r.name, det, v.label, f"{v.p_fake:.3f}", f"{v.logit:+.3f}", f"{v.threshold:.3f}",
                             ", ".join(failed)])
    return rows


def options_help(methods: Sequence[str] | None) -> str:
    """The options of the chosen methods with their defaults (what ``METHOD:KEY=VALUE`` may set)."""
    lines = []
    for m in methods or []:
        shown = {k: v for k, v in method_options(m).items() if v is None or isinstance(v, (str, int, float, bool))}
        if shown:
            lines.append(f"`{m}`: " + ", ".join(f"`{k}={v!r}`" for k, v in shown.items()))
    return "Options (defaults): " + "; ".join(lines) if lines else ""


VERDICT_HEADERS = ["image", "detector", "verdict", "P(fake)", "logit", "threshold", "failed methods"]


def _outputs(message: str, verdicts=None, gallery=None, figures=None, tie=None, download=None):
    return (message, gr.update(value=verdicts or []), gallery or [], figures or [],
            gr.update(value=tie or [], visible=bool(tie)),
            gr.update(value=download, visible=download is not None))


def build(explorer: Explorer) -> gr.Blocks:
    """The page. It opens with the first detector (the embedded default ResNet-50) and LRP + Grad-CAM chosen."""
    first = next(iter(explorer.sources))
    # Gradio's own copies of the served files are deleted after an hour (checked every hour)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# {TITLE}\nUpload images, choose detectors and explanation methods, press **Explain**. "
                    "Maps: red = evidence for *fake*, blue = against, white = 0; each map scaled to its 99.5th "
                    "percentile of |value| (unsigned methods use the red half).")
        with gr.Row():
            with gr.Column(scale=1):
                uploads = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="uploads")
                picks = gr.Dropdown(sorted(explorer.dataset), multiselect=True, label="Images from --dataset_dir",
                                    visible=bool(explorer.dataset), elem_id="picks")
                detectors = gr.CheckboxGroup(list(explorer.sources), value=[first], label="Detectors",
                                             elem_id="detectors")
                available = explorer.methods_for([first])
                methods = gr.CheckboxGroup(available, value=[m for m in DEFAULT_METHODS if m in available],
                                           label="Explanation methods", elem_id="methods")
                composite = gr.Dropdown(list(COMPOSITES), value="beta0", label="LRP composite", elem_id="composite")
                option_text = gr.Textbox(label="Method options (METHOD:KEY=VALUE, one a line)", lines=2,
                                         placeholder="integrated_gradients:n_steps=32", elem_id="options")
                option_help = gr.Markdown(options_help(methods.value), elem_id="option_help")
                button = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                verdicts = gr.Dataframe(headers=VERDICT_HEADERS, label="Verdicts", interactive=False,
                                        elem_id="verdicts")
                heatmaps = gr.Gallery(label="Heatmaps (detector x method)", columns=4, format="png",
                                      object_fit="contain", height="auto", elem_id="heatmaps")
                figures = gr.Gallery(label="Figure per image (detectors x methods)", columns=1, format="png",
                                     object_fit="contain", height="auto", elem_id="figures")
                tie = gr.Gallery(label="RINE TIE block importances", columns=2, format="png", visible=False,
                                 object_fit="contain", height="auto", elem_id="tie")
                download = gr.DownloadButton("Download maps (safetensors) + figures (PNG)", visible=False,
                                             elem_id="download")
        detectors.change(lambda chosen, now: gr.update(choices=explorer.methods_for(chosen),
                                                       value=[m for m in now if m in explorer.methods_for(chosen)]),
                         [detectors, methods], methods)
        methods.change(options_help, methods, option_help)
        button.click(explorer.explain, [uploads, picks, detectors, methods, composite, option_text],
                     [message, verdicts, heatmaps, figures, tie, download])
    return page


__all__ = ["THEME", "TITLE", "Explorer", "VERDICT_HEADERS", "build", "options_help", "verdict_table"]
