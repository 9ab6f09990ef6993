"""The one seam: a recurrent cell as a NamedTuple of pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

PyTree = Any


class Cell(NamedTuple):
    """A recurrent cell (or a layer of a depth stack) as pure functions.

    * ``init(key, input_size) -> params``: a pytree of arrays.
    * ``initial_carry(batch_size) -> carry``: a pytree of ``[B, ...]`` arrays.
    * ``step(params, carry, x) -> (carry, y)`` with ``x: [B, I]``, in
      ``jax.lax.scan``'s argument order, params first.

    ``params_per_step`` marks depth stacks (``residual``, ``plain``): their
    params have a leading ``[L]`` axis and ``step`` receives the slice of layer
    ``l``, so a scan over layers is a scan over time. ``bias_convention``
    states how biases are counted (e.g. one bias per gate, as in Flax/Keras).
    ``gates(params, carry, x) -> {name: [B, H]}`` (optional; the built-in gated
    cells have it) gives the gate values of that step, for gate statistics.

    Example::

        cell = gradflow.cells.get("lstm", hidden_size=64)
        params = cell.init(jax.random.key(0), input_size=8)
        carry, ys = gradflow.unroll(cell, params, cell.initial_carry(4), xs)
    """

    init: Callable[[jax.Array, int], PyTree]
    initial_carry: Callable[[int], PyTree]
    step: Callable[[PyTree, PyTree, Any], tuple[PyTree, Any]]
    params_per_step: bool = False
    bias_convention: str = ""
    gates: Callable[[PyTree, PyTree, Any], dict] | None = None


class ParamCount(NamedTuple):
    """Number of trainable scalars, per leaf and in total, with the bias convention."""

    total: int
    by_leaf: dict[str, int]
    bias_convention: str


def param_count(cell: Cell, input_size: int) -> ParamCount:
    """Count ``cell``'s parameters for ``input_size`` without allocating them.

    Example::

        param_count(cells.get("lstm", hidden_size=64), 32).total  # 24832
    """
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    by_leaf = {
        jax.tree_util.keystr(path): math.prod(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    }
    return ParamCount(sum(by_leaf.values()), by_leaf, cell.bias_convention)


def unroll(cell_or_step: Cell | Callable, params: PyTree, carry0: PyTree, xs: PyTree):
    """Run ``step`` over the leading (time) axis of ``xs`` with ``lax.scan``.

    Args:
      cell_or_step: a ``Cell`` or a step function ``(params, carry, x)``.
      params: the cell's params (with a leading ``[L]`` axis for depth stacks).
      carry0: the initial carry, leaves ``[B, ...]``.
      xs: inputs with a leading time axis, leaves ``[T, B, ...]``; ``None`` for
        depth stacks, whose length comes from ``params``.

    Returns:
      ``(final_carry, ys)`` with ``ys`` leaves ``[T, B, ...]``.
    """
    step, per_step = as_step(cell_or_step)
    if per_step:
        return jax.lax.scan(lambda c, px: step(px[0], c, px[1]), carry0, (params, xs))
    return jax.lax.scan(lambda c, x: step(params, c, x), carry0, xs)


def as_step(cell_or_step, params_per_step: bool | None = None) -> tuple[Callable, bool]:
    """``(step, params_per_step)`` of a ``Cell`` or of a plain ``step(params, carry, x)`` function.

    A ``Cell`` brings its own ``params_per_step`` (depth stacks: params with a leading layer axis)
    unless one is given; a plain function has none unless one is given. Anything else is a
    one-line ``TypeError``.
    """
    if isinstance(cell_or_step, Cell):
        per_step = cell_or_step.params_per_step if params_per_step is None else params_per_step
        return cell_or_step.step, per_step
    if not callable(cell_or_step):
        raise TypeError(
            f"expected a gradflow.Cell or a step function (params, carry, x) -> (carry, y), "
            f"got {type(cell_or_step).__name__}"
        )
    return cell_or_step, bool(params_per_step)
