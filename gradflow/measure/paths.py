"""Path decomposition of a residual stack's gradient (Veit et al. 2016).

``dL/dx_0 = g^T prod_l (I + A_l)`` with ``A_l`` the branch Jacobian on the
trajectory; expanding the product splits the gradient by the number of
branches a path goes through. Carry conventions as in ``gradflow.measure.jacobians``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.measure.jacobians import _p, _prepare, _scan_inputs, _trajectory, carry_layout
from gradflow.seam import Cell

PyTree = Any


class PathDecomposition(NamedTuple):
    """Result of ``path_decomposition``.

    Attributes:
      contributions: like the carry, leaves ``[L+1, B, ...]``: entry k is the part of
        ``dL/dx_0`` carried by the paths through exactly k branches.
      norms: ``[L+1]``, their Frobenius norms (over batch and features).
      grad: like the carry, ``dL/dx_0`` (the sum over k).
    """

    contributions: PyTree
    norms: jax.Array
    grad: PyTree


@dataclasses.dataclass(frozen=True)
class _ResidualBranch:
    """``f(x) = step(p, x, input)[0] - x`` (hashable by the step, so ``jit`` caches it)."""

    step: Callable

    def __call__(self, p, carry, x):
        return jax.tree_util.tree_map(jnp.subtract, self.step(p, carry, x)[0], carry)


@partial(jax.jit, static_argnums=(0, 1, 6))
def _paths(step, branch, params, carry0, xs, cotangent, per_step):
    traj = _trajectory(step, params, carry0, xs, per_step)
    length = jax.tree_util.tree_leaves(traj)[0].shape[0]
    v0 = jax.tree_util.tree_map(lambda g: jnp.zeros((length + 1, *g.shape), g.dtype).at[0].set(g), cotangent)

    def body(v, inp):
        p, x, h = inp
        _, vjp = jax.vjp(lambda carry: branch(_p(params, p), carry, x), h)
        shifted = jax.tree_util.tree_map(lambda a: jnp.concatenate([jnp.zeros_like(a[:1]), a[:-1]]), v)
        through = jax.vmap(lambda r: vjp(r)[0])(shifted)
        return jax.tree_util.tree_map(jnp.add, v, through), None

    inputs = (*_scan_inputs(params, xs, per_step), traj)
    v, _ = jax.lax.scan(body, v0, inputs, reverse=True)
    sq = sum(jnp.sum(jnp.square(a).reshape(length + 1, -1), axis=1) for a in jax.tree_util.tree_leaves(v))
    grad = jax.tree_util.tree_map(lambda a: jnp.sum(a, axis=0), v)
    return PathDecomposition(v, jnp.sqrt(sq), grad)


def path_decomposition(
    cell_or_step: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    cotangent: PyTree | None = None,
    *,
    xs: PyTree = None,
    branch: Callable | None = None,
    params_per_step: bool | None = None,
) -> PathDecomposition:
    """Split ``dL/dx_0`` of a residual stack ``x_{l+1} = x_l + f_l(x_l)`` by path length (Veit et al. 2016).

    With ``A_l = df_l/dx`` at the trajectory, ``dL/dx_0 = g^T prod_l (I + A_l)``;
    expanding the product, the paths through exactly k branches give
    ``v_k = sum_{l_1 < ... < l_k} g^T A_{l_k} ... A_{l_1}`` (k = 0..L), computed by
    a reverse ``lax.scan`` over layers with VJPs of the branch,
    ``v_k <- v_k + A_l^T v_{k-1}``, vectorized over k (O(L^2) VJPs). Exact for any
    blocks; for linear blocks the terms are the elementary symmetric sums.

    Args:
      cell_or_step: a residual ``Cell`` (e.g. ``cells.get('residual', ...)``) or step.
      params: params (leading ``[L]`` axis for a depth stack).
      carry0: ``x_0``, leaves ``[B, ...]``.
      cotangent: ``g = dL/dx_L``, like the carry; default all ones (``L = sum(x_L)``).
      xs: per-step inputs ``[L, B, ...]`` (``None`` for a depth stack).
      branch: ``branch(params_l, x, input) -> f_l(x)`` (like the carry); default
        ``step(params_l, x, input)[0] - x``, exact for any residual-style step.
      params_per_step: taken from a ``Cell``.

    Returns:
      ``PathDecomposition`` (``contributions`` leaves ``[L+1, B, ...]``, ``norms: [L+1]``).

    Example::

        cell = cells.get("residual", width=64, depth=100)
        res = path_decomposition(cell, cell.init(key, 64), x0)
        res.norms.argmax()  # the path length that carries most of the gradient
    """
    step, per_step, _, layout = _prepare(cell_or_step, params, carry0, xs, params_per_step)
    if cotangent is None:
        cotangent = jax.tree_util.tree_map(jnp.ones_like, carry0)
    elif carry_layout(cotangent) != layout:
        raise ValueError(
            f"cotangent must be shaped like carry0 ({layout.slices}), got {carry_layout(cotangent).slices}"
        )
    branch = _ResidualBranch(step) if branch is None else branch
    return _paths(step, branch, params, carry0, xs, cotangent, per_step)
