"""Streaming at scale: images per second and peak RSS of an evaluation (scoring + per-group answers) over
N generated images, for each N, side by side. Peak memory must not grow with the number of images:
the run fails (exit 1) when RSS(largest N) / RSS(smallest N) exceeds --max_ratio (default 1.1).

Each N runs in its own process (a clean peak RSS: ``resource.getrusage`` ``ru_maxrss``), after the
files are written by this one: N small PNGs listed in a CSV manifest (``--layout manifest``) or N rows
of Parquet shards (``--layout parquet``), half real, half fake. The detector is a random-weight RINE on
the project's tiny ViT (4 blocks, width 64, 56 px centre crop; ``--detector resnet50``: a random
ResNet-50 at full resolution), so the numbers measure the data path, not a large model.

    python bench/stream_scale.py                       # N = 1,000 and 10,000, manifest
    python bench/stream_scale.py --layout parquet --n 1000 10000 100000
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 64


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_manifest(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    lines = ["path,label,source"]
    for i in range(n):
        (root / "img" / f"{i:06d}.png").write_bytes(_png(rng))
        lines.append(f"img/{i:06d}.png,{i % 2},{'gen' + str(i % 4) if i % 2 else 'real'}")
    path = root / "list.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(root: Path, n: int, seed: int = 0, rows_per_shard: int = 5000) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for start in range(0, n, rows_per_shard):
        rows = [{"image": {"bytes": _png(rng), "path": None}, "label": i % 2} for i in range(start, min(n, start + rows_per_shard))]
        pq.write_table(pa.Table.from_pylist(rows), root / f"train-{start // rows_per_shard:05d}.parquet", row_group_size=500)
    return root


def child(layout: str, root: str, bsize: int, detector_name: str) -> None:
    """Score every image of ``root`` and compute the per-group answers; print one JSON line."""
    import resource

    import torch

    from forensics.analysis.breakdown import breakdown
    from forensics.analysis.evaluate import evaluate_sets
    from forensics.data import load_sets
    from forensics.detectors import create
    torch.manual_seed(0)
    options = {"backbone": "forensics-tiny-vit", "backbone_weights": None} if detector_name == "rine" else {}
    detector = create(detector_name, **options)
    start = time.perf_counter()
    sets = load_sets(root, layout=layout)
    result = evaluate_sets(detector, sets, crop=None if detector_name == "rine" else "none", batch_size=bsize,
                           progress=True)
    breakdown(result.predictions)
    seconds = time.perf_counter() - start
    n = sum(len(p.records) for p in result.predictions.values())
    print(json.dumps({"n": n, "seconds": seconds, "images_per_s": n / seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--layout", choices=["manifest", "parquet"], default="manifest")
    ap.add_argument("--bsize", type=int, default=64)
    ap.add_argument("--detector", choices=["rine", "resnet50"], default="rine")
    ap.add_argument("--max_ratio", type=float, default=1.1)
    ap.add_argument("--child", nargs=2, metavar=("LAYOUT", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.bsize, args.detector)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            root = Path(tmp) / f"n{n}"
            data = write_manifest(root, n) if args.layout == "manifest" else write_parquet(root, n)
            out = subprocess.run([sys.executable, __file__, "--child", args.layout, str(data), "--bsize", str(args.bsize),
                                  "--detector", args.detector],
                                 check=True, capture_output=True, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"layout {args.layout}, {SIDE}x{SIDE} PNG, random {args.detector}, batch {args.bsize}")
    print(f"{'N':>8} {'images/s':>10} {'peak RSS (MiB)':>15}")
    for r in results:
        print(f"{r['n']:>8,} {r['images_per_s']:>10.1f} {r['peak_rss_mib']:>15.1f}")
    ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"RSS ratio {results[-1]['n']:,} / {results[0]['n']:,}: {ratio:.3f} (limit {args.max_ratio})")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
