"""Open-set origin attribution from frozen CLIP features (after Cioni et al., UniversalAttribution):
which generator made an image, or "one I do not know".

- :mod:`.features`: per-block CLS tokens of a CLIP ViT (or RINE's ``ln_2`` tokens), cached on disk;
- :mod:`.classifiers`: logistic-regression and cosine-kNN probes with the reference's sweeps;
- :mod:`.metrics`: closed-set accuracy / macro-F1, AUROC, TNR@95%TPR, OSCR (leaf);
- :mod:`.splits`: known / unknown generators (``configs/splits.yaml``, user YAML/JSON) and disjoint
  train / val / test images;
- :mod:`.openset`: per-block sweep on val and evaluation on test; :mod:`.report`: CSV/JSON/figures;
- :func:`run_attribution` (:mod:`.run`): all of it in one call.
"""
from .run import run_attribution
from .splits import DEFAULT_SPLIT, SplitSpec, load_split, partition, predefined

__all__ = ["run_attribution", "DEFAULT_SPLIT", "SplitSpec", "load_split", "partition", "predefined"]
