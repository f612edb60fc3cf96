"""Forward-pass throughput of every registered detector (random weights, 224x224 inputs).

Prints images/s at each batch size. CLIP detectors use the project's small backbone by default
(``--full-clip`` builds ViT-L/14: ~1.2 GB of fp32 weights, slow on CPU).

    python bench/detector_throughput.py [--device auto] [--batch-sizes 1 16] [--iters 3] [--full-clip]
"""
from __future__ import annotations

import argparse
import time

import torch

from forensics.detectors import create, list_detectors
from forensics.device import resolve_device


def throughput(model, batch: int, iters: int, device: torch.device, size: int) -> float:
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--full-clip", action="store_true", help="benchmark the CLIP detectors on ViT-L/14")
    args = ap.parse_args()
    device = resolve_device(args.device)
    clip = {} if args.full_clip else {"backbone": "forensics-small-vit"}
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'detector':<10} {'backbone':<22} " + " ".join(f"{'bs=' + str(b):>10}" for b in args.batch_sizes)
          + "  (images/s)")
    for name in list_detectors():
        opts = {**clip, "backbone_weights": None} if name in ("rine", "ufd") else {}
        model = create(name, device=device, **opts)
        size = model.config.input_size
        rates = [throughput(model, b, args.iters, device, size) for b in args.batch_sizes]
        backbone = opts.get("backbone", "ViT-L-14-quickgelu") if opts else "-"
        print(f"{name:<10} {backbone:<22} " + " ".join(f"{r:10.1f}" for r in rates))


if __name__ == "__main__":
    main()
