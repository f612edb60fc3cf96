"""Sharded, resumable passes (forensics.distributed; docs/distributed.md): shards, per-image seeds and
checkpoints in-process, and real ``torchrun`` launches of 2 gloo processes on the CPU compared with one
process (FF-RS omega, predictions and metrics), a rank that raises, and a SIGKILLed run resumed."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from forensics import distributed
from forensics.analysis.fmap_ranking import read_ranking_csv
from forensics.data import ImageRecord
from helpers import calibrated, run_script, save_cnndet_checkpoint, single_thread

ROOT = Path(__file__).resolve().parents[1]
RANK_FMAPS = ROOT / "analyses" / "rank_fmaps.py"
EVALUATE = ROOT / "analyses" / "evaluate.py"


# ---------------------------------------------------------------------------- in-process
@pytest.mark.parametrize("block", [1, 2, 3, 5])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_index_once(world, block):
    for n in (0, 1, 2, 3, 7, 10, 17):
        for mode in ("contiguous", "strided"):
            parts = [distributed.shard_indices(n, r, world, mode, block) for r in range(world)]
            flat = [i for p in parts for i in p]
            assert sorted(flat) == list(range(n)), (n, mode, parts)
        parts = [distributed.shard_range(n, r, world, block) for r in range(world)]
        assert [i for p in parts for i in p] == list(range(n))  # contiguous: rank order is input order
        assert all(p.start % block == 0 for p in parts if len(p))  # shards start on batch boundaries
        full = [len(p) for p in parts if len(p) and p.stop != n]
        assert all(k % block == 0 for k in full)
    assert [len(distributed.shard_range(7, r, 2, 2)) for r in range(2)] == [4, 3]  # uneven tail, no padding


def test_launch_env():
    assert distributed.launch_env({}) == distributed.LaunchEnv()
    env = distributed.launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.launched) == (1, 2, 1, True)
    with pytest.raises(Exception, match="incomplete"):
        distributed.launch_env({"RANK": "0"})


def test_plain_run_collectives_are_identity():
    run = distributed.current()
    assert not run.sharded and run.is_main and run.world_size == 1
    t = {"a": torch.arange(3, dtype=torch.float64), "n": torch.tensor([2], dtype=torch.int64)}
    out = run.all_reduce(t)
    assert all(torch.equal(out[k], t[k]) for k in t)
    assert run.gather_rows([2, 0, 1], ["c", "a", "b"]) == ([0, 1, 2], ["a", "b", "c"])


def _images(folder: Path, n: int, seed: int = 0, size=(40, 40)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_per_image_seed_does_not_depend_on_the_shard(tmp_path):
    """Under torchrun a random transform draws per image from (seed, global index): same crop whatever the
    rank holding the image."""
    from torchvision import transforms as T
    records = [ImageRecord(p, 1, "s") for p in _images(tmp_path, 5, size=(48, 48))]
    tf = T.Compose([T.RandomResizedCrop(16), T.ToTensor()])
    whole = distributed._ShardDataset(records, range(5), tf, None, seed=3)
    part = distributed._ShardDataset(records[3:], [3, 4], tf, None, seed=3)
    assert part[0]["index"] == 3 and torch.equal(part[0]["image"], whole[3]["image"])
    assert not torch.equal(whole[3]["image"], distributed._ShardDataset(records, range(5), tf, None, seed=4)[3]["image"])


def test_resume_refuses_other_files_settings_and_world_size(tmp_path):
    records = [ImageRecord(p, 0, "s") for p in _images(tmp_path / "img", 3)]
    ckpt = distributed.Checkpointing(tmp_path / "ck", every=1, settings={"conf": 0.9})
    run = distributed.Run(checkpointing=ckpt)
    pass_ = run.shard(records, state={"n": 0})
    for i, batch in enumerate(pass_.batches(None, 1)):
        if i == 1:
            break  # "killed" in the second batch: the first one is checkpointed
        pass_.state["n"] += len(batch)
    with pytest.raises(distributed.ResumeMismatch, match="file list changed"):
        distributed.Run(checkpointing=ckpt).shard(records[:2])
    with pytest.raises(distributed.ResumeMismatch, match="settings changed \\(conf\\)"):
        distributed.Run(checkpointing=distributed.Checkpointing(tmp_path / "ck", settings={"conf": 0.5})).shard(records)
    resumed = distributed.Run(checkpointing=ckpt).shard(records, state={"n": 0})
    assert resumed.done == 1 and resumed.state == {"n": 1}
    batches = []
    for batch in resumed.batches(None, 1):
        resumed.state["n"] += len(batch)
        batches.append(batch.indices)
    assert batches == [[1], [2]] and resumed.state == {"n": 3}
    assert resumed.finish().total == 3
    # a multi-pass run: the finished pass is skipped with its state, the next one continues
    second = distributed.Run(checkpointing=ckpt)
    first = second.shard(records, state={"n": 0})
    assert list(first.batches(None, 1)) == [] and first.state == {"n": 3}
    (tmp_path / "ck" / "other-0-rank0-of-2.pt").write_bytes(b"")
    with pytest.raises(distributed.ResumeMismatch, match="2 process"):
        distributed.Run(checkpointing=ckpt).shard(records)


# ---------------------------------------------------------------------------- torchrun
def torchrun(argv: list[str], nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N argv`` (free port), one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """7 images (3 real, 4 fake: an odd count, split 4 + 3 at batch size 2) and a tiny R50 checkpoint."""
    root = tmp_path_factory.mktemp("dist")
    _images(root / "data" / "val" / "0_real", 3, seed=0)
    _images(root / "data" / "val" / "1_fake", 4, seed=1)
    ckpt = save_cnndet_checkpoint(root / "r50.pth", calibrated("resnet50", size=32))
    return root, ckpt


def ffrs_args(root: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(root / "data"), "--gan_name", "val",
            "--have_classes", "False", "--bsize", "2", "--conf_fake", "0.5", "--conf_real", "0.5",
            "--device", "cpu", "--out", str(out), "--topk", "5", *extra]


def one_rank_env(monkeypatch) -> None:
    """The environment torchrun gives a launch of one process (a free port on localhost)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)


def test_ffrs_two_ranks_equal_one_rank(setup, monkeypatch):
    """The reference's random crop (per-image seeds under torchrun): 2 ranks vs 1 rank (in-process)."""
    root, ckpt = setup
    proc = torchrun([str(RANK_FMAPS), *ffrs_args(root, ckpt, root / "two", "--crop_size", "32")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_rank_env(monkeypatch)
    with single_thread():
        assert run_script(RANK_FMAPS, ffrs_args(root, ckpt, root / "one", "--crop_size", "32")) == 0
    one, two = (root / name / "resnet50" / "val_default" for name in ("one", "two"))
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["counts"] == s2["counts"]
    assert s2["summary"]["total"] == 7 and s2["summary"]["used"] == 7
    assert s2["distributed"]["world_size"] == 2 and s2["distributed"]["images_per_rank"] == [4, 3]
    assert s1["distributed"]["images_per_rank"] == [7]
    side = "fake" if s1["counts"]["fake"]["used"] else "real"
    r1, r2 = read_ranking_csv(one / f"val-{side}.csv"), dict((str(k), v) for k, v in read_ranking_csv(two / f"val-{side}.csv"))
    top = r1[:1000]
    a = np.array([v for _, v in top])
    b = np.array([r2[str(k)] for k, _ in top])
    assert a.min() > 0
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)


def test_evaluate_two_ranks_identical_predictions_and_metrics(setup):
    root, ckpt = setup
    args = ["--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(root / "data"), "--gan_name", "val",
            "--bsize", "2", "--crop", "none", "--device", "cpu", "--calibrate"]
    with single_thread():
        assert run_script(EVALUATE, [*args, "--out", str(root / "e1")]) == 0
    proc = torchrun([str(EVALUATE), *args, "--out", str(root / "e2")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("eval_none.csv", "eval_none-predictions.csv"):
        f1, f2 = pd.read_csv(root / "e1" / name), pd.read_csv(root / "e2" / name)
        pd.testing.assert_frame_equal(f1, f2)
    p = pd.read_csv(root / "e2" / "eval_none-predictions.csv")
    assert len(p) == 7 and p["path"].is_unique  # each image once, in input order
    assert list(p["path"]) == sorted(p["path"])
    info = json.loads((root / "e2" / "eval_none.json").read_text())["settings"]["distributed"]
    assert info["images_per_rank"] == [4, 3]


FAILING = """
import os, runpy, sys
from forensics.data import dataset
if os.environ["RANK"] == "1":
    def broken(self, index):
        raise RuntimeError("injected failure on rank 1")
    dataset.ImageDataset.__getitem__ = broken
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_raising_rank_fails_the_run_and_writes_nothing(setup, tmp_path):
    root, ckpt = setup
    wrapper = tmp_path / "fail.py"
    wrapper.write_text(FAILING)
    out = tmp_path / "out"
    proc = torchrun([str(wrapper), str(EVALUATE), "--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir",
                     str(root / "data"), "--gan_name", "val", "--bsize", "2", "--crop", "none", "--device", "cpu",
                     "--out", str(out)])
    assert proc.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: injected failure on rank 1" in proc.stderr  # our log line
    assert re.search(r"rank\s*:\s*1\b", proc.stderr)  # torchrun's failure report names the rank ...
    assert proc.stderr.count("injected failure on rank 1") >= 2  # ... with the traceback (error file)
    assert not out.exists() or not any(out.rglob("*.*"))


def test_sigkill_then_resume_equals_uninterrupted(setup, tmp_path):
    """One process, the reference's random crop: killed after a few checkpointed batches, resumed with
    --resume, the CSVs equal an uninterrupted run's (the checkpoint restores the sums and torch's RNG)."""
    root, ckpt = setup
    base = ffrs_args(root, ckpt, tmp_path / "a", "--bsize", "1", "--crop_size", "32")
    with single_thread():
        assert run_script(RANK_FMAPS, base) == 0
    resumable = ffrs_args(root, ckpt, tmp_path / "b", "--bsize", "1", "--crop_size", "32", "--resume",
                          "--checkpoint_every", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(RANK_FMAPS), *resumable], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckdir = tmp_path / "b" / "resnet50" / "val_default" / ".resume"
    deadline = time.monotonic() + 120
    while not any(ckdir.glob("*-rank*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # a batch or two more
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    blob = torch.load(next(ckdir.glob("*-rank*.pt")), weights_only=True)
    assert not blob["complete"] and 0 < blob["done"] < 7, "the run was not killed mid-way"
    assert not (tmp_path / "b" / "resnet50" / "val_default" / "summary.json").exists()
    with single_thread():
        changed = list(resumable)
        changed[changed.index("--conf_fake") + 1] = "0.6"
        assert run_script(RANK_FMAPS, changed) == 2  # settings changed: refused
        assert run_script(RANK_FMAPS, resumable) == 0
    a, b = (tmp_path / name / "resnet50" / "val_default" for name in ("a", "b"))
    for csv in sorted(p.name for p in a.glob("*.csv")):
        assert (a / csv).read_text() == (b / csv).read_text()
    assert json.loads((b / "summary.json").read_text())["counts"] == json.loads((a / "summary.json").read_text())["counts"]
    assert not ckdir.exists()  # checkpoints go once the outputs are written


def test_library_passes_in_a_one_rank_session(tmp_path, monkeypatch):
    """The sharded code paths (gloo group, gathers, all-reduce, rank-0 store, barrier) in-process with world
    size 1: the feature cache and the dropout pass give what a plain run gives; the run's report."""
    from forensics.detectors.feature_cache import extract_features, extract_or_load
    from helpers import tiny
    one_rank_env(monkeypatch)
    from forensics.analysis.dropout import score_variants
    model = tiny("rine")
    cnn = tiny("resnet50")
    records = [ImageRecord(p, i % 2, "s") for i, p in enumerate(_images(tmp_path / "img", 5, size=(64, 64)))]
    variants = {"top": [cnn.check_keys(["layer1.0.conv1.#3(T=64)"])[0]]}
    with single_thread():
        plain = extract_features(model, records, "block", batch_size=2, progress=False)
        plain_drop, _ = score_variants(cnn, records, variants, batch_size=2)
        with distributed.session("cpu") as run:
            assert run.sharded and run.backend == "gloo"
            cached = extract_or_load(model, records, "block", tmp_path / "cache", batch_size=2, progress=False)
            drop, summary = score_variants(cnn, records, variants, batch_size=2)
            report = run.report()
    assert torch.equal(cached.features, plain.features) and torch.equal(cached.indices, plain.indices)
    assert torch.equal(cached.labels, plain.labels)
    for name in ("original", "top"):
        assert np.array_equal(drop[name].logits, plain_drop[name].logits)
        assert [r.path for r in drop[name].records] == [r.path for r in records]
    assert summary.total == 5
    assert report == {"world_size": 1, "backend": "gloo", "images_per_rank": [10], "resumed": False}
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert distributed.current().sharded is False  # the session is closed


SLOW = """
import os, runpy, sys, time
from pathlib import Path
from forensics.data import dataset
Path(os.environ["PID_DIR"], os.environ["RANK"]).write_text(str(os.getpid()))
original = dataset.ImageDataset.__getitem__
def slow(self, index):
    time.sleep(0.4)
    return original(self, index)
dataset.ImageDataset.__getitem__ = slow
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def test_two_ranks_sigkilled_then_resumed_equal_one_process(setup, tmp_path):
    """torchrun with 2 ranks, rank 1 SIGKILLed once both ranks have checkpointed (torchrun then stops rank 0
    and fails), rerun with --resume: the predictions equal one uninterrupted process's, each image once."""
    from forensics.cli import main as cli_main
    root, ckpt = setup
    args = ["predict", "--detector", "resnet50", "--weights", str(ckpt), str(root / "data"), "--device", "cpu",
            "--bsize", "1", "--crop", "none"]
    with single_thread():
        assert cli_main([*args, "--out", str(tmp_path / "one.csv")]) == 0
    out = tmp_path / "two.csv"
    resumable = [*args, "--out", str(out), "--resume", "--checkpoint_every", "1"]
    wrapper = tmp_path / "slow.py"
    wrapper.write_text(SLOW)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PID_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(wrapper), "forensics", *resumable], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckdir = tmp_path / ".two.csv.resume"
    deadline = time.monotonic() + 120
    while len(list(ckdir.glob("*-rank*.pt"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int((tmp_path / "1").read_text()), signal.SIGKILL)
    assert proc.wait(timeout=60) != 0  # torchrun stopped rank 0 and failed
    done = [torch.load(p, weights_only=True) for p in sorted(ckdir.glob("*-rank*.pt"))]
    assert len(done) == 2 and not any(b["complete"] for b in done), "the run was not killed mid-way"
    assert not out.exists()
    proc = torchrun(["-m", "forensics", *resumable])
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(tmp_path / "one.csv"))
    info = json.loads(out.with_suffix(".json").read_text())["distributed"]
    assert info["resumed"] and info["world_size"] == 2 and sum(info["images_per_rank"]) < 7, info  # only the rest
    assert not ckdir.exists()


def test_collect_rows_keeps_few_tensors_in_input_order(tmp_path, monkeypatch):
    """Rows are buffered and moved into the pass state in chunks (not one tensor per batch: that fragmented the
    heap at 100k images, bench/README.md), in input order, the unreadable file listed, dtypes kept."""
    import forensics.distributed.rows as rows_module
    paths = _images(tmp_path / "img", 9)
    paths.insert(4, tmp_path / "img" / "broken.png")
    paths[4].write_bytes(b"not an image")
    records = [ImageRecord(p, i % 2, "s") for i, p in enumerate(paths)]
    monkeypatch.setattr(rows_module, "FLUSH_ROWS", 4)
    kept_states = []

    def step(batch):
        mean = batch.images.mean(dim=(1, 2, 3))
        return {"mean": mean, "index": torch.tensor(batch.indices, dtype=torch.int64),
                "half": mean.to(torch.bfloat16)}
    from forensics.distributed.passes import ShardPass
    original = ShardPass.finish

    def spy(self):
        kept_states.append({k: len(v) for k, v in self.state.items() if k != "indices"})
        return original(self)
    monkeypatch.setattr(ShardPass, "finish", spy)
    from torchvision import transforms as T
    indices, rows, summary = rows_module.collect_rows(records, step, ("mean", "index", "half"),
                                                      transform=T.ToTensor(), batch_size=2)
    assert indices == [0, 1, 2, 3, 5, 6, 7, 8, 9] and rows["index"].tolist() == indices
    assert [p for p, _ in summary.skipped] == [str(paths[4])]
    assert rows["mean"].dtype == torch.float32 and rows["half"].dtype == torch.bfloat16
    # batches fill with readable images: [0, 1] [2, 3] | [5, 6] [7, 8] | [9] -> 3 chunks, not 5 tensors
    assert kept_states == [{"mean": 3, "index": 3, "half": 3}]
