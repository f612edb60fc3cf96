"""One self-contained HTML page for a :class:`~forensics.report.discover.Discovery`.

No server, no network, no JavaScript framework: figures are embedded as ``data:`` URIs
(:mod:`forensics.report.images`), tables are plain HTML, and two small inline scripts sort a table by a
clicked column and record, once the page has loaded, how many of its images decoded
(``<html data-images-total=N data-images-decoded=M>``; the browser test reads them). Links to the CSVs,
PDFs and figures not shown inline are relative to the page, so they work where the page lies beside its
folder.
"""
from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .discover import Discovery, Run, Skip
from .images import ImageError, embed

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 1.5em 3em;
color:#1d232a;background:#fff;line-height:1.4}
h1{margin:.8em 0 .2em}h2{border-top:2px solid #d0d7de;padding-top:.8em;margin-top:2em}
.meta,.muted{color:#57606a;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa;white-space:nowrap}table.sortable th{cursor:pointer}.wide{overflow-x:auto;max-width:100%}table.sortable th:after{content:" \\2195";color:#8c959f}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;max-width:100%}
.figs img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{font-size:.8em;color:#57606a}
.run-body{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.run-body>div{min-width:0;max-width:100%}
.status-done{color:#1a7f37}.status-failed{color:#cf222e;font-weight:bold}
.skips li{color:#9a6700}dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;font-size:.85em}
dl.prov dt{font-weight:600}dl.prov dd{margin:0;word-break:break-all}
"""

SCRIPT = """
function sortTable(th){var table=th.closest('table'),idx=Array.prototype.indexOf.call(th.parentNode.children,th),
body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-dir')!=='asc';
rows.sort(function(a,b){var x=a.cells[idx].textContent,y=b.cells[idx].textContent,nx=parseFloat(x),ny=parseFloat(y);
var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
rows.forEach(function(r){body.appendChild(r);});th.setAttribute('data-dir',asc?'asc':'desc');}
window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
document.documentElement.setAttribute('data-images-total',imgs.length);
document.documentElement.setAttribute('data-images-decoded',ok);});
"""


#: The box (width, height in CSS pixels) a figure is displayed in, so that a figure and its run's key
#: table sit side by side on a laptop screen; a click opens the file itself.
DISPLAY_BOX = (640, 440)


@dataclass(frozen=True)
class Options:
    """How much of each run the page shows inline."""

    max_figures: int = 6     # figures embedded per run; the rest are linked
    max_side: int = 1000     # figures larger than this (pixels) are embedded as thumbnails
    max_rows: int = 25       # rows of the key table shown (the whole CSV is linked)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()


def _link(path: Path, page_dir: Path, text: str | None = None) -> str:
    return f'<a href="{_e(_rel(path, page_dir))}">{_e(text or path.name)}</a>'


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def render_table(path: Path, page_dir: Path, max_rows: int) -> str:
    """The first ``max_rows`` rows of a CSV as a sortable table (numbers right-aligned)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        return f'<p class="muted">{_link(path, page_dir)} is empty.</p>'
    header, body = rows[0], rows[1:]
    shown = body[:max_rows]
    head = "".join(f'<th onclick="sortTable(this)">{_e(h)}</th>' for h in header)
    lines = ["".join(f'<td class="num">{_e(c)}</td>' if _is_number(c) else f"<td>{_e(c)}</td>" for c in row)
             for row in shown]
    note = (f"first {len(shown)} of {len(body)} rows" if len(body) > len(shown) else f"{len(body)} rows")
    return (f'<p class="muted">Table {_link(path, page_dir)} ({note}; click a column to sort)</p>'
            f'<div class="wide"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(f"<tr>{line}</tr>" for line in lines) + "</tbody></table></div>")


def render_provenance(prov: Mapping[str, Any]) -> str:
    """The facts that change numbers, one line each; the whole block in a collapsible JSON view."""
    sw = prov.get("software") or {}
    machine = prov.get("machine") or {}
    data = prov.get("data") or {}
    rows: list[tuple[str, str]] = []
    git = sw.get("git") or {}
    lock = sw.get("lock") or {}
    if sw:
        rows.append(("software", f"forensics {sw.get('forensics')}, python {sw.get('python')}"
                     + (f", git {str(git.get('commit'))[:10]}{' (modified)' if git.get('dirty') else ''}" if git else "")))
        packages = sw.get("packages") or {}
        if packages:
            rows.append(("packages", ", ".join(f"{k} {v}" for k, v in packages.items())))
        if lock.get("matches") is not None:
            rows.append(("lock", "environment = requirements.lock" if lock["matches"]
                         else f"differs from the lock: {'; '.join(lock.get('differences') or [])}"))
    if machine:
        rows.append(("machine", f"{machine.get('cpu')} ({machine.get('torch_cpu_capability')}, "
                     f"{machine.get('torch_threads')} threads), device {machine.get('device')}"
                     + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")))
    if data:
        rows.append(("data", f"{data.get('files')} files under {', '.join(data.get('roots') or [])}; listing sha256 "
                     f"{str(data.get('listing_sha256'))[:16]}..."))
        for bench in data.get("benchmarks") or []:
            rows.append(("benchmark", f"{bench.get('root')}: images sha256 {str(bench.get('images_sha256'))[:16]}..., "
                         f"seed {bench.get('seed')}"))
    for ckpt in prov.get("checkpoints") or []:
        rows.append(("checkpoint", f"{ckpt.get('module') or 'model'}: {ckpt.get('source')}"
                     + (f", sha256 {ckpt['sha256']}" if ckpt.get("sha256") else "")))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    full = json.dumps(prov, indent=1, default=str)
    return (f'<dl class="prov">{body}</dl><details><summary class="muted">full provenance (JSON)</summary>'
            f"<pre>{_e(full)}</pre></details>")


def render_run(run: Run, index: int, root: Path, page_dir: Path, options: Options, skipped: list[Skip]) -> str:
    status_class = "status-done" if run.status == "done" else "status-failed"
    parts = [f'<h2 id="run-{index}">{index}. {_e(run.title(root))} '
             f'<span class="{status_class}">[{_e(run.status)}]</span></h2>',
             f'<p class="meta">analysis <b>{_e(run.analysis)}</b>'
             + (f" &middot; detector <b>{_e(run.detector)}</b>" if run.detector else "")
             + f" &middot; summary {_link(run.summary_path, page_dir, run.summary_path.relative_to(root).as_posix())}</p>"]
    if run.command_line():
        parts.append(f"<p><b>Command</b></p><pre>{_e(run.command_line())}</pre>")
    if run.weights:
        parts.append("<p><b>Weights</b>: " + "; ".join(f"<code>{_e(w)}</code>" for w in run.weights) + "</p>")
    inputs = run.skipped_inputs()
    if inputs:
        names = ", ".join(str(i.get("path", "?")) for i in inputs[:5])
        parts.append(f'<p class="status-failed">{len(inputs)} input(s) skipped by the run: {_e(names)}'
                     f"{' ...' if len(inputs) > 5 else ''}</p>")
    figures_html, table_html = render_figures(run, page_dir, options, skipped), []
    table = run.key_table()
    if table is not None:
        try:
            table_html.append(render_table(table, page_dir, options.max_rows))
        except (OSError, csv.Error) as exc:
            skipped.append(Skip(table, f"unreadable CSV ({exc})"))
    others = [t for t in run.tables if t != table]
    if others:
        links = ", ".join(_link(t, page_dir, t.relative_to(run.folder).as_posix()) for t in others)
        table_html.append(f'<details><summary class="muted">{len(others)} other table(s), linked</summary><p>{links}</p></details>')
    # figures, then the key table beside them where the page is wide enough
    blocks = [b for b in (figures_html, "".join(table_html)) if b]
    if blocks:
        parts.append('<div class="run-body">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
    parts.append("<details><summary><b>Provenance</b></summary>" + render_provenance(run.provenance) + "</details>")
    return "\n".join(parts)


def render_figures(run: Run, page_dir: Path, options: Options, skipped: list[Skip]) -> str:
    """Up to ``options.max_figures`` decodable figures embedded (undecodable ones go to ``skipped``), the
    rest linked."""
    figures: list[str] = []
    pending = run.ordered_figures()
    while pending and len(figures) < options.max_figures:
        path = pending.pop(0)
        try:
            img = embed(path, options.max_side)
        except (ImageError, OSError) as exc:
            skipped.append(Skip(path, str(exc)))
            continue
        pdf = path.with_suffix(".pdf")
        caption = path.relative_to(run.folder).as_posix() + (" (thumbnail)" if img.shrunk else "")
        scale = min(1.0, DISPLAY_BOX[0] / img.width, DISPLAY_BOX[1] / img.height)
        figures.append(f'<figure><a href="{_e(_rel(path, page_dir))}"><img src="{img.uri}" '
                       f'width="{round(img.width * scale)}" height="{round(img.height * scale)}" '
                       f'alt="{_e(path.name)}"></a><figcaption>{_e(caption)}'
                       + (f" &middot; {_link(pdf, page_dir, 'PDF')}" if pdf in run.links else "") + "</figcaption></figure>")
    html_ = '<div class="figs">' + "".join(figures) + "</div>" if figures else ""
    if pending:
        html_ += (f'<details><summary class="muted">{len(pending)} more figure(s), linked</summary><p>'
                  + ", ".join(_link(p, page_dir, p.relative_to(run.folder).as_posix()) for p in pending) + "</p></details>")
    return html_


def render(found: Discovery, page: Path, options: Options = Options()) -> str:
    """The page for ``found``, to be written at ``page`` (links are made relative to its folder)."""
    from .. import __version__
    page_dir = page.parent
    skipped = list(found.skipped)
    sections = [render_run(run, i, found.root, page_dir, options, skipped) for i, run in enumerate(found.runs, 1)]
    index_rows = "".join(
        f'<tr><td class="num">{i}</td><td><a href="#run-{i}">{_e(run.title(found.root))}</a></td>'
        f"<td>{_e(run.analysis)}</td><td>{_e(run.detector or '')}</td><td>{_e(run.status)}</td><td class=\"num\">{len(run.figures)}</td>"
        f"<td class=\"num\">{len(run.tables)}</td></tr>" for i, run in enumerate(found.runs, 1))
    index = ('<table class="sortable" id="index"><thead><tr>'
             + "".join(f'<th onclick="sortTable(this)">{h}</th>' for h in ("#", "run", "analysis", "detector", "status", "figures", "tables"))
             + f"</tr></thead><tbody>{index_rows}</tbody></table>" if found.runs
             else '<p class="status-failed">No run summary found under this folder.</p>')
    skip_html = ""
    if skipped:
        items = "".join(f"<li><code>{_e(_display(s.path, found.root))}</code>: {_e(s.reason)}</li>"
                        for s in sorted(skipped, key=lambda s: s.path.as_posix()))
        skip_html = f'<h2 id="skipped">Skipped ({len(skipped)})</h2><ul class="skips">{items}</ul>'
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<h1>forensics report: {_e(found.root.name or found.root)}</h1>"
            f'<p class="meta">{len(found.runs)} run(s), {len(skipped)} skipped item(s) under '
            f"<code>{_e(found.root)}</code>; written {now} by forensics {_e(__version__)}"
            + (' &middot; <a href="#skipped">skipped items</a>' if skipped else "") + "</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>forensics report: {_e(found.root.name or found.root)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n"
            f"{head}\n<h2>Index</h2>{index}\n{skip_html}\n" + "\n".join(sections) + "\n</body></html>\n")


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)
