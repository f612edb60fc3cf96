"""A small, offline, deterministic synthetic-image forensic benchmark in the ForenSynths layout.

Nothing is downloaded. **Real** images are random crops (with random rescale and horizontal flip)
of the colour photographs that scikit-image ships inside its wheel (:data:`PHOTO_SOURCES`), mixed
with procedural *dead-leaves* images (occlusion model with power-law disc sizes and colours drawn
from the photographs, the classic natural-statistics image model). Every source image is split
along its longer side into a train/val region (the first ``1 - test_fraction``) and a test region
(the rest), separated by a small gap, so that train/val and test crops never share pixels.

Crops are rescaled by a log-uniform factor in [1/3, 2], so about 40% of the reals are *enlarged*
(smooth, without a top octave): "blurry" is then no reliable cue and a detector must learn a
family's own trace, which is what makes generalisation partial.

**Fake** images are real crops passed through small image generators (about 20k parameters
each), one per *family* (:data:`FAMILIES`), each trained briefly at build time on real
train-region crops (Adam, lr 2e-3, batch 16, L1 + L1 of the Laplacian, 100 steps). Every
upsampling generator sees the crop at half resolution (2x2 average) and must synthesise the
full-resolution image; all families share the same low-resolution trunk and differ in the
operator that produces the full-resolution output, so that each family leaves its own spectral
fingerprint, as real GAN/diffusion generators do:

==============  =======================================================================
``tconv``       transposed convolution (k=4, s=2) as the last layer (ProGAN/DCGAN-like);
                the default training family. Its outputs also carry the colour fingerprint
                below.
``tconv3``      transposed convolution with k=3, s=2 (uneven kernel overlap).
``pshuffle``    sub-pixel convolution: conv -> PixelShuffle(2) (ESPCN/EDSR-like).
``nearest``     nearest-neighbour x2 + 3x3 conv (resize-convolution).
``bilinear``    bilinear x2 + 3x3 conv.
``denoise``     no upsampling: a full-resolution residual denoiser (DnCNN-like) applied to the
                noised image, a stand-in for diffusion-style generators.
==============  =======================================================================

Training is deliberately brief: the traces fade as a generator trains (a default-recipe
ResNet-50 reached AP 0.994 on ``tconv`` fakes of 100-step generators, 0.92 at 150 steps, 0.71 at
400). Because the brief Adam run oscillates, the strength of the period-2 trace at a fixed step
varies several-fold between seeds; for ``tconv`` and ``tconv3`` the build therefore scores
snapshots every 10 steps from 80 to 140 (0.8 to 1.4 x ``gen_steps``) by :func:`nyquist_ratio` on a
probe set and keeps the one nearest to step 100 whose ratio is at least ``gen_select_min``
(see :class:`BenchmarkConfig`).

The training family's colour fingerprint (:class:`ColorFingerprint`) is a chroma-only change in
ITU-R 601 YCbCr, i.e. invisible in the ``L = 0.299 R + 0.587 G + 0.114 B`` grayscale used by
T-FF's colour ablation up to 8-bit rounding and clipping (mean |dL| 0.13 levels, mean |dRGB| 2.1
levels on test crops): 60% of the chroma is decoded at half resolution (2x2 blocks, as in
4:2:0 video, perceptually subtle) and the chroma gain is raised by 8%.

The layout written by :func:`build_benchmark`::

    OUT/train/<class>/{0_real,1_fake}/*.png     fakes of the training family only
    OUT/val/<class>/{0_real,1_fake}/*.png
    OUT/test/<family>/{0_real,1_fake}/*.png     one folder per family (own reals, test regions)
    OUT/manifest.json                           seed, families, counts, sizes, generator settings

``<class>`` is the source image (``astronaut``, ``coffee``, ..., ``deadleaves``). The build is
deterministic for a seed on a given platform and torch version (torch's deterministic algorithms,
seeded generators, one torch thread by default: other thread counts give slightly different
images); the manifest records a SHA-256 over all written images so two builds can be compared.
The output folder is written under a temporary name and renamed into place only when complete.
The default build (9 classes x 250 + 250 train, 25 + 25 val, 6 families x 400 + 400 test, 64x64
PNG, about 80 MB) takes about 70 s on one CPU core.

The package, one concept per module: :mod:`.config` (settings, families, layout constants),
:mod:`.seeding` (random streams, deterministic torch), :mod:`.sources` (real images and crops),
:mod:`.fingerprints` (colour fingerprint, spectral and chroma measures), :mod:`.generators` (the
fake-image networks, their training and generation), :mod:`.build` (writing the benchmark and its
manifest). Every name is importable from ``forensics.data.synthetic``. docs/benchmark.md.
"""
from __future__ import annotations

from .build import _write_pngs, build_benchmark, read_manifest  # noqa: F401 (_write_pngs and the private helpers
# below are shared with forensics.data.local_fakes)
from .config import (BENCHMARK_VERSION, DEFAULT_COLOR, DEFAULT_TRAIN_FAMILY, FAKE_DIR, FAMILIES,  # noqa: F401
                     PHOTO_SOURCES, REAL_DIR, BenchmarkConfig, ColorFingerprint, FamilySpec,
                     PathLike, config_from_dict)
from .fingerprints import (apply_color_fingerprint, chroma_magnitude,  # noqa: F401
                           nyquist_ratio, nyquist_share, rgb_to_ycbcr, signed_to_uint8, uint8_to_signed, ycbcr_to_rgb)
from .generators import Generator, build_generators, generate, selection_steps, train_generator
from .seeding import _rng, _torch_seed, deterministic_torch
from .sources import (Source, _split_count, class_name, dead_leaves, load_photo, load_sources, sample_crop, sample_crops,
                      split_regions)

__all__ = [
    "BENCHMARK_VERSION", "DEFAULT_COLOR", "DEFAULT_TRAIN_FAMILY", "FAKE_DIR", "FAMILIES", "PHOTO_SOURCES", "REAL_DIR",
    "BenchmarkConfig", "ColorFingerprint", "FamilySpec", "Generator", "PathLike", "Source",
    "apply_color_fingerprint", "build_benchmark", "build_generators", "chroma_magnitude", "class_name",
    "config_from_dict", "dead_leaves", "deterministic_torch", "generate", "load_photo", "load_sources",
    "nyquist_ratio", "nyquist_share", "read_manifest", "rgb_to_ycbcr", "sample_crop", "sample_crops",
    "selection_steps", "signed_to_uint8", "split_regions", "train_generator", "uint8_to_signed", "ycbcr_to_rgb",
]
