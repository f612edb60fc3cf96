"""Findings over seeds: the result tables of docs/findings.md rebuilt from scratch for several benchmark seeds and
training seeds, summarised as mean, standard deviation and min-max, with the per-seed rows kept.

One (benchmark seed, training seed) pair is one *run*: the benchmark built with
``BenchmarkConfig(seed=B)`` and each default detector trained with its recipe's ``seed=S`` (seed 0 is the
default itself; everything is cached under ``$FORENSICS_CACHE`` like the embedded default). Each run
computes the *parts* asked for, each a function registered in :data:`PARTS` that returns tidy rows
``(detector, part, set, metric, value)``:

- ``properties``: AP of the default ResNet-50 on every test family, RGB and grayscale (the benchmark's
  properties a, b and the first half of c);
- ``robust``: the same for the colour-robust ResNet-50 (the second half of property c; 800 steps of training);
- ``dropout``: the detector's own FF-RS ranking on the val split, then feature-map dropout of the top-k,
  random-k and low-k maps (AP and fake accuracy per family);
- ``median``: Mood's median test, RGB vs grayscale, on the top-k maps over the training family's test fakes
  (the colour-conditional share, uncorrected and Benjamini-Hochberg);
- ``color``: colour ablation, the drop of the median P(fake) of the training family's fakes under grayscale;
- ``rine``: the default RINE (its head trained with seed S): AP per family, and Spearman's rho between TIE
  importance and the LRP block share of its fakes;
- ``attribution``: open-set attribution on the benchmark's test families (the embedded default of
  ``analyses/attribution.py``: its fixed random CLIP stand-in; the partition and the probes drawn with seed S):
  accuracy, macro-F1, AUROC, TNR at 95 % TPR and OSCR per block and at the block chosen on validation.

Each run's rows are written to ``runs/b<B>-s<S>.csv`` as soon as it finishes, so a long study resumes
where it stopped; :func:`summarise` aggregates them, :func:`property_checks` states per run whether the
benchmark's properties hold. The method is described in docs/reproducibility.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import provenance
from ..io import atomic_path, atomic_write_json, atomic_write_text
from .result import AnalysisResult

log = logging.getLogger(__name__)

COLUMNS = ("bench_seed", "train_seed", "detector", "part", "set", "metric", "value")
#: Property thresholds (the benchmark's design targets): a) AP on the training family; b) two unseen
#: families at least B_FAR below it, one within B_NEAR; c) grayscale costs at least C_DROP AP, and the
#: colour-robust variant at most half of the baseline's drop.
A_MIN_AP, B_FAR, B_NEAR, C_DROP = 0.95, 0.10, 0.05, 0.05


@dataclass
class SeedRun:
    """What one part needs: the benchmark, the seeds, the options, and detectors trained on demand."""

    bench_seed: int
    train_seed: int
    out: Path
    batch_size: int = 32
    replicas: int = 5
    topk: int | None = None
    bench_config: Any = None
    _detectors: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def bench(self):
        from ..defaults import default_benchmark
        if "bench" not in self._cache:
            self._cache["bench"] = default_benchmark(self.bench_config)
        return self._cache["bench"]

    def detector(self, name: str):
        from ..defaults import default_detector
        if name not in self._detectors:
            self._detectors[name] = default_detector(name, self.bench_config, seed=self.train_seed)
        return self._detectors[name]

    def test_sets(self) -> dict:
        from ..data import forensynths
        return {fam: forensynths(self.bench.test_root, fam, have_classes=False) for fam in self.bench.families}

    def ranking(self, name: str = "resnet50"):
        """The detector's own FF-RS ranking (val split, seeded like ``rank_fmaps.py``), cached on disk."""
        from .ffrs_outputs import default_k, embedded_ranking_csv
        from .fmap_ranking import read_ranking_csv
        key = f"ranking-{name}"
        if key not in self._cache:
            path = embedded_ranking_csv(self.detector(name), self.bench, name=f"{name}-b{self.bench_seed}-s{self.train_seed}",
                                        seed=self.train_seed, root=self.out / "rank_fmaps")
            ranking = read_ranking_csv(path)
            self._cache[key] = (ranking, self.topk if self.topk is not None else default_k(len(ranking)))
        return self._cache[key]

    def rows(self, detector: str, part: str, values: Iterable[tuple[str, str, float]]) -> list[dict]:
        return [dict(zip(COLUMNS, (self.bench_seed, self.train_seed, detector, part, s, m, float(v))))
                for s, m, v in values]


def _rgb_gray(run: SeedRun, name: str, part: str) -> list[dict]:
    from .color_comparison import compare_rgb_gray
    cmp = compare_rgb_gray(run.detector(name), run.test_sets(), crop="none", batch_size=run.batch_size)
    return run.rows(name, part, [(s, f"ap_{mode}", getattr(cmp, attr).rows[s]["ap"])
                                 for s in cmp.rgb.rows for mode, attr in (("rgb", "rgb"), ("gray", "gray"))])


def part_properties(run: SeedRun) -> list[dict]:
    return _rgb_gray(run, "resnet50", "properties")


def part_robust(run: SeedRun) -> list[dict]:
    return _rgb_gray(run, "resnet50_cr", "robust")


def part_dropout(run: SeedRun) -> list[dict]:
    from .dropout import VARIANTS, dropout_analysis, feature_map_sets
    ranking, k = run.ranking()
    sets = feature_map_sets(ranking, k, replicas=run.replicas, seed=run.train_seed)
    res = dropout_analysis(run.detector("resnet50"), run.test_sets(), sets, point="pre_bn",
                           fixed_threshold_sets=[run.bench.train_family], crop="none", batch_size=run.batch_size)
    return run.rows("resnet50", "dropout", [(s, f"{metric}_{v}", res.rows[s][v][key])
                                            for s in res.rows for v in VARIANTS
                                            for metric, key in (("ap", "ap"), ("fake_acc", "f_acc_cal"))]
                    + [("all", "k", k)])


def part_median(run: SeedRun) -> list[dict]:
    from .fmap_ranking import topk
    from .median_test import median_test_analysis
    ranking, k = run.ranking()
    fam = run.bench.train_family
    fakes = [r for r in run.test_sets()[fam] if r.label == 1]
    res = median_test_analysis(run.detector("resnet50"), fakes, topk(ranking, k), crop="none",
                               batch_size=run.batch_size, progress=False)
    pct = res.percentages(topk=k)
    return run.rows("resnet50", "median", [(fam, "color_conditional_pct", pct["color_conditional_pct"]),
                                           (fam, "color_conditional_pct_bh", pct["color_conditional_pct_bh"])])


def part_color(run: SeedRun) -> list[dict]:
    from .color import color_ablation
    fam = run.bench.train_family
    study = color_ablation(run.detector("resnet50"), {fam: run.test_sets()[fam]}, crop="none",
                           batch_size=run.batch_size)
    stats = study.box_stats(fam)
    return run.rows("resnet50", "color", [(fam, m, stats[m]) for m in ("median_rgb", "median_ablated", "median_drop")])


def part_rine(run: SeedRun) -> list[dict]:
    from .evaluate import evaluate_sets
    from .tie_vs_lrp import collect_block_relevance, compare, tie_importance
    det = run.detector("rine")
    sets = run.test_sets()
    res = evaluate_sets(det, sets, crop="none", batch_size=run.batch_size)
    fam = run.bench.train_family
    data = collect_block_relevance(det, sets[fam], batch_size=run.batch_size, transform=det.transform(crop="none"),
                                   progress=False)
    comp = compare(data, tie_importance(det), n_boot=0, seed=run.train_seed)
    rho = [(fam, f"tie_lrp_spearman_{c['group']}", c["value"]) for c in comp.correlations if c["statistic"] == "spearman"]
    return run.rows("rine", "rine", [(s, "ap", res.rows[s]["ap"]) for s in res.rows] + rho)


#: Open-set attribution metrics kept per block (test split, fractions).
ATTRIBUTION_METRICS = ("accuracy", "macro_f1", "auroc", "tnr_at_tpr95", "oscr")


def part_attribution(run: SeedRun) -> list[dict]:
    """Open-set attribution as ``analyses/attribution.py`` runs it on the embedded default (the seeded random
    CLIP stand-in, fixed like released weights; logistic-regression probes per block), on this run's
    benchmark, with the train/val/test partition and the probes drawn from the training seed."""
    from ..attribution.openset import best_block
    from ..attribution.run import EMBEDDED_C_STEP, embedded_default, run_attribution
    backbone, root, spec, per_class, pre = embedded_default(config=run.bench_config)
    report = run_attribution(backbone, root, spec, blocks="all", max_per_class=per_class, seed=run.train_seed,
                             preprocessing=pre, grid_options={"c_step": EMBEDDED_C_STEP},
                             probe_options={"seed": run.train_seed}, progress=False)
    best = best_block(report.results, report.select)
    return run.rows(backbone.model_name, "attribution",
                    [(f"block {r.block}", m, r.test.metrics[m]) for r in report.results for m in ATTRIBUTION_METRICS]
                    + [("best block", m, best.test.metrics[m]) for m in ATTRIBUTION_METRICS]
                    + [("best block", "block", best.block)])


#: The parts a study can run, in order (name -> function of a :class:`SeedRun`).
PARTS: dict[str, Callable[[SeedRun], list[dict]]] = {
    "properties": part_properties, "robust": part_robust, "dropout": part_dropout, "median": part_median,
    "color": part_color, "rine": part_rine, "attribution": part_attribution}


def _sources(run: SeedRun, names: Iterable[str]) -> dict | None:
    """The run's benchmark (``images_sha256``) and the checkpoints of its default detectors ``names``, when
    they are in the cache (a run read back from its CSV is described too); ``None`` when one is missing."""
    from ..defaults import DEFAULT_RECIPES, is_cached
    names = [n for n in names if n in DEFAULT_RECIPES]
    if not all(is_cached(n, run.bench_config, seed=run.train_seed) for n in names):
        return None
    return provenance.collect(roots=[run.bench.root])["data"] | {
        "checkpoints": {n: provenance.checkpoints(run.detector(n)) for n in names}}


def run_study(bench_seeds: Sequence[int], train_seeds: Sequence[int], parts: Sequence[str], out: str | Path, *,
              batch_size: int = 32, replicas: int = 5, topk: int | None = None, bench_config: Any = None,
              progress: Callable[[str], None] | None = None) -> "SeedStudy":
    """Every (benchmark seed, training seed) run of ``parts``; finished runs (``runs/b<B>-s<S>.csv`` with
    these parts) are read back instead of recomputed. Returns the :class:`SeedStudy` of every run's rows."""
    import dataclasses

    import pandas as pd

    from ..defaults import benchmark_config
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise KeyError(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    out = Path(out)
    say = progress or (lambda msg: log.info("%s", msg))
    frames, timings, sources = [], [], {}
    base = bench_config or benchmark_config()
    for b in bench_seeds:
        cfg = dataclasses.replace(base, seed=int(b))
        for s in train_seeds:
            path = out / "runs" / f"b{b}-s{s}.csv"
            done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
            todo = [p for p in parts if p not in set(done["part"])]
            run = SeedRun(int(b), int(s), out, batch_size=batch_size, replicas=replicas, topk=topk, bench_config=cfg)
            for part in todo:
                t0 = time.perf_counter()
                say(f"benchmark seed {b}, training seed {s}: {part}")
                done = pd.concat([done, pd.DataFrame(PARTS[part](run), columns=COLUMNS)], ignore_index=True)
                timings.append({"bench_seed": b, "train_seed": s, "part": part,
                                "seconds": round(time.perf_counter() - t0, 1)})
                with atomic_path(path) as tmp:  # each finished part is kept: a killed study resumes here
                    done.to_csv(tmp, index=False)
            frames.append(done[done["part"].isin(parts)])
            source = _sources(run, done["detector"].unique())
            if source is not None:
                sources[f"b{b}-s{s}"] = source
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    frame = frame.astype({"bench_seed": int, "train_seed": int, "value": float})
    frame.attrs.update(timings=timings, sources=sources)
    return SeedStudy(frame, base.train_family)


#: Per-run differences summarised beside the measured metrics: part -> (new metric, minuend, subtrahend),
#: e.g. what grayscale costs, or what masking the top-k maps costs, in each run (the range of a difference
#: is not the difference of the ranges).
DIFFERENCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "properties": (("ap_gray_drop", "ap_rgb", "ap_gray"),),
    "robust": (("ap_gray_drop", "ap_rgb", "ap_gray"),),
    "dropout": (("ap_drop_topk", "ap_original", "ap_topk"), ("ap_drop_randomk", "ap_original", "ap_randomk"),
                ("ap_drop_lowk", "ap_original", "ap_lowk"),
                ("fake_acc_shift_topk", "fake_acc_topk", "fake_acc_original")),
}


def with_differences(frame):
    """``frame`` plus the :data:`DIFFERENCES` rows of every run that has both operands."""
    import pandas as pd
    keys = ["bench_seed", "train_seed", "detector", "part", "set"]
    extra = []
    for part, diffs in DIFFERENCES.items():
        wide = frame[frame["part"] == part].pivot_table(index=keys, columns="metric", values="value")
        for name, a, b in diffs:
            if a in wide.columns and b in wide.columns:
                extra.append((wide[a] - wide[b]).dropna().rename("value").reset_index().assign(metric=name))
    return pd.concat([frame, *extra], ignore_index=True)[list(COLUMNS)] if extra else frame


def summarise(frame):
    """Mean, sd, min, max and the number of runs per (detector, part, set, metric), the per-run
    :data:`DIFFERENCES` included."""
    g = with_differences(frame).groupby(["detector", "part", "set", "metric"], sort=False)["value"]
    summary = g.agg(mean="mean", sd="std", min="min", max="max", n="count").reset_index()
    return summary


def property_checks(frame, train_family: str) -> "Any":
    """Per run, whether the benchmark's properties a, b and c hold (NaN where a part was not run)."""
    import pandas as pd
    rows = []
    for (b, s), run in with_differences(frame).groupby(["bench_seed", "train_seed"], sort=True):
        ap = run.pivot_table(index=["detector", "set"], columns="metric", values="value")
        def get(det: str, fam: str, metric: str) -> float:
            return float(ap.loc[(det, fam), metric]) if (det, fam) in ap.index and metric in ap.columns else np.nan
        base = get("resnet50", train_family, "ap_rgb")
        unseen = [get("resnet50", f, "ap_rgb") for f in {f for d, f in ap.index if d == "resnet50"} - {train_family}]
        drop = get("resnet50", train_family, "ap_gray_drop")
        robust_drop = get("resnet50_cr", train_family, "ap_gray_drop")
        if np.isnan(base) and np.isnan(robust_drop):
            continue  # neither the properties nor the robust part in this study
        rows.append({
            "bench_seed": b, "train_seed": s, "ap_train": base, "gray_drop": drop, "robust_gray_drop": robust_drop,
            "a": base >= A_MIN_AP if not np.isnan(base) else np.nan,
            "b": (sum(u <= base - B_FAR for u in unseen) >= 2 and any(u >= base - B_NEAR for u in unseen))
            if unseen and not np.isnan(base) else np.nan,
            "c_baseline": drop >= C_DROP if not np.isnan(drop) else np.nan,
            "c_robust": robust_drop <= drop / 2 if not np.isnan(robust_drop) else np.nan})
    return pd.DataFrame(rows)


#: Metrics stored as fractions and shown in % (AP, accuracies, the attribution metrics).
PERCENT_METRICS = ("ap", "fake_acc", *ATTRIBUTION_METRICS)


def _fmt(row, scale: float) -> str:
    digits = 1 if scale != 1.0 else 2   # percentages with one decimal, correlations and counts with two
    if row["n"] == 1:
        return f"{scale * row['mean']:.{digits}f}"
    return f"{scale * row['mean']:.{digits}f} [{scale * row['min']:.{digits}f}, {scale * row['max']:.{digits}f}]"


def markdown(summary, checks) -> str:
    """The README's tables: per part, rows = metric x detector, columns = sets; cells 'mean [min, max]'
    (AP and accuracies in %), then the property checks per run."""
    lines = []
    for (part, det), block in summary.groupby(["part", "detector"], sort=False):
        sets = list(dict.fromkeys(block["set"]))
        runs = int(block["n"].max())
        lines += [f"**{part}** ({det}; mean [min, max] over {runs} run{'s' if runs > 1 else ''})", "",
                  "| metric | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        for metric, rows in block.groupby("metric", sort=False):
            scale = 100.0 if metric.startswith(PERCENT_METRICS) else 1.0
            cells = {r["set"]: _fmt(r, scale) for _, r in rows.iterrows()}
            lines.append(f"| {metric} | " + " | ".join(cells.get(s, "") for s in sets) + " |")
        lines.append("")
    if len(checks):
        lines += ["**properties per run** (a: AP >= 0.95 on the training family; b: two unseen families >= 0.10 "
                  "below, one within 0.05; c: grayscale costs >= 0.05 AP, the colour-robust variant at most half)", "",
                  "| benchmark seed | training seed | AP train | gray drop | CR gray drop | a | b | c | c (robust) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in checks.iterrows():
            lines.append(f"| {int(r['bench_seed'])} | {int(r['train_seed'])} | {r['ap_train']:.3f} | {r['gray_drop']:.3f} | "
                         f"{r['robust_gray_drop']:.3f} | {r['a']} | {r['b']} | {r['c_baseline']} | {r['c_robust']} |")
    return "\n".join(lines) + "\n"


def _merged_timings(path: Path, new: list[dict]) -> list[dict]:
    """The seconds per (run, part) of an earlier study in ``path``, updated with this process's ``new`` ones
    (a resumed study computes only the missing parts, and its timings would otherwise replace the rest)."""
    import json
    old = json.loads(path.read_text()).get("timings", []) if path.is_file() else []
    key = lambda t: (t["bench_seed"], t["train_seed"], t["part"])  # noqa: E731
    merged = {key(t): t for t in old} | {key(t): t for t in new}
    return sorted(merged.values(), key=key)


@dataclass
class SeedStudy(AnalysisResult):
    """Every run's tidy rows (``frame``, :data:`COLUMNS`; ``frame.attrs``: the ``timings`` of the parts computed
    now and each run's ``sources``) and the benchmark's ``train_family`` (for :func:`property_checks`);
    ``settings`` is its :attr:`record` (the summary's ``"settings"``)."""

    frame: Any
    train_family: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return self.settings

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``seeds.csv`` (every run's rows), ``summary.csv``, ``properties.csv``, ``summary.md`` and
        ``seed_study.json`` (settings, timings merged with the ones already there, each run's sources,
        provenance) under ``out_dir``; atomic; returns ``{name: path}``."""
        out = Path(out_dir)
        frame = self.frame
        summary, checks = summarise(frame), property_checks(frame, self.train_family)
        paths = {}
        for name, table in (("seeds", frame), ("summary", summary), ("properties", checks)):
            with atomic_path(out / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
            paths[name] = out / f"{name}.csv"
        paths["markdown"] = atomic_write_text(out / "summary.md", markdown(summary, checks))
        paths["json"] = atomic_write_json(out / "seed_study.json", {
            "settings": self.settings,
            "timings": _merged_timings(out / "seed_study.json", frame.attrs.get("timings", [])),
            "runs": frame.attrs.get("sources", {}), "provenance": provenance.collect()})
        return paths
