"""`analyses/rank_fmaps.py` end to end with explicit weights and data (the embedded default is
exercised by the slow test of the defaults)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from forensics.analysis.fmap_ranking import read_ranking_csv
from forensics.io import sha256_file
from helpers import calibrated, run_script as run_helper, save_cnndet_checkpoint, single_thread

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "rank_fmaps.py"


def run_script(argv: list[str]) -> int:
    return run_helper(SCRIPT, argv)


def test_rank_fmaps_writes_reference_outputs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for sub in ("0_real", "1_fake"):
            d = tmp_path / "data" / "val" / cls / sub
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (tmp_path / "data" / "val" / "a" / "1_fake" / "broken.png").write_bytes(b"xx")
    model = calibrated("resnet50", size=32)
    ckpt = save_cnndet_checkpoint(tmp_path / "r50.pth", model)
    with single_thread():
        code = run_script(["--arch", "resnet50", "--weights", str(ckpt), "--dataset_dir", str(tmp_path / "data"),
                           "--gan_name", "val", "--have_classes", "True", "--num_real", "2", "--num_fake", "4",
                           "--bsize", "4", "--crop", "none", "--conf_fake", "0.5", "--conf_real", "0.5",
                           "--blur_jpg", "0.5", "--device", "cpu", "--out", str(tmp_path / "out"), "--topk", "5"])
    assert code == 0
    out = tmp_path / "out" / "resnet50" / "val_0.5"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["num_skipped"] == 1
    used = {k: v["used"] for k, v in summary["counts"].items()}
    assert used["real"] + used["fake"] > 0
    side = "fake" if used["fake"] else "real"
    ranking = read_ranking_csv(out / f"val-{side}.csv")
    assert len(ranking) == 26560
    values = [v for _, v in ranking]
    assert values == sorted(values, reverse=True) and min(values) >= 0
    if used["fake"]:
        assert sum(summary["topk_layer_share"].values()) == 5
        assert (out / "val-omega.png").stat().st_size > 0 and (out / "val-omega.pdf").stat().st_size > 0
    assert "FF-RS of resnet50" in capsys.readouterr().out
    # provenance: versions, CPU capability, data digest and the checkpoint's sha256 (issue: reproducible numbers)
    prov = summary["provenance"]
    assert prov["software"]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert prov["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["machine"]["torch_threads"] >= 1
    assert prov["data"]["files"] == 11  # 2 + 2 reals, 4 + 3 fakes listed (the unreadable one included)
    assert [c["sha256"] for c in prov["checkpoints"]] == [sha256_file(ckpt)]
