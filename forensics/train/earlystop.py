"""CNNDetection's early stopping on validation accuracy and its lr/10 schedule
(docs/training.md; UFD uses it too)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement of at least ``-delta``.

    CNNDetection semantics: ``delta`` is negative (-0.001 first, -0.002 after each lr drop); an
    epoch with ``score < best - delta`` counts as no improvement. The first call always sets
    ``best`` (and the caller saves the best checkpoint then: [quirk] also right after an lr drop).
    """

    patience: int = 5
    delta: float = -0.001
    best: float | None = None
    counter: int = 0
    early_stop: bool = False

    def step(self, score: float) -> bool:
        """Record one validation score; return True when it is a new best (save the checkpoint)."""
        if self.best is None or score >= self.best - self.delta:
            self.best = score
            self.counter = 0
            return True
        self.counter += 1
        if self.counter >= self.patience:
            self.early_stop = True
        return False


@dataclass
class LrSchedule:
    """lr /= 10 at each early stop; training ends once lr would fall below ``min_lr``.

    With lr 1e-4 the phases are 1e-4 -> 1e-5 -> 1e-6 (float arithmetic gives 1.0000000000000002e-06,
    not below 1e-6), then stop, as in the reference.
    """

    lr: float
    min_lr: float = 1e-6
    delta_after_drop: float = -0.002
    drops: int = field(default=0)

    def drop(self) -> bool:
        """Divide lr by 10; return False when training should stop instead."""
        new = self.lr / 10.0
        if new < self.min_lr:
            return False
        self.lr = new
        self.drops += 1
        return True

    def new_stopper(self, patience: int) -> EarlyStopping:
        return EarlyStopping(patience=patience, delta=self.delta_after_drop)
