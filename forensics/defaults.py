"""The embedded default: an offline synthetic benchmark and small detectors the project builds itself.

When an analysis gets neither ``--weights`` nor ``--dataset_dir`` it runs on this default:

1. the synthetic benchmark of :mod:`forensics.data.synthetic` (default :class:`BenchmarkConfig`),
   built once into the cache;
2. a detector trained on its training family with :data:`DEFAULT_RECIPES` (the Wang et al. recipe
   scaled down to 64x64 images and a fixed number of steps), trained once into the cache.

Each detector's default recipe is declared once, as the ``"default_recipe"`` fact of its registry
entry (:func:`forensics.detectors.registry.register_fact`; read with :func:`default_recipe`);
:data:`DEFAULT_RECIPES` is the catalogue of named default models: those recipes plus variants of them.

Both are cached under ``$FORENSICS_CACHE`` (default ``$XDG_CACHE_HOME/forensics`` or
``~/.cache/forensics``) in folders keyed by a hash of every setting, so a changed setting builds anew
and an unchanged one is reused. An interrupted training run resumes from its latest checkpoint. Two
processes asking for the same entry at once (two analyses started together, a test run beside a study) do
not both build it: the second waits on a file lock beside the entry and then reuses what the first built.
It is a smoke-scale stand-in for running the pipeline offline, not a substitute for ForenSynths or
GenImage.

**Scales.** The embedded default comes in named sizes (:data:`SCALES`, chosen by ``$FORENSICS_DEFAULT_SCALE``,
read by :func:`default_scale` only): ``full`` (the default, unset) is the benchmark and recipes above, on which
the documented numbers are measured; ``smoke`` is a smaller benchmark and shorter trainings, which build from an
empty cache in a fraction of the time, so that the test suite can execute the tutorial notebooks on a fresh
clone. A scale's benchmark settings and recipes are ordinary settings, so its entries live under their own
cache keys beside the full default's, which they never change.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .cache import CACHE_ENV, building, cache_dir, rng_untouched, settings_key
from .data.synthetic import BenchmarkConfig, build_benchmark, read_manifest
from .detectors.registry import FactView, register_fact
from .io import atomic_torch_save, atomic_write_json
from .train import get_trainer
from .train.clip_options import RineOptions
from .train.universal_options import UniversalOptions

log = logging.getLogger(__name__)

SCALE_ENV = "FORENSICS_DEFAULT_SCALE"
DONE = "DONE.json"
DEFAULT_RECIPE_FACT = "default_recipe"


@dataclass(frozen=True)
class TrainRecipe:
    """Training of a default detector on the benchmark with the universal trainer: the settings that differ
    between default recipes; :meth:`options` completes them into the trainer's :class:`UniversalOptions`."""

    detector: str = "resnet50"
    color_robust: bool = False
    max_steps: int = 800
    batch_size: int = 32
    lr: float = 5e-4
    crop_size: int = 56
    blur_prob: float = 0.1
    blur_sig: str = "0.0,1.0"
    jpg_prob: float = 0.1
    val_every: int = 200
    seed: int = 0
    bn_momentum: float | None = None

    def options(self, dataroot: Path, run_dir: Path) -> UniversalOptions:
        """The trainer's options for training into ``run_dir`` on the benchmark at ``dataroot`` (CPU,
        random init, no resize, blur/JPEG at the recipe's probabilities, resumable)."""
        return UniversalOptions(
            detector=self.detector, dataroot=str(dataroot), checkpoints_dir=str(run_dir.parent), name=run_dir.name,
            no_resize=True, cropSize=self.crop_size, batch_size=self.batch_size, lr=self.lr,
            max_steps=self.max_steps, val_every=self.val_every, blur_prob=self.blur_prob,
            blur_sig=tuple(float(v) for v in self.blur_sig.split(",")), jpg_prob=self.jpg_prob,
            jpg_method=("cv2", "pil"), jpg_qual=(30, 100), init="random", seed=self.seed, val_aug="none",
            device="cpu", save_epoch_freq=0, resume=True, color_robust=self.color_robust,
            bn_momentum=self.bn_momentum)

    def key_fields(self) -> dict[str, Any]:
        """The settings the cache entry is keyed by, in the form they have always been hashed in (a changed
        form would move every user's cached default): a set ``bn_momentum`` is recorded as the trainer's
        command-line words in ``extra``, as recipes once spelled it."""
        fields = dataclasses.asdict(self)
        momentum = fields.pop("bn_momentum")
        return {**fields, "extra": () if momentum is None else ("--bn_momentum", str(momentum))}

    @property
    def budget(self) -> str:
        return f"{self.max_steps} steps"

    def create_options(self) -> dict[str, Any]:
        """Extra :func:`forensics.detectors.create` options of the trained detector (none)."""
        return {}


#: Steps of the first-run default ``resnet50``: on 2 CPU cores a ResNet-50 step of 32 images at 56x56
#: takes 0.85-1.1 s, so 300 steps keep the first run from a fresh clone (benchmark, training, FF-RS) within
#: 10 minutes with a margin (400 steps took 8m47 on a quiet machine and 10m01 on a slower one). Every
#: other recipe trains 800 steps; ``resnet50_long`` is ``resnet50`` at 800 steps, the equal-budget
#: baseline of the colour-robust and EfficientNet recipes.
FIRST_RUN_STEPS = 300

register_fact(DEFAULT_RECIPE_FACT, "resnet50")(TrainRecipe(max_steps=FIRST_RUN_STEPS, val_every=100))
# efficientnet_pytorch's BatchNorm momentum (0.01) leaves the running statistics of an 800-step
# run from random init far from the weights' scale; PyTorch's 0.1 fixes eval mode.
register_fact(DEFAULT_RECIPE_FACT, "efb0")(TrainRecipe(detector="efb0", bn_momentum=0.1))


@dataclass(frozen=True)
class DefaultBenchmark:
    """A built benchmark: ``root`` (ForenSynths layout), its manifest and convenient paths."""

    root: Path
    manifest: Mapping[str, Any] = field(repr=False)

    @property
    def train_family(self) -> str:
        return self.manifest["train_family"]

    @property
    def families(self) -> list[str]:
        return list(self.manifest["families"])

    @property
    def test_root(self) -> Path:
        return self.root / "test"



def _benchmark_root(config: BenchmarkConfig) -> Path:
    return cache_dir() / f"benchmark-{settings_key(config.to_dict())}"


def _detector_dir(name: str, config: BenchmarkConfig | None, recipe) -> Path:
    root = _benchmark_root(config or benchmark_config())
    return cache_dir() / "detectors" / f"{name}-{settings_key(root.name, recipe.key_fields())}"


def is_cached(name: str = "resnet50", config: BenchmarkConfig | None = None, seed: int | None = None) -> bool:
    """Whether default detector ``name`` (and its benchmark) is already in the cache, i.e. whether
    :func:`default_detector` will load it rather than build and train it (which takes minutes)."""
    return (_benchmark_root(config or benchmark_config()) / "manifest.json").is_file() and \
        (_detector_dir(name, config, recipe_for(name, seed)) / DONE).is_file()


def default_benchmark(config: BenchmarkConfig | None = None) -> DefaultBenchmark:
    """The benchmark for ``config`` (the scale's, :func:`benchmark_config`, when ``None``), built once into
    the cache."""
    config = config or benchmark_config()
    root = _benchmark_root(config)
    if not (root / "manifest.json").is_file():
        with building(root):
            if not (root / "manifest.json").is_file():
                log.info("embedded default: building the synthetic benchmark into %s (once; later runs reuse it)",
                         root)
                with rng_untouched():
                    build_benchmark(root, config, overwrite=root.exists())
    return DefaultBenchmark(root, read_manifest(root))


def default_local_fakes(local=None, config: BenchmarkConfig | None = None) -> Path:
    """The local-manipulation split (:mod:`forensics.data.local_fakes`, images + masks) of the default
    benchmark, built once into the cache beside it; the benchmark's own splits are untouched."""
    from .data.local_fakes import LOCAL_VERSION, LocalFakeConfig, build_local_fakes
    local = local or LocalFakeConfig()
    bench = default_benchmark(config)
    root = cache_dir() / f"local-{settings_key(bench.root.name, local.to_dict(), LOCAL_VERSION)}"
    if not (root / "local_manifest.json").is_file():
        with building(root):
            if not (root / "local_manifest.json").is_file():
                log.info("embedded default: building the local-manipulation split into %s (once)", root)
                with rng_untouched():
                    build_local_fakes(root, config or benchmark_config(), local, bench_manifest=dict(bench.manifest),
                                      overwrite=root.exists())
    return root


def recipe_for(name: str, seed: int | None = None):
    """The recipe of default detector ``name`` at the :func:`default_scale`, trained with another ``seed``
    (``None``: the default's). Seed 0 is the default recipe itself (same cache entry)."""
    recipe = default_scale().recipe(DEFAULT_RECIPES[name])
    return recipe if seed is None else dataclasses.replace(recipe, seed=int(seed))


def default_checkpoint(name: str = "resnet50", config: BenchmarkConfig | None = None,
                       recipe: TrainRecipe | None = None, seed: int | None = None) -> Path:
    """The best checkpoint of default detector ``name`` (see :data:`DEFAULT_RECIPES`; ``seed``: its
    training seed, see :func:`recipe_for`), trained once."""
    recipe = recipe or recipe_for(name, seed)
    bench = default_benchmark(config)
    run_dir = _detector_dir(name, config, recipe)
    done = run_dir / DONE
    if not done.is_file():
        with building(run_dir):
            if not done.is_file():
                _train_default(name, recipe, bench, run_dir)
    return run_dir / json.loads(done.read_text())["checkpoint"]


def _train_default(name: str, recipe, bench: DefaultBenchmark, run_dir: Path) -> None:
    log.info("embedded default: training %s on the benchmark's '%s' family into %s (%s; once)",
             name, bench.train_family, run_dir, recipe.budget)
    with rng_untouched():
        path = Path(get_trainer(recipe.detector).run(recipe.options(bench.root, run_dir)))
    atomic_write_json(run_dir / DONE, {"checkpoint": path.name, "recipe": recipe.key_fields(),
                                       "benchmark": str(bench.root)})


def default_detector(name: str = "resnet50", config: BenchmarkConfig | None = None, device: str = "cpu",
                     seed: int | None = None):
    """Default detector ``name`` (trained with ``seed``, default the recipe's) loaded from its cached
    checkpoint, evaluating full 64x64 images."""
    from .detectors import create
    recipe = recipe_for(name, seed)
    path = default_checkpoint(name, config, recipe)
    return create(recipe.detector, weights=path, device=device, preprocessing={"crop": "none"},
                  **recipe.create_options())


#: The embedded default's stand-in for CLIP (no CLIP weights can be downloaded here): a small open_clip
#: vision tower with seeded random weights, frozen. Used by the default RINE and by attribution.
#: ``forensics-bench-vit`` (64 px, patch 8, 6 blocks, width 64) sees the benchmark's full 64x64 images
#: (no crop, as every CLI feeds them) and its per-block CLS tokens separate the training family far
#: better than ``forensics-tiny-vit``'s (56 px, patch 14, 4 blocks): logistic regression on the
#: flattened ln_2 CLS tokens of the train split, AP on val, 0.9997 vs 0.925 (docs/rine_results.md).
DEFAULT_CLIP_BACKBONE = "forensics-bench-vit"
DEFAULT_CLIP_SEED = 0


def default_clip_backbone(model_name: str = DEFAULT_CLIP_BACKBONE, seed: int = DEFAULT_CLIP_SEED):
    """The embedded default's frozen CLIP stand-in: ``model_name`` with weights drawn from ``seed``.

    Deterministic for a seed (the global RNG is left untouched), so feature caches keyed by the
    weights' hash are reused across runs.
    """
    import torch
    from .detectors.clip_backbone import ClipVisionBackbone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = ClipVisionBackbone(model_name, weights=None)
    backbone.weights_source = f"random init ({model_name}, seed {seed})"
    return backbone.eval()


def default_clip_backbone_file(model_name: str = DEFAULT_CLIP_BACKBONE, seed: int = DEFAULT_CLIP_SEED) -> Path:
    """:func:`default_clip_backbone`'s visual-tower state dict as a file in the cache (written once), so
    the trainers and ``create(..., backbone_weights=path)`` can load it like real CLIP weights."""
    path = cache_dir() / "clip" / f"{model_name}-seed{seed}.pth"
    if not path.is_file():
        with building(path):
            if not path.is_file():
                backbone = default_clip_backbone(model_name, seed)
                atomic_torch_save({k: v.detach().cpu() for k, v in backbone.visual.state_dict().items()}, path)
                log.info("embedded default: wrote the seeded %s backbone to %s", model_name, path)
    return path


@dataclass(frozen=True)
class RineRecipe:
    """Training of the default RINE (``forensics.train.rine``) on the benchmark: the TIE head on the
    frozen seeded :func:`default_clip_backbone`, trained on cached features of the full images (no
    augmentation; the feature cache makes each epoch cost only head time).

    Differences from the reference recipe (1 epoch, dropout 0.5, nproj 4, proj_dim 128), measured on
    the benchmark (docs/rine_results.md): with dropout 0.5 the head stays at chance on the random
    backbone's small-variance tokens (30 epochs: val acc 0.50, AP 0.58; dropout 0: 0.94, 0.968); this
    recipe (dropout 0, 60 epochs, lr/10 from epoch 40) reaches val acc 0.958, AP 0.985 in ~50 s of CPU.
    """

    detector: str = "rine"
    backbone: str = DEFAULT_CLIP_BACKBONE
    backbone_seed: int = DEFAULT_CLIP_SEED
    nproj: int = 2
    proj_dim: int = 64
    dropout: float = 0.0
    factor: float = 0.2
    epochs: int = 60
    epochs_reduce_lr: tuple[int, ...] = (40,)
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    @property
    def budget(self) -> str:
        return f"{self.epochs} epochs on cached backbone features"

    def options(self, dataroot: Path, run_dir: Path) -> RineOptions:
        """The RINE trainer's options for training into ``run_dir`` on the benchmark at ``dataroot`` (CPU, the
        seeded backbone's file, features cached under the cache's ``features`` folder)."""
        return RineOptions(
            dataroot=Path(dataroot), checkpoints_dir=Path(run_dir.parent), name=run_dir.name, backbone=self.backbone,
            backbone_weights=str(self.backbone_file()), nproj=self.nproj, proj_dim=self.proj_dim,
            dropout=self.dropout, factor=self.factor, epochs=self.epochs, epochs_reduce_lr=self.epochs_reduce_lr,
            lr=self.lr, batch_size=self.batch_size, seed=self.seed, device="cpu",
            feature_cache=cache_dir() / "features", num_threads=0)

    def key_fields(self) -> dict[str, Any]:
        """The settings the cache entry is keyed by."""
        return dataclasses.asdict(self)

    def backbone_file(self) -> Path:
        return default_clip_backbone_file(self.backbone, self.backbone_seed)

    def create_options(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "backbone_weights": str(self.backbone_file())}


register_fact(DEFAULT_RECIPE_FACT, "rine")(RineRecipe())


def default_recipe(detector: str) -> TrainRecipe | RineRecipe:
    """The default recipe detector ``detector`` declares (``KeyError`` naming the detectors that have one)."""
    recipes = FactView(DEFAULT_RECIPE_FACT)
    if detector not in recipes:
        raise KeyError(f"no default recipe for detector {detector!r}; declared for: {', '.join(recipes)}")
    return recipes[detector]


#: The embedded default's named models: each detector's default recipe under its name (``resnet50`` is
#: the embedded default of every analysis; ``--detector rine`` trains the default RINE) and variants.
DEFAULT_RECIPES: dict[str, TrainRecipe | RineRecipe] = {
    "resnet50": default_recipe("resnet50"),
    "resnet50_long": TrainRecipe(),
    "resnet50_cr": TrainRecipe(color_robust=True),
    "efb0": default_recipe("efb0"),
    "efb0_cr": dataclasses.replace(default_recipe("efb0"), color_robust=True),
    "rine": default_recipe("rine"),
}


@dataclass(frozen=True)
class DefaultScale:
    """A named size of the embedded default: the benchmark's settings and, per kind of recipe
    (:class:`TrainRecipe`, :class:`RineRecipe`), the fields replaced in every default recipe of that kind."""

    name: str
    purpose: str
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    recipe_changes: Mapping[type, Mapping[str, Any]] = field(default_factory=dict)

    def recipe(self, recipe: TrainRecipe | RineRecipe) -> TrainRecipe | RineRecipe:
        """``recipe`` at this scale (the recipe itself where the scale changes nothing of its kind)."""
        changes = self.recipe_changes.get(type(recipe))
        return dataclasses.replace(recipe, **changes) if changes else recipe


#: The embedded default's sizes (``$FORENSICS_DEFAULT_SCALE``; unset: ``full``).
SCALES: dict[str, DefaultScale] = {scale.name: scale for scale in (
    DefaultScale("full", "the documented default: every analysis and the documented numbers"),
    # Sizes for executing the tutorial notebooks from an empty cache within the test suite's time budget
    # (docs/report.md, "Tutorials"): the notebooks sample at most 48 test images per family and label (the
    # attribution probe 40 per class), so 60 are enough. The ResNet-50 keeps the full recipe at 120 steps
    # (about 2 minutes on 2 cores): at 60 steps on 40 training images per class its validation AP was 0.90 and
    # still rising, its test AP on the training family 0.76, short of tutorial 1's check (> 0.8).
    DefaultScale("smoke", "a fast stand-in for tests: small benchmark, short trainings; not for results",
                 benchmark=BenchmarkConfig(train_per_class=80, val_per_class=10, test_per_family=60),
                 recipe_changes={TrainRecipe: {"max_steps": 120, "val_every": 40},
                                 RineRecipe: {"epochs": 30, "epochs_reduce_lr": (20,)}}),
)}


def default_scale() -> DefaultScale:
    """The scale ``$FORENSICS_DEFAULT_SCALE`` names (``full`` when unset or empty); ``ValueError`` naming
    the scales for an unknown name."""
    name = os.environ.get(SCALE_ENV) or "full"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV}={name!r} is not a scale of the embedded default; known: {', '.join(SCALES)}")
    return SCALES[name]


def benchmark_config() -> BenchmarkConfig:
    """The settings of the default benchmark at the :func:`default_scale`."""
    return default_scale().benchmark


def default_detector_and_data(detector: str = "resnet50", config: BenchmarkConfig | None = None,
                              device: str | Any = "cpu"):
    """``(detector on device, benchmark)`` for analyses run without ``--weights``/``--dataset_dir``; logs one line."""
    bench = default_benchmark(config)
    model = default_detector(detector, config, device=device)
    log.info("no --weights/--dataset_dir given: embedded default = %s trained on the synthetic benchmark's "
             "'%s' family (%s), checkpoint %s", detector, bench.train_family, bench.root, model.weights_source)
    return model, bench
