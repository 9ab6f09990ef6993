"""The per-example flattening of a carry, and the scan helpers the Jacobian measures share.

Conventions in ``gradflow.measure.jacobians`` (module doc): the leaves of ``carry`` in
``jax.tree_util.tree_leaves`` order, each ``[B, ...]`` leaf raveled after the batch axis and
concatenated, so one example's state is a vector of size ``D``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.measure.flow import _validate
from gradflow.seam import as_step

PyTree = Any


class LeafSlice(NamedTuple):
    """Where carry leaf ``index`` (``path`` as ``jax.tree_util.keystr``) lies in the flat state."""

    index: int
    path: str
    start: int
    stop: int
    shape: tuple[int, ...]  # per example (batch axis removed)


@partial(jax.tree_util.register_static)
@dataclasses.dataclass(frozen=True)
class CarryLayout:
    """The per-example flattening of a carry: one ``LeafSlice`` per leaf, in ``tree_leaves`` order.

    A static pytree node (no array leaves), so it passes through ``jit``/``vmap``.
    ``layout.size`` is D; ``layout.slices[i]`` gives leaf i's ``[start, stop)`` slice.
    """

    slices: tuple[LeafSlice, ...]
    treedef: Any

    @property
    def size(self) -> int:
        return self.slices[-1].stop


def carry_layout(carry: PyTree) -> CarryLayout:
    """The per-example layout of ``carry`` (leaves ``[B, ...]``).

    Example::

        carry_layout(cells.get("lstm", hidden_size=8).initial_carry(2)).slices
        # (LeafSlice(0, '[0]', 0, 8, (8,)), LeafSlice(1, '[1]', 8, 16, (8,)))
    """
    pairs, treedef = jax.tree_util.tree_flatten_with_path(carry)
    slices, start = [], 0
    for i, (path, leaf) in enumerate(pairs):
        shape = tuple(jnp.shape(leaf)[1:])
        slices.append(LeafSlice(i, jax.tree_util.keystr(path), start, start + math.prod(shape), shape))
        start += math.prod(shape)
    return CarryLayout(tuple(slices), treedef)


def _flat(carry, layout: CarryLayout):
    leaves = jax.tree_util.tree_leaves(carry)
    return jnp.concatenate(
        [
            a.reshape((*a.shape[: a.ndim - len(s.shape)], -1))
            for a, s in zip(leaves, layout.slices, strict=True)
        ],
        -1,
    )


def _unflat(vec, layout: CarryLayout):
    """``[..., D]`` -> carry pytree with leaves ``[..., *shape]``."""
    lead = vec.shape[:-1]
    leaves = [vec[..., s.start : s.stop].reshape(lead + s.shape) for s in layout.slices]
    return jax.tree_util.tree_unflatten(layout.treedef, leaves)


def _prepare(cell_or_step, params, carry0, xs, params_per_step):
    step, per_step = as_step(cell_or_step, params_per_step)
    length = _validate(step, params, carry0, xs, lambda ys, carry: jnp.zeros(()), per_step)
    return step, per_step, length, carry_layout(carry0)


def _scan_inputs(params, xs, per_step):
    return (params if per_step else None, xs)


def _p(params, p):
    return params if p is None else p


def _trajectory(step, params, carry0, xs, per_step):
    """The carries ``h_0 .. h_{T-1}`` that enter each step, leaves ``[T, B, ...]``."""

    def body(carry, inp):
        p, x = inp
        return step(_p(params, p), carry, x)[0], carry

    return jax.lax.scan(body, carry0, _scan_inputs(params, xs, per_step))[1]
