"""Provenance recorded in every output: the lock check, the data digest, the checkpoint hashes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from forensics import provenance
from forensics.detectors import create
from forensics.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]


def test_read_lock_parses_pins_and_rejects_loose_lines(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nNumPy==2.4.6\nopencv_python_headless==5.1.0.95  # comment\n\n")
    assert provenance.read_lock(lock) == {"numpy": "2.4.6", "opencv-python-headless": "5.1.0.95"}
    lock.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not a 'name==version' pin"):
        provenance.read_lock(lock)


def test_lock_differences_names_every_mismatch():
    pins = {"numpy": "2.4.6", "torch": "2.14.1", "nvidia-cublas": "13.1.1.3", "scipy": "1.17.1"}
    same = {"numpy": "2.4.6", "torch": "2.14.1", "nvidia-cublas": "13.1.1.3", "scipy": "1.17.1", "pip": "23.2.1"}
    assert provenance.lock_differences(pins, same) == []
    # a CPU build of torch satisfies the pin, and needs none of the CUDA runtime wheels
    cpu = {"numpy": "2.4.6", "torch": "2.14.1+cpu", "scipy": "1.17.1"}
    assert provenance.lock_differences(pins, cpu) == []
    drifted = {"numpy": "2.5.0", "torch": "2.14.1", "nvidia-cublas": "13.1.1.3", "extra-pkg": "1.0"}
    diffs = provenance.lock_differences(pins, drifted)
    assert diffs == ["extra-pkg==1.0 is installed but not in the lock",
                     "numpy==2.5.0 is installed; the lock pins 2.4.6",
                     "scipy==1.17.1 is pinned but not installed"]


def test_lock_file_pins_every_requirement():
    pins = provenance.read_lock(ROOT / provenance.LOCK_FILE)
    from packaging.requirements import Requirement
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:   # a pin, a range (gradio>=6,<7) or extras (mkdocstrings[python]): the distribution's name
            req = Requirement(spec)
            assert provenance._canonical(req.name) in pins, f"{spec} of requirements.txt is not in the lock"
            assert req.specifier.contains(pins[provenance._canonical(req.name)]), f"the lock's pin breaks {spec}"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="the lock is checked in the project's own .venv (make test); this is another environment")
def test_project_venv_equals_the_lock():
    """What `make venv` installed is exactly the lock: `pip freeze` = requirements.lock."""
    status = provenance.lock_status(ROOT / provenance.LOCK_FILE)
    assert status["differences"] == [] and status["matches"] is True


def test_data_digest_reads_benchmark_manifest_and_tracks_the_listing(tmp_path):
    root = tmp_path / "bench"
    (root / "test" / "a").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"images_sha256": "ab" * 32, "seed": 3, "version": 7}))
    files = [root / "test" / "a" / f"{i}.png" for i in range(3)]
    for f in files:
        f.write_bytes(b"x" * 10)
    info = provenance.data(files=files)
    assert info["files"] == 3 and info["roots"] == [str(root / "test" / "a")]
    assert info["benchmarks"] == [{"root": str(root.resolve()), "images_sha256": "ab" * 32, "seed": 3, "version": 7}]
    # records, lists and {set: records} give the same digest; a changed size changes it
    class Record:
        def __init__(self, path):
            self.path = path
    assert provenance.data(files={"a": [Record(f) for f in files]})["listing_sha256"] == info["listing_sha256"]
    files[0].write_bytes(b"x" * 11)
    assert provenance.data(files=files)["listing_sha256"] != info["listing_sha256"]


def test_checkpoints_hash_every_loaded_file_and_list_random_inits(tmp_path):
    det = create("resnet50")
    assert provenance.checkpoints(det) == []  # random init records no source
    path = tmp_path / "r50.pth"
    torch.save({"model": det.net.state_dict()}, path)
    loaded = create("resnet50", weights=path)
    assert provenance.checkpoints(loaded) == [{"module": "", "source": str(path), "file": str(path),
                                               "sha256": sha256_file(path)}]


def test_collect_is_json_ready_and_names_the_machine():
    prov = provenance.collect()
    json.dumps(prov)
    assert prov["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["software"]["packages"]["torch"] is not None
    assert set(prov) == {"command", "software", "machine", "data", "checkpoints"}
    assert "torch" in provenance.environment_line()


def test_command_names_the_script_or_in_a_jupyter_kernel_the_notebook(monkeypatch):
    monkeypatch.delenv(provenance.NOTEBOOK_ENV, raising=False)
    assert provenance.command(["/repo/analyses/rank_fmaps.py", "--topk", "5"]) == ["rank_fmaps.py", "--topk", "5"]
    kernel = ["/venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"]
    assert provenance.command(kernel) == ["notebook"]  # no front end said which notebook
    assert provenance.command(["/venv/lib/python3.11/site-packages/ipykernel/__main__.py", "-f", "k.json"]) == \
        ["notebook"]
    monkeypatch.setenv(provenance.NOTEBOOK_ENV, "/home/me/docs/tutorials/02_ffrs_dropout_colour.ipynb")
    assert provenance.command(kernel) == ["02_ffrs_dropout_colour.ipynb"]
    assert provenance.collect()["command"] == provenance.command()


def test_collect_hashes_weight_files_read_without_a_detector(tmp_path):
    from forensics.io import sha256_file
    head = tmp_path / "head.pth"
    torch.save({"alpha": torch.zeros(2, 3)}, head)
    prov = provenance.collect(weights=[head])
    assert prov["checkpoints"] == [{"module": "", "source": str(head), "file": str(head), "sha256": sha256_file(head)}]
