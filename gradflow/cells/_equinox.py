"""Equinox cells as a gradflow ``Cell`` (Equinox is an optional extra, imported only here, when used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gradflow.cells._common import positive_int
from gradflow.seam import Cell, PyTree


def _equinox():
    try:
        return importlib.import_module("equinox")
    except ImportError:
        raise ImportError("from_equinox needs Equinox: pip install 'gradflow[equinox]'") from None


def _default_carry(eqx, module) -> Callable[[int], PyTree]:
    hidden = getattr(module, "hidden_size", None)
    if not isinstance(hidden, int) or isinstance(hidden, bool):
        raise TypeError(
            f"from_equinox: {type(module).__name__} has no integer hidden_size; pass "
            "initial_carry=(batch_size -> carry) or one example's carry"
        )
    dtype = jnp.result_type(
        *jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array)) or [jnp.float32]
    )
    zeros = lambda b: jnp.zeros((b, hidden), dtype)  # noqa: E731
    if isinstance(module, eqx.nn.LSTMCell):
        return lambda b: (zeros(b), zeros(b))
    return zeros


def from_equinox(
    module,
    *,
    initial_carry: PyTree | Callable[[int], PyTree] | None = None,
    output: Callable[[PyTree], PyTree] | None = None,
) -> Cell:
    """Wrap an Equinox cell ``module(input [I], hidden) -> hidden`` (``eqx.nn.GRUCell``,
    ``eqx.nn.LSTMCell`` or any cell-like ``eqx.Module``) as a ``Cell``.

    The module's arrays are the params (``eqx.partition(module, eqx.is_array)``; ``init`` returns
    them and ignores its key); the rest stays static. ``step(params, carry, x)`` combines them and
    calls the module on every example (``jax.vmap`` over ``x: [B, I]``); ``y`` is the new hidden
    state (``h`` for an LSTM's ``(h, c)``), or ``output(hidden)``. ``initial_carry(B)`` is zeros
    ``[B, hidden_size]`` (a pair for ``eqx.nn.LSTMCell``) unless ``initial_carry`` gives a function
    ``batch_size -> carry`` or one example's carry.

    Example::

        cell = from_equinox(eqx.nn.GRUCell(8, 64, key=jax.random.key(0)))
        params = cell.init(None, 8)
        carry, ys = gradflow.unroll(cell, params, cell.initial_carry(4), xs)
    """
    eqx = _equinox()
    if isinstance(module, type):
        raise TypeError(f"from_equinox: got the class {module.__name__}; pass an instance")
    if not isinstance(module, eqx.Module) or not callable(module):
        raise TypeError(
            f"from_equinox: expected a callable equinox Module (a cell), got {type(module).__name__}"
        )
    params0, static = eqx.partition(module, eqx.is_array)
    in_features = getattr(module, "input_size", None)

    if initial_carry is None:
        carry_fn = _default_carry(eqx, module)
    elif callable(initial_carry):
        carry_fn = initial_carry
    else:
        one = jax.tree_util.tree_map(jnp.asarray, initial_carry)
        carry_fn = lambda b: jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (b, *a.shape)), one)  # noqa: E731
    if output is None:
        output = (lambda h: h[0]) if isinstance(module, eqx.nn.LSTMCell) else (lambda h: h)

    def init(key, input_size):
        del key  # a built module already holds its arrays
        positive_int("from_equinox: init input_size", input_size)
        if isinstance(in_features, int) and input_size != in_features:
            raise ValueError(
                f"from_equinox: init input_size={input_size} but the module has input_size={in_features}"
            )
        return params0

    def step(params, carry, x):
        cell = eqx.combine(params, static)
        hidden = jax.vmap(lambda x1, h1: cell(x1, h1))(x, carry)
        return hidden, output(hidden)

    return Cell(init, carry_fn, step, bias_convention=f"as equinox {type(module).__name__}")
