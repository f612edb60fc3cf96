"""Images/s of the sharded passes (docs/distributed.md) with 1, 2, ... processes under ``torchrun``.

FF-RS (``compute_ffrs``, every feature layer of a random-weight ResNet-50) and prediction
(``predict_records``) over N generated 224x224 PNGs (half real, half fake, ``crop="none"``), each
process with one intra-op thread (``OMP_NUM_THREADS=1``), gloo on the CPU or NCCL with ``--device cuda``
(one GPU per process). The time is that of the pass on rank 0 between two barriers: data decoding, the
model and the final all-reduce / gather included; interpreter start, process-group setup and model
building excluded. Each (task, processes) runs in a fresh ``torchrun``.

    python bench/scaling.py [--procs 1 2] [--ffrs_images 32] [--predict_images 96] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ("ffrs", "predict")


def make_images(root: Path, n: int, side: int = 224) -> Path:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("0_real" if i % 2 == 0 else "1_fake")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(sub / f"{i:05d}.png")
    return root


def worker(args: argparse.Namespace) -> None:
    """One rank of a ``torchrun`` launch: time one pass, rank 0 prints a JSON line."""
    import torch

    from forensics.analysis.ffrs import compute_ffrs, ffrs_transform
    from forensics.analysis.inference import predict_records
    from forensics.data import collect
    from forensics.detectors import create
    from forensics.distributed import local_device, session

    torch.set_num_threads(1)
    device = local_device(args.device)
    with session(device) as run:
        torch.manual_seed(0)
        detector = create("resnet50").to(device).eval()
        records = collect([args.data])[:args.images]
        run.barrier()
        start = time.perf_counter()
        if args.task == "ffrs":
            compute_ffrs(detector, records, batch_size=args.bsize, transform=ffrs_transform(detector, "none"),
                         conf_real=0.5, conf_fake=0.5, progress=False)
        else:
            predict_records(detector, records, batch_size=args.bsize, transform=detector.transform(crop="none"),
                            progress=False)
        if device is not None and str(device).startswith("cuda"):
            torch.cuda.synchronize()
        run.barrier()
        seconds = time.perf_counter() - start
        report = run.report()
        if run.is_main:
            print(json.dumps({"task": args.task, "procs": run.world_size, "backend": run.backend,
                              "images": len(records), "seconds": seconds, "images_per_s": len(records) / seconds,
                              "images_per_rank": report["images_per_rank"]}), flush=True)


def launch(task: str, procs: int, data: Path, images: int, bsize: int, device: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", __file__,
           "--worker", "--task", task, "--data", str(data), "--images", str(images), "--bsize", str(bsize),
           "--device", device]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="processes per run (default: 1 2)")
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="passes to time (default: both)")
    ap.add_argument("--ffrs_images", type=int, default=32)
    ap.add_argument("--predict_images", type=int, default=96)
    ap.add_argument("--bsize", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = make_images(Path(tmp), max(args.ffrs_images, args.predict_images))
        print("| task | processes | backend | images | per rank | seconds | images/s | x 1 process |")
        print("|---|---|---|---|---|---|---|---|")
        for task, n in (("ffrs", args.ffrs_images), ("predict", args.predict_images)):
            if task not in args.tasks:
                continue
            base = None
            for procs in args.procs:
                r = launch(task, procs, data, n, args.bsize, args.device)
                base = base or r["images_per_s"]
                print(f"| {task} | {procs} | {r['backend']} | {r['images']} | {r['images_per_rank']} | "
                      f"{r['seconds']:.1f} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
