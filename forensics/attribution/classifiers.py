"""Attribution probes on frozen features (docs/attribution.md) and their sweeps.

A probe is fitted on the training features of the known classes (label i = class i, 0 = real) and
returns, for query features, class probabilities ``[N, K]`` and an open-set score ``[N]`` (higher =
more known). Probes are registered by name in :data:`PROBES`; each exposes the hyper-parameter it
sweeps and its reference grid.

- ``logreg``: multinomial logistic regression (scikit-learn ``LogisticRegression``, L2, lbfgs,
  ``max_iter`` 1000, ``tol`` 1e-12 as the reference; float64 inputs). Score: maximum softmax
  probability. Sweep: C in 10^linspace(-6, 5, 45). The reference has no feature scaling; the
  option ``standardize`` (z-scores from the training features) is off by default.
- ``knn``: cosine kNN (features L2-normalised, exact inner products, as Faiss ``IndexFlatIP``).
  For the top-k neighbours with similarities s_j and labels y_j, p_c = Σ_{y_j=c} s_j / Σ_j s_j
  (row sum 0 replaced by 1). Score ``"prob"`` (reference): max_c p_c, which is 1.0 for every query
  at k = 1; ``"similarity"``: the mean cosine similarity of the k neighbours. Neighbour ties are
  broken by training order (stable sort; Faiss' order is unspecified). Sweep: k in
  unique(int(linspace(1, 20, 10))) = {1, 3, 5, ..., 17, 20}.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)


def c_grid(c_min: float = -6.0, c_max: float = 5.0, c_step: int = 45) -> list[float]:
    """The reference's C sweep: ``c_step`` values 10^linspace(c_min, c_max) (c_step is a count)."""
    return [float(c) for c in 10.0 ** np.linspace(c_min, c_max, int(c_step))]


def k_grid(k_min: int = 1, k_max: int = 20, k_step: int = 10) -> list[int]:
    """The reference's k sweep: unique(int(linspace(k_min, k_max, k_step)))."""
    return [int(k) for k in np.unique(np.linspace(k_min, k_max, int(k_step)).astype(int))]


def _check_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected features [N, D] and N labels, got {x.shape} and {y.shape}")
    return x, y


@dataclass
class LogRegProbe:
    """Multinomial logistic regression; ``param`` = C."""

    param: float = 1.0
    max_iter: int = 1000
    tol: float = 1e-12
    standardize: bool = False
    seed: int = 0
    name: ClassVar[str] = "logreg"
    param_name: ClassVar[str] = "C"
    _model: Any = field(default=None, init=False, repr=False)
    _mean: Any = field(default=None, init=False, repr=False)
    _scale: Any = field(default=None, init=False, repr=False)

    @staticmethod
    def grid(c_min: float = -6.0, c_max: float = 5.0, c_step: int = 45, **_: Any) -> list[float]:
        return c_grid(c_min, c_max, c_step)

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return (x - self._mean) / self._scale if self.standardize else x

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogRegProbe":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        x, y = _check_fit(x, y)
        self.n_classes = int(y.max()) + 1
        if self.standardize:
            self._mean = x.mean(axis=0)
            self._scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        self._model = LogisticRegression(C=self.param, max_iter=self.max_iter, tol=self.tol, random_state=self.seed)
        with warnings.catch_warnings():
            # tol=1e-12 (the reference) is meant to run all max_iter iterations: not worth a warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(self._prep(x), y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, K] over classes 0..K-1, max-probability score [N])."""
        raw = self._model.predict_proba(self._prep(x))
        proba = np.zeros((len(raw), self.n_classes))
        proba[:, self._model.classes_] = raw  # a class absent from training keeps probability 0
        return proba, proba.max(axis=1)


@dataclass
class KNNProbe:
    """Cosine kNN with similarity-weighted votes; ``param`` = k."""

    param: int = 5
    score: str = "prob"
    name: ClassVar[str] = "knn"
    param_name: ClassVar[str] = "k"
    scores: ClassVar[tuple[str, ...]] = ("prob", "similarity")

    def __post_init__(self) -> None:
        if self.score not in self.scores:
            raise ValueError(f"kNN score must be one of {self.scores}, got {self.score!r}")
        self.param = int(self.param)

    @staticmethod
    def grid(k_min: int = 1, k_max: int = 20, k_step: int = 10, **_: Any) -> list[int]:
        return k_grid(k_min, k_max, k_step)

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "KNNProbe":
        x, y = _check_fit(x, y)
        if self.param < 1 or self.param > len(x):
            raise ValueError(f"k = {self.param} needs 1..{len(x)} training samples")
        self._train, self._labels = self._normalise(x), y
        self.n_classes = int(y.max()) + 1
        return self

    def neighbours(self, x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [N, k] descending, training indices [N, k]) of the k nearest neighbours;
        queries in chunks of ``chunk`` rows (the similarity matrix is ``chunk x N_train``)."""
        q = self._normalise(x)
        sims, idxs = [], []
        for start in range(0, len(q), chunk):
            sim = q[start:start + chunk] @ self._train.T
            idx = np.argsort(-sim, axis=1, kind="stable")[:, : self.param]
            sims.append(np.take_along_axis(sim, idx, axis=1))
            idxs.append(idx)
        if not sims:
            return np.zeros((0, self.param)), np.zeros((0, self.param), dtype=int)
        return np.concatenate(sims), np.concatenate(idxs)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.neighbours(x)
        votes = np.zeros((len(sims), self.n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(sims)), sims.shape[1]), self._labels[idx].reshape(-1)),
                  sims.reshape(-1))
        total = sims.sum(axis=1, keepdims=True)
        proba = votes / np.where(total == 0, 1.0, total)
        score = proba.max(axis=1) if self.score == "prob" else sims.mean(axis=1)
        return proba, score


#: Probe name -> class (``--classifier``).
PROBES: dict[str, type] = {"logreg": LogRegProbe, "knn": KNNProbe}


def probe_class(name: str) -> type:
    """The registered probe class ``name``."""
    if name not in PROBES:
        raise ValueError(f"unknown classifier {name!r}; one of {', '.join(PROBES)}")
    return PROBES[name]


def make_probe(name: str, param: Any, **options: Any):
    """Probe ``name`` with hyper-parameter ``param`` and probe options (``standardize``, ``max_iter``,
    ``tol``, ``seed`` for logreg; ``score`` for knn). Options the probe does not take are ignored,
    so one option set can serve both probes."""
    cls = probe_class(name)
    fields = set(cls.__dataclass_fields__)
    return cls(param=param, **{k: v for k, v in options.items() if k in fields})
