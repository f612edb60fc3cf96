"""The trainers' command lines (``analyses/train.py``): an argparse parser per options dataclass of
:mod:`forensics.train`, whose defaults are the dataclass's own; :meth:`TrainOptions.from_args` reads a parsed
line back into options. Option names are CNNDetection's (docs/training.md)."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from ..detectors.feature_cache import DTYPES
from ..train.augment import INTERPOLATION, JPEG_METHODS
from ..train.clip_options import ClipOptions, RineOptions, UfdOptions
from ..train.init import INIT_CHOICES
from ..train.options import VAL_AUG_CHOICES, AugmentOptions, TrainOptions
from ..train.universal_options import OPTIMIZERS, UniversalOptions
from .options import add_bsize_arg, add_option


def comma_list(cast: Callable[[str], Any]) -> Callable[[str], list]:
    """argparse ``type`` for CNNDetection's comma lists (``'0.0,3.0'`` -> ``[0.0, 3.0]``)."""
    def parse(text: str) -> list:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    parse.__name__ = f"comma-separated {cast.__name__} list"
    return parse


def backbone_weights_arg(value: str) -> str | None:
    """``--backbone_weights``: a release tag or file, or ``none`` for a random backbone."""
    return None if value.lower() in ("none", "random", "") else value


def _defaults(cls: type[TrainOptions]) -> SimpleNamespace:
    """The field defaults of options class ``cls`` (required fields absent)."""
    return SimpleNamespace(**{f.name: f.default for f in fields(cls) if f.default is not MISSING})


def _joined(values: Any) -> str:
    return ",".join(map(str, values))


def add_augment_arguments(parser: argparse.ArgumentParser, cls: type[AugmentOptions]) -> None:
    """CNNDetection's augmentation options (docs/training.md) and the colour-robust ones (docs/colour.md)."""
    d = _defaults(cls)
    g = parser.add_argument_group("augmentation (CNNDetection names; docs/training.md)")
    g.add_argument("--loadSize", type=int, default=d.loadSize, help="short side after resizing (default %(default)s)")
    g.add_argument("--cropSize", type=int, default=d.cropSize,
                   help="random crop (train) / centre crop (val) size (default %(default)s)")
    g.add_argument("--no_resize", action="store_true", default=d.no_resize, help="do not resize (train and val)")
    g.add_argument("--no_flip", action="store_true", default=d.no_flip, help="no random horizontal flip")
    g.add_argument("--rz_interp", type=comma_list(str), default=d.rz_interp,
                   help=f"comma list drawn per image from {{{','.join(INTERPOLATION)}}} "
                        f"(default {_joined(d.rz_interp)})")
    g.add_argument("--blur_prob", type=float, default=d.blur_prob,
                   help="probability of a Gaussian blur (default %(default)s)")
    g.add_argument("--blur_sig", type=comma_list(float), default=d.blur_sig,
                   help=f"blur sigma: one value, or 'a,b' = uniform range (default {_joined(d.blur_sig)})")
    g.add_argument("--jpg_prob", type=float, default=d.jpg_prob,
                   help="probability of a JPEG round trip (default %(default)s)")
    g.add_argument("--jpg_method", type=comma_list(str), default=d.jpg_method,
                   help=f"comma list of JPEG codecs from {{{','.join(JPEG_METHODS)}}} "
                        f"(default {_joined(d.jpg_method)})")
    g.add_argument("--jpg_qual", type=comma_list(int), default=d.jpg_qual,
                   help=f"JPEG quality: one value, or 'a,b' = every integer in [a, b] (default {_joined(d.jpg_qual)})")
    add_option(g, "--color_robust", "--color-robust", dest="color_robust", action="store_true",
               help="colour-robust training (T-FF; docs/colour.md): RandomGrayscale(gray_prob) after the flip")
    g.add_argument("--gray_prob", type=float, default=d.gray_prob, help="grayscale probability with --color_robust")
    g.add_argument("--gray_val", action="store_true",
                   help="also grayscale validation images at random ([quirk] of the T-FF trainer; off by default)")
    g.add_argument("--val_aug", choices=VAL_AUG_CHOICES, default=d.val_aug,
                   help="reference: validation keeps blur/JPEG with the training probabilities (fixed sigma "
                        "and PIL quality; CNNDetection get_val_opt quirk); none: clean validation "
                        "(default %(default)s)")


def add_universal_arguments(parser: argparse.ArgumentParser, cls: type[UniversalOptions] = UniversalOptions) -> None:
    """CNNDetection's training options (its names and defaults; docs/training.md) plus this project's additions."""
    d = _defaults(cls)
    g = parser.add_argument_group("data (ForenSynths layout: <dataroot>/<split>/[<class>/]{0_real,1_fake})")
    g.add_argument("--dataroot", required=True, help="folder holding the train and val split folders")
    g.add_argument("--train_split", default=d.train_split, help="training split folder (default train)")
    g.add_argument("--val_split", default=d.val_split, help="validation split folder (default val)")
    g.add_argument("--classes", type=comma_list(str), default=d.classes,
                   help="comma list of class folders; '' = the split folder itself holds 0_real/1_fake; "
                        "default: detect the layout")
    g.add_argument("--class_bal", action="store_true",
                   help="sample with weights 1/class frequency (WeightedRandomSampler, with replacement)")
    g.add_argument("--serial_batches", action="store_true", help="no shuffling (dataset order)")
    add_bsize_arg(g, d.batch_size, help=None, dest="batch_size")
    g.add_argument("--num_threads", type=int, default=d.num_threads,
                   help="data-loader workers (default: 4 on CUDA, 0 on CPU)")
    add_augment_arguments(parser, cls)

    g = parser.add_argument_group("model")
    g.add_argument("--init", choices=INIT_CHOICES, default=d.init,
                   help="imagenet (the reference; falls back to random with a notice when the file is absent) "
                        "or random")
    g.add_argument("--init_gain", type=float, default=d.init_gain, help="std of the ResNet-50 fc weight init")
    g.add_argument("--bn_momentum", type=float, default=d.bn_momentum,
                   help="BatchNorm running-statistics momentum (PyTorch convention; default: the architecture's "
                        "own: 0.1 for ResNet-50, 0.01 for efficientnet_pytorch). Short runs from random init need "
                        "0.1 for EfB0, or its eval-mode statistics lag far behind the weights")

    g = parser.add_argument_group("optimisation (docs/training.md)")
    g.add_argument("--optim", choices=tuple(OPTIMIZERS), default=d.optim)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (beta2 = 0.999)")
    g.add_argument("--niter", type=int, default=d.niter, help="maximum number of epochs")
    g.add_argument("--max_steps", type=int, default=d.max_steps,
                   help="stop after this many optimizer steps (fixed-budget runs; a last validation follows)")
    g.add_argument("--val_every", type=int, default=d.val_every,
                   help="validate every N steps instead of at each epoch end (0 = per epoch, the reference); "
                        "early-stopping patience then counts validation points")
    g.add_argument("--earlystop_epoch", type=int, default=d.earlystop_epoch, help="early-stopping patience")
    g.add_argument("--amp", action="store_true", help="CUDA mixed precision (float16 autocast + GradScaler)")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--name", default=d.name, help="run name (default: <detector>[_color_robust])")
    g.add_argument("--checkpoints_dir", default=d.checkpoints_dir, help="runs go to <checkpoints_dir>/<name>")
    g.add_argument("--loss_freq", type=int, default=d.loss_freq, help="log the loss every N steps")
    g.add_argument("--save_latest_freq", type=int, default=d.save_latest_freq,
                   help="write model_epoch_latest.pth every N steps")
    g.add_argument("--save_epoch_freq", type=int, default=d.save_epoch_freq,
                   help="write model_epoch_<e>.pth at the end of epochs e %% N == 0 (0 = never)")
    g.add_argument("--resume", action="store_true",
                   help="continue from <checkpoints_dir>/<name>/model_epoch_latest.pth")
    g.add_argument("--new_optim", action="store_true", help="with --resume: start a fresh optimizer")

    g = parser.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of python, numpy, torch and the sample order (>= 0)")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")


def add_clip_arguments(parser: argparse.ArgumentParser, cls: type[ClipOptions]) -> None:
    """Options both CLIP trainers share (data, backbone, run folder, device, cache) and the CNNDetection
    augmentation options with the recipe's defaults."""
    d = _defaults(cls)
    g = parser.add_argument_group("data and run")
    g.add_argument("--dataroot", required=True, type=Path, help="folder holding the train/val splits")
    g.add_argument("--classes", default=d.classes, help="comma list of class folders (default: all / flat)")
    g.add_argument("--train_split", default=d.train_split, help="training split folder under --dataroot")
    g.add_argument("--val_split", default=d.val_split, help="validation split folder under --dataroot")
    g.add_argument("--backbone", default=d.backbone, help="open_clip model name")
    g.add_argument("--backbone_weights", default=d.backbone_weights, type=backbone_weights_arg,
                   help="release tag or file of the CLIP weights; 'none' = random backbone")
    add_bsize_arg(g, d.batch_size, help=None, dest="batch_size")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto|cpu|cuda[:N]")
    g.add_argument("--name", default=d.name, help="run name: <checkpoints_dir>/<name>/")
    g.add_argument("--checkpoints_dir", type=Path, default=d.checkpoints_dir)
    g.add_argument("--resume", action="store_true", help="continue from <run>/model_epoch_latest.pth")
    g.add_argument("--num_threads", type=int, default=d.num_threads, help="data-loader worker processes")
    g.add_argument("--feature_cache", type=Path, default=d.feature_cache, metavar="DIR",
                   help="train/validate on cached backbone features of deterministic views (no augmentation)")
    g.add_argument("--cache_dtype", choices=tuple(DTYPES), default=d.cache_dtype, help="storage dtype of the cache")
    add_augment_arguments(parser, cls)


def add_rine_arguments(parser: argparse.ArgumentParser, cls: type[RineOptions] = RineOptions) -> None:
    d = _defaults(cls)
    add_clip_arguments(parser, cls)
    g = parser.add_argument_group("RINE (docs/training.md)")
    g.add_argument("--nproj", type=int, default=d.nproj, help="q, Linear layers in proj1/proj2")
    g.add_argument("--proj_dim", type=int, default=d.proj_dim, help="d, projection size")
    g.add_argument("--factor", type=float, default=d.factor, help="xi, weight of the SupCon term")
    g.add_argument("--dropout", type=float, default=d.dropout,
                   help="p of every Dropout of the head (default: the reference's %(default)s)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--epochs_reduce_lr", type=int, nargs="*", default=d.epochs_reduce_lr,
                   help="1-based epochs at whose start lr is divided by 10 (cumulative)")
    g.add_argument("--jpg_qual_range", action="store_true",
                   help="JPEG quality uniform over every integer of --jpg_qual's range (CNNDetection/UFD); "
                        "default: only the two listed values [RINE quirk]")


def add_ufd_arguments(parser: argparse.ArgumentParser, cls: type[UfdOptions] = UfdOptions) -> None:
    d = _defaults(cls)
    add_clip_arguments(parser, cls)
    g = parser.add_argument_group("UFD (docs/training.md)")
    g.add_argument("--beta1", type=float, default=d.beta1, help="AdamW beta1 (beta2 0.999)")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay)
    g.add_argument("--niter", type=int, default=d.niter, help="maximum number of epochs")
    g.add_argument("--earlystop_epoch", type=int, default=d.earlystop_epoch, help="early-stopping patience (epochs)")


#: The argument builder of each trainer's options class (most specific class first wins).
BUILDERS: tuple[tuple[type[TrainOptions], Callable[..., None]], ...] = (
    (UniversalOptions, add_universal_arguments), (RineOptions, add_rine_arguments), (UfdOptions, add_ufd_arguments))


def add_trainer_arguments(parser: argparse.ArgumentParser, options: type[TrainOptions]) -> None:
    """Add the options of a trainer (its :attr:`TrainerSpec.options` class) to ``parser``."""
    for cls, add in BUILDERS:
        if issubclass(options, cls):
            add(parser, options)
            return
    raise TypeError(f"no command line for trainer options {options.__name__}")


def trainer_parser(options: type[TrainOptions], **kwargs: Any) -> argparse.ArgumentParser:
    """A parser of a trainer's options alone (``kwargs`` go to :class:`argparse.ArgumentParser`)."""
    parser = argparse.ArgumentParser(**kwargs)
    add_trainer_arguments(parser, options)
    return parser
