"""Mean with a bootstrap confidence interval over images (scipy.stats.bootstrap, percentile method)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """``mean`` of ``n`` finite values and its bootstrap CI ``[lo, hi]`` (NaN when ``n < 2``)."""

    mean: float
    lo: float
    hi: float
    n: int

    def contains(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        if not np.isfinite(self.lo):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_lo": self.lo, "ci_hi": self.hi, "n": self.n}


def bootstrap_ci(values, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of the finite ``values`` with a percentile bootstrap CI at ``level`` (seeded)."""
    from scipy.stats import bootstrap
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if v.size < 2:
        return Estimate(mean, float("nan"), float("nan"), int(v.size))
    if np.all(v == v[0]):
        return Estimate(mean, mean, mean, int(v.size))
    res = bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    rng=np.random.default_rng(seed))
    return Estimate(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), int(v.size))
