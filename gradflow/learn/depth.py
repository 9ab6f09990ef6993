"""A depth stack (``residual``, ``plain``) as a trainable feed-forward model: the pieces ``Model`` uses,
and ``least_squares_ratio``, the linear reference score a trained stack is read against.

``Model(cells.get("residual", width=D, depth=L), output_size)`` reads one input per example::

    x_0 = x @ P                 x: [B, I] -> [B, D]; P fixed (N(0, 1/I), drawn from key 0, not trained)
                                or learned (params['projection']['w'], same init from the run's key)
    x_L = stack over its L layers from x_0 (gradflow.unroll; the stack's params are [L, ...])
    out = x_L @ w + b           [B, O], a learned linear readout

The per-layer gradient ``||dL/dx_l||``, l = 0..L, comes from ``gradient_flow`` over the layers, as
the per-step flow of a recurrent cell does over time.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from gradflow.learn.batches import Task
from gradflow.seam import Cell

PROJECTIONS = ("fixed", "learned")
_FIXED_KEY = 0


def stack_width(cell: Cell) -> int:
    """``D``: the width of a depth stack's carry ``[B, D]``."""
    return jax.eval_shape(lambda: cell.initial_carry(1)).shape[-1]


def stack_depth(cell: Cell) -> int:
    """``L``: the layers of a depth stack (its params' leading axis)."""
    shapes = jax.eval_shape(lambda k: cell.init(k, stack_width(cell)), jax.random.key(0))
    return int(jax.tree_util.tree_leaves(shapes)[0].shape[0])


def projection_weights(key: jax.Array | None, input_size: int, width: int, dtype) -> jax.Array:
    """``[I, D]`` with ``N(0, 1/I)`` entries, from ``key`` (None: the fixed projection's key 0)."""
    key = jax.random.key(_FIXED_KEY) if key is None else key
    return jax.random.normal(key, (input_size, width), dtype) / math.sqrt(input_size)


def check_projection(projection: str) -> str:
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose from {list(PROJECTIONS)}")
    return projection


def least_squares_ratio(task: Task, examples: int) -> float:
    """MSE / var(y) of the best affine map ``x -> y`` (linear least squares with an intercept) on
    ``task.sample(key(0), examples)`` (``xs: [1, N, I]``, ``ys: [1, N, 1]``; for ``teacher`` with
    ``N = examples``: its whole fixed set), in float64: the linear reference a trained deep stack's
    score is read against (1: no better than the mean).

    Example::

        least_squares_ratio(tasks.get("teacher", examples=64), 64)    # ~0.1
    """
    batch = task.sample(jax.random.key(0), examples)
    x1 = np.c_[np.asarray(batch.xs[0], np.float64), np.ones(examples)]
    y = np.asarray(batch.ys[0, :, 0])
    return float(np.mean((x1 @ np.linalg.lstsq(x1, y, rcond=None)[0] - y) ** 2) / np.var(y))
