"""The library's layout: one concept per module (no module over 450 lines), no import circle between modules
(every import counts, function-level ones too; only ``if TYPE_CHECKING`` blocks are left out), no pointers to files outside the repository, and the names of the modules that were split
into several still importable from where they used to live (the same objects)."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "forensics"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_over_the_size_limit():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST):
    """Every import statement of ``tree`` (module level, in functions, classes, try blocks...), except those
    inside ``if TYPE_CHECKING`` (never executed)."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            for child in node.orelse:
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    yield child
                yield from _import_nodes(child)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _import_nodes(node)


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (a function-level import still makes a circle, only
    a later one), outside ``if TYPE_CHECKING``, resolved to the known modules."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for cand in candidates:
            # the deepest known module the import names (importing a.b.c imports a, a.b and a.b.c)
            parts = cand.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in known:
                    out.add(".".join(parts[:i]))
                    break
    # a module's own parent packages are imported before it, always: not an edge of a circle
    return {m for m in out if m != name and not name.startswith(m + ".")}


def test_no_import_circle():
    mods = modules()
    known = set(mods)
    graph = {name: module_imports(name, path, known) for name, path in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert circles == []


def test_every_import_but_type_checking_ones_is_an_edge(tmp_path):
    """The circle check sees imports inside functions, methods and try blocks, and skips ``if TYPE_CHECKING``."""
    path = tmp_path / "a.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nelse:\n"
                    "    from . import e\ndef f():\n    from .c import C\nclass K:\n    def g(self):\n"
                    "        try:\n            import pkg.d\n        except ImportError:\n            raise\n")
    known = {"pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e"}
    assert module_imports("pkg.a", path, known) == {"pkg.c", "pkg.d", "pkg.e"}


def test_no_pointers_outside_the_repository():
    pattern = re.compile(r"shared/|tff\.md|rine_ufd\.md|library-notes")
    files = [p for folder in ("forensics", "analyses") for p in sorted((ROOT / folder).rglob("*.py"))]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


MOVED = {  # old module: {name: new module}
    "forensics.analysis.ffrs": {
        "sort_ranking": "fmap_ranking", "topk": "fmap_ranking", "lowk": "fmap_ranking", "layer_share": "fmap_ranking",
        "omega_curve": "fmap_ranking", "plot_omega": "fmap_ranking", "CSV_HEADER": "fmap_ranking",
        "write_ranking_csv": "fmap_ranking", "read_ranking_csv": "fmap_ranking"},
    "forensics.data.synthetic": {
        "BenchmarkConfig": "config", "FAMILIES": "config", "REAL_DIR": "config", "FAKE_DIR": "config",
        "config_from_dict": "config", "_rng": "seeding", "_torch_seed": "seeding", "deterministic_torch": "seeding",
        "load_sources": "sources", "sample_crops": "sources", "class_name": "sources", "_split_count": "sources",
        "signed_to_uint8": "fingerprints", "uint8_to_signed": "fingerprints",
        "build_generators": "generators", "generate": "generators",
        "_write_pngs": "build", "build_benchmark": "build", "read_manifest": "build"},
    "forensics.distributed": {
        "launch_env": "launch", "local_device": "launch", "shard_range": "sharding", "_ShardDataset": "sharding",
        "Checkpointing": "checkpoints", "ResumeMismatch": "checkpoints", "ShardPass": "passes", "Run": "run",
        "session": "run", "current": "run"},
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_split_modules_keep_their_names(old):
    module = importlib.import_module(old)
    parent = old if old in ("forensics.data.synthetic", "forensics.distributed") else old.rsplit(".", 1)[0]
    for name, target in MOVED[old].items():
        new_module, _, new_name = target.partition(":")
        home = importlib.import_module(f"{parent}.{new_module}")
        assert getattr(module, name) is getattr(home, new_name or name), (old, name)
