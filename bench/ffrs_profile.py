"""Where FF-RS spends its time and memory: one LRP batch (every feature layer read, as FF-RS) of a
ResNet-50 (random weights, calibrated BatchNorm statistics) at ``--size`` px.

    python bench/ffrs_profile.py [--size 224] [--batch 16] [--threads 2] [--top 25]

Prints the peak RSS above the loaded model (``ru_maxrss``, in a fresh process), the wall time of the
batch next to a plain forward pass of the same batch, and torch.profiler's operator table (self CPU
time, and the memory each operator allocates) of one explained batch.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
from ffrs_memory import calibrated_resnet50  # bench/ is the script's directory, hence on sys.path


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: %(default)s)")
    ap.add_argument("--top", type=int, default=25, help="operators to list (default: %(default)s)")
    ap.add_argument("--no-profiler", action="store_true", help="only time and peak RSS")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from forensics.analysis.ffrs import FFRSAccumulator, confidence_mask
    from forensics.explain.lrp import LRPEngine
    model = calibrated_resnet50(args.size, "cpu")
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.arange(args.batch) % 2
    with torch.no_grad():
        model(x[:2])
        t0 = time.perf_counter()
        model(x)
        forward_s = time.perf_counter() - t0
    base = rss_mib()
    acc = FFRSAccumulator.for_detector(model)

    def ffrs_batch():
        res = lrp.explain(x, labels, layers=None)
        acc.update(res, labels, confidence_mask(res.probs, labels, 0.5, 0.5))

    with LRPEngine(model) as lrp:
        t0 = time.perf_counter()
        ffrs_batch()
        lrp_s = time.perf_counter() - t0
        peak = rss_mib()
        print(f"ResNet-50, {args.batch} x {args.size}px, {args.threads} thread(s): forward {forward_s:.2f} s, "
              f"FF-RS batch (LRP + accumulate) {lrp_s:.2f} s = {lrp_s / forward_s:.1f}x forward; "
              f"peak RSS {peak:.0f} MiB, {peak - base:.0f} MiB above the loaded model ({base:.0f} MiB)")
        if args.no_profiler:
            return
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            ffrs_batch()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=12))


if __name__ == "__main__":
    main()
