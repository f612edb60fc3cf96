"""Command-line options of the universal trainer: CNNDetection's training options (its names and
defaults; docs/training.md) plus this project's additions, and the optimizers they choose."""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

from ..cli.options import add_bsize_arg
from .augment import add_augment_arguments, comma_list
from .init import INIT_CHOICES


OPTIMIZERS: dict[str, Callable[[Any, float, argparse.Namespace], torch.optim.Optimizer]] = {
    "adam": lambda params, lr, a: torch.optim.Adam(params, lr=lr, betas=(a.beta1, 0.999)),
    "sgd": lambda params, lr, a: torch.optim.SGD(params, lr=lr, momentum=0.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CNNDetection's training options (its names and defaults; docs/training.md) plus this project's additions."""
    g = parser.add_argument_group("data (ForenSynths layout: <dataroot>/<split>/[<class>/]{0_real,1_fake})")
    g.add_argument("--dataroot", required=True, help="folder holding the train and val split folders")
    g.add_argument("--train_split", default="train", help="training split folder (default train)")
    g.add_argument("--val_split", default="val", help="validation split folder (default val)")
    g.add_argument("--classes", type=comma_list(str), default=None,
                   help="comma list of class folders; '' = the split folder itself holds 0_real/1_fake; "
                        "default: detect the layout")
    g.add_argument("--class_bal", action="store_true",
                   help="sample with weights 1/class frequency (WeightedRandomSampler, with replacement)")
    g.add_argument("--serial_batches", action="store_true", help="no shuffling (dataset order)")
    add_bsize_arg(g, 64, help=None, dest="batch_size")
    g.add_argument("--num_threads", type=int, default=None,
                   help="data-loader workers (default: 4 on CUDA, 0 on CPU)")
    add_augment_arguments(parser)

    g = parser.add_argument_group("model")
    g.add_argument("--init", choices=INIT_CHOICES, default="imagenet",
                   help="imagenet (the reference; falls back to random with a notice when the file is absent) "
                        "or random")
    g.add_argument("--init_gain", type=float, default=0.02, help="std of the ResNet-50 fc weight init")
    g.add_argument("--bn_momentum", type=float, default=None,
                   help="BatchNorm running-statistics momentum (PyTorch convention; default: the architecture's "
                        "own: 0.1 for ResNet-50, 0.01 for efficientnet_pytorch). Short runs from random init need "
                        "0.1 for EfB0, or its eval-mode statistics lag far behind the weights")

    g = parser.add_argument_group("optimisation (docs/training.md)")
    g.add_argument("--optim", choices=tuple(OPTIMIZERS), default="adam")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--beta1", type=float, default=0.9, help="Adam beta1 (beta2 = 0.999)")
    g.add_argument("--niter", type=int, default=10000, help="maximum number of epochs")
    g.add_argument("--max_steps", type=int, default=None,
                   help="stop after this many optimizer steps (fixed-budget runs; a last validation follows)")
    g.add_argument("--val_every", type=int, default=0,
                   help="validate every N steps instead of at each epoch end (0 = per epoch, the reference); "
                        "early-stopping patience then counts validation points")
    g.add_argument("--earlystop_epoch", type=int, default=5, help="early-stopping patience")
    g.add_argument("--amp", action="store_true", help="CUDA mixed precision (float16 autocast + GradScaler)")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--name", default=None, help="run name (default: <detector>[_color_robust])")
    g.add_argument("--checkpoints_dir", default="checkpoints", help="runs go to <checkpoints_dir>/<name>")
    g.add_argument("--loss_freq", type=int, default=400, help="log the loss every N steps")
    g.add_argument("--save_latest_freq", type=int, default=2000, help="write model_epoch_latest.pth every N steps")
    g.add_argument("--save_epoch_freq", type=int, default=20,
                   help="write model_epoch_<e>.pth at the end of epochs e %% N == 0 (0 = never)")
    g.add_argument("--resume", action="store_true",
                   help="continue from <checkpoints_dir>/<name>/model_epoch_latest.pth")
    g.add_argument("--new_optim", action="store_true", help="with --resume: start a fresh optimizer")

    g = parser.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=0, help="seed of python, numpy, torch and the sample order (>= 0)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
