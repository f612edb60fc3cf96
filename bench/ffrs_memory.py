"""FF-RS memory and speed: streaming accumulation vs the reference's store-everything strategy.

On a ResNet-50 with random weights and calibrated BatchNorm statistics, FF-RS (fake and real sides,
confidence filter at 0.5 so every correctly classified image is kept) runs over N generated
``--size`` x ``--size`` PNGs (half real, half fake), each N in a FRESH subprocess so that the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that run's own:

- ``streaming``: :func:`forensics.analysis.ffrs.compute_ffrs` (running ``[C]`` sums per layer);
- ``store_all``: the reference's strategy emulated: the same LRP batches, but every kept image's
  per-layer relevance tensor is kept (on the CPU, float32) and omega is aggregated at the end.

Also LRP throughput (every feature layer read, as FF-RS) at batch size 1 vs 16. Prints a table; no
assertion (targets: streaming peak RSS at N=256 at most 1.2x that at N=16).

    python bench/ffrs_memory.py [--sizes 16 64 256] [--size 64] [--threads 1] [--mmap-threshold 131072]

With glibc's default (dynamic) mmap threshold, freed large tensors stay in the heap after the first
batches, so the peak RSS of the streaming run still rises over the first few batches (then stays
flat); ``--mmap-threshold 131072`` separates that allocator effect from the accumulator's memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def make_images(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "set" / ("1_fake" if i % 2 else "0_real")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def calibrated_resnet50(size: int):
    from forensics.detectors import create
    torch.manual_seed(0)
    model = create("resnet50")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, size, size))
    return model.eval()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def store_all(model, records, transform, batch_size: int) -> int:
    """The reference's strategy: keep every kept image's relevance per layer, aggregate at the end."""
    from forensics.analysis.ffrs import channel_shares, confidence_mask
    from forensics.data import ImageDataset, iter_batches
    from forensics.explain.lrp import LRPExplainer
    kept: dict[int, dict[str, list[torch.Tensor]]] = {0: {}, 1: {}}
    with LRPExplainer(model) as lrp:
        for batch in iter_batches(ImageDataset(records, transform), batch_size=batch_size):
            res = lrp.explain(batch.images, batch.labels, layers=None)
            keep = confidence_mask(res.probs, batch.labels, 0.5, 0.5)
            for i in keep.nonzero().squeeze(1).tolist():
                side = kept[int(batch.labels[i])]
                for name, rel in res.layer_relevance.items():
                    side.setdefault(name, []).append(rel[i].clone())
    for side in kept.values():  # aggregate at the end
        for name, tensors in side.items():
            channel_shares(torch.stack(tensors)).mean(dim=0)
    return sum(len(next(iter(side.values()), [])) for side in kept.values())


MODES = ("streaming", "store_all")


def worker(mode: str, n: int, size: int, threads: int, dynamic: bool = False) -> dict:
    torch.set_num_threads(threads)
    from forensics.analysis.ffrs import compute_ffrs
    from forensics.data import forensynths
    model = calibrated_resnet50(size)
    transform = model.transform(crop="none")
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp), max(n, 2), size)
        records = forensynths(tmp, "set")
        base = peak_rss_mib()
        start = time.perf_counter()
        if mode == "streaming":
            res = compute_ffrs(model, records, batch_size=16, transform=transform, conf_real=0.5, conf_fake=0.5,
                               progress=False, fixed_mmap_threshold=not dynamic)
            used = sum(c["used"] for c in res.counts.values())
        elif mode == "store_all":
            used = store_all(model, records, transform, batch_size=16)
        else:  # LRP throughput at batch size n
            from forensics.explain.lrp import LRPExplainer
            x = torch.randn(32, 3, size, size)
            with LRPExplainer(model) as lrp:
                lrp.explain(x[:n], layers=None)  # warm-up
                start = time.perf_counter()
                for i in range(0, len(x), n):
                    lrp.explain(x[i:i + n], layers=None)
            used = len(x)
        seconds = time.perf_counter() - start
    return {"mode": mode, "n": n, "used": used, "seconds": seconds, "img_s": (used if mode == "lrp" else n) / seconds,
            "rss_before_mib": base, "peak_rss_mib": peak_rss_mib()}


def run_fresh(mode: str, n: int, size: int, threads: int, mmap_threshold: int | None = None,
              dynamic: bool = False) -> dict:
    env = dict(os.environ)
    if mmap_threshold is not None:  # a fixed threshold also disables glibc's dynamic adjustment
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(n), "--size", str(size),
                          "--threads", str(threads), *(["--dynamic-threshold"] if dynamic else [])], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="numbers of images N")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    ap.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                    help="set glibc's MALLOC_MMAP_THRESHOLD_ in the workers (e.g. 131072: large tensors are "
                         "always mmapped and returned, so RSS does not keep freed heap; default: glibc's dynamic)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="strategies to run")
    ap.add_argument("--dynamic-threshold", action="store_true",
                    help="streaming without compute_ffrs' fixed mmap threshold (glibc's dynamic one, for comparison)")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.size, args.threads,
                                args.dynamic_threshold)))
        return
    rows = [run_fresh(mode, n, args.size, args.threads, args.mmap_threshold, args.dynamic_threshold)
            for mode in args.modes for n in args.sizes]
    malloc = (f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else
              "glibc default malloc" + (", dynamic threshold" if args.dynamic_threshold else
                                        ", compute_ffrs fixes the mmap threshold"))
    print(f"FF-RS, ResNet-50 (random, calibrated BN), {args.size}x{args.size}, batch 16, {args.threads} thread(s), "
          f"{malloc}")
    print(f"{'strategy':<10} {'N':>5} {'kept':>5} {'peak RSS MiB':>13} {'vs N=' + str(args.sizes[0]):>8} {'img/s':>7}")
    for mode in args.modes:
        first = next(r for r in rows if r["mode"] == mode)
        for r in (r for r in rows if r["mode"] == mode):
            print(f"{mode:<10} {r['n']:>5} {r['used']:>5} {r['peak_rss_mib']:>13.0f} "
                  f"{r['peak_rss_mib'] / first['peak_rss_mib']:>8.2f} {r['img_s']:>7.1f}")
    last = {m: next(r for r in reversed(rows) if r["mode"] == m) for m in args.modes}
    if len(last) == 2:
        print(f"store_all / streaming peak RSS at N={args.sizes[-1]}: "
              f"{last['store_all']['peak_rss_mib'] / last['streaming']['peak_rss_mib']:.2f}x")
    for bs in (1, 16):
        r = run_fresh("lrp", bs, args.size, args.threads, args.mmap_threshold)
        print(f"LRP (all feature layers read) batch {bs:>2}: {r['img_s']:.1f} img/s")


if __name__ == "__main__":
    main()
