"""Open-set splits: which generators are known (trained on) and which are held out, and which
images go to train / val / test.

A :class:`SplitSpec` names the layout, the known generators and the unknown ones. Predefined specs
live in ``configs/splits.yaml`` (data, not code): the reference's five GenImage sliding-window
splits (``genimage:split1`` .. ``split5``, docs/attribution.md) and windows over the synthetic
benchmark's families (``synthetic:split1`` .. ``split4``; ``synthetic:split1`` is the embedded
default). A user split is a small YAML/JSON file with the same fields::

    layout: families            # or genimage
    known: [tconv, pshuffle]
    unknown: [nearest]

Classes: 0 = ``real``, then the known generators in the given order, then the unknown ones
(indices >= ``n_known``; they never reach training).

Partition (:func:`partition`), always into **disjoint images**:

- ``families`` (``<root>/<family>/{0_real,1_fake}``): each class's files (fakes of a family; for
  ``real`` the pooled ``0_real`` files of the known families) are shuffled with ``seed``, capped at
  ``max_per_class`` and cut into train / val / test by ``fractions`` (default 0.5 / 0.2 / 0.3). An
  unknown generator's train part is unused.
- ``genimage`` (``<root>/<gen>/{train,val}/{ai,nature}``): train = the class's ``train`` folder,
  val and test = two disjoint parts of its ``val`` folder (``fractions[1] : fractions[2]``), each
  part shuffled with ``seed`` and capped at ``max_per_class`` (the reference's ``samples_per_class``
  is 4000). The reference instead uses the authors' annotation files, whose known "test" set is the
  validation file again (docs/attribution.md); here validation and test never share an image.

- ``annotations``: the reference's own split files under ``root`` (``splitN_train/annotations/
  splitN_train.txt``, ``splitN_val/.../splitN_val.txt`` and ``splitN_val_out_all.txt``,
  ``splitN_test/.../splitN_test.txt`` and ``splitN_test_out_all.txt``; lines ``<path>\\t<label>``),
  each class capped at its first ``max_per_class`` lines in file order as the reference
  (``--annotations`` with a predefined GenImage split). Its class-balanced oversampling of the
  training set is not reproduced.

Hyper-parameters are selected on val (known val vs unknown val), the final numbers come from test.
"""
from __future__ import annotations

import json
import zlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..data import ImageRecord, forensynths, genimage
from ..errors import DatasetLayoutError, InputError

log = logging.getLogger(__name__)

CONFIG = Path(__file__).resolve().parent / "configs" / "splits.yaml"
REAL = "real"
PARTS = ("train", "val", "test")
DEFAULT_SPLIT = "synthetic:split1"
DEFAULT_FRACTIONS = (0.5, 0.2, 0.3)


@dataclass(frozen=True)
class SplitSpec:
    """Known / unknown generators of one open-set split, and the folder layout they are read from."""

    name: str
    layout: str
    known: tuple[str, ...]
    unknown: tuple[str, ...]
    collection: str = ""  # annotations layout: file prefix (default: the name after ':', e.g. split1)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"split {self.name}: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not self.known or not self.unknown:
            raise InputError(f"split {self.name}: needs at least one known and one unknown generator")
        both = set(self.known) & set(self.unknown)
        if both or len(set(self.known)) != len(self.known) or len(set(self.unknown)) != len(self.unknown):
            raise InputError(f"split {self.name}: generators must be listed once (known and unknown share "
                             f"{sorted(both)})" if both else f"split {self.name}: a generator is listed twice")
        if REAL in self.known or REAL in self.unknown:
            raise InputError(f"split {self.name}: '{REAL}' is always class 0; list generators only")

    @property
    def classes(self) -> list[str]:
        """``real``, the known generators, then the unknown ones."""
        return [REAL, *self.known, *self.unknown]

    @property
    def n_known(self) -> int:
        return 1 + len(self.known)

    @property
    def collection_name(self) -> str:
        return self.collection or self.name.split(":")[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "known": list(self.known), "unknown": list(self.unknown),
                **({"collection": self.collection} if self.collection else {})}


def _read_mapping(path: Path) -> Mapping[str, Any]:
    import yaml
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a mapping (layout/known/unknown or dataset -> splits)")
    return data


def predefined() -> dict[str, SplitSpec]:
    """Every split of ``configs/splits.yaml`` as ``"<dataset>:<split>" -> SplitSpec``."""
    out: dict[str, SplitSpec] = {}
    for dataset, entry in _read_mapping(CONFIG).items():
        for split, spec in entry["splits"].items():
            name = f"{dataset}:{split}"
            out[name] = SplitSpec(name, entry["layout"], tuple(spec["known"]), tuple(spec["unknown"]))
    return out


def load_split(name_or_path: str | Path) -> SplitSpec:
    """A predefined split (``genimage:split3``) or a user YAML/JSON file (``layout``, ``known``, ``unknown``)."""
    specs = predefined()
    if str(name_or_path) in specs:
        return specs[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"--split {name_or_path!r} is neither a predefined split ({', '.join(specs)}) nor a file")
    data = _read_mapping(path)
    missing = {"layout", "known", "unknown"} - set(data)
    if missing:
        raise InputError(f"{path}: missing field(s) {', '.join(sorted(missing))} (expected layout, known, unknown)")
    return SplitSpec(str(data.get("name", path.stem)), str(data["layout"]), tuple(data["known"]), tuple(data["unknown"]),
                     str(data.get("collection", "")))


# ---------------------------------------------------------------------------- layouts
def _families_pools(root: Path, spec: SplitSpec) -> dict[str, list[list[ImageRecord]]]:
    """One pool per class: a family's fakes; ``real`` = the known families' reals pooled."""
    pools: dict[str, list[list[ImageRecord]]] = {REAL: [[]]}
    for gen in (*spec.known, *spec.unknown):
        records = forensynths(root, gen, have_classes=False)
        pools[gen] = [[r for r in records if r.label == 1]]
        if gen in spec.known:
            pools[REAL][0] += [r for r in records if r.label == 0]
    return pools


def _genimage_pools(root: Path, spec: SplitSpec) -> dict[str, list[list[ImageRecord]]]:
    """Two pools per class (train folder, val folder); unknown generators need only ``val``."""
    pools: dict[str, list[list[ImageRecord]]] = {REAL: [[], []]}
    for gen in (*spec.known, *spec.unknown):
        val = genimage(root, gen, "val")
        train = genimage(root, gen, "train") if gen in spec.known else []
        pools[gen] = [[r for r in train if r.label == 1], [r for r in val if r.label == 1]]
        if gen in spec.known:
            pools[REAL][0] += [r for r in train if r.label == 0]
            pools[REAL][1] += [r for r in val if r.label == 0]
    return pools


def read_annotations(path: Path, root: Path) -> list[tuple[Path, int]]:
    """``<image_path>\\t<int_label>`` lines in file order. A relative path is taken from the current
    directory, as the reference opens it, or from ``root`` when it is not there."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: annotation file not found")
    out: list[tuple[Path, int]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rsplit("\t", 1)
        if len(fields) != 2 or not fields[1].strip().lstrip("-").isdigit():
            raise DatasetLayoutError(f"{path}:{n}: expected '<image_path>\\t<int_label>', got {line!r}")
        img = Path(fields[0])
        if not img.is_absolute() and not img.exists() and (root / img).exists():
            img = root / img
        out.append((img, int(fields[1])))
    return out


def _annotation_pools(root: Path, spec: SplitSpec) -> dict[str, list[list[ImageRecord]]]:
    """The reference's annotation files (docs/attribution.md) under ``root``: train =
    ``<c>_train``, val = ``<c>_val`` + ``<c>_val_out_all``, test = ``<c>_test`` (the known test file of
    the reference's README) + ``<c>_test_out_all``. Known labels i name ``spec.classes[i]``; the sorted
    distinct labels of an out file name the unknown generators in order. When ``<c>_test.txt`` is
    absent the known test set is the validation file again, as the reference's config does (logged)."""
    c = spec.collection_name
    ann = {part: root / f"{c}_{part}" / "annotations" for part in PARTS}
    known_files = {"train": ann["train"] / f"{c}_train.txt", "val": ann["val"] / f"{c}_val.txt",
                   "test": ann["test"] / f"{c}_test.txt"}
    if not known_files["test"].is_file():
        log.warning("%s is missing: the known test set is the validation file %s, as the reference's config "
                    "(val and test share the known images)", known_files["test"], known_files["val"])
        known_files["test"] = known_files["val"]
    out_files = {"val": ann["val"] / f"{c}_val_out_all.txt", "test": ann["test"] / f"{c}_test_out_all.txt"}
    names = spec.classes
    pools: dict[str, list[list[ImageRecord]]] = {n: [[], [], []] for n in names}
    for i, part in enumerate(PARTS):
        for path, label in read_annotations(known_files[part], root):
            if not 0 <= label < spec.n_known:
                raise DatasetLayoutError(f"{known_files[part]}: label {label} is not a known class (0..{spec.n_known - 1})")
            pools[names[label]][i].append(ImageRecord(path, int(label > 0), names[label]))
        if part in out_files:
            rows = read_annotations(out_files[part], root)
            distinct = sorted({label for _, label in rows})
            if len(distinct) != len(spec.unknown):
                raise DatasetLayoutError(f"{out_files[part]}: {len(distinct)} distinct labels for the "
                                         f"{len(spec.unknown)} unknown generators {list(spec.unknown)}")
            for path, label in rows:
                gen = spec.unknown[distinct.index(label)]
                pools[gen][i].append(ImageRecord(path, 1, gen))
    return pools


#: layout name -> class pools reader (one pool: cut into train/val/test; two: train, then val/test;
#: three: given train, val, test lists, capped at the first ``max_per_class`` in file order).
LAYOUTS: dict[str, Callable[[Path, SplitSpec], dict[str, list[list[ImageRecord]]]]] = {
    "families": _families_pools,
    "genimage": _genimage_pools,
    "annotations": _annotation_pools,
}


# ---------------------------------------------------------------------------- partition
@dataclass
class Partition:
    """Disjoint train / val / test records of a split: ``records[part]`` and ``labels[part]`` (class
    indices into ``spec.classes``; >= ``spec.n_known`` = unknown)."""

    spec: SplitSpec
    records: dict[str, list[ImageRecord]] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per part and class name."""
        names = self.spec.classes
        return {part: {names[c]: int(np.sum(self.labels[part] == c)) for c in range(len(names))
                       if np.any(self.labels[part] == c)} for part in PARTS}

    def all_records(self) -> list[ImageRecord]:
        """Every record once, sorted by path (the feature cache's file list)."""
        seen = {str(r.path): r for part in PARTS for r in self.records[part]}
        return [seen[p] for p in sorted(seen)]


def _cut(n: int, fractions: Sequence[float]) -> list[int]:
    """Boundaries of consecutive parts of ``n`` items with the given fractions (rounded, sum n)."""
    total = float(sum(fractions))
    edges = np.round(np.cumsum([0.0, *fractions]) / total * n).astype(int)
    return edges.tolist()


def partition(root: str | Path, spec: SplitSpec, fractions: Sequence[float] = DEFAULT_FRACTIONS,
              max_per_class: int | None = None, seed: int = 0) -> Partition:
    """Read ``spec``'s classes under ``root`` and split them into disjoint train / val / test records
    (see the module docstring). Raises :class:`DatasetLayoutError` when a part of a class is empty."""
    if len(fractions) != 3 or min(fractions) < 0 or fractions[1] <= 0 or fractions[2] <= 0:
        raise InputError(f"fractions must be 3 non-negative numbers with val, test > 0, got {fractions}")
    pools = LAYOUTS[spec.layout](Path(root), spec)
    parts: dict[str, list[tuple[ImageRecord, int]]] = {p: [] for p in PARTS}
    for cls, name in enumerate(spec.classes):
        known = cls < spec.n_known
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # per class: other classes do not matter
        drawn: dict[str, list[ImageRecord]] = {}
        if len(pools[name]) == 1:
            pool = _shuffled(pools[name][0], rng, max_per_class)
            edges = _cut(len(pool), fractions)
            drawn = {p: pool[edges[i]:edges[i + 1]] for i, p in enumerate(PARTS)}
        elif len(pools[name]) == 3:
            drawn = {p: pools[name][i][:max_per_class] for i, p in enumerate(PARTS)}
        else:
            train_pool, held = pools[name]
            held = _shuffled(held, rng, None)
            edges = _cut(len(held), fractions[1:])
            drawn = {"train": _shuffled(train_pool, rng, max_per_class),
                     "val": held[edges[0]:edges[1]][:max_per_class], "test": held[edges[1]:edges[2]][:max_per_class]}
        for part in PARTS:
            if part == "train" and not known:
                continue
            if not drawn[part]:
                raise DatasetLayoutError(f"split {spec.name}: class '{name}' has no {part} images under {root} "
                                         f"({len(sum(pools[name], []))} in all)")
            parts[part] += [(r, cls) for r in sorted(drawn[part], key=lambda r: str(r.path))]
    out = Partition(spec, settings={"root": str(root), "fractions": list(fractions), "max_per_class": max_per_class,
                                    "seed": seed, "split": spec.to_dict()})
    for part in PARTS:
        out.records[part] = [r for r, _ in parts[part]]
        out.labels[part] = np.array([c for _, c in parts[part]], dtype=int)
    return out


def _shuffled(records: list[ImageRecord], rng: np.random.Generator, cap: int | None) -> list[ImageRecord]:
    ordered = sorted(records, key=lambda r: str(r.path))
    picked = [ordered[i] for i in rng.permutation(len(ordered))]
    return picked[:cap] if cap is not None else picked
