"""The one context-manager shape of the explainers and LRP engines: ``__enter__`` builds an
``ExitStack`` of temporary model changes (explain mode, canonizers, rules) through :meth:`_enter`;
a failure while entering unwinds what was entered; ``__exit__`` always unwinds it. Plus
:func:`keep_grads`, the restoration of parameter ``.grad`` that every explainer needs."""
from __future__ import annotations

import contextlib

from torch import nn


class StackedContext:
    """Base of objects that are active between ``__enter__`` and ``__exit__`` (not re-entrant).
    Subclasses implement :meth:`_enter`, entering their temporary changes on ``stack``."""

    _stack: contextlib.ExitStack | None = None

    def __enter__(self):
        if self._stack is not None:
            raise RuntimeError(f"{self._context_name()} is already active (not re-entrant)")
        stack = contextlib.ExitStack()
        try:
            self._enter(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _enter(self, stack: contextlib.ExitStack) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _context_name(self) -> str:
        return type(self).__name__

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        return False

    @property
    def active(self) -> bool:
        return self._stack is not None


@contextlib.contextmanager
def keep_grads(model: nn.Module):
    """Restore every parameter's ``.grad`` on exit (pytorch-grad-cam calls ``model.zero_grad()``)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for p, g in saved:
            p.grad = g
