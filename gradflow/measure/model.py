"""Per-step gradient flow of every recurrent layer of an unmodified Flax model, in one backward pass.

How it works: while the model runs, each ``flax.linen.RNN`` call (seen through
``nn.intercept_methods``) or ``flax.nnx.RNN`` call (its class's ``__call__`` is
wrapped while gradflow traces the model, then restored) is run by gradflow's own
scan over the layer's cell, with the same semantics (time axis, ``reverse``,
``keep_order``, ``seq_lengths``, ``return_carry``). The scan carries the taps of
``gradient_flow`` (``flow.py``): they read each step's carry cotangent during the
single backward pass, in log space. Two more identity taps hand the cotangents of
the layer's inputs and initial carry back to the rest of the model in true
units, so every other gradient is exactly what ``jax.grad`` gives. The user's
module is not changed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen, nnx
from flax.linen.recurrent import flip_sequences

from gradflow.measure.flow import GradientFlow, _result
from gradflow.measure.taps import all_finite, finite_flag, float_leaves, join, param_tap, probe, ys_tap

PyTree = Any


@jax.custom_vjp
def _enter(tree, s, r):
    """``(tree, s, r)``; backward: ``tree``'s cotangent ``* exp(S - R)`` (the taps' scale, see
    ``taps.py``), zeros for ``s`` and ``r``.

    Sits where a cotangent leaves the tapped scan (a layer's inputs and initial carry), so the rest
    of the model gets it in true units.
    """
    return tree, s, r


def _enter_fwd(tree, s, r):
    return (tree, s, r), None


def _enter_bwd(_, cts):
    g_tree, big_s, big_r = cts
    scale = jnp.exp(big_s - big_r)
    return (
        jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), g_tree),
        jnp.zeros_like(big_s),
        jnp.zeros_like(big_r),
    )


_enter.defvjp(_enter_fwd, _enter_bwd)


class _Recorder:
    """The recurrent layers of one forward pass: their shapes (``discover``), then their taps.

    ``slots[key] = (d, w)``: the zero inputs whose cotangents are the per-step log10 carry norms
    (leaves ``[T+1]``) and per-step param-gradient log10 norms (``[T]``). ``finite[key]: [T+1]``
    and ``sinks`` (each layer's final log scale, added as ``0 * s`` to the loss so every tap's
    backward runs) are filled while the model is traced.
    """

    def __init__(self, slots=None):
        self.discover = slots is None
        self.slots = slots or {}
        self.specs: dict[str, tuple[int, PyTree]] = {}
        self.finite: dict[str, jax.Array] = {}
        self.sinks: list[jax.Array] = []
        self.inside = 0  # > 0 while gradflow's own scan runs a cell

    def key(self, path: str) -> str:
        seen = self.specs if self.discover else self.finite
        if path not in seen:
            return path
        n = 1
        while f"{path}#{n}" in seen:
            n += 1
        return f"{path}#{n}"

    def layer(self, path: str, step: Callable, params: PyTree, carry0: PyTree, xs: jax.Array):
        """Run ``step`` over ``xs: [T, ...]`` from ``carry0``; returns ``(final carry, ys [T, ...])``."""
        key = self.key(path)
        length = xs.shape[0]
        leaves = jax.tree_util.tree_leaves(carry0)
        if not leaves or len(float_leaves(carry0)) != len(leaves):
            raise ValueError(f"model_flow: the carry of {key} must be floating arrays")
        self.inside += 1
        try:
            if self.discover:
                self.specs[key] = (
                    length,
                    jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), carry0),
                )
                return jax.lax.scan(lambda c, x: step(params, c, x), carry0, xs)
            return self._tapped(key, step, params, carry0, xs, length)
        finally:
            self.inside -= 1

    def _tapped(self, key, step, params, carry0, xs, length):
        """``gradient_flow``'s scan body (``flow.py``: probe, step, join; ys_tap on the outputs),
        with ``_enter`` on the initial carry and on each step's input."""
        d, w = self.slots[key]
        dtype = jnp.result_type(*float_leaves(carry0))
        zero = jnp.zeros((), dtype)
        float_x = jnp.issubdtype(xs.dtype, jnp.inexact)

        def body(state, inp):
            carry, s, r = state
            x, d_t, k = inp
            p, s_p, tz = param_tap(True, params, w)
            carry, s, r = probe(carry, s, r, d_t, tz, k)
            x, s_x, _ = _enter(x, zero, zero) if float_x else (x, zero, zero)
            carry, y = step(p, carry, x)
            flag = finite_flag(carry, dtype)
            # the input's cotangent leaves the step at scale S' (no pending R): * exp(S') by _enter
            carry, y, s, r, z = join(carry, y, s + s_p + s_x, r, zero)
            return (carry, s, r), (y, z, flag)

        d_steps = jax.tree_util.tree_map(lambda a: a[:length], d)
        inputs = (xs, d_steps, jnp.arange(length, dtype=dtype))
        state, (ys, z, flags) = jax.lax.scan(body, _enter(carry0, zero, zero), inputs)
        carry, s, _ = probe(*state, jax.tree_util.tree_map(lambda a: a[length], d), zero, zero)
        self.sinks.append(s)
        self.finite[key] = jnp.concatenate([all_finite(carry0)[None], flags == 0])
        return carry, ys_tap(ys, z)


def _rnn_forward(rec, path, cell, step, params, make_carry, inputs, opts):
    """``nn.RNN.__call__`` / ``nnx.RNN.__call__`` semantics around ``rec.layer``."""
    seq_lengths = opts["seq_lengths"]
    if seq_lengths is not None and opts["return_carry"]:
        raise ValueError(
            f"model_flow: {path} is called with seq_lengths and return_carry=True; gradflow measures "
            "a layer with seq_lengths only when it returns the outputs alone"
        )
    time_major = opts["time_major"]
    time_axis = 0 if time_major else inputs.ndim - (cell.num_feature_axes + 1)
    time_axis += inputs.ndim if time_axis < 0 else 0
    batch_dims = inputs.shape[1 : -cell.num_feature_axes] if time_major else inputs.shape[:time_axis]

    def flip(x):
        return flip_sequences(x, seq_lengths, num_batch_dims=len(batch_dims), time_major=time_major)

    if opts["reverse"]:
        inputs = flip(inputs)
    carry = opts["initial_carry"]
    if carry is None:
        carry = make_carry(inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :])
    carry, ys = rec.layer(path, step, params, carry, jnp.moveaxis(inputs, time_axis, 0))
    outputs = jax.tree_util.tree_map(lambda y: jnp.moveaxis(y, 0, time_axis), ys)
    if opts["reverse"] and opts["keep_order"]:
        outputs = jax.tree_util.tree_map(flip, outputs)
    return (carry, outputs) if opts["return_carry"] else outputs


_OPTIONS = ("return_carry", "time_major", "reverse", "keep_order")


def _options(rnn, kwargs: dict) -> dict:
    opts = {k: getattr(rnn, k) if kwargs.get(k) is None else kwargs[k] for k in _OPTIONS}
    opts["initial_carry"] = kwargs.get("initial_carry")
    opts["seq_lengths"] = kwargs.get("seq_lengths")
    return opts


def _linen_interceptor(rec: _Recorder):
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, linen.RNNCellBase) and context.method_name == "__call__" and not rec.inside:
            path = "/".join(module.scope.path) if module.scope else type(module).__name__
            raise ValueError(
                f"model_flow: the cell {path} ({type(module).__name__}) runs outside nn.RNN (a hand-written "
                "loop or nn.scan); gradflow sees recurrent layers through nn.RNN"
            )
        if not isinstance(module, linen.RNN) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = "/".join(module.scope.path)
        cell = module.cell
        variables = dict(cell.variables)
        if set(variables) - {"params"} or module.variable_axes:
            raise ValueError(
                f"model_flow: {path} has per-step or non-param variables "
                f"({sorted(set(variables) - {'params'}) or 'variable_axes'}); gradflow measures cells whose "
                "only variables are params"
            )
        unbound = cell.clone(parent=None)
        init_key = kwargs.get("init_key")
        init_key = jax.random.key(0) if init_key is None else init_key

        def step(p, carry, x):
            return unbound.apply({"params": p}, carry, x)

        def make_carry(shape):
            return cell.initialize_carry(init_key, shape)

        (inputs,) = args
        params = variables.get("params", {})
        return _rnn_forward(rec, path, cell, step, params, make_carry, inputs, _options(module, kwargs))

    return interceptor


_NNX_LOCK = threading.Lock()


@contextlib.contextmanager
def _nnx_intercepted(rec: _Recorder, paths: dict[int, str]):
    """``nnx.RNN.__call__`` runs through ``rec`` while the block runs (one thread at a time)."""
    original = nnx.RNN.__call__

    def call(self, inputs, **kwargs):
        path = paths.get(id(self), type(self).__name__)
        graphdef, params, rest = nnx.split(self.cell, nnx.Param, ...)

        def step(p, carry, x):
            return nnx.merge(graphdef, p, rest)(carry, x)

        def make_carry(shape):  # a fixed key, as linen's nn.RNN (cells' carry_init is zeros by default)
            return self.cell.initialize_carry(shape, nnx.Rngs(0))

        return _rnn_forward(rec, path, self.cell, step, params, make_carry, inputs, _options(self, kwargs))

    with _NNX_LOCK:
        nnx.RNN.__call__ = call
        try:
            yield
        finally:
            nnx.RNN.__call__ = original


def _scalar_loss(loss_fn, outputs):
    loss = loss_fn(outputs)
    if not hasattr(loss, "shape") or jnp.shape(loss) != ():
        raise ValueError(f"model_flow: loss_fn(outputs) must return a scalar, got {jnp.shape(loss)}")
    return loss


def _run(forward: Callable, params: PyTree, rest: PyTree, loss_fn: Callable, fit_window, what: str):
    """``forward(rec, params, rest) -> outputs``; one discovery pass (shapes only), then one backward
    pass with respect to ``params`` (``rest``: the model's other state, traced, not differentiated)."""
    discovered = _Recorder()
    jax.eval_shape(lambda p, r: forward(discovered, p, r), params, rest)
    if not discovered.specs:
        raise ValueError(f"model_flow: the {what}")
    slots = {}
    for key, (length, carry) in discovered.specs.items():
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(carry))
        d = jax.tree_util.tree_map(lambda _, n=length, dt=dtype: jnp.zeros((n + 1,), dt), carry)
        slots[key] = (d, jnp.zeros((length,), dtype))

    def objective(params, slots, rest):
        rec = _Recorder(slots)
        loss = _scalar_loss(loss_fn, forward(rec, params, rest))
        sink = sum(jnp.sum(s) for s in rec.sinks)
        return loss + 0 * sink.astype(loss.dtype), rec.finite

    (loss, finite), (grads, slot_grads) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
        params, slots, rest
    )
    return {
        key: _result(loss, grads, log10_norms, step_log10, finite[key], fit_window)
        for key, (log10_norms, step_log10) in slot_grads.items()
    }


def model_flow(
    model: linen.Module | nnx.Module,
    *args,
    fit_window: tuple[int, int] | None = None,
    **apply_kwargs,
) -> dict[str, GradientFlow]:
    """Per-step gradient norms of every recurrent layer of an unmodified Flax model, one backward pass.

    ``model_flow(model, variables, inputs, loss_fn, **apply_kwargs)`` for a ``flax.linen`` module
    (``outputs = model.apply(variables, inputs, **apply_kwargs)``), ``model_flow(module, inputs,
    loss_fn)`` for a ``flax.nnx`` module (``outputs = module(inputs)``); ``loss_fn(outputs) ->
    scalar``. Every ``nn.RNN`` / ``nnx.RNN`` the forward pass calls is measured, also inside
    ``nn.Bidirectional`` and nested submodules.

    Returns:
      ``{path: GradientFlow}`` keyed by the layer's module path (``/``-joined, e.g.
      ``"encoder/RNN_0"``; a layer called twice gets ``"#1"`` on its second call). Each value has
      ``gradient_flow``'s fields and conventions: ``norms[t]`` per carry leaf, ``[T+1]``, t counted
      in the layer's processing order (a reversed layer's h_0 is at the sequence's end), log10 norms
      finite where the dtype underflows, fits, non-finite steps; ``grads`` is
      ``dL/dvariables["params"]`` of the whole model (an ``nnx.State`` of its ``nnx.Param``
      values for nnx), the same in every entry. Works under ``jit`` (model and ``loss_fn`` static).

    Example::

        flows = model_flow(model, variables, tokens, lambda logits: xent(logits, labels))
        flows["encoder/RNN_0"].fit.rate, flows["encoder/RNN_0"].grads
    """
    if fit_window is not None:
        fit_window = tuple(int(k) for k in fit_window)
    forward, params, rest, loss_fn, what = _prepare("model_flow", model, args, apply_kwargs)
    return _run(forward, params, rest, loss_fn, fit_window, what)


def model_value_and_grad(model: linen.Module | nnx.Module, *args, **apply_kwargs) -> tuple[jax.Array, PyTree]:
    """``(loss, dL/dparams)`` of a Flax model, plain ``jax.value_and_grad`` (no taps); the same
    arguments as ``model_flow``. What ``model_flow`` costs on top of it is the price of the taps.

    Example::

        loss, grads = model_value_and_grad(model, variables, tokens, loss_fn)
    """
    forward, params, rest, loss_fn, _ = _prepare("model_value_and_grad", model, args, apply_kwargs)
    return jax.value_and_grad(lambda p: _scalar_loss(loss_fn, forward(None, p, rest)))(params)


def _prepare(name: str, model, args: tuple, apply_kwargs: dict):
    """``(forward(rec, params, rest) -> outputs, params, rest, loss_fn, no_layer)``; ``rec=None`` runs
    the model as written (no interception)."""
    if isinstance(model, linen.Module):
        if len(args) != 3:
            raise TypeError(
                f"{name}(model, variables, inputs, loss_fn, **apply_kwargs) for a flax.linen module"
            )
        variables, inputs, loss_fn = args
        if not hasattr(variables, "keys") or "params" not in variables:
            raise ValueError(f"{name}: variables must be the dict {{'params': ...}} that model.init returned")
        rest = {k: v for k, v in variables.items() if k != "params"}

        def forward(rec, params, rest):
            if rec is None:
                return model.apply({"params": params, **rest}, inputs, **apply_kwargs)
            with linen.intercept_methods(_linen_interceptor(rec)):
                return model.apply({"params": params, **rest}, inputs, **apply_kwargs)

        no_layer = "linen model ran no nn.RNN layer; for a bare cell use gradflow.gradient_flow"
        return forward, variables["params"], rest, loss_fn, no_layer
    if isinstance(model, nnx.Module):
        if len(args) != 2 or apply_kwargs:
            raise TypeError(f"{name}(module, inputs, loss_fn) for a flax.nnx module")
        inputs, loss_fn = args
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def forward(rec, params, rest):
            module = nnx.merge(graphdef, params, rest)
            if rec is None:
                return module(inputs)
            paths = {
                id(node): "/".join(map(str, p))
                for p, node in nnx.iter_graph(module)
                if isinstance(node, nnx.RNN)
            }
            with _nnx_intercepted(rec, paths):
                return module(inputs)

        cells = [
            "/".join(map(str, p)) for p, node in nnx.iter_graph(model) if isinstance(node, nnx.RNNCellBase)
        ]
        no_layer = "nnx module ran no nnx.RNN layer" + (
            f"; its cell {cells[0]} runs outside nnx.RNN (a hand-written loop or scan), gradflow sees "
            "recurrent layers through nnx.RNN"
            if cells
            else "; for a bare cell use gradflow.gradient_flow"
        )
        return forward, params, rest, loss_fn, no_layer
    raise TypeError(
        f"{name}: expected a flax.linen or flax.nnx module, got {type(model).__name__} "
        "(for a cell or a step function use gradflow.gradient_flow)"
    )
