"""Norms of the Jacobian products ``dh_T/dh_t`` of a scanned cell, for every t, in log space.

Conventions as in ``gradflow.measure.jacobians`` (per-example flat carry of size D,
``dh_T/dh_t = J_{T-1} ... J_t``). Rows of the product are carried backward through one
reverse ``lax.scan`` (``method='lowrank'``: one while loop per tier of fewer rows) with batched
VJPs of the step, renormalized at every step with the log of the scale accumulated, so nothing
under- or overflows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.cells import checks as c
from gradflow.measure.layout import CarryLayout, _flat, _p, _prepare, _scan_inputs, _trajectory, _unflat
from gradflow.seam import Cell

PyTree = Any
METHODS = ("exact", "eigh", "estimate", "lowrank")
#: Power iterations per step before ``method='exact'`` falls back to the eigen-solve (tanh RNN, D = 128,
#: T = 500, tol 1e-3: 1-2 per step once the product is near rank one, up to ~250 within ~60 steps of T,
#: where the top two singular values are close; an eigen-solve costs ~1000 iterations on CPU).
MAX_ITER = 1000
#: ``method='lowrank'``: the narrowest tier of rows, and the steps between two rank checks.
MIN_ROWS = 4
CHECK_EVERY = 4


class ProductNorms(NamedTuple):
    """Result of ``product_norms``: natural logs, per example.

    Attributes:
      log_spectral: ``[T+1, B]``, ``ln ||dh_T/dh_t||_2`` (a lower bound with ``method='estimate'``).
      log_frobenius: ``[T+1, B]``, ``ln ||dh_T/dh_t||_F`` (an unbiased estimate of the square
        with ``method='estimate'``).
      probes: number of probe rows propagated (D for ``'exact'`` and ``'eigh'``).
      fallbacks: scalar int, the steps at which the power iteration (``'exact'``, ``'estimate'``,
        ``'lowrank'``) did not meet its tolerance within ``MAX_ITER`` iterations for some example
        and the eigen-solve was used instead (0 for ``'eigh'``).
      rows: ``[T+1]`` int, the rows carried into step t (``'lowrank'``: D near T, narrowing in
        tiers; the others: ``probes`` throughout).
      discarded: ``[B]``, ``'lowrank'``: the sum over its truncations of the discarded energy
        over the squared spectral norm, ``sum_i eps_i^2`` (each ``<= tol^2``; 0 for the others).
    """

    log_spectral: jax.Array
    log_frobenius: jax.Array
    probes: int
    fallbacks: jax.Array
    rows: jax.Array | None = None
    discarded: jax.Array | None = None


def _top_eigh(v, vector=False):
    """Rows ``v: [R, B, D]`` -> ``[B]``, the top eigenvalue of ``v v^T`` per example (eigen-solve);
    with ``vector``, also its unit eigenvector ``[B, R]``."""
    n2 = jnp.sum(jnp.square(v), axis=(0, 2))
    gram = jnp.einsum("rbd,sbd->brs", v, v) / jnp.where(n2 > 0, n2, 1.0)[:, None, None]
    # shift by c I (lambda_max moves by exactly c): keeps the near-zero eigenvalues of a near
    # rank-one product away from denormals, which make CPU eigensolvers ~100x slower
    shift = 1e-3 / gram.shape[-1]
    gram = gram + shift * jnp.eye(gram.shape[-1], dtype=gram.dtype)
    if vector:
        values, vectors = jnp.linalg.eigh(gram)
        return jnp.maximum(values[:, -1] - shift, 0.0) * n2, vectors[:, :, -1]
    return jnp.maximum(jnp.linalg.eigvalsh(gram)[:, -1] - shift, 0.0) * n2


def _top_power(v, u, tol):
    """Warm-started power iteration on ``v v^T`` (rows ``v: [B, R, D]``, start ``u: [B, R]`` unit).

    Returns ``(rho [B], u [B, R], converged [B])``: the Rayleigh quotient ``||v^T u||^2`` (a lower
    bound of the top eigenvalue), the next start, and whether the residual
    ``||v v^T u - rho u|| <= 2 tol rho`` was met within ``MAX_ITER`` iterations.
    """

    def iterate(state):
        u, _, _, i = state
        z = jnp.einsum("brd,br->bd", v, u)  # v^T u
        y = jnp.einsum("brd,bd->br", v, z)  # v v^T u
        rho = jnp.sum(jnp.square(z), axis=-1)
        res = jnp.linalg.norm(y - rho[:, None] * u, axis=-1)
        norm = jnp.linalg.norm(y, axis=-1, keepdims=True)
        return jnp.where(norm > 0, y / jnp.where(norm > 0, norm, 1.0), u), rho, res <= 2 * tol * rho, i + 1

    def going(state):
        return (state[3] < MAX_ITER) & ~jnp.all(state[2])

    batch = u.shape[0]
    state0 = (u, jnp.zeros(batch, v.dtype), jnp.zeros(batch, bool), jnp.zeros((), jnp.int32))
    u, rho, converged, _ = jax.lax.while_loop(going, iterate, state0)
    return rho, u, converged


def _spectral(v, u, method, tol):
    """Rows ``v: [R, B, D]`` (unit Frobenius norm), start ``u: [B, R]`` -> top eigenvalue of
    ``v v^T`` ``[B]``, the next start, whether the eigen-solve was needed (scalar bool)."""
    if method == "eigh":
        return _top_eigh(v), u, jnp.zeros((), bool)
    rho, u, converged = _top_power(jnp.moveaxis(v, 1, 0), u, tol)
    fallback = ~jnp.all(converged)
    rho = jax.lax.cond(fallback, lambda: jnp.where(converged, rho, _top_eigh(v)), lambda: rho)
    return rho, u, fallback


def _advance(step, params, layout, inp, v, log_scale):
    """``V <- V J_t`` (rows ``v: [R, B, D]``, batched VJPs), rescaled to unit Frobenius norm per
    example with the log of the scale accumulated; also whether the rows are nonzero ``[B]``."""
    p, x, h = inp
    _, vjp = jax.vjp(lambda carry: step(_p(params, p), carry, x)[0], h)
    w = jax.vmap(lambda r: _flat(vjp(_unflat(r, layout))[0], layout))(v)
    n = jnp.sqrt(jnp.sum(jnp.square(w), axis=(0, 2)))
    ok = n > 0
    v = w / jnp.where(ok, n, 1.0)[None, :, None]
    return v, log_scale + jnp.where(ok, jnp.log(jnp.where(ok, n, 1.0)), 0.0), ok


def _tiers(dim):
    """Row counts of ``method='lowrank'``: D, then the powers of two below D down to ``MIN_ROWS``."""
    tiers = [dim]
    k = 1 << ((dim - 1).bit_length() - 1) if dim > 1 else 0
    while k >= MIN_ROWS:
        tiers.append(k)
        k //= 2
    return tuple(tiers)


def _narrow(v, q, tol, top):
    """One subspace iteration of ``q: [B, R, K]`` on ``v v^T`` (rows ``v: [R, B, D]``), and the energy
    of ``v`` outside its span over ``top`` (``||v||_2^2``) ``[B]``; whether that is ``<= tol^2`` for all."""
    y = jnp.einsum("rbd,bsd->brs", v, jnp.einsum("rbd,brk->bkd", v, q))  # v v^T q
    q = jnp.linalg.qr(y)[0]
    kept = jnp.einsum("rbd,brk->bkd", v, q)
    res = jnp.sum(jnp.square(v - jnp.einsum("brk,bkd->rbd", q, kept)), axis=(0, 2))
    ratio = res / jnp.where(top > 0, top, 1.0)
    return q, jnp.all(ratio <= tol**2), ratio


def _lowrank(step, params, layout, inputs, v0, log0, tol):
    """``method='lowrank'``: rows narrowed in tiers (``_tiers``), one while loop per tier."""
    batch, dim = v0.shape[1], layout.size
    length = jax.tree_util.tree_leaves(inputs[2])[0].shape[0]
    dtype = v0.dtype
    at = partial(jax.lax.dynamic_index_in_dim, keepdims=False)
    spec = jnp.zeros((length, batch), dtype)
    frob = jnp.zeros((length, batch), dtype)
    rows = jnp.zeros(length, jnp.int32)
    u = jnp.full((batch, dim), 1.0 / math.sqrt(dim), dtype)
    state = (jnp.asarray(length - 1, jnp.int32), v0, u, log0, jnp.zeros((), jnp.int32), spec, frob, rows)
    discarded = jnp.zeros(batch, dtype)
    tiers = _tiers(dim)
    for i, k in enumerate(tiers):
        nxt = tiers[i + 1] if i + 1 < len(tiers) else 0

        def body(loop, i=i, k=k, nxt=nxt):
            (t, v, u, log_scale, fallbacks, spec, frob, rows), q, _, res = loop
            inp = jax.tree.map(lambda a, t=t: at(a, t), inputs)
            v, log_scale, ok = _advance(step, params, layout, inp, v, log_scale)
            if i == 0:  # the cold start (t = T-1): the power iteration's residual test can stop
                # on a lower eigenvalue of a crowded spectrum; the eigen-solve, and its vector next
                top, u, fallback = jax.lax.cond(
                    t == length - 1,
                    lambda: (*_top_eigh(v, vector=True), jnp.zeros((), bool)),
                    lambda: _spectral(v, u, "exact", tol),
                )
            else:
                top, u, fallback = _spectral(v, u, "exact", tol)
            spec = spec.at[t].set(log_scale + 0.5 * jnp.log(top))
            frob = frob.at[t].set(jnp.where(ok, log_scale, -jnp.inf))
            rows = rows.at[t].set(k)
            state = (t - 1, v, u, log_scale, fallbacks + fallback.astype(jnp.int32), spec, frob, rows)
            if not nxt:
                return state, q, False, res
            check = (length - 1 - t) % CHECK_EVERY == CHECK_EVERY - 1
            q, done, res = jax.lax.cond(
                check, lambda: _narrow(v, q, tol, top), lambda: (q, jnp.zeros((), bool), res)
            )
            return state, q, done, res

        q0 = jnp.broadcast_to(jnp.eye(k, max(nxt, 1), dtype=dtype), (batch, k, max(nxt, 1)))
        loop0 = (state, q0, jnp.zeros((), bool), jnp.zeros(batch, dtype))
        state, q, done, res = jax.lax.while_loop(lambda lp: (lp[0][0] >= 0) & ~lp[2], body, loop0)
        if nxt:  # keep the rows' projection on span(q): exits with t < 0 make this moot
            t, v, u, *rest = state
            u = jnp.einsum("brk,br->bk", q, u)
            u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), jnp.finfo(dtype).tiny)
            state = (t, jnp.einsum("rbd,brk->kbd", v, q), u, *rest)
            discarded = discarded + jnp.where(done, res, 0.0)
    _, _, _, _, fallbacks, spec, frob, rows = state
    return spec, frob, fallbacks, rows, discarded


@partial(jax.jit, static_argnums=(0, 4, 5, 7))
def _products(step, params, carry0, xs, per_step, layout: CarryLayout, rows, method, tol):
    dim = layout.size
    n_rows = rows.shape[0]
    frob_shift = 0.5 * (math.log(dim) - math.log(n_rows))
    traj = _trajectory(step, params, carry0, xs, per_step)
    log0 = jnp.log(jnp.sqrt(jnp.sum(jnp.square(rows), axis=(0, 2))))
    v0 = rows / jnp.exp(log0)[None, :, None]
    batch = v0.shape[1]
    inputs = (*_scan_inputs(params, xs, per_step), traj)
    if method == "lowrank":
        spec, frob, fallbacks, used, discarded = _lowrank(step, params, layout, inputs, v0, log0, tol)
    else:

        def body(state, inp):
            v, u, log_scale, fallbacks = state
            v, log_scale, ok = _advance(step, params, layout, inp, v, log_scale)
            top, u, fallback = _spectral(v, u, method, tol)
            spec = log_scale + 0.5 * jnp.log(top)
            frob = jnp.where(ok, log_scale, -jnp.inf) + frob_shift
            return (v, u, log_scale, fallbacks + fallback.astype(jnp.int32)), (spec, frob)

        u0 = jnp.full((batch, n_rows), 1.0 / math.sqrt(n_rows), v0.dtype)
        state0 = (v0, u0, log0, jnp.zeros((), jnp.int32))
        (_, _, _, fallbacks), (spec, frob) = jax.lax.scan(body, state0, inputs, reverse=True)
        used = jnp.full(spec.shape[0], n_rows, jnp.int32)
        discarded = jnp.zeros(batch, v0.dtype)
    spec_end = jnp.zeros_like(log0)  # P = I (orthonormal probe rows for 'estimate'): ||.||_2 = 1
    frob_end = log0 + frob_shift
    spec = jnp.concatenate([spec, spec_end[None]])
    frob = jnp.concatenate([frob, frob_end[None]])
    return spec, frob, fallbacks, jnp.concatenate([used, jnp.full(1, n_rows, jnp.int32)]), discarded


def product_norms(
    step_or_cell: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    xs: PyTree,
    *,
    method: str = "exact",
    tol: float = 1e-3,
    probes: int = 16,
    key: jax.Array | None = None,
    params_per_step: bool | None = None,
) -> ProductNorms:
    """``ln ||dh_T/dh_t||_2`` and ``ln ||dh_T/dh_t||_F`` for every t = 0..T, per example.

    Rows ``V`` of ``dh_T/dh_t`` are carried backward through a reverse
    ``lax.scan`` with batched VJPs of the step (``V <- V J_t``, vmapped over
    rows), rescaled to unit Frobenius norm per example at each step with the
    log of the scale accumulated, so nothing under- or overflows.

    * ``method='exact'`` (default): the D rows of the identity (Frobenius exact); the spectral
      norm by power iteration on ``V V^T`` with the explicit rows, started from the top left
      singular vector of step t+1 (the output side of ``dh_T/dh_t = (dh_T/dh_{t+1}) J_t`` changes
      slowly: one or two iterations once the product is near rank one). It stops when the
      residual ``||V V^T u - rho u|| <= 2 tol rho``, which puts ``rho`` within relative
      ``2 tol`` of an eigenvalue of ``V V^T`` (the top one for a start that overlaps it; the
      Rayleigh quotient error is ~ the residual squared over the gap, usually far smaller), so
      the norm within relative ``tol``; where any example misses that within ``MAX_ITER`` = 1000
      iterations, that step uses the eigen-solve (counted in ``fallbacks``). Cost ~ D backward
      passes (the ``[D, D] x [D, D]`` row update dominates).
    * ``method='eigh'``: the same rows, the spectral norm from the top eigenvalue of ``V V^T``
      by a ``[D, D]`` symmetric eigen-solve per step and example (the reference; slow on CPU).
    * ``method='lowrank'``: the D rows of ``'exact'`` near T, narrowed in tiers (D, then the
      powers of two below D down to ``MIN_ROWS`` = 4) once the product is numerically of low
      rank: every ``CHECK_EVERY`` = 4 steps one warm-started subspace iteration gives an
      orthonormal ``Q: [R, K]`` (K the next tier) and ``eps^2 = ||V - Q Q^T V||_F^2 / ||V||_2^2``;
      where ``eps <= tol`` for every example the rows become ``Q^T V`` (K rows; the rank of
      ``dh_T/dh_t`` never grows as t falls, so no tier widens again). A flat spectrum (an
      orthogonal linear RNN; the first steps of a chaotic one) keeps all D rows. Spectral norm
      by the power iteration of ``'exact'``, but at the cold start (t = T-1, a crowded spectrum,
      where its residual test can stop on a lower eigenvalue: once 6e-3 low in ln-norm, float32,
      D = 128) by the eigen-solve, whose eigenvector starts the next step. One compiled program
      (a while loop per tier); cost ~ the rows summed over t, in backward passes (tanh RNN,
      D = 128, T = 500: ~6000 of ``'exact'``'s 64000), and per-step overhead.
      Bound: with ``U_t`` the orthonormal columns the rows ``V_t`` stand for and ``E_i`` the part
      dropped at truncation i (step ``s_i``), ``dh_T/dh_t = U_t V_t + sum_i E_i dh_{s_i}/dh_t``
      with mutually orthogonal column spaces, so ``P^T P = V^T V + sum_i (E_i Pi_i)^T E_i Pi_i``
      (``Pi_i = dh_{s_i}/dh_t``) and, for both norms,
      ``0 <= ln ||P_t|| - ln ||V_t|| <= 0.5 ln(1 + sum_i eps_i^2 G_i^2) <= 0.5 n tol^2 G^2``:
      the result is a lower bound; n <= log2(D / 4) truncations (``discarded`` = sum_i
      ``eps_i^2``); ``G_i = (||E_i Pi_i||_F / ||E_i||_F) / (||V_t||_2 / ||V_{s_i}||_2)`` is how
      much more the dropped rows grew from s_i to t than the kept product. G has no a priori
      bound (a dropped direction may later grow faster than every kept one), but later steps
      pull dropped rows, like any rows, toward the top direction, so it is of order one. With
      tol = 1e-3 and n = 5 the truncations cost <= tol in ln-norm while G <= sqrt(2 / (n tol)) =
      20; with the power iteration's share, the spectral norm lies within about
      ``tol + 0.5 n tol^2 G^2`` below the exact one. Measured (tanh RNN g = 0.5, 0.9, 1, 1.5, 2
      and an LSTM, D = 128, T = 500, B = 2, float64 and float32): spectral <= 6e-4 below
      ``'eigh'`` (the power iteration's share, as for ``'exact'``), Frobenius <= 1e-5 (float64)
      and 1.1e-4 (float32, rounding included) below; G >= 0.8-3.1 (float64, from the Frobenius
      deficit). Tested within 1e-3 of ``'eigh'`` and ``jax.jacfwd`` for D = 16, 32.
    * ``method='estimate'``: ``k = min(probes, D)`` random orthonormal rows
      ``Q`` (QR of Gaussian probes, independent per example). Frobenius:
      ``(D/k) ||Q P||_F^2`` is unbiased for ``||P||_F^2`` (Hutchinson); its relative
      standard deviation is at most ``sqrt(2 (D-k) / (k (D+2)))`` <= ``sqrt(2/k)`` (the
      worst case, rank-one P; Gaussian probes give ``sqrt(2/k)`` there), so ``ln ||P||_F``
      is off by about ``1/sqrt(2k)`` at most; exact for k = D.
      Spectral (power iteration as for ``'exact'``): ``||Q P||_2`` is a **lower bound**
      (``||Q||_2 = 1``); for a near rank-one product (long horizons) it is ``||P||_2 ||Q u||``,
      ``||Q u||^2 ~ Beta(k/2, (D-k)/2)`` (mean k/D): the log is biased low
      by about ``0.5 ln(k/D)``, its slope in t is right.

    Args:
      step_or_cell, params, carry0, xs, params_per_step: as in ``local_jacobians``.
      method: ``'exact'``, ``'eigh'``, ``'estimate'`` or ``'lowrank'``.
      tol: relative error of the spectral norm for ``'exact'``, ``'estimate'`` and ``'lowrank'``
        (also its truncation threshold), in (0, 1).
      probes: number of probes k for ``'estimate'``.
      key: PRNG key, required for ``'estimate'``.

    Returns:
      ``ProductNorms`` with ``log_spectral``, ``log_frobenius``: ``[T+1, B]`` (entry T:
      ``ln 1 = 0`` and ``0.5 ln D``), ``probes``, ``fallbacks``, ``rows: [T+1]``, ``discarded: [B]``.

    Example::

        res = product_norms(cell, params, cell.initial_carry(1), xs)
        res.log_spectral[:, 0]  # ln ||dh_T/dh_t||_2, t = 0..T
    """
    c.choose("method", method, METHODS)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    step, per_step, _, layout = _prepare(step_or_cell, params, carry0, xs, params_per_step)
    flat0 = _flat(carry0, layout)
    batch, dim = flat0.shape
    if method != "estimate":
        rows = jnp.broadcast_to(jnp.eye(dim, dtype=flat0.dtype)[:, None, :], (dim, batch, dim))
    else:
        c.positive_int("probes", probes)
        if key is None:
            raise ValueError("key is required for method='estimate' (e.g. key=jax.random.key(0))")
        k = min(probes, dim)
        gauss = jax.random.normal(key, (batch, dim, k), flat0.dtype)
        rows = jnp.transpose(jnp.linalg.qr(gauss)[0], (2, 0, 1))  # [k, B, D], orthonormal per example
    spec, frob, fallbacks, used, discarded = _products(
        step, params, carry0, xs, per_step, layout, rows, method, tol
    )
    return ProductNorms(spec, frob, rows.shape[0], fallbacks, used, discarded)
