"""Jacobians of a scanned cell: local ``dh_{t+1}/dh_t`` and products ``dh_T/dh_t``.

Local Jacobians and the Pascanu bounds live here; the product norms in
``gradflow.measure.products`` and the carry layout in ``gradflow.measure.layout``
(both re-exported here).

Conventions (all functions here):

* The carry is flattened **per example**: the leaves of ``carry`` in
  ``jax.tree_util.tree_leaves`` order (LSTM: ``(c, h)`` gives ``c`` first),
  each ``[B, ...]`` leaf raveled after the batch axis and concatenated, so one
  example's state is a vector of size ``D``. ``carry_layout(carry)`` names the
  slice of each leaf.
* ``J_t = dh_{t+1}/dh_t`` is ``[D, D]`` with ``J[i, j] = d h_{t+1, i} / d h_{t, j}``,
  and ``dh_T/dh_t = J_{T-1} ... J_t`` (``dh_T/dh_T = I``).
* Cells must treat the examples of a batch independently. A cell that couples
  them (a ``plain``/``residual`` stack with ``norm='batch'``) has no
  per-example Jacobian: ``local_jacobians`` raises (outside ``jit``) when the
  step applied to one example differs from the batched step.
* Logs are natural logs, accumulated with a renormalization at every step, so
  they stay finite where the product under- or overflows (float32, T = 10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.cells import checks as c
from gradflow.measure.layout import CarryLayout as CarryLayout
from gradflow.measure.layout import LeafSlice as LeafSlice
from gradflow.measure.layout import _flat as _flat
from gradflow.measure.layout import _p as _p
from gradflow.measure.layout import _prepare as _prepare
from gradflow.measure.layout import _scan_inputs as _scan_inputs
from gradflow.measure.layout import _trajectory as _trajectory
from gradflow.measure.layout import _unflat as _unflat
from gradflow.measure.layout import carry_layout as carry_layout
from gradflow.measure.products import ProductNorms as ProductNorms
from gradflow.measure.products import product_norms as product_norms
from gradflow.seam import Cell

PyTree = Any

#: ``gamma = sup |phi'|`` of the built-in activations (Pascanu et al. 2013).
GAMMA = {"tanh": 1.0, "relu": 1.0, "linear": 1.0, "sigmoid": 0.25}


# ---------------------------------------------------------------------------------------------- local


class LocalJacobians(NamedTuple):
    """Result of ``local_jacobians`` (a pytree: works under ``jit``/``vmap``).

    Attributes:
      jacobians: ``[T, B, D, D]``, ``J_t = dh_{t+1}/dh_t`` per example, along the trajectory.
      singular_values: ``[T, B, K]``, descending (``K = min(k, D)``, all D by default).
      spectral_norms: ``[T, B]``, ``||J_t||_2``.
      per_example_error: ``[T]``, max ``|step(h)[b] - step(h[b:b+1])|``: nonzero (beyond
        rounding) means the cell couples the examples and the Jacobians are not per example.
      layout: ``CarryLayout`` of the flat state (static).
    """

    jacobians: jax.Array
    singular_values: jax.Array
    spectral_norms: jax.Array
    per_example_error: jax.Array
    layout: CarryLayout


@partial(jax.jit, static_argnums=(0, 4, 5))
def _local(step, params, carry0, xs, per_step, layout):
    batch = jax.tree_util.tree_leaves(carry0)[0].shape[0]
    x_batched = jax.tree_util.tree_map(lambda a: jnp.ndim(a) >= 2 and a.shape[1] == batch, xs)
    in_axes = jax.tree_util.tree_map(lambda f: 0 if f else None, x_batched)

    def one_example(p, hvec, xb):
        xb = jax.tree_util.tree_map(lambda a, f: a[None] if f else a, xb, x_batched)
        out = _flat(step(p, _unflat(hvec[None], layout), xb)[0], layout)[0]
        return out, out

    def body(carry, inp):
        p, x = inp
        p = _p(params, p)
        jac_fn = jax.vmap(jax.jacfwd(partial(one_example, p), has_aux=True), in_axes=(0, in_axes))
        jac, alone = jac_fn(_flat(carry, layout), x)
        carry, _ = step(p, carry, x)
        return carry, (jac, jnp.max(jnp.abs(alone - _flat(carry, layout))))

    _, (jac, err) = jax.lax.scan(body, carry0, _scan_inputs(params, xs, per_step))
    sv = jnp.linalg.svd(jac, compute_uv=False)
    return LocalJacobians(jac, sv, sv[..., 0], err, layout)


def local_jacobians(
    step_or_cell: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    xs: PyTree,
    *,
    k: int | None = None,
    params_per_step: bool | None = None,
) -> LocalJacobians:
    """Per-example local Jacobians ``J_t = dh_{t+1}/dh_t``, t = 0..T-1, with their spectra.

    The trajectory is the ``lax.scan`` of the batched step; ``J_t`` is
    ``jax.jacfwd`` of the step applied to one example (a ``[1, ...]`` batch),
    vmapped over the batch. The carry is flattened per example (module doc).

    Args:
      step_or_cell: a ``Cell`` or ``step(params, carry, x) -> (carry, y)``.
      params: the params (leading ``[L]`` axis for depth stacks).
      carry0: ``h_0``, leaves ``[B, ...]``.
      xs: leaves ``[T, B, ...]`` (``None`` for a depth stack).
      k: keep the top ``k`` singular values (default all D).
      params_per_step: params sliced per step (taken from a ``Cell``).

    Returns:
      ``LocalJacobians`` (``jacobians: [T, B, D, D]``, ``singular_values: [T, B, K]``,
      ``spectral_norms: [T, B]``).

    Example::

        res = local_jacobians(cell, params, cell.initial_carry(4), xs)
        res.spectral_norms  # [T, 4]
    """
    if k is not None:
        c.positive_int("k", k)
    step, per_step, _, layout = _prepare(step_or_cell, params, carry0, xs, params_per_step)
    res = _local(step, params, carry0, xs, per_step, layout)
    if k is not None:
        res = res._replace(singular_values=res.singular_values[..., :k])
    err = res.per_example_error
    if not isinstance(err, jax.core.Tracer):
        scale = max(1.0, float(jnp.max(jnp.abs(_flat(carry0, layout)))))
        tol = 100 * float(jnp.finfo(err.dtype).eps) ** 0.5 * scale
        if float(jnp.max(err)) > tol:
            raise ValueError(
                f"the step couples the examples of a batch (one example alone differs from the batched "
                f"step by {float(jnp.max(err)):.3g}), e.g. norm='batch': it has no per-example Jacobian"
            )
    return res


def pascanu_bound(w: jax.Array, activation: str = "tanh") -> jax.Array:
    """Pascanu et al. (2013) bound ``||W||_2 * gamma`` on ``||diag(phi'(a)) W||_2``.

    ``gamma = sup |phi'|``: 1 for tanh, relu and linear, 1/4 for sigmoid.

    Args:
      w: ``[D, D]`` or stacked ``[L, D, D]``.
    Returns:
      a scalar, or ``[L]``.

    Example::

        pascanu_bound(params["w_hh"], "sigmoid")  # ||W||_2 / 4
    """
    gamma = GAMMA[c.choose("activation", activation, GAMMA)]
    w = jnp.asarray(w)
    if w.ndim not in (2, 3) or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"w must be [D, D] or [L, D, D], got shape {tuple(w.shape)}")
    return gamma * jnp.linalg.svd(w, compute_uv=False)[..., 0]


def pascanu_bounds(name: str, params: PyTree, **options) -> jax.Array:
    """The bound on ``||J_t||_2`` per step for the built-in cell ``name`` with ``options``.

    * ``'rnn'``: ``||w_hh||_2 * gamma`` (a scalar: the same at every step);
    * ``'plain'``: ``||w_l||_2 * gamma`` per layer, ``[L]``;
    * ``'residual'``: ``1 + alpha ||w_l||_2 * gamma`` per layer, ``[L]``.

    ``options`` are those given to ``cells.get`` (``activation``, ``alpha``,
    ``norm``; others are ignored). Stacks with a ``norm`` and gated cells have
    no such bound (ValueError).

    Example::

        pascanu_bounds("rnn", params, activation="sigmoid")
    """
    activation = options.get("activation", "tanh")
    if name == "rnn":
        return pascanu_bound(params["w_hh"], activation)
    if name in ("plain", "residual"):
        if options.get("norm") is not None:
            raise ValueError(f"pascanu_bounds: no bound for a {name} stack with norm={options['norm']!r}")
        bound = pascanu_bound(params["w"], activation)
        if name == "plain":
            return bound
        alpha = options.get("alpha")
        alpha = 1.0 / params["w"].shape[0] ** 0.5 if alpha is None else alpha
        return 1.0 + abs(alpha) * bound
    raise ValueError(
        f"pascanu_bounds: unknown or unbounded cell {name!r}; choose from ['plain', 'residual', 'rnn']"
    )
