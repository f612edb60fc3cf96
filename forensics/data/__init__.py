"""Model-agnostic data readers: strict image decoding, benchmark folder layouts, batching.

- :mod:`.images`: :func:`load_rgb`, one file -> 8-bit RGB ``PIL.Image`` (or a clear error).
- :mod:`.layouts`: ForenSynths, UFD diffusion, GenImage and plain-folder readers returning
  :class:`ImageRecord` lists (:mod:`.records`: paths, labels, masks; nothing decoded); :mod:`.readers`:
  WildRF, Synthbuster, CSV manifests, Parquet shards, image/mask pairs and polygon annotations.
- :mod:`.sets`: :func:`load_sets`, every set of a root in one of the :data:`LAYOUTS` (or ``auto``).
- :mod:`.masks`: masks decoded and carried through the image transform's geometry.
- :mod:`.dataset`: :class:`ImageDataset`, :func:`iter_batches` (mixed sizes) and
  :class:`RunSummary` (every skipped file, with its reason).
"""
from .dataset import UNKNOWN_LABEL, Batch, ImageDataset, RunSummary, Sample, collate, iter_batches
from .images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, NON_IMAGE_EXTENSIONS, is_candidate_file,
                     is_image_file, load_rgb, to_rgb)
from .layout_options import LayoutOptions, parse_label_map
from .layouts import (FAKE_DIR, LABEL_DIRS, REAL_DIR, UFD_DIFFUSION_REAL_FOLDERS, collect, forensynths, genimage,
                      label_from_path, list_sources, plain_folder, ufd_diffusion)
from .records import ImageRecord, ParquetCell, Polygons
from .sets import AUTO, LAYOUTS, Layout, describe_sets, detect_layout, load_sets

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "NON_IMAGE_EXTENSIONS", "is_candidate_file", "is_image_file",
    "load_rgb", "to_rgb",
    "FAKE_DIR", "LABEL_DIRS", "LAYOUTS", "REAL_DIR", "UFD_DIFFUSION_REAL_FOLDERS", "ImageRecord", "Layout", "collect",
    "forensynths", "genimage", "LayoutOptions", "parse_label_map", "ParquetCell", "Polygons", "AUTO",
    "describe_sets", "detect_layout", "label_from_path", "list_sources", "load_sets", "plain_folder", "ufd_diffusion",
    "UNKNOWN_LABEL", "Batch", "ImageDataset", "RunSummary", "Sample", "collate", "iter_batches",
]
