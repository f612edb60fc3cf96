"""Weights registry: tags and paths, missing-file messages, status / verify, offline-testable
download (``file://`` URLs), and the ``python -m forensics weights`` command line (list, path,
info, download, verify, convert). No network; every file lives under ``tmp_path``."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import forensics.cli as cli
from forensics import weights
from forensics.detectors import list_detectors
from forensics.download import ChecksumError, DownloadError, fetch
from forensics.errors import CheckpointError, WeightsNotFoundError
from forensics.io import read_weight_file
from helpers import exit_code

EXPECTED_TAGS = {
    "resnet50.cnndet_blur_jpg_prob0.5", "resnet50.cnndet_blur_jpg_prob0.1", "efb0.tff_blur_jpg_prob0.5",
    "resnet50.tff_color_robust", "efb0.tff_color_robust", "rine.1class", "rine.2class", "rine.4class",
    "rine.ldm", "ufd.fc", "clip.vit_l14_openai", "init.resnet50_imagenet", "init.efb0_imagenet",
}
DETECTORS = {*list_detectors(), None}  # a release loads into a registered detector, or is a backbone / init
REFERENCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "reference-data"
TEST_TAG = "test.tiny"


@pytest.fixture
def wdir(tmp_path, monkeypatch) -> Path:
    """An empty weights folder selected through $FORENSICS_WEIGHTS."""
    folder = tmp_path / "weights"
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder))
    return folder


@pytest.fixture
def source(tmp_path) -> Path:
    """A small 'published' file to download through a file:// URL."""
    path = tmp_path / "upstream" / "tiny.bin"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 4096 + b"tail")  # ~1 MiB: more than one read chunk
    return path


def register_test_spec(monkeypatch, **changes) -> weights.WeightSpec:
    """Register a throw-away release (removed again after the test)."""
    spec = weights.WeightSpec(tag=TEST_TAG, relpath="test/tiny.bin", url="file:///nonexistent/tiny.bin",
                              detector=None, description="test file")
    spec = dataclasses.replace(spec, **changes)
    monkeypatch.setitem(weights._RELEASES, TEST_TAG, spec)
    return spec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path, keep: str | None = None) -> list[str]:
    """Files in ``folder`` other than ``keep`` (temporary downloads would show up here)."""
    return sorted(p.name for p in folder.iterdir() if p.name != keep) if folder.exists() else []


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    # Build only the `weights` sub-command: these tests must not depend on the other commands' imports.
    monkeypatch.setattr(cli, "COMMANDS", ("weights",))
    code = exit_code(cli.main, ["weights", *argv])
    return code, capsys.readouterr().out


# --- registry contents -------------------------------------------------------------------------

def test_registry_holds_every_release():
    specs = weights.list_specs()
    assert {s.tag for s in specs} == EXPECTED_TAGS
    assert len({s.relpath for s in specs}) == len(specs), "two releases share a path"
    for s in specs:
        assert s.detector in DETECTORS, s.tag
        assert s.url.startswith("https://"), s.tag
        assert s.description and s.paper and s.format and s.license, s.tag
        assert s.sha256 is None or (len(s.sha256) == 64 and int(s.sha256, 16) >= 0), s.tag
        assert set(s.requires) <= EXPECTED_TAGS, s.tag


def test_release_details_match_the_references():
    get = weights.get_spec
    assert get("resnet50.cnndet_blur_jpg_prob0.5").relpath == "resnet50/blur_jpg_prob0.5.pth"
    assert get("efb0.tff_blur_jpg_prob0.5").relpath == "efb0/blur_jpg_prob0.5.pth"
    assert get("rine.2class").sha256 == "680d301b6d191da85b9dabcebf42cd3df20c5c669fa8320c498f835d02bf5ccb"
    assert get("ufd.fc").sha256 == "477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847"
    clip = get("clip.vit_l14_openai")
    assert clip.sha256 in clip.url and clip.detector is None
    expected_heads = {"1class": (4, 1024), "2class": (4, 128), "4class": (2, 1024), "ldm": (4, 1024)}
    for name, (nproj, proj_dim) in expected_heads.items():
        spec = get(f"rine.{name}")
        assert spec.relpath == f"rine/model_{name}_trainable.pth"
        assert dict(spec.options) == {"nproj": nproj, "proj_dim": proj_dim}
        assert spec.requires == ("clip.vit_l14_openai",)
        if name != "2class":  # blobs absent upstream: no link, no checksum, and the notes say so
            assert not spec.direct and spec.sha256 is None and "absent" in spec.notes


# --- resolve -----------------------------------------------------------------------------------

def test_every_tag_resolves_to_its_expected_path(wdir):
    for spec in weights.list_specs():
        path = wdir / spec.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        assert weights.expected_path(spec.tag) == path
        assert weights.resolve(spec.tag) == path
        assert weights.status(spec) == weights.PRESENT


def test_missing_file_message_names_file_source_and_path(wdir):
    for spec in weights.list_specs():
        with pytest.raises(WeightsNotFoundError) as info:
            weights.resolve(spec.tag)
        message = str(info.value)
        assert spec.filename in message and spec.url in message
        assert str(wdir / spec.relpath) in message
        assert weights.status(spec) == weights.MISSING


def test_converted_copy_is_preferred(wdir):
    spec = weights.get_spec("clip.vit_l14_openai")
    converted = wdir / spec.converted
    assert "weights convert" in weights.missing_message(spec) and str(converted) in weights.missing_message(spec)
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"x")
    assert weights.resolve(spec.tag) == converted
    assert weights.status(spec) == weights.PRESENT
    (wdir / spec.relpath).write_bytes(b"x")
    assert weights.resolve(spec.tag) == converted


def test_explicit_path_resolves(tmp_path):
    path = tmp_path / "my.pth"
    path.write_bytes(b"x")
    assert weights.resolve(path) == path
    assert weights.resolve(str(path)) == path


def test_unknown_tag_or_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="neither an existing file nor a known tag") as info:
        weights.resolve("rine.3class")
    assert "rine.2class" in str(info.value) and "weights list" in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="is not a file"):
        weights.resolve(tmp_path)
    with pytest.raises(KeyError, match="unknown weight tag"):
        weights.get_spec("rine.3class")


# --- status and verify -------------------------------------------------------------------------

def test_status_and_verify(wdir, source, monkeypatch):
    spec = register_test_spec(monkeypatch, sha256=sha256(source))
    assert weights.status(spec, check=True) == weights.MISSING
    with pytest.raises(WeightsNotFoundError):
        weights.verify(TEST_TAG)
    dest = wdir / spec.relpath
    dest.parent.mkdir(parents=True)
    dest.write_bytes(source.read_bytes())
    assert weights.status(TEST_TAG) == weights.PRESENT  # not hashed unless asked
    assert weights.status(TEST_TAG, check=True) == weights.OK
    assert weights.verify(TEST_TAG) == spec.sha256
    dest.write_bytes(b"corrupt")
    assert weights.status(TEST_TAG, check=True) == weights.MISMATCH
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        weights.verify(TEST_TAG)
    register_test_spec(monkeypatch, sha256=None)  # nothing published: report the digest
    assert weights.status(TEST_TAG, check=True) == weights.PRESENT
    assert weights.verify(TEST_TAG) == sha256(dest)


# --- download ----------------------------------------------------------------------------------

def test_download_from_file_url(wdir, source, monkeypatch):
    spec = register_test_spec(monkeypatch, url=source.as_uri(), sha256=sha256(source))
    path = weights.download(TEST_TAG, progress=False)
    assert path == wdir / spec.relpath
    assert path.read_bytes() == source.read_bytes()
    assert weights.verify(TEST_TAG) == spec.sha256
    assert leftovers(path.parent, keep=path.name) == []
    # present: kept as is unless forced
    path.write_bytes(b"local edit")
    assert weights.download(TEST_TAG, progress=False).read_bytes() == b"local edit"
    assert weights.download(TEST_TAG, force=True, progress=False).read_bytes() == source.read_bytes()
    assert leftovers(path.parent, keep=path.name) == []


def test_download_checksum_mismatch_leaves_nothing(wdir, source, monkeypatch):
    spec = register_test_spec(monkeypatch, url=source.as_uri(), sha256="0" * 64)
    dest = wdir / spec.relpath
    with pytest.raises(ChecksumError) as info:
        weights.download(TEST_TAG, progress=False)
    assert "sha256 mismatch" in str(info.value) and str(dest) in str(info.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_download_mismatch_keeps_existing_file(wdir, source, monkeypatch):
    spec = register_test_spec(monkeypatch, url=source.as_uri(), sha256="0" * 64)
    dest = wdir / spec.relpath
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        weights.download(TEST_TAG, force=True, progress=False)
    assert dest.read_bytes() == b"old"
    assert leftovers(dest.parent, keep=dest.name) == []


def test_download_failures_explain_the_manual_route(wdir, tmp_path, monkeypatch):
    spec = register_test_spec(monkeypatch, url=(tmp_path / "absent.bin").as_uri())
    dest = wdir / spec.relpath
    with pytest.raises(DownloadError) as info:
        weights.download(TEST_TAG, progress=False)
    message = str(info.value)
    assert "by hand" in message and str(dest) in message and spec.filename in message
    assert not dest.exists() and leftovers(dest.parent) == []

    register_test_spec(monkeypatch, url="https://example.org/folder", direct=False)
    with pytest.raises(DownloadError, match="no direct download link"):
        weights.download(TEST_TAG, progress=False)
    with pytest.raises(DownloadError, match="only http, https, file"):
        fetch("ftp://example.org/x.bin", tmp_path / "x.bin", progress=False)


# --- command line ------------------------------------------------------------------------------

def test_cli_list(wdir, monkeypatch, capsys):
    present = wdir / weights.get_spec("rine.2class").relpath
    present.parent.mkdir(parents=True)
    present.write_bytes(b"not the real file")
    code, out = run_cli(monkeypatch, capsys, "list")
    assert code == 0
    for spec in weights.list_specs():
        assert spec.tag in out and str(wdir / spec.relpath) in out
    assert "missing" in out and "present" in out and "BAD-CHECKSUM" not in out

    code, out = run_cli(monkeypatch, capsys, "list", "--check", "--detector", "rine")
    assert code == 0
    tags = {line.split()[0] for line in out.splitlines()[2:] if line.strip() and not line.startswith("weights")}
    assert tags == {"rine.1class", "rine.2class", "rine.4class", "rine.ldm", "clip.vit_l14_openai"}
    assert "BAD-CHECKSUM" in out  # the stand-in file does not match the published sha256


def test_cli_path_info_download_verify(wdir, source, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "path", "ufd.fc")
    assert code == 0 and out.strip() == str(wdir / "ufd" / "fc_weights.pth")
    code, out = run_cli(monkeypatch, capsys, "info", "rine.4class")
    assert code == 0 and "nproj=2, proj_dim=1024" in out and "github.com/mever-team/rine" in out

    spec = register_test_spec(monkeypatch, url=source.as_uri(), sha256=sha256(source))
    code, out = run_cli(monkeypatch, capsys, "download", TEST_TAG)
    assert code == 0 and out.strip() == str(wdir / spec.relpath)
    code, out = run_cli(monkeypatch, capsys, "verify", TEST_TAG)
    assert code == 0 and spec.sha256 in out and "ok" in out
    (wdir / spec.relpath).write_bytes(b"corrupt")
    code, _ = run_cli(monkeypatch, capsys, "verify", TEST_TAG)
    assert code == 2


def test_cli_convert_state_dict(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3), "half": torch.randn(2, 2).half()}
    src, dst = tmp_path / "plain.pth", tmp_path / "out" / "plain.safetensors"
    torch.save(state, src)
    code, out = run_cli(monkeypatch, capsys, "convert", str(src), str(dst))
    assert code == 0 and "3 tensors" in out
    back = load_file(str(dst))
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert leftovers(dst.parent, keep=dst.name) == []

    # a CNNDetection-style training checkpoint is reduced to its 'model' entry
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "total_steps": 7}, ckpt)
    tensors = weights.convert_to_safetensors(ckpt, tmp_path / "ckpt.safetensors")
    assert tensors.keys() == state.keys()
    with pytest.raises(CheckpointError, match="are not tensors"):
        weights.convert_to_safetensors(ckpt, tmp_path / "bad.safetensors", key="optimizer")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        weights.convert_to_safetensors(src, tmp_path / "out.pth")


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")  # building the test archive
def test_cli_convert_torchscript_archive(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    src, dst = tmp_path / "tiny_jit.pt", tmp_path / "tiny.safetensors"
    torch.jit.save(torch.jit.script(module), str(src))
    with pytest.raises(CheckpointError, match="TorchScript"):  # never read by unpickling
        read_weight_file(src)
    code, out = run_cli(monkeypatch, capsys, "convert", str(src), str(dst))
    assert code == 0 and "2 tensors" in out
    back = load_file(str(dst))
    expected = module.state_dict()
    assert back.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(back[k], v)


# --- the released files kept as reference data ----------------------------------------------------

@pytest.mark.parametrize("tag, relpath", [("rine.2class", "rine/model_2class_trainable.pth"),
                                          ("ufd.fc", "ufd/fc_weights.pth")])
def test_reference_files_match_registry_checksums(tag, relpath):
    path = REFERENCE_DATA / relpath
    if not path.is_file():
        pytest.skip(f"reference data not available ({path})")
    assert weights.get_spec(tag).sha256 == sha256(path)
    assert weights.get_spec(tag).filename == path.name
