"""FF-RS speed and peak memory: our streaming FF-RS vs the reference's store-everything strategy,
with a plain forward pass of the same model as the yardstick.

ResNet-50 with random weights and calibrated BatchNorm statistics; N generated ``--size`` x ``--size``
PNGs (half real, half fake; confidence filter 0.5, so every correctly classified image is kept),
batch 16, full-resolution input (``crop="none"``). Each (strategy, N) runs in a FRESH subprocess so
that its peak RSS (``ru_maxrss``) is its own:

- ``ffrs``: :func:`forensics.analysis.ffrs.compute_ffrs` as the analyses run it;
- ``store_all``: the reference's strategy emulated: LRP as this project computed it before
  (zennit's rule hooks and ``ResNetCanonizer``, every layer's full relevance map returned), every
  kept image's per-layer relevance kept (float32, on the device) and omega aggregated at the end;
- ``forward``: a plain forward pass (no gradient) over the same images and batches.

Seconds per image are the compute time (data loading included, model building excluded) over N;
"per added image" is the difference between consecutive N, which cancels the fixed costs. Prints a
table; no assertion (targets in bench/README.md).

    python bench/ffrs_memory.py                          # 224 px, N = 16 48 96 192
    python bench/ffrs_memory.py --size 64 --sizes 16 64 256
    python bench/ffrs_memory.py --device cuda --batch-sizes 16 64 --sizes 192   # TF32 off while explaining
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

MODES = ("ffrs", "store_all", "forward")


def make_images(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "set" / ("1_fake" if i % 2 else "0_real")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def calibrated_resnet50(size: int, device: str):
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
    return model.eval().to(device)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def store_all(model, records, transform, batch_size: int) -> int:
    """The reference's strategy on the LRP this project used before (zennit's hooks and canonizer):
    keep every kept image's relevance per layer, aggregate at the end."""
    import dataclasses

    from zennit.torchvision import ResNetCanonizer

    from forensics.analysis.ffrs import channel_shares, confidence_mask
    from forensics.data import ImageDataset, iter_batches
    from forensics.explain.lrp import LRPEngine, lrp_spec
    spec = dataclasses.replace(
        lrp_spec(model), canonizers=lambda d: [ResNetCanonizer()],
        composite=lambda s, det, bn: dataclasses.replace(s, composite=None).build_composite(det, bn,
                                                                                            zennit_hooks=True))
    kept: dict[int, dict[str, list[torch.Tensor]]] = {0: {}, 1: {}}
    with LRPEngine(model, spec=spec) as lrp:
        for batch in iter_batches(ImageDataset(records, transform), batch_size=batch_size):
            res = lrp.explain(batch.images, batch.labels, layers=None)
            keep = confidence_mask(res.probs, batch.labels, 0.5, 0.5)
            for i in keep.nonzero().squeeze(1).tolist():
                side = kept[int(batch.labels[i])]
                for name, rel in res.layer_relevance.items():
                    side.setdefault(name, []).append(rel[i].clone())
            del res
    for side in kept.values():  # aggregate at the end
        for name, tensors in side.items():
            channel_shares(torch.stack(tensors)).mean(dim=0)
    return sum(len(next(iter(side.values()), [])) for side in kept.values())


def forward_only(model, records, transform, batch_size: int) -> int:
    from forensics.data import ImageDataset, iter_batches
    with torch.no_grad():
        for batch in iter_batches(ImageDataset(records, transform), batch_size=batch_size):
            model(batch.images.to(model.device))
    return len(records)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(mode: str, n: int, size: int, threads: int | None, batch_size: int, device: str) -> dict:
    if threads:
        torch.set_num_threads(threads)
    from forensics.analysis.ffrs import compute_ffrs
    from forensics.data import forensynths
    model = calibrated_resnet50(size, device)
    transform = model.transform(crop="none")
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp), max(n, 2), size)
        records = forensynths(tmp, "set")
        base = peak_rss_mib()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        if mode == "ffrs":
            res = compute_ffrs(model, records, batch_size=batch_size, transform=transform, conf_real=0.5,
                               conf_fake=0.5, progress=False)
            used = sum(c["used"] for c in res.counts.values())
        elif mode == "store_all":
            used = store_all(model, records, transform, batch_size)
        else:
            used = forward_only(model, records, transform, batch_size)
        sync(device)
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"mode": mode, "n": n, "used": used, "seconds": seconds, "s_per_img": seconds / n,
            "rss_before_mib": base, "peak_rss_mib": peak_rss_mib(), "peak_gpu_mib": gpu, "batch": batch_size}


def run_fresh(mode: str, n: int, args, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(n), "--size", str(args.size), "--device", args.device,
           "--batch-sizes", str(batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 48, 96, 192], help="numbers of images N")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels (default: %(default)s; 64 for a "
                                                          "quick run)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16], help="FF-RS batch sizes (default: 16)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to run (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.size, args.threads, args.batch_sizes[0],
                                args.device)))
        return
    load = os.getloadavg()
    rows = []
    for bs in args.batch_sizes:
        for mode in args.modes:
            for n in args.sizes:
                rows.append(run_fresh(mode, n, args, bs))
                r = rows[-1]
                print(f"  done: {mode} N={n} batch {bs}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
    threads = args.threads or torch.get_num_threads()
    print(f"FF-RS, ResNet-50 (random, calibrated BN), {args.size}x{args.size}, {args.device}, {threads} thread(s), "
          f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    gpu = args.device.startswith("cuda")
    print(f"{'strategy':<10} {'batch':>5} {'N':>5} {'kept':>5} {'seconds':>8} {'s/img':>7} {'s/added img':>12} "
          f"{'x forward':>9} {'added x fwd':>11} {'peak RSS MiB':>13}" + (f" {'peak GPU MiB':>13} {'img/s':>7}" if gpu else ""))
    for bs in args.batch_sizes:
        fwd = {r["n"]: r for r in rows if r["mode"] == "forward" and r["batch"] == bs}
        for mode in args.modes:
            prev = None
            for r in (r for r in rows if r["mode"] == mode and r["batch"] == bs):
                added = (r["seconds"] - prev["seconds"]) / (r["n"] - prev["n"]) if prev else float("nan")
                ratio = r["s_per_img"] / fwd[r["n"]]["s_per_img"] if r["n"] in fwd else float("nan")
                f_prev = fwd.get(prev["n"]) if prev else None
                added_ratio = (added / ((fwd[r["n"]]["seconds"] - f_prev["seconds"]) / (r["n"] - prev["n"]))
                               if f_prev and r["n"] in fwd else float("nan"))
                extra = f" {r['peak_gpu_mib']:>13.0f} {r['n'] / r['seconds']:>7.1f}" if gpu else ""
                print(f"{mode:<10} {bs:>5} {r['n']:>5} {r['used']:>5} {r['seconds']:>8.2f} {r['s_per_img']:>7.3f} "
                      f"{added:>12.3f} {ratio:>9.2f} {added_ratio:>11.2f} {r['peak_rss_mib']:>13.0f}" + extra)
                prev = r
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
