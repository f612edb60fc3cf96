"""The context-manager shape shared by the explainers: ``__enter__`` builds an ``ExitStack`` of
temporary model changes (explain mode, canonizers, rules) in ``self._stack``; exit always unwinds it."""
from __future__ import annotations

import contextlib


class StackedContext:
    """Base of explainers that are active between ``__enter__`` and ``__exit__``."""

    _stack: contextlib.ExitStack | None = None

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        return False

    @property
    def active(self) -> bool:
        return self._stack is not None
