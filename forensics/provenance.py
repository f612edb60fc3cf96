"""Provenance of a run: what software, machine, data and checkpoint produced an output.

Every analysis records :func:`collect` in its summary JSON and logs :func:`environment_line` first, so
that two users whose numbers differ can tell "my benchmark differs" apart from "my detector differs"
apart from "my CPU or packages differ". What is recorded and why is explained in docs/reproducibility.md.

- **software**: Python, the project's version and git commit (when run from a clone), the versions of the
  project's direct dependencies, and whether the environment equals the lock file ``requirements.lock``
  (with the differences when it does not);
- **machine**: torch's CPU capability (the instruction set its kernels dispatch to: results of the same
  training differ between AVX2 and AVX-512 machines), the CPU model, the thread counts, CUDA / cuDNN and the
  device in use, TF32 flags, and the environment variables that change numerics;
- **data**: per data root, the number of images and a digest of their relative paths and sizes; where the
  root lies inside a benchmark built by :mod:`forensics.data.synthetic`, that benchmark's ``images_sha256``
  (the digest of every image's bytes, recorded in its manifest when it was built) and seed;
- **checkpoint**: the sha256 of every weight file the detector loaded (a RINE detector has two: the head and
  the CLIP backbone).
- **command**: the script and its arguments; in a Jupyter kernel, whose command line names only the kernel
  launcher, the notebook instead (:func:`command`).

Hashes of large files are computed once per process (keyed by path, size and modification time).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

#: Environment variables that change what torch computes or how fast (recorded when set).
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_NUM_THREADS", "OMP_NUM_THREADS",
               "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "FORENSICS_CACHE",
               "FORENSICS_DEFAULT_SCALE", "PYTHONHASHSEED")
#: ``sys.argv[0]`` of a Jupyter kernel (``python -m ipykernel_launcher -f kernel-*.json``, or a script inside the
#: ``ipykernel`` package): a command line that tells a reader nothing about the run.
KERNEL_LAUNCHER = "ipykernel_launcher.py"
#: Where a kernel learns its notebook: Jupyter Server sets this variable for the kernels it starts (ipykernel
#: exposes it as ``__session__``); VS Code defines ``__vsc_ipynb_file__`` in the kernel's namespace instead.
NOTEBOOK_ENV = "JPY_SESSION_NAME"
NOTEBOOK_NAMESPACE_KEY = "__vsc_ipynb_file__"
#: Where the lock file lies relative to the project root (a clone; absent in a plain wheel install).
LOCK_FILE = "requirements.lock"
#: Packages a lock may pin that a CPU-only install does not have (torch's CUDA runtime wheels).
CUDA_ONLY = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")
#: Distributions never pinned (the installer itself, and the project).
UNPINNED = frozenset({"pip", "setuptools", "wheel", "forensics"})


def project_root() -> Path | None:
    """The clone the package runs from (editable install), or ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _public(version: str) -> str:
    """``2.14.1+cpu`` -> ``2.14.1``: a CPU or CUDA build of a pinned version satisfies the pin."""
    return version.split("+", 1)[0]


def read_lock(path: str | os.PathLike) -> dict[str, str]:
    """``{canonical name: version}`` of a pip freeze style lock (``name==version`` lines)."""
    pins: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line or line.startswith("-"):
            raise ValueError(f"{path}: not a 'name==version' pin: {raw!r}")
        name, version = (part.strip() for part in line.split("==", 1))
        pins[_canonical(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution importable by this interpreter."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_canonical(name), dist.version)
    return found


def lock_differences(pins: Mapping[str, str], present: Mapping[str, str] | None = None) -> list[str]:
    """What differs between a lock and the environment, one readable line each (empty: it matches).

    Every installed distribution must be pinned at its version (a local build label such as ``+cpu`` is
    ignored), and every pin must be installed, except torch's CUDA runtime wheels on a CPU-only install.
    """
    present = installed() if present is None else present
    diffs = []
    for name, version in sorted(present.items()):
        if name in UNPINNED:
            continue
        if name not in pins:
            diffs.append(f"{name}=={version} is installed but not in the lock")
        elif _public(version) != _public(pins[name]):
            diffs.append(f"{name}=={version} is installed; the lock pins {pins[name]}")
    cpu_only = "torch" in present and not any(CUDA_ONLY.match(n) for n in present)
    for name, version in sorted(pins.items()):
        if name not in present and not (cpu_only and CUDA_ONLY.match(name)):
            diffs.append(f"{name}=={version} is pinned but not installed")
    return diffs


def lock_status(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The lock file's sha256 and whether this environment equals it (``None`` where no lock is found)."""
    root = project_root()
    path = Path(path) if path is not None else (root / LOCK_FILE if root is not None else None)
    if path is None or not path.is_file():
        return {"file": None, "sha256": None, "matches": None, "differences": []}
    diffs = lock_differences(read_lock(path))
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "matches": not diffs,
            "differences": diffs}


def git_commit(root: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the clone the package runs from; ``None`` outside a git clone."""
    root = root or project_root()
    if root is None or not (root / ".git").exists():
        return None
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(root), *cmd], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError) as exc:  # git missing or not a repository: say so
        log.debug("no git commit recorded: %s", exc)
        return None


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def direct_dependencies() -> dict[str, str | None]:
    """Versions of the project's declared dependencies (``None``: not installed)."""
    try:
        requires = metadata.requires("forensics") or []
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        requires = []
    names = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    versions: dict[str, str | None] = {}
    for name in names or ["torch", "torchvision", "numpy"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def _software() -> str:
    from . import __version__
    return json.dumps({"python": platform.python_version(), "forensics": __version__, "git": git_commit(),
                       "packages": direct_dependencies(), "lock": lock_status()})


def software() -> dict[str, Any]:
    """Python, the project's version and git commit, its dependencies' versions and the lock's status
    (computed once per process)."""
    return json.loads(_software())



def machine(device: Any = None) -> dict[str, Any]:
    """CPU capability, threads, CUDA and the device in use."""
    import torch
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
        else None, "device": str(device) if device is not None else None,
        "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ},
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        info["gpu"] = torch.cuda.get_device_name(index)
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return info


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from .io import sha256_file
    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for a given (path, size, modification time)."""
    st = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _weight_files(source: str | None) -> list[Path]:
    """The file(s) a ``weights_source`` string names: a path, a release tag, or nothing (random init)."""
    if not source:
        return []
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    from . import weights
    from .errors import WeightsNotFoundError
    if source not in {spec.tag for spec in weights.list_specs()}:
        return []
    try:
        return [weights.resolve(source)]
    except WeightsNotFoundError:  # a release tag whose file is not there: recorded without a hash
        return []


def _in_kernel(argv: list[str]) -> bool:
    launcher = Path(argv[0]) if argv else Path()
    return launcher.name == KERNEL_LAUNCHER or launcher.parent.name == "ipykernel"


def _notebook_path() -> str | None:
    path = os.environ.get(NOTEBOOK_ENV)
    if not path and "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
        path = shell.user_ns.get(NOTEBOOK_NAMESPACE_KEY) if shell is not None else None
    return str(path) if path else None


def command(argv: list[str] | None = None) -> list[str]:
    """What started this run: the script's name and its arguments; in a Jupyter kernel, the notebook's file
    name (from the front end, :data:`NOTEBOOK_ENV` / :data:`NOTEBOOK_NAMESPACE_KEY`; ``["notebook"]`` where it
    does not say), since the kernel's own command line (``ipykernel_launcher.py -f kernel-*.json``) tells a
    reader nothing."""
    argv = list(sys.argv if argv is None else argv)
    if _in_kernel(argv):
        path = _notebook_path()
        return [Path(path).name if path else "notebook"]
    return [Path(argv[0]).name, *argv[1:]] if argv else []


def checkpoints(detector: Any) -> list[dict[str, Any]]:
    """``[{"module", "source", "file", "sha256"}]`` for every weight file the detector (or any of its
    sub-modules, e.g. RINE's CLIP backbone) loaded; random initialisations are listed without a file."""
    import torch
    modules = detector.named_modules() if isinstance(detector, torch.nn.Module) else [("", detector)]
    seen, found = set(), []
    for name, module in modules:
        source = getattr(module, "weights_source", None)
        if source is None or str(source) in seen:  # a wrapper repeats its inner detector's source
            continue
        seen.add(str(source))
        found += _checkpoint_entries(name, str(source))
    return found


def _checkpoint_entries(module: str, source: str) -> list[dict[str, Any]]:
    files = _weight_files(source)
    if not files:
        return [{"module": module, "source": source, "file": None, "sha256": None}]
    return [{"module": module, "source": source, "file": str(path), "sha256": file_sha256(path)} for path in files]


def _benchmark_manifest(root: Path) -> tuple[Path, dict] | None:
    for folder in (root, *root.parents):
        manifest = folder / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            if "images_sha256" in data:
                return folder, data
    return None


def _paths(items: Any) -> Iterable[Path]:
    """Paths from paths, image records (anything with ``.path``), lists of them, or ``{set: records}``."""
    if isinstance(items, Mapping):
        items = items.values()
    if isinstance(items, (str, os.PathLike)) or hasattr(items, "path"):
        yield Path(getattr(items, "path", items))
        return
    for item in items:
        yield from _paths(item)


def data(roots: Iterable[str | os.PathLike] = (), files: Any = ()) -> dict[str, Any]:
    """Digest of the data a run read: the files' paths relative to their common folder and their sizes
    (cheap; not their bytes) and, for data inside a synthetic benchmark, the benchmark's ``images_sha256``
    (the digest of every image's bytes, from its manifest) and seed. ``files``: paths, image records or
    ``{set: records}``."""
    files = sorted(set(_paths(files)))
    common = Path(os.path.commonpath(files)) if files else None
    if common is not None and len(files) == 1:
        common = common.parent
    roots = sorted({Path(r) for r in roots} | ({common} if common is not None and not roots else set()))
    listing = hashlib.sha256()
    for f in files:
        listing.update(f"{f.relative_to(common).as_posix()}\0{f.stat().st_size}\n".encode())
    info: dict[str, Any] = {"roots": [str(r) for r in roots], "files": len(files),
                            "listing_sha256": listing.hexdigest() if files else None, "benchmarks": []}
    for root in roots:
        found = _benchmark_manifest(root.resolve())
        if found and all(b["root"] != str(found[0]) for b in info["benchmarks"]):
            info["benchmarks"].append({"root": str(found[0]), "images_sha256": found[1]["images_sha256"],
                                       "seed": found[1].get("seed"), "version": found[1].get("version")})
    return info


def collect(detector: Any = None, *, roots: Iterable[str | os.PathLike] = (), files: Any = (),
            device: Any = None, weights: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """Everything above as one JSON-ready mapping, for a summary's ``"provenance"`` key. ``weights``: weight
    files (or release tags) a run read without building a detector (e.g. RINE heads), hashed like a
    detector's checkpoints."""
    if device is None and detector is not None:
        device = getattr(detector, "device", None)
    found = checkpoints(detector) if detector is not None else []
    found += [entry for w in weights for entry in _checkpoint_entries("", str(w))]
    prov = {"command": command(), "software": software(), "machine": machine(device),
            "data": data(roots, files), "checkpoints": found}
    log.info("provenance: %s", describe_line(prov))
    return prov


def environment_line() -> str:
    """One log line: the versions and machine facts that change numbers."""
    import torch
    sw = software()
    lock, git = sw["lock"], sw["git"]
    lock_text = ("no lock file" if lock["matches"] is None else "environment = lock" if lock["matches"]
                 else f"environment differs from the lock in {len(lock['differences'])} package(s)")
    return (f"forensics {sw['forensics']}"
            + (f" (git {git['commit'][:10]}{', modified' if git['dirty'] else ''})" if git else "")
            + f", python {sw['python']}, torch {torch.__version__} (CPU {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, CUDA {torch.version.cuda if torch.cuda.is_available() else 'none'}), "
            f"{lock_text}")


def describe_line(prov: Mapping[str, Any]) -> str:
    """One log line: the data digests and checkpoint hashes of :func:`collect`'s result."""
    parts = [f"benchmark images_sha256 {b['images_sha256'][:16]}... (seed {b['seed']})" for b in prov["data"]["benchmarks"]]
    parts += [f"checkpoint {c['module'] or 'model'} sha256 {c['sha256'][:16]}..." for c in prov["checkpoints"] if c["sha256"]]
    parts += [f"{c['module'] or 'model'}: {c['source']}" for c in prov["checkpoints"] if not c["sha256"]]
    return "; ".join(parts) or "no benchmark manifest or weight file to hash"
