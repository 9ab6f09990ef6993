"""Lyapunov spectra of a scanned cell by the QR (Benettin) method, in log space.

A tangent frame ``Q: [D, k]`` per batch example rides along the trajectory:
``Q <- J_t Q`` with ``J_t = dh_{t+1}/dh_t`` applied by ``jax.jvp`` (the Jacobian
is never formed; the ``k`` columns are pushed through one linearized step with
``vmap``), then ``Q, R = qr(Q)`` and ``ln |diag R|`` is added up. The
re-orthonormalization keeps the columns from collapsing onto the top direction
and the logs keep the growth finite where the product itself would under- or
overflow (float32 after ~100 decades).

Cost per step: k tangent pushes (one ``[k, D] x [D, D]``-sized matmul for an
RNN) plus, every m steps, a Householder QR, O(D k^2), most of the cost at
m = 1. ``reortho_every='auto'`` (default) picks the largest m that keeps the
frame's condition number below ``1/sqrt(eps)`` from the running estimate of
the spread of the exponents: ``tanh(2 W h)``, N = k = 64, float64: m = 3,
about 2.3x faster than QR at every step and than ``lyapax`` 0.3.0
(``benchmarks/bench_lyapunov.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.seam import Cell, as_step

PyTree = Any
INITS = ("random", "identity")


class LyapunovSpectrum(NamedTuple):
    """Result of ``lyapunov_spectrum`` (a pytree: works under ``jit``).

    Attributes:
      exponents: ``[k]``, the top k Lyapunov exponents (natural log per step),
        mean over batch examples; decreasing for a generic start (QR order; nearly
        equal exponents can swap in a finite run).
      per_example: ``[B, k]``, the exponents of each batch example.
      running: ``[S, k]`` with ``S = T - transient``: the estimate after each
        measured step (mean over batch), ``running[-1] == exponents``; the
        convergence diagnostic. With ``reortho_every = m > 1`` it changes only
        at re-orthonormalizations and holds its value in between.
      drift: ``[k]``, ``running[-1] - running[-1 - n]`` with ``n = ceil(S / 10)``:
        how much each estimate still moved over the last 10% of the steps
        (small: converged; the statistical error is typically of this order).
      steps: scalar int, ``S``, the number of steps averaged over.
      reorthos: scalar int, the number of QR re-orthonormalizations (transient included);
        ``T / reorthos`` is the mean interval m.
    """

    exponents: jax.Array
    per_example: jax.Array
    running: jax.Array
    drift: jax.Array
    steps: jax.Array
    reorthos: jax.Array


def _flatten(carry) -> jax.Array:
    """Carry pytree with leaves ``[B, ...]`` -> ``[B, D]`` (leaves in ``tree_leaves`` order)."""
    leaves = jax.tree_util.tree_leaves(carry)
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)


def _unflatten(template, flat: jax.Array):
    """``[..., B, D]`` -> carry pytree shaped like ``template`` with leading ``...`` axes."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    sizes = [math.prod(leaf.shape[1:]) for leaf in leaves]
    splits = jnp.split(flat, list(itertools.accumulate(sizes))[:-1], axis=-1)
    lead = flat.shape[:-1]
    out = [
        s.reshape((*lead, *leaf.shape[1:])).astype(leaf.dtype) for s, leaf in zip(splits, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _initial_frame(cols, batch, dim, k, dtype):
    """``[k, B, D]`` orthonormal columns per example: ``cols`` (Gaussian) orthonormalized, or identity."""
    if cols is None:
        return jnp.broadcast_to(jnp.eye(dim, k, dtype=dtype).T[:, None, :], (k, batch, dim))
    q, _ = jnp.linalg.qr(jnp.moveaxis(cols.astype(dtype), 0, -1))  # [B, D, k]; col j from cols <= j
    return jnp.moveaxis(q, -1, 0)


#: Steps of QR at every step before ``reortho_every='auto'`` picks m from the running spread estimate.
PILOT = 32
#: The largest m that ``reortho_every='auto'`` picks: over longer blocks the fluctuations of the spread
#: dominate its mean (driven tanh RNN, H = 8, k = 3, spread 0.37, float64: m = 16, 32, 64 deviate from
#: QR at every step by 5e-13, 4e-10, 7e-3 where the mean alone predicts 1e-15 .. 1e-10).
MAX_REORTHO_EVERY = 16


def auto_reortho_every(exponents: jax.Array, dtype) -> jax.Array:
    """The re-orthonormalization interval m that ``reortho_every='auto'`` picks from exponent estimates.

    Over m steps without a QR the frame's columns spread apart like ``exp(lambda_i m)``, so its
    condition number grows like ``kappa = exp((lambda_1 - lambda_k) m)``; Householder QR then
    recovers ``|R_ii|`` to a relative error ~ ``eps kappa``. The largest m with
    ``kappa <= 1/sqrt(eps)`` (float64: 6.7e7, float32: 2.9e3, about half the digits) and
    ``exp(|lambda_i| m) <= max**(1/4)`` (no column near over- or underflow), at least 1, at most
    ``MAX_REORTHO_EVERY``::

        m = clip(floor(min(-0.5 ln(eps) / (lambda_1 - lambda_k), 0.25 ln(max) / max_i |lambda_i|)), 1, 16)

    Args:
      exponents: ``[..., k]`` estimates (natural log per step, any order); the spread and the
        largest magnitude are taken over all of them.
      dtype: the floating dtype of the run (its ``eps`` and ``max``).

    Returns:
      a scalar int32 array, m.

    Example::

        auto_reortho_every(jnp.array([0.13, -5.62]), jnp.float64)   # 18.0 / 5.75 -> 3
    """
    finfo = jnp.finfo(dtype)
    budget = -0.5 * math.log(float(finfo.eps))
    span = 0.25 * math.log(float(finfo.max))
    exponents = jnp.asarray(exponents, jnp.float32)
    spread = jnp.max(exponents) - jnp.min(exponents)
    size = jnp.max(jnp.abs(exponents))
    tiny = jnp.finfo(jnp.float32).tiny
    m = jnp.minimum(budget / jnp.maximum(spread, tiny), span / jnp.maximum(size, tiny))
    return jnp.clip(jnp.floor(m), 1, MAX_REORTHO_EVERY).astype(jnp.int32)


def _spectrum(step, params, carry0, xs, cols, k, length, transient, reortho_every, per_step):
    flat0 = _flatten(carry0)
    batch, dim = flat0.shape
    dtype = flat0.dtype
    frame0 = _initial_frame(cols, batch, dim, k, dtype)
    auto = reortho_every == "auto"

    def advance(carry, frame, p, x):
        """One step of the carry and of the k tangent columns ``frame: [k, B, D]``."""
        new_carry, push = jax.linearize(lambda c: step(p, c, x)[0], carry)
        pushed = jax.vmap(push)(_unflatten(carry0, frame))
        return new_carry, _flatten_k(pushed)

    def reortho(t, books):
        """QR of the frame and the bookkeeping that changes only then (``books``: see ``state0``)."""
        frame, logs, count, all_logs, next_qr, reorthos, _ = books
        q, r = jnp.linalg.qr(jnp.moveaxis(frame, 0, -1))  # [B, D, k], [B, k, k]
        log_r = jnp.log(jnp.abs(jnp.diagonal(r, axis1=-2, axis2=-1)))
        measured = t >= transient
        logs = logs + jnp.where(measured, log_r, 0.0)
        # steps covered by the accumulated logs: up to the last re-orthonormalization
        count = jnp.where(measured, t + 1 - transient, count)
        if auto:
            # the spread from the logs of all steps so far (transient included), QR every step in the pilot
            all_logs = all_logs + log_r
            m = auto_reortho_every(all_logs / (t + 1).astype(dtype), dtype)
            next_qr = t + 1 + jnp.where(t + 1 < PILOT, 1, m)
        running = jnp.mean(logs, axis=0) / jnp.maximum(count, 1).astype(dtype)
        return jnp.moveaxis(q, -1, 0), logs, count, all_logs, next_qr, reorthos + 1, running

    def block(state):
        """Push the frame to the next QR step ``e - 1`` (one inner loop, no per-step branch), QR there."""
        start, carry, books, buffer, qr_at = state
        end = books[4] if auto else (start // reortho_every + 1) * reortho_every
        end = jnp.minimum(end, length)
        end = jnp.where(start < transient, jnp.minimum(end, transient), end)

        def push(t, carry_frame):
            at = lambda tree: jax.tree_util.tree_map(lambda a: a[t], tree)  # noqa: E731
            return advance(*carry_frame, at(params) if per_step else params, at(xs))

        carry, frame = jax.lax.fori_loop(start, end, push, (carry, books[0]))
        books = reortho(end - 1, (frame, *books[1:]))
        return end, carry, books, buffer.at[end - 1].set(books[-1]), qr_at.at[end - 1].set(True)

    zeros = jnp.zeros((batch, k), dtype)
    zero = jnp.zeros((), jnp.int32)
    # frame, sum of measured ln |R_ii|, steps they cover, sum of all ln |R_ii|, next QR step ('auto'),
    # number of QRs, running estimate
    books0 = (frame0, zeros, zero, zeros, jnp.ones((), jnp.int32), zero, jnp.zeros((k,), dtype))
    # the running estimate at each QR step, held in between (from the last QR, below)
    state0 = (zero, carry0, books0, jnp.zeros((length, k), dtype), jnp.zeros(length, bool))
    _, _, books, buffer, qr_at = jax.lax.while_loop(lambda s: s[0] < length, block, state0)
    last = jax.lax.cummax(jnp.where(qr_at, jnp.arange(length), -1))
    running = jnp.where((last >= 0)[:, None], buffer[jnp.maximum(last, 0)], 0.0)
    _, logs, count, _, _, reorthos, _ = books
    steps = length - transient
    per_example = logs / steps
    running = running[transient:]
    back = math.ceil(steps / 10)
    drift = running[-1] - running[max(steps - 1 - back, 0)]
    return LyapunovSpectrum(per_example.mean(axis=0), per_example, running, drift, count, reorthos)


def _flatten_k(tree) -> jax.Array:
    """Carry pytree with leaves ``[k, B, ...]`` -> ``[k, B, D]``."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.concatenate([leaf.reshape(*leaf.shape[:2], -1) for leaf in leaves], axis=-1)


_spectrum_jit = jax.jit(_spectrum, static_argnums=(0, 5, 6, 7, 8, 9))


def lyapunov_spectrum(
    step: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    xs: PyTree,
    k: int | None = None,
    *,
    length: int | None = None,
    transient: int = 0,
    reortho_every: int | str = "auto",
    init: str = "random",
    key: jax.Array | None = None,
    params_per_step: bool | None = None,
) -> LyapunovSpectrum:
    """Top ``k`` Lyapunov exponents of the carry dynamics ``h_{t+1} = step(params, h_t, x_t)[0]``.

    QR (Benettin) method: per batch example a frame ``Q: [D, k]`` is pushed
    forward, ``Q <- J_t Q`` (``jax.jvp``, vmapped over the k columns; ``J_t``
    is never formed), re-orthonormalized with ``Q, R = qr(Q)`` and
    ``ln |diag R|`` is accumulated; exponent ``i`` = sum / steps, natural log
    per step. All in one compiled loop (a ``lax.while_loop`` over the QR blocks, the
    steps of a block in an inner loop, no branch per step), finite where the product under- or
    overflows.

    The carry of each example is flattened to ``D`` coordinates: the leaves of
    ``jax.tree_util.tree_leaves(carry)`` (LSTM ``(c, h)``: c then h), each
    ``[B, ...]`` leaf raveled after the batch axis, concatenated. The step must
    treat batch examples independently (a batch norm across examples couples
    them; its cross-example terms then mix into each example's frame).

    Relation to ``gradient_flow``: the top exponent is the asymptotic log-rate
    of a generic backpropagated gradient, ``gradient_flow(...).fit.rate`` (the
    slope of ``ln ||dL/dh_t||`` per step going *back* from the loss; same
    sign): backpropagation multiplies by the transposed product, whose
    singular values are those of the forward product ``J_T ... J_1``
    (``tanh(g W h)``, N = 512, g = 0.5 and 2: within 0.004 over a fit window
    (100, 900) of T = 1000). ``step`` is a static argument (hashable; a new
    closure per call recompiles), as in ``gradient_flow``.

    Args:
      step: ``step(params, carry, x) -> (carry, y)`` or a ``Cell``.
      params: pytree of parameters (leading ``[L]`` axis for depth stacks).
      carry0: initial carry ``h_0``, floating leaves ``[B, ...]``. Started
        exactly at a fixed point (zeros for ``tanh(g W h)`` without input) the
        exponents are those of the fixed point's Jacobian.
      xs: inputs, leaves ``[T, B, ...]``; ``None`` for a depth stack (T = L)
        or an autonomous step with ``length``.
      k: number of exponents, ``1 <= k <= D``; ``None``: all ``D``.
      length: T when ``xs`` is ``None`` and the params are not per step.
      transient: burn-in steps: the carry and the frame are propagated and
        re-orthonormalized (so the frame aligns with the top Lyapunov
        directions) but ``ln |diag R|`` is not accumulated; the exponents
        average the remaining ``T - transient`` steps.
      reortho_every: QR only every m steps (and at the last step and the end of
        the transient); in between the frame is only propagated (``Q <- J Q``).
        Exact in exact arithmetic (the R factor of ``J_2 J_1 Q`` is ``R_2 R_1``);
        in floating point the columns spread apart like ``exp(lambda_i m)``, so the
        frame's condition number grows like ``kappa = exp((lambda_1 - lambda_k) m)``
        and the lower ``|R_ii|`` lose about ``eps kappa`` relative accuracy per QR
        (the error of exponent i is then ~ ``eps kappa / m``); at ``kappa ~ 1/eps``
        the lower columns collapse onto the top direction (tanh RNN, H = 64,
        float32: m = 4 moves the lowest of 64 exponents by 0.56, the top 8 by
        2e-6). ``'auto'`` (default): QR every step for the first ``PILOT`` = 32
        steps, then after each QR the next m from the running estimates of all
        steps so far (``auto_reortho_every``): the largest m with
        ``kappa <= 1/sqrt(eps)`` (float64: m <= 18.0 / (lambda_1 - lambda_k),
        float32: 7.97 / (lambda_1 - lambda_k)) and ``|lambda_i| m <= ln(max) / 4``,
        in [1, 16]. The error this adds, ~ ``eps E[kappa] / m`` per exponent, exceeds
        ``sqrt(eps) / m`` where the spread fluctuates from block to block (measured
        against QR at every step on the same trajectory, float64: ``tanh(2 W h)``,
        N = k = 64, T = 10,000: m = 3, 5e-9; driven tanh RNNs, H = 12 and 64,
        weight scale 0.9: 2e-6 and 6e-7; float32, the same RNNs: 3e-4 and 3e-3, about
        10x the float32 error of QR at every step, so pass 1 there for the lowest
        exponents). It assumes the spread is roughly stationary (the running mean
        of all steps); a sudden jump in the spread
        costs accuracy until the running mean follows. An int m is used as given.
      init: initial frame, ``'random'`` (Gaussian columns from ``key``,
        orthonormalized, independent per example, drawn in float32 for every
        dtype; with the default threefry key column j does not depend on k, so
        a run with k columns gives the top k of a run with more) or
        ``'identity'`` (the first k coordinate vectors; fine for dense
        dynamics, but not sorted for e.g. a diagonal system).
      key: PRNG key for ``init='random'``; default ``jax.random.key(0)``.
      params_per_step: params carry a leading ``[T]`` axis sliced per step
        (depth stacks); taken from the ``Cell`` when one is given.

    Returns:
      ``LyapunovSpectrum(exponents [k], per_example [B, k], running [T - transient, k],
      drift [k], steps)``.

    Example::

        cell = gradflow.cells.get("rnn", hidden_size=64)
        params = cell.init(jax.random.key(0), input_size=8)
        xs = jax.random.normal(jax.random.key(1), (2000, 4, 8))            # [T, B, I]
        res = gradflow.measure.lyapunov_spectrum(cell, params, cell.initial_carry(4), xs, k=8)
        res.exponents[0], res.drift[0]   # top exponent (ln per step), its change over the last 10%
    """
    step, per_step = as_step(step, params_per_step)
    carry_leaves = jax.tree_util.tree_leaves(carry0)
    if not carry_leaves or any(
        jnp.ndim(a) < 1 or not jnp.issubdtype(jnp.result_type(a), jnp.floating) for a in carry_leaves
    ):
        raise ValueError(f"carry0 must be a pytree of floating [B, ...] arrays, got {_shapes(carry0)}")
    batch = {a.shape[0] for a in carry_leaves}
    if len(batch) != 1:
        raise ValueError(f"carry0 leaves must share the batch axis [B, ...], got {_shapes(carry0)}")
    dim = sum(math.prod(a.shape[1:]) for a in carry_leaves)
    for a in jax.tree_util.tree_leaves(xs):
        if jnp.ndim(a) >= 2 and a.shape[1] not in batch:
            raise ValueError(
                f"xs has shape {list(a.shape)} but the carry has batch {next(iter(batch))}; "
                "expected xs as [T, B, ...] (time axis first)"
            )
    steps = _length(params, xs, length, per_step)
    k = dim if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= dim:
        raise ValueError(
            f"k must be an int in [1, D={dim}] (D = flattened carry size per example), got {k!r}"
        )
    if isinstance(transient, bool) or not isinstance(transient, int) or not 0 <= transient < steps:
        raise ValueError(f"transient must be an int in [0, T-1] = [0, {steps - 1}], got {transient!r}")
    if reortho_every != "auto" and (
        isinstance(reortho_every, bool) or not isinstance(reortho_every, int) or reortho_every < 1
    ):
        raise ValueError(f"reortho_every must be a positive int or 'auto', got {reortho_every!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)  # noqa: E731
    try:
        carry1, _ = jax.eval_shape(step, first(params) if per_step else params, carry0, first(xs))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"step(params, carry0, xs[0]) failed: {str(err).splitlines()[0]}") from None
    if jax.tree_util.tree_structure(carry1) != jax.tree_util.tree_structure(carry0) or any(
        jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b)
        for a, b in zip(carry_leaves, jax.tree_util.tree_leaves(carry1), strict=True)
    ):
        raise ValueError(
            f"carry0 does not match the carry that step returns: carry0 is {_shapes(carry0)}, "
            f"step returns {_shapes(carry1)}"
        )
    cols = None
    if init == "random":
        # float32 draws whatever the dtype (float32 and float64 runs start alike); with threefry's
        # counter-based bits, column j is the same for every k
        key = jax.random.key(0) if key is None else key
        cols = jax.random.normal(key, (k, next(iter(batch)), dim), jnp.float32)
    return _spectrum_jit(step, params, carry0, xs, cols, k, steps, transient, reortho_every, per_step)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree)


def _length(params, xs, length, per_step) -> int:
    lengths = {a.shape[0] for a in jax.tree_util.tree_leaves(xs) if jnp.ndim(a) >= 1}
    if any(jnp.ndim(a) == 0 for a in jax.tree_util.tree_leaves(xs)):
        raise ValueError(f"xs has a scalar leaf; expected a leading time axis [T, B, ...], got {_shapes(xs)}")
    if per_step:
        lengths |= {a.shape[0] for a in jax.tree_util.tree_leaves(params)}
    if length is not None:
        lengths.add(length)
    if not lengths:
        raise ValueError("xs is None: pass length=T for an autonomous step (or params_per_step for a stack)")
    if len(lengths) != 1:
        raise ValueError(
            f"xs, length and per-step params must agree on one T; got xs {_shapes(xs)}, length={length!r}"
            + (
                f", params leading axes {sorted({a.shape[0] for a in jax.tree_util.tree_leaves(params)})}"
                if per_step
                else ""
            )
        )
    (steps,) = lengths
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"T must be a positive int, got T = {steps!r}")
    return steps
