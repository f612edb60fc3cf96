"""LRP rules that run as custom autograd functions: the same relevance as zennit's hooks, without
their overhead (measured in bench/README.md, "Where FF-RS spent its time and memory").

A zennit rule hook (``zennit.core.Hook``) lets autograd differentiate the module as it is, then
throws that gradient away and replaces it with the rule's relevance, recomputed from the stored
input. On top of the forward pass it therefore costs, per conv, the discarded gradient (one
transposed conv), two modified forward passes and two gradients (``ZPlus`` always evaluates the
positive-input and the negative-input branch, even when the input is a ReLU output); and every
hooked module (each ReLU and BatchNorm too) clones its input, which autograd then keeps until the
backward pass reaches it.

Here a rule is a :class:`RuleHook` (a zennit ``Hook``, so it plugs into zennit composites as is):

- its pre-forward hook hands the module DETACHED inputs, so the module runs without building an
  autograd graph (nothing saved for a gradient that would be discarded);
- its forward hook links the module's output to the original inputs through one autograd node,
  :class:`_RuleFunction`, whose backward IS the rule: it receives the relevance at the output and
  returns the relevance at the inputs;
- only rules that need the input (z+, z^B, epsilon) keep it, in that node, and free it as soon as
  the node's backward has run; pass-through rules keep nothing.

:class:`ZPlusRule` computes zennit's ``ZPlus`` (``AlphaBeta(1, 0)``, signed inputs) and skips the
negative-input branch when the input has no negative entry, where that branch is exactly zero: one
modified forward pass and one gradient per conv. :class:`BasicRule` runs any zennit ``BasicHook``
(``Epsilon``, ``ZBox``, ...) with zennit's own modifiers and reducer. Each rule's relevance is the
zennit rule's (tests/test_lrp_hooks.py checks them against zennit's hooks).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from zennit.core import BasicHook, Hook, ParamMod, RemovableHandle, RemovableHandleList, Stabilizer


class _Payload:
    """The module's output, handed to :class:`_RuleFunction` as a plain object: autograd then
    treats it as a fresh output of the node (not as a view of an input, which an in-place op such
    as ``ReLU(inplace=True)`` downstream could not modify)."""

    __slots__ = ("output", "rule", "module", "saved", "versions")

    def __init__(self, output, rule, module, saved, versions):
        self.output, self.rule, self.module, self.saved, self.versions = output, rule, module, saved, versions


class _RuleFunction(torch.autograd.Function):
    """One autograd node per rule-bearing module call: forward returns the module's output,
    backward returns the rule's relevance for each input tensor."""

    @staticmethod
    def forward(ctx, payload: _Payload, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.payload = payload
        ctx.input_meta = [(t.shape, t.dtype, t.device) for t in inputs]
        output, payload.output = payload.output, None  # the node must not keep its output alive
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        payload, ctx.payload = ctx.payload, None  # free the stored inputs once used
        saved = payload.saved
        if saved is not None:
            for t, version in zip(saved, payload.versions):
                if t is not None and t._version != version:
                    raise RuntimeError(f"LRP: the input of {type(payload.module).__name__} was modified in place "
                                       "after its forward pass; its rule would read the wrong values")
        grads = payload.rule.relevance(payload.module, saved, grad_output, ctx.input_meta)
        return (None, *grads)


class RuleHook(Hook):
    """Base of the rules of this module (see the module docstring). Subclasses implement
    :meth:`relevance` and set ``needs_input``."""

    #: whether :meth:`relevance` reads the module's inputs (else they are not kept)
    needs_input = True

    def copy(self) -> "RuleHook":
        return type(self)()

    def relevance(self, module: nn.Module, inputs: Sequence[torch.Tensor] | None, grad_output: torch.Tensor,
                  input_meta: Sequence[tuple]) -> tuple[torch.Tensor | None, ...]:
        """The relevance for each input tensor (``None``: zero) given the relevance at the output."""
        raise NotImplementedError

    # ------------------------------------------------------------------ mechanism
    def register(self, module: nn.Module) -> RemovableHandleList:
        rule = self  # the module's hooks keep the rule alive (zennit's composite holds weak references)
        pending: list[tuple | None] = []  # original inputs of the calls in flight (a module may be reused)

        def pre_forward(mod, args):
            if not rule.active:
                return None
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if not tensors or not any(t.requires_grad for t in tensors):
                pending.append(None)
                return None
            pending.append(args)
            return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)

        def post_forward(mod, args, output):
            if not rule.active or not pending:
                return None
            original = pending.pop()
            if original is None or not isinstance(output, torch.Tensor):
                return None
            inputs = tuple(a for a in original if isinstance(a, torch.Tensor))
            saved = versions = None
            if rule.needs_input:
                saved = tuple(a for a in args if isinstance(a, torch.Tensor))
                versions = tuple(t._version for t in saved)
            return _RuleFunction.apply(_Payload(output, rule, mod, saved, versions), *inputs)

        return RemovableHandleList([
            RemovableHandle(self),
            module.register_forward_pre_hook(pre_forward),
            module.register_forward_hook(post_forward),
        ])


class PassRule(RuleHook):
    """zennit's ``Pass``: the relevance passes unchanged to the first input (any others get none)."""

    needs_input = False

    def relevance(self, module, inputs, grad_output, input_meta):
        return (grad_output,) + (None,) * (len(input_meta) - 1)


class GatePassRule(PassRule):
    """``gate * x`` (:class:`~forensics.explain.canonizers.GatedProduct`): all relevance to ``x``,
    none to the gate (T-FF's SE op, :class:`~forensics.explain.lrp_rules.GatePass`); the gate's
    branch then receives no gradient at all instead of zeros."""


class ResidualSumRule(RuleHook):
    """Epsilon on a two-input sum (:class:`~forensics.explain.canonizers.ResidualSum`):
    ``R_a = a R / stab(a + b)``, ``R_b = b R / stab(a + b)``; the same values as zennit's
    ``Epsilon`` on a ``Sum`` over ``torch.stack([a, b], -1)``."""

    def __init__(self, stabilizer: float | Callable = 1e-6):
        super().__init__()
        self.stabilizer = stabilizer
        self.stabilizer_fn = Stabilizer.ensure(stabilizer)

    def copy(self) -> "ResidualSumRule":
        return type(self)(self.stabilizer)

    def relevance(self, module, inputs, grad_output, input_meta):
        a, b = inputs
        scaled = grad_output / self.stabilizer_fn(a + b)
        return a * scaled, scaled.mul_(b)


@contextlib.contextmanager
def _parameters(module: nn.Module, values: dict[str, torch.Tensor | None]) -> Iterator[nn.Module]:
    """Temporarily replace ``module``'s own parameters (as zennit's ``ParamMod`` does)."""
    saved = {key: module._parameters[key] for key in values}
    try:
        for key, value in values.items():
            module._parameters[key] = value
        yield module
    finally:
        for key, value in saved.items():
            module._parameters[key] = value


def _modified_forward(module: nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor | None]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x', z)``: ``z = module.forward(x')`` under ``params`` with a graph back to ``x'`` (a leaf
    alias of ``x``), so that ``autograd.grad(z, x', s)`` is the module's own backward (its padding,
    stride, groups) with the modified parameters. The module's hooks do not run."""
    x = x.detach().requires_grad_(True)
    with _parameters(module, params), torch.enable_grad():
        return x, module.forward(x)


class ZPlusRule(RuleHook):
    """zennit's ``ZPlus`` (alpha=1, beta=0 with signed inputs) for convolutions and linear layers:
    ``R_x = x+ * W+^T s + x- * W-^T s`` with ``s = R / stab(W+ x+ + W- x-)``; ``zero_params``
    (e.g. ``"bias"``) are zero in both. When ``x`` has no negative entry (a ReLU's output) the
    second term and its share of the denominator are exactly zero and are not computed."""

    def __init__(self, stabilizer: float | Callable = 1e-6, zero_params: str | Sequence[str] | None = None):
        super().__init__()
        self.stabilizer = stabilizer
        self.stabilizer_fn = Stabilizer.ensure(stabilizer)
        self.zero_params = [zero_params] if isinstance(zero_params, str) else list(zero_params or [])
        self.param_cache: dict[tuple, dict[str, torch.Tensor | None]] = {}

    def copy(self) -> "ZPlusRule":
        return type(self)(self.stabilizer, self.zero_params)

    def remove(self) -> None:
        self.param_cache.clear()
        super().remove()

    def _params(self, module: nn.Module, clamp: dict[str, float]) -> dict[str, torch.Tensor | None]:
        """The modified parameters, computed once per set of parameter values (the weights do not
        change while an explainer is active; a changed parameter is recomputed)."""
        key = (tuple(clamp.items()), tuple((k, id(p), p._version) for k, p in module._parameters.items()
                                           if p is not None))
        if key not in self.param_cache:
            if len(self.param_cache) >= 2:  # stale: the parameters changed
                self.param_cache.clear()
            self.param_cache[key] = self._modified_params(module, clamp)
        return self.param_cache[key]

    def _modified_params(self, module: nn.Module, clamp: dict[str, float]) -> dict[str, torch.Tensor | None]:
        out: dict[str, torch.Tensor | None] = {}
        for key, param in module._parameters.items():
            if param is None:
                out[key] = None
            elif key in self.zero_params or (key == "bias" and "max" in clamp):
                out[key] = torch.zeros_like(param)  # zennit's negative branch never has a bias
            else:
                out[key] = param.detach().clamp(**clamp)
        return out

    def relevance(self, module, inputs, grad_output, input_meta):
        x = inputs[0]
        pos_params = self._params(module, {"min": 0.0})
        if not bool(x.min() < 0):
            leaf, z = _modified_forward(module, x, pos_params)
            (grad,) = torch.autograd.grad(z, leaf, grad_outputs=grad_output / self.stabilizer_fn(z.detach()))
            relevance = grad.mul_(x)
        else:
            x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
            leaf_pos, z_pos = _modified_forward(module, x_pos, pos_params)
            leaf_neg, z_neg = _modified_forward(module, x_neg, self._params(module, {"max": 0.0}))
            scaled = grad_output / self.stabilizer_fn(z_pos.detach() + z_neg.detach())
            grad_pos, grad_neg = torch.autograd.grad((z_pos, z_neg), (leaf_pos, leaf_neg), grad_outputs=(scaled, scaled))
            relevance = x_pos * grad_pos + x_neg * grad_neg
        return (relevance,) + (None,) * (len(input_meta) - 1)


class BasicRule(RuleHook):
    """Any zennit ``BasicHook`` (e.g. ``Epsilon``, ``ZBox``) run as a :class:`RuleHook`: zennit's
    own modifiers, gradient mapper and reducer compute the relevance from the kept input."""

    def __init__(self, rule: BasicHook):
        super().__init__()
        if not isinstance(rule, BasicHook):
            raise TypeError(f"BasicRule wraps a zennit BasicHook, got {type(rule).__name__}")
        self.rule = rule

    def copy(self) -> "BasicRule":
        return type(self)(self.rule.copy())

    def relevance(self, module, inputs, grad_output, input_meta):
        """zennit's ``BasicHook.backward`` without its defensive copy of the input (the input here
        is already a detached tensor that nothing else modifies)."""
        rule = self.rule
        original = inputs[0].detach()
        mod_inputs, outputs = [], []
        for in_mod, param_mod, out_mod in zip(rule.input_modifiers, rule.param_modifiers, rule.output_modifiers):
            x = in_mod(original).detach().requires_grad_()
            with ParamMod.ensure(param_mod)(module) as modified, torch.enable_grad():
                outputs.append(out_mod(modified.forward(x)))
            mod_inputs.append(x)
        grads = torch.autograd.grad(outputs, mod_inputs, grad_outputs=rule.gradient_mapper(grad_output, outputs))
        relevance = rule.reducer(mod_inputs, grads)
        return tuple(relevance if meta[0] == relevance.shape else None for meta in input_meta)
