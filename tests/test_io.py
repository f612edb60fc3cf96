"""forensics.io: atomic_write_csv (one CSV writer for data frames), json_safe and atomic_dir (build a folder, then swap it in)."""
from __future__ import annotations

import json
import math

import pandas as pd

from forensics.io import atomic_write_csv, atomic_write_json, json_safe


def test_atomic_write_csv_formats_floats_and_leaves_no_temporary_file(tmp_path):
    frame = pd.DataFrame({"ap": [0.5, 1 / 3], "n": [3, 4]}, index=["a", "b"])
    path = atomic_write_csv(tmp_path / "sub" / "t.csv", frame)
    assert path == tmp_path / "sub" / "t.csv"
    assert path.read_text().splitlines() == [",ap,n", "a,0.500000,3", "b,0.333333,4"]
    atomic_write_csv(path, frame, index=False)  # replaces the file
    assert path.read_text().splitlines()[0] == "ap,n"
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_json_safe_turns_non_finite_floats_into_null(tmp_path):
    data = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, "x")}
    assert json_safe(data) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, "x"]}
    path = atomic_write_json(tmp_path / "x.json", json_safe(data))
    assert json.loads(path.read_text())["b"][1] is None


def test_atomic_dir_replaces_on_success_and_keeps_the_old_folder_on_error(tmp_path):
    import pytest

    from forensics.io import atomic_dir
    out = tmp_path / "built"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out and not out.exists()
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_dir(out):
            raise AssertionError("not reached")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("build failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]  # no temporary or moved-aside folder left
