"""Tables and files of a faithfulness run: the leaderboard (mean and bootstrap 95 % CI per method and
reference map, plus the chance row), per-image values, the mask-validity check, figures and ``summary.json``.

Which images each number uses: perturbation (SRG) and localisation on the scored images (the valid pairs:
fake called fake, base called real; without bases the fakes called fake); randomisation on the first
``randomisation_images`` of them; the validity check on every scored valid pair.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from ...io import atomic_write_json, atomic_write_text
from .figures import curve_figure, mask_grid, randomisation_figure
from .localisation import METRICS as LOC_METRICS
from .perturbation import area
from .randomisation import model_sensitive
from .stats import Estimate, bootstrap_ci
from .validity import validity_figure

if TYPE_CHECKING:  # the result class calls write_evaluation from its write()
    from .run import Evaluation


def columns(ev: Evaluation) -> list[str]:
    cols = [f"srg_{f}" for f in ev.perturbation.fill_ins]
    if ev.data.masks is not None:
        cols += list(LOC_METRICS)
    if ev.randomisation_images:
        cols += ["random_spearman", "random_spearman_abs", "random_ssim"]
    return cols


def per_image(ev: Evaluation, method: str) -> dict[str, np.ndarray]:
    """Per-image values of every leaderboard column (and the MoRF/LeRF areas) of ``method``."""
    r = ev.methods[method]
    out: dict[str, np.ndarray] = {}
    for f, c in r.curves.items():
        out[f"auc_morf_{f}"], out[f"auc_lerf_{f}"] = area(c["morf"]), area(c["lerf"])
        out[f"srg_{f}"] = out[f"auc_lerf_{f}"] - out[f"auc_morf_{f}"]
    out.update(r.localisation)
    if r.cascade is not None:
        out["random_spearman"], out["random_ssim"] = r.cascade.spearman[-1], r.cascade.ssim[-1]
        out["random_spearman_abs"] = r.cascade.spearman_abs[-1]
    return out


def leaderboard(ev: Evaluation) -> dict[str, dict[str, Estimate]]:
    """``{method: {column: Estimate}}`` (bootstrap 95 % CIs over images): the methods, then the reference
    maps, then a ``chance`` row."""
    board = {}
    order = [m for m, r in ev.methods.items() if not r.reference] + [m for m, r in ev.methods.items() if r.reference]
    for m in order:
        k = list(ev.methods).index(m)
        board[m] = {c: bootstrap_ci(v, seed=ev.seed + k) for c, v in per_image(ev, m).items()}
    if ev.data.masks is not None:
        board["chance"] = {c: bootstrap_ci(v, seed=ev.seed) for c, v in ev.chance.items()}
        board["chance"].update({f"srg_{f}": Estimate(0.0, float("nan"), float("nan"), 1)
                                for f in ev.perturbation.fill_ins})   # 0 by symmetry: no CI
    return board


def verdicts(ev: Evaluation, board: Mapping[str, Mapping[str, Estimate]]) -> dict[str, dict[str, Any]]:
    """Per method and reference: SRG CI above 0 (per fill-in), localisation CI above the chance mean,
    model-sensitive (methods only)."""
    out = {}
    chance = {c: float(np.mean(v)) for c, v in ev.chance.items()} if ev.data.masks is not None else {}
    for m, r in ev.methods.items():
        row = board[m]
        v: dict[str, Any] = {f"srg_{f}_above_0": bool(row[f"srg_{f}"].lo > 0) for f in ev.perturbation.fill_ins}
        for c, level in chance.items():
            v[f"{c}_above_chance"] = bool(row[c].lo > level) if c in row else None
        if "random_spearman" in row:
            v["model_sensitive"] = model_sensitive(row["random_spearman"].hi, row["random_spearman_abs"].hi)
        if r.reference:
            v["reference"] = True
        out[m] = v
    return out


def row_label(ev: Evaluation, m: str) -> str:
    return f"{m} (reference)" if m in ev.methods and ev.methods[m].reference else m


def header(ev: Evaluation) -> str:
    """The lines printed above the leaderboard: the selection counts and the mask-validity verdict."""
    lines = []
    if ev.selection is not None:
        lines.append(f"Images: {ev.selection.line()}.")
    if ev.validity is not None:
        est = ev.validity.estimates()
        ok = ev.validity.verdict()
        lines.append(f"Mask validity ({len(ev.validity.fake)} valid pairs): restoring the mask from the base removes "
                     f"{est['mask'].format(2)} of the fake - base logit gap, an equal-area random region "
                     f"{est['random'].format(2)}. The masks carry the detector's evidence: {'yes' if ok else 'NO'}.")
        if not ok:
            lines.append("WARNING: the masks do not carry this detector's evidence; the localisation columns below "
                         "measure agreement with the masks, not with what the detector uses.")
    elif ev.data.masks is not None:
        lines.append("Mask validity: not checked (no bases); the masks are taken on trust.")
    n = len(ev.data.paths)
    srg = "all" if ev.perturbed == n else f"the first {ev.perturbed}"
    lines.append(f"SRG on {srg} of the {n} scored images (--perturbation_images), localisation on the "
                 f"{int(ev.valid.sum())} valid pairs, randomisation on the first {ev.randomisation_images}; `mask` and "
                 "`difference` are reference maps, not methods (the ground truth itself, and |fake - base| summed "
                 "over channels); `chance` is what a heatmap unrelated to the mask scores.")
    return "\n".join(lines) + "\n\n"


def markdown(ev: Evaluation, board: Mapping[str, Mapping[str, Estimate]], sens: Mapping[str, Mapping]) -> str:
    cols = columns(ev)
    head = ["method", "s/image", *cols, *(["model-sensitive"] if ev.randomisation_images else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, row in board.items():
        ref = m in ev.methods and ev.methods[m].reference
        secs = f"{ev.methods[m].seconds:.3f}" if m in ev.methods and not ref else ""
        cells = [row[c].format(2) if c in row else "" for c in cols]
        extra = ([("yes" if sens[m].get("model_sensitive") else "no") if m in sens and not ref else ""]
                 if ev.randomisation_images else [])
        lines.append("| " + " | ".join([row_label(ev, m), secs, *cells, *extra]) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _g(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _per_image_rows(ev: Evaluation) -> list[list[Any]]:
    names = list(ev.methods)
    vals = {m: per_image(ev, m) for m in names}
    keys = list(dict.fromkeys(k for m in names for k in vals[m]))
    valid_pos = np.cumsum(ev.valid) - 1
    rows = [["index", "path", "base", "logit", "base_logit", "called_fake", "valid_pair", "method", *keys]]
    for m in names:
        for i, p in enumerate(ev.data.paths):
            cells = []
            for k in keys:
                v = vals[m].get(k)
                if v is None:
                    cells.append("")
                elif k in LOC_METRICS:
                    cells.append(_g(v[valid_pos[i]]) if ev.valid[i] else "")
                else:
                    cells.append(_g(v[i]) if i < len(v) else "")
            base = ev.data.base_paths[i] if ev.data.base_paths is not None else ""
            bl = _g(ev.base_logits[i]) if ev.base_logits is not None else ""
            rows.append([i, p, base, _g(ev.logits[i]), bl, int(ev.called_fake[i]), int(ev.valid[i]), m, *cells])
    return rows


def _validity_rows(ev: Evaluation) -> list[list[Any]]:
    v = ev.validity
    paths = [p for p, ok in zip(ev.data.paths, ev.valid) if ok]
    rows = [["path", "logit_fake", "logit_base", "logit_mask_restored", "logit_random_restored_mean",
             "removed_mask", "removed_random", "area_ratio"]]
    for i, p in enumerate(paths):
        rows.append([p, _g(v.fake[i]), _g(v.base[i]), _g(v.mask_restored[i]), _g(v.random_restored[i].mean()),
                     _g(v.removed_mask[i]), _g(v.removed_random[i]), _g(v.area_ratio[i])])
    return rows


def write_evaluation(ev: Evaluation, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> dict[str, Path]:
    """What :meth:`Evaluation.write <forensics.analysis.faithfulness.run.Evaluation.write>` writes:
    ``leaderboard.{csv,md}``, ``per_image.csv``, ``validity.{csv,png,pdf}``, ``curves_<fill>.*``, ``masks_grid.*``,
    ``randomisation.*`` (+ ``randomisation.csv``) and ``summary.json`` (ending with the result's ``record``);
    returns ``{name: path}``."""
    from ... import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    board = leaderboard(ev)
    sens = verdicts(ev, board)
    cols = columns(ev)
    rows = [["method", "kind", "seconds_per_image",
             *[f"{c}_{s}" for c in cols for s in ("mean", "ci_lo", "ci_hi", "n")],
             *(["model_sensitive"] if ev.randomisation_images else [])]]
    for m, row in board.items():
        kind = "chance" if m not in ev.methods else "reference" if ev.methods[m].reference else "method"
        cells = []
        for c in cols:
            e = row.get(c)
            cells += ["", "", "", ""] if e is None else [f"{e.mean:.6g}", f"{e.lo:.6g}", f"{e.hi:.6g}", e.n]
        secs = f"{ev.methods[m].seconds:.6g}" if kind == "method" else ""
        rows.append([m, kind, secs, *cells,
                     *([sens[m].get("model_sensitive", "") if m in sens else ""] if ev.randomisation_images else [])])
    files = [atomic_write_text(out_dir / "leaderboard.csv", _csv(rows)),
             atomic_write_text(out_dir / "leaderboard.md", header(ev) + markdown(ev, board, sens)),
             atomic_write_text(out_dir / "per_image.csv", _csv(_per_image_rows(ev)))]
    if ev.validity is not None:
        files.append(atomic_write_text(out_dir / "validity.csv", _csv(_validity_rows(ev))))
        files += plots.save_figure(validity_figure(ev.validity, f"{ev.detector}, {Path(ev.data.paths[0]).parent.parent.name}"),
                                   out_dir / "validity", formats=formats, dpi=150)
    for f in ev.perturbation.fill_ins:
        files += plots.save_figure(curve_figure(ev, f), out_dir / f"curves_{f}", formats=formats, dpi=150)
    files += plots.save_figure(mask_grid(ev), out_dir / "masks_grid", formats=formats, dpi=150)
    methods = [m for m, r in ev.methods.items() if r.cascade is not None]
    if ev.randomisation_images and methods:
        files += plots.save_figure(randomisation_figure(ev), out_dir / "randomisation", formats=formats, dpi=150)
        steps = ev.methods[methods[0]].cascade.steps
        rrows = [["method", "step", "randomised_down_to", "spearman_mean", "spearman_abs_mean", "ssim_mean"]]
        for m in methods:
            c = ev.methods[m].cascade
            rrows += [[m, k, s, f"{np.nanmean(c.spearman[k]):.6g}", f"{np.nanmean(c.spearman_abs[k]):.6g}",
                       f"{np.nanmean(c.ssim[k]):.6g}"] for k, s in enumerate(steps)]
        files.append(atomic_write_text(out_dir / "randomisation.csv", _csv(rrows)))
    valid = ev.valid
    summary = {"detector": ev.detector, "images": len(ev.data.paths), "called_fake": int(ev.called_fake.sum()),
               "valid_pairs": int(valid.sum()), "threshold": ev.threshold,
               "selection": ev.selection.to_dict() if ev.selection is not None else None,
               "mask_validity": ev.validity.to_dict() if ev.validity is not None else None,
               "metric_sets": {"perturbation": f"the first {ev.perturbed} scored images",
                               "localisation": "the valid pairs among the scored images",
                               "randomisation": f"the first {ev.randomisation_images} scored images",
                               "mask_validity": "the valid pairs"},
               "localisation_binarisation": ("top-k pixels, k = mask area" if ev.quantile is None
                                             else f"top {1 - ev.quantile:g} of the pixels (quantile {ev.quantile:g})"),
               "references": [m for m, r in ev.methods.items() if r.reference],
               "mean_mask_area_valid": (float(ev.data.masks[valid].mean())
                                        if ev.data.masks is not None and valid.any() else None),
               "perturbation": {"patch": ev.perturbation.patch, "steps": ev.perturbation.steps,
                                "fill_ins": list(ev.perturbation.fill_ins), "blur_sigma": ev.perturbation.blur_sigma,
                                "road_noise": ev.perturbation.road_noise},
               "randomisation_images": ev.randomisation_images,
               "leaderboard": {m: {c: e.to_dict() for c, e in row.items()} for m, row in board.items()},
               "verdicts": sens,
               "seconds_per_image": {m: r.seconds for m, r in ev.methods.items() if not r.reference},
               "skipped": ev.data.summary.skipped, "files": [str(p) for p in files],
               "torch_threads": torch.get_num_threads(), **ev.record}
    paths = {Path(p).name: Path(p) for p in files}
    paths["summary"] = atomic_write_json(out_dir / "summary.json", summary)
    return paths


__all__ = ["columns", "header", "leaderboard", "markdown", "per_image", "verdicts", "write_evaluation"]
