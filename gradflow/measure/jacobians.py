"""Jacobians of a scanned cell: local ``dh_{t+1}/dh_t`` and products ``dh_T/dh_t``.

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

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.cells import checks as c
from gradflow.measure.flow import _validate
from gradflow.seam import Cell, as_step

PyTree = Any

#: ``gamma = sup |phi'|`` of the built-in activations (Pascanu et al. 2013).
GAMMA = {"tanh": 1.0, "relu": 1.0, "linear": 1.0, "sigmoid": 0.25}


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


# ------------------------------------------------------------------------------------------- products


class ProductNorms(NamedTuple):
    """Result of ``product_norms``: natural logs, per example.

    Attributes:
      log_spectral: ``[T+1, B]``, ``ln ||dh_T/dh_t||_2`` (a lower bound with ``method='estimate'``).
      log_frobenius: ``[T+1, B]``, ``ln ||dh_T/dh_t||_F`` (an unbiased estimate of the square
        with ``method='estimate'``).
      probes: number of probe rows propagated (D for ``'exact'``).
    """

    log_spectral: jax.Array
    log_frobenius: jax.Array
    probes: int


def _trajectory(step, params, carry0, xs, per_step):
    """The carries ``h_0 .. h_{T-1}`` that enter each step, leaves ``[T, B, ...]``."""

    def body(carry, inp):
        p, x = inp
        return step(_p(params, p), carry, x)[0], carry

    return jax.lax.scan(body, carry0, _scan_inputs(params, xs, per_step))[1]


def _row_logs(w, log_scale, frob_shift):
    """Rows ``w: [R, B, D]`` (true rows ``exp(log_scale) w``) -> (ln spectral, ln F, norm) per example."""
    n = jnp.sqrt(jnp.sum(jnp.square(w), axis=(0, 2)))
    gram = jnp.einsum("rbd,sbd->brs", w, w) / jnp.where(n > 0, n * n, 1.0)[:, None, None]
    # shift by c I (lambda_max moves by exactly c): keeps the near-zero eigenvalues of a near
    # rank-one product away from denormals, which make CPU eigensolvers ~100x slower
    shift = 1e-3 / gram.shape[-1]
    top = jnp.linalg.eigvalsh(gram + shift * jnp.eye(gram.shape[-1], dtype=gram.dtype))[:, -1] - shift
    top = jnp.maximum(top, 0.0) * n * n
    return log_scale + 0.5 * jnp.log(top), log_scale + jnp.log(n) + frob_shift, n


@partial(jax.jit, static_argnums=(0, 4, 5))
def _products(step, params, carry0, xs, per_step, layout, rows):
    dim = layout.size
    n_rows = rows.shape[0]
    frob_shift = 0.5 * (math.log(dim) - math.log(n_rows))
    traj = _trajectory(step, params, carry0, xs, per_step)
    log0 = jnp.log(jnp.sqrt(jnp.sum(jnp.square(rows), axis=(0, 2))))
    v0 = rows / jnp.exp(log0)[None, :, None]

    def body(state, inp):
        v, log_scale = state
        p, x, h = inp
        _, vjp = jax.vjp(lambda carry: step(_p(params, p), carry, x)[0], h)
        w = jax.vmap(lambda r: _flat(vjp(_unflat(r, layout))[0], layout))(v)
        spec, frob, n = _row_logs(w, log_scale, frob_shift)
        ok = n > 0
        v = w / jnp.where(ok, n, 1.0)[None, :, None]
        return (v, log_scale + jnp.where(ok, jnp.log(jnp.where(ok, n, 1.0)), 0.0)), (spec, frob)

    inputs = (*_scan_inputs(params, xs, per_step), traj)
    _, (spec, frob) = jax.lax.scan(body, (v0, log0), inputs, reverse=True)
    spec_end, frob_end, _ = _row_logs(v0, log0, frob_shift)
    return (
        jnp.concatenate([spec, spec_end[None]]),
        jnp.concatenate([frob, frob_end[None]]),
    )


def product_norms(
    step_or_cell: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    xs: PyTree,
    *,
    method: str = "exact",
    probes: int = 16,
    key: jax.Array | None = None,
    params_per_step: bool | None = None,
) -> ProductNorms:
    """``ln ||dh_T/dh_t||_2`` and ``ln ||dh_T/dh_t||_F`` for every t = 0..T, per example.

    Rows ``V`` of ``dh_T/dh_t`` are carried backward through a reverse
    ``lax.scan`` with batched VJPs of the step (``V <- V J_t``, vmapped over
    rows), rescaled to unit Frobenius norm per example at each step with the
    log of the scale accumulated, so nothing under- or overflows.

    * ``method='exact'``: the D rows of the identity; the spectral norm from
      the top eigenvalue of ``V V^T``. Cost ~ D backward passes plus a
      ``[D, D]`` symmetric eigenproblem per step and example.
    * ``method='estimate'``: ``k = min(probes, D)`` random orthonormal rows
      ``Q`` (QR of Gaussian probes, independent per example). Frobenius:
      ``(D/k) ||Q P||_F^2`` is unbiased for ``||P||_F^2`` (Hutchinson); its relative
      standard deviation is at most ``sqrt(2 (D-k) / (k (D+2)))`` <= ``sqrt(2/k)`` (the
      worst case, rank-one P; Gaussian probes give ``sqrt(2/k)`` there), so ``ln ||P||_F``
      is off by about ``1/sqrt(2k)`` at most; exact for k = D.
      Spectral: ``||Q P||_2`` is a **lower bound** (``||Q||_2 = 1``); for a near rank-one
      product (long horizons) it is ``||P||_2 ||Q u||``, ``||Q u||^2 ~ Beta(k/2, (D-k)/2)``
      (mean k/D): the log is biased low by about ``0.5 ln(k/D)``, its slope in t is right.

    Args:
      step_or_cell, params, carry0, xs, params_per_step: as in ``local_jacobians``.
      method: ``'exact'`` or ``'estimate'``.
      probes: number of probes k for ``'estimate'``.
      key: PRNG key, required for ``'estimate'``.

    Returns:
      ``ProductNorms`` with ``log_spectral``, ``log_frobenius``: ``[T+1, B]`` (entry T:
      ``ln 1 = 0`` and ``0.5 ln D``).

    Example::

        res = product_norms(cell, params, cell.initial_carry(1), xs)
        res.log_spectral[:, 0]  # ln ||dh_T/dh_t||_2, t = 0..T
    """
    c.choose("method", method, ("exact", "estimate"))
    step, per_step, _, layout = _prepare(step_or_cell, params, carry0, xs, params_per_step)
    flat0 = _flat(carry0, layout)
    batch, dim = flat0.shape
    if method == "exact":
        rows = jnp.broadcast_to(jnp.eye(dim, dtype=flat0.dtype)[:, None, :], (dim, batch, dim))
    else:
        c.positive_int("probes", probes)
        if key is None:
            raise ValueError("key is required for method='estimate' (e.g. key=jax.random.key(0))")
        k = min(probes, dim)
        gauss = jax.random.normal(key, (batch, dim, k), flat0.dtype)
        rows = jnp.transpose(jnp.linalg.qr(gauss)[0], (2, 0, 1))  # [k, B, D], orthonormal per example
    spec, frob = _products(step, params, carry0, xs, per_step, layout, rows)
    return ProductNorms(spec, frob, rows.shape[0])
