"""The embedded default: benchmark and default detector built once into the cache, keyed by their
settings, then reused (a tiny configuration; the real default is measured in the README)."""
from __future__ import annotations

import dataclasses
import logging


from forensics import defaults
from forensics.data.synthetic import BenchmarkConfig
from helpers import single_thread

TINY = BenchmarkConfig(image_size=32, train_per_class=3, val_per_class=2, test_per_family=3, gen_steps=2,
                       gen_pool=8, gen_batch=4, dead_leaves=0, photo_sources=("astronaut", "coffee"),
                       families=("tconv", "nearest"))
RECIPE = defaults.TrainRecipe(max_steps=2, batch_size=4, crop_size=28, val_every=1)


def test_default_benchmark_and_detector_are_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(defaults.DEFAULT_RECIPES, "resnet50", RECIPE)
    import random
    import numpy as np
    import torch
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = torch.rand(3), np.random.rand(3), random.random()  # what a seeded caller draws next
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    with single_thread():
        assert not defaults.is_cached("resnet50", TINY)
        bench = defaults.default_benchmark(TINY)
        assert not defaults.is_cached("resnet50", TINY)  # the benchmark alone is not the detector
        assert bench.root.parent == tmp_path and bench.train_family == "tconv"
        assert sorted(p.name for p in bench.test_root.iterdir()) == ["nearest", "tconv"]
        ckpt = defaults.default_checkpoint("resnet50", TINY)
        assert ckpt.is_file() and defaults.is_cached("resnet50", TINY)
        # building and training seeded and drew from the global streams; the caller's are restored
        drawn = torch.rand(3), np.random.rand(3), random.random()
        assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1])
        assert drawn[2] == expected[2]
        stamp = ckpt.stat().st_mtime_ns
        caplog.clear()
        with caplog.at_level("INFO", logger="forensics.defaults"):
            model, bench2 = defaults.default_detector_and_data("resnet50", TINY)
        assert bench2.root == bench.root and ckpt.stat().st_mtime_ns == stamp  # reused, not rebuilt
        messages = [r.getMessage() for r in caplog.records if r.name == "forensics.defaults"]
        assert len(messages) == 1 and "embedded default" in messages[0]
        assert model.config.preprocessing.crop == "none" and model.weights_source == str(ckpt)
    # another setting -> another cache entry
    other = dataclasses.replace(TINY, seed=1)
    assert defaults.settings_key(other.to_dict()) != defaults.settings_key(TINY.to_dict())


def test_default_clip_backbone_is_seeded_and_leaves_global_rng_alone():
    import torch
    state = torch.random.get_rng_state()
    a, b = defaults.default_clip_backbone(), defaults.default_clip_backbone(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = defaults.default_clip_backbone()
    sa, sb, s2 = a.state_dict(), b.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], s2[k]) for k in sa)
    assert not torch.equal(sa["visual.conv1.weight"], sb["visual.conv1.weight"])
    assert not any(p.requires_grad for p in a.parameters())


def test_unknown_default_detector_is_refused_with_the_choices():
    import argparse
    import pytest
    from forensics.cli.analysis_args import add_detector_args
    from forensics.cli.inputs import embedded_default
    parser = argparse.ArgumentParser()
    add_detector_args(parser)
    args = parser.parse_args(["--recipe", "resnet51"])
    with pytest.raises(SystemExit, match="resnet50_cr"):
        embedded_default(args)


def test_output_name_separates_embedded_defaults_from_registry_names():
    import argparse
    from types import SimpleNamespace
    from forensics.cli.analysis_args import add_detector_args, add_data_args
    from forensics.cli.inputs import output_name
    parser = argparse.ArgumentParser()
    add_detector_args(parser)
    add_data_args(parser)
    det = SimpleNamespace(name="resnet50")
    assert output_name(parser.parse_args([]), det) == "resnet50"
    assert output_name(parser.parse_args(["--recipe", "resnet50_cr"]), det) == "resnet50_cr"
    explicit = parser.parse_args(["--detector", "resnet50", "--weights", "w.pth", "--recipe", "efb0"])
    assert output_name(explicit, det) == "resnet50"  # --recipe only applies to the embedded default


def test_concurrent_callers_build_a_cache_entry_once(tmp_path, monkeypatch, caplog):
    """Two callers asking for the same entry at once: the second waits on the entry's lock, says so, and
    reuses what the first built instead of building it again beside it."""
    import threading
    import time

    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    calls, started = [], threading.Event()

    def fake_build(root, config, overwrite=False):
        calls.append(root)
        started.set()
        time.sleep(0.5)
        root.mkdir(parents=True, exist_ok=True)
        (root / "manifest.json").write_text("{}")

    monkeypatch.setattr(defaults, "build_benchmark", fake_build)
    monkeypatch.setattr(defaults, "read_manifest", lambda root: {})
    roots = []
    first = threading.Thread(target=lambda: roots.append(defaults.default_benchmark().root))
    with caplog.at_level("INFO", logger="forensics"):
        first.start()
        assert started.wait(10)
        roots.append(defaults.default_benchmark().root)   # blocks until the first has finished
        first.join()
    assert len(calls) == 1 and roots[0] == roots[1] == calls[0]
    assert "another process is building" in caplog.text


#: The full default's cache folders as they were before scales existed: a scale must never move them (the
#: README's numbers, the seed study and every user's cache are keyed by these).
FULL_KEYS = {"benchmark": "benchmark-8c78fd12b822", "resnet50": "resnet50-02834abe1bd4",
             "resnet50_long": "resnet50_long-d29526be8597", "resnet50_cr": "resnet50_cr-46a4163991ac",
             "efb0": "efb0-ad69a4e39fc6", "efb0_cr": "efb0_cr-2e850f5b0338", "rine": "rine-2579d1bb1e21"}


def _keys() -> dict[str, str]:
    names = {name: defaults._detector_dir(name, None, defaults.recipe_for(name)).name for name in defaults.DEFAULT_RECIPES}
    return {"benchmark": defaults._benchmark_root(defaults.benchmark_config()).name, **names}


def test_the_full_scale_is_the_default_and_keeps_every_cache_key(monkeypatch):
    for value in (None, "", "full"):
        if value is None:
            monkeypatch.delenv(defaults.SCALE_ENV, raising=False)
        else:
            monkeypatch.setenv(defaults.SCALE_ENV, value)
        assert defaults.default_scale() is defaults.SCALES["full"]
        assert defaults.benchmark_config() == BenchmarkConfig()
        assert all(defaults.recipe_for(name) is recipe for name, recipe in defaults.DEFAULT_RECIPES.items())
        assert _keys() == FULL_KEYS


def test_the_smoke_scale_shrinks_benchmark_and_recipes_under_their_own_keys(monkeypatch, tmp_path):
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(defaults.SCALE_ENV, "smoke")
    full = BenchmarkConfig()
    smoke = defaults.benchmark_config()
    assert smoke.train_per_class < full.train_per_class and smoke.test_per_family < full.test_per_family
    assert (smoke.families, smoke.train_family, smoke.image_size) == (full.families, full.train_family, full.image_size)
    changes = defaults.SCALES["smoke"].recipe_changes
    for name, recipe in defaults.DEFAULT_RECIPES.items():
        scaled = defaults.recipe_for(name)
        assert type(scaled) is type(recipe) and scaled.detector == recipe.detector
        assert {k: getattr(scaled, k) for k in changes[type(recipe)]} == dict(changes[type(recipe)])
        assert defaults.recipe_for(name, seed=3).seed == 3
    assert defaults.recipe_for("resnet50").max_steps < defaults.DEFAULT_RECIPES["resnet50"].max_steps
    assert defaults.recipe_for("rine").epochs < defaults.DEFAULT_RECIPES["rine"].epochs
    keys = _keys()
    assert all(keys[k] != FULL_KEYS[k] and keys[k].split("-")[0] == FULL_KEYS[k].split("-")[0] for k in FULL_KEYS)
    assert not defaults.is_cached("resnet50")  # and the smoke entry is looked up in its own folder
    assert defaults._benchmark_root(smoke).parent == tmp_path


def test_an_unknown_scale_is_refused_with_the_choices(monkeypatch):
    import pytest
    monkeypatch.setenv(defaults.SCALE_ENV, "huge")
    with pytest.raises(ValueError, match="full, smoke"):
        defaults.recipe_for("resnet50")


def _cli_argv(recipe, dataroot, run_dir) -> list[str]:
    """The command line the embedded default used to train ``recipe`` with (``analyses/train.py`` options;
    recipes were argv lists before trainers took options): the options path must give the same run."""
    if isinstance(recipe, defaults.RineRecipe):
        return ["--dataroot", str(dataroot), "--checkpoints_dir", str(run_dir.parent), "--name", run_dir.name,
                "--backbone", recipe.backbone, "--backbone_weights", str(recipe.backbone_file()),
                "--nproj", str(recipe.nproj), "--proj_dim", str(recipe.proj_dim), "--dropout", str(recipe.dropout),
                "--factor", str(recipe.factor), "--epochs", str(recipe.epochs),
                "--epochs_reduce_lr", *map(str, recipe.epochs_reduce_lr), "--lr", str(recipe.lr),
                "--bsize", str(recipe.batch_size), "--seed", str(recipe.seed), "--device", "cpu",
                "--feature_cache", str(defaults.cache_dir() / "features"), "--num_threads", "0"]
    extra = [] if recipe.bn_momentum is None else ["--bn_momentum", str(recipe.bn_momentum)]
    return ["--detector", recipe.detector, "--dataroot", str(dataroot), "--checkpoints_dir", str(run_dir.parent),
            "--name", run_dir.name, "--no_resize", "--cropSize", str(recipe.crop_size), "--bsize",
            str(recipe.batch_size), "--lr", str(recipe.lr), "--max_steps", str(recipe.max_steps), "--val_every",
            str(recipe.val_every), "--blur_prob", str(recipe.blur_prob), "--blur_sig", recipe.blur_sig, "--jpg_prob",
            str(recipe.jpg_prob), "--jpg_method", "cv2,pil", "--jpg_qual", "30,100", "--init", "random", "--seed",
            str(recipe.seed), "--val_aug", "none", "--device", "cpu", "--save_epoch_freq", "0", "--resume", *extra] + \
        (["--color_robust"] if recipe.color_robust else [])


def test_every_default_recipe_gives_the_options_its_command_line_gives(monkeypatch, tmp_path):
    """A default recipe's options object equals what ``analyses/train.py`` parses from the recipe's command
    line, field by field, at every scale: training from options is the command-line run."""
    from forensics.cli.train_args import trainer_parser
    from forensics.train import get_trainer
    monkeypatch.setattr(defaults.RineRecipe, "backbone_file", lambda self: tmp_path / "backbone.pth")
    for scale in defaults.SCALES:
        monkeypatch.setenv(defaults.SCALE_ENV, scale)
        for name in defaults.DEFAULT_RECIPES:
            recipe = defaults.recipe_for(name)
            cls = get_trainer(recipe.detector).options
            parser = trainer_parser(cls)
            parser.add_argument("--detector")
            run_dir = tmp_path / "detectors" / name
            parsed = cls.from_args(parser.parse_args(_cli_argv(recipe, tmp_path / "bench", run_dir)))
            assert recipe.options(tmp_path / "bench", run_dir) == parsed, (scale, name)


def test_a_default_trained_from_options_equals_the_command_line_run(tmp_path, monkeypatch, caplog):
    """Training a tiny recipe through the embedded default (options) and through ``analyses/train.py`` (its
    command line) draws the same numbers and takes the same steps: the checkpoints hold identical weights."""
    import runpy
    import torch
    from pathlib import Path
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    recipe = dataclasses.replace(RECIPE, bn_momentum=0.1)  # exercises the one recipe field beyond the CLI basics
    monkeypatch.setitem(defaults.DEFAULT_RECIPES, "resnet50", recipe)
    with single_thread(), caplog.at_level("INFO", logger="forensics.train"):
        via_options = defaults.default_checkpoint("resnet50", TINY)
        # a first run has no checkpoint to resume: nothing is wrong, so nothing above INFO is said about it
        assert any("--resume: no" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "--resume" in r.getMessage()]
        bench = defaults.default_benchmark(TINY)
        main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "analyses" / "train.py"))["main"]
        assert main(_cli_argv(recipe, bench.root, tmp_path / "cli" / "run")) == 0
    via_cli = tmp_path / "cli" / "run" / via_options.name
    a, b = torch.load(via_options, weights_only=True), torch.load(via_cli, weights_only=True)
    assert a["total_steps"] == b["total_steps"] == recipe.max_steps
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
