"""RGB vs colour-ablated evaluation of the same sets (T-FF's colour ablation, Chandrasegaran et al., ECCV 2022;
docs/colour.md): :func:`compare_rgb_gray` runs :func:`forensics.analysis.evaluate.evaluate_sets` twice and reads
the ablated accuracies at the RGB thresholds; :class:`ColorComparison` holds and writes the pair."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..data import ImageRecord
from ..data.color import DEFAULT_ABLATION
from ..detectors import Detector
from ..io import atomic_write_csv
from .evaluate import MEAN, EvalResult, evaluate_sets, format_percent
from .result import AnalysisResult


@dataclass
class ColorComparison(AnalysisResult):
    """RGB vs colour-ablated runs of the same sets (T-FF; docs/colour.md; ``gray`` holds the ablated run,
    grayscale by default, any :mod:`forensics.data.color` ablation otherwise); the ablated
    accuracies are read at the RGB thresholds. ``ap_drop`` = RGB AP - ablated AP (fractions).
    Columns are suffixed ``_gray`` for grayscale and ``_<ablation>`` for another ablation. Each run's summary
    records its own settings: :attr:`record` is the RGB run's, and :meth:`annotate` adds to both runs'."""

    rgb: EvalResult
    gray: EvalResult
    ablation: str = DEFAULT_ABLATION

    @property
    def record(self) -> dict[str, Any]:
        return self.rgb.settings

    def annotate(self, **entries: Any):
        """Add ``entries`` to the settings of both runs (each summary JSON records them); returns ``self``."""
        for run in self.eval_results():
            run.settings.update(entries)
        return self

    @property
    def suffix(self) -> str:
        return "gray" if self.ablation == "grayscale" else self.ablation

    def to_frame(self):
        import pandas as pd
        rgb, gray, sfx = self.rgb.to_frame(), self.gray.to_frame(), self.suffix
        frame = pd.DataFrame({"ap_rgb": rgb["ap"], f"ap_{sfx}": gray["ap"], "ap_drop": rgb["ap"] - gray["ap"],
                              "acc_rgb": rgb["acc"], f"acc_{sfx}": gray["acc"]})
        for col in ("r_acc_cal", "f_acc_cal", "acc_cal"):
            if col in rgb.columns:
                frame[f"{col}_rgb"], frame[f"{col}_{sfx}"] = rgb[col], gray[col]
        if "threshold" in rgb.columns:
            frame["threshold"] = rgb["threshold"]
        return frame

    def eval_results(self) -> list[EvalResult]:
        return [self.rgb, self.gray]

    @property
    def ap_drop(self) -> dict[str, float]:
        return self.to_frame()["ap_drop"].to_dict()

    def format(self) -> str:
        """``{set}: AP {rgb:.1f} -> {gray:.1f} (drop {drop:.1f})`` per set and for the mean, in %."""
        frame = self.to_frame()
        ablated = frame[f"ap_{self.suffix}"]
        return "\n".join(f"{'Mean' if name == MEAN else name}: AP {100 * r.ap_rgb:.1f} -> {100 * ablated[name]:.1f} "
                          f"(drop {100 * r.ap_drop:.1f})" for name, r in frame.iterrows())

    def format_table(self) -> str:
        return format_percent(self.to_frame())

    def write(self, out_dir: str | Path, stem: str = "grayscale") -> dict[str, Path]:
        """``<stem>-rgb.*``, ``<stem>-gray.*`` (``<stem>-<ablation>.*`` for another ablation; as
        :meth:`EvalResult.write`, each with its run's settings) and ``<stem>-ap-drop.csv``; returns
        ``{name: path}``."""
        paths = {f"rgb_{k}": v for k, v in self.rgb.write(out_dir, f"{stem}-rgb").items()}
        paths.update({f"gray_{k}": v for k, v in self.gray.write(out_dir, f"{stem}-{self.suffix}").items()})
        paths["csv"] = atomic_write_csv(Path(out_dir) / f"{stem}-ap-drop.csv", self.to_frame())
        return paths


def compare_rgb_gray(detector: Detector, sets: Mapping[str, Sequence[ImageRecord]], *, calibrate: bool = True,
                     ablation: str = DEFAULT_ABLATION, rgb: EvalResult | None = None,
                     **options: Any) -> ColorComparison:
    """Evaluate ``sets`` on RGB and on grayscale images (T-FF; docs/colour.md): thresholds (with
    ``calibrate``, the default there) are G-mean calibrated on the RGB predictions of each set and
    reused for grayscale. ``ablation``: another colour ablation of :mod:`forensics.data.color`
    instead of grayscale; ``rgb``: an RGB run of the same sets already computed (reused). ``options``
    go to :func:`evaluate_sets` (crop, batch_size, ...). The colour analysis built on this is
    :mod:`forensics.analysis.color`."""
    if rgb is None:
        rgb = evaluate_sets(detector, sets, calibrate=calibrate, **options)
    elif calibrate and not rgb.thresholds:
        raise ValueError("calibrate=True needs an RGB run made with calibrate=True")
    gray = evaluate_sets(detector, sets, ablation=ablation, thresholds=rgb.thresholds if calibrate else None,
                         **options)
    return ColorComparison(rgb, gray, ablation)

