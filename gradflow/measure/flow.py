"""Per-step gradient norms ``||dL/dh_t||`` of a scanned cell, in one backward pass.

How it works: the scan body is wrapped in identity ops with custom VJPs.
``_tap`` sits on the carry before each step. On the way back it reads the
carry cotangent (its per-leaf norms are returned as the "gradient" of a zero
dummy input, so the norms of all steps come out of the single ``jax.grad``),
rescales the cotangent to unit norm and adds the log of the scale to the
cotangent of a scalar ``s`` threaded through the carry. So the backward vector
never under- or overflows; its true size is ``||g|| * exp(S)`` with ``S`` the
cotangent of ``s``. ``_param_tap`` sits on the params the step reads and turns
their cotangent back into true units (``* exp(S)``), so ``grads`` are the
ordinary gradient; it depends on the params alone, so the scan still treats
them as loop-invariant (no per-step copies of the weights are saved).
``_inject`` sits after each step and brings a per-step loss term (cotangent
of ``y``, true units) into the carry cotangent's scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.measure.fit import LN10, DecayFit, decay_fit
from gradflow.seam import Cell, as_step

PyTree = Any


class GradientFlow(NamedTuple):
    """Result of ``gradient_flow`` (a pytree: works under ``jit``/``vmap``).

    Attributes:
      loss: scalar loss.
      norms: pytree like the carry, leaves ``[T+1]``: entry t is ``||dL/dh_t||``
        (Frobenius over batch and features) for that carry leaf; 0 or inf where
        the dtype under/overflows.
      log10_norms: like ``norms``, in log10, finite where ``norms`` is not.
      total_log10_norms: ``[T+1]``, log10 of the norm over all carry leaves.
      grads: ``dL/dparams``, shaped like params.
      step_grad_log10_norms: ``[T]``; entry t-1 is log10 of the norm of the
        parameter-gradient contribution of step t (the step from h_{t-1} to h_t);
        ``None`` with ``step_shares=False``.
      grad_share: ``[T]``, those norms divided by their sum: how far back the
        weight update learns from; ``None`` with ``step_shares=False``.
      fit: ``DecayFit`` per carry leaf (leaves are scalars).
      total_fit: ``DecayFit`` of ``total_log10_norms``.
      nonfinite_step: first t whose carry h_t holds inf/NaN, -1 if none.
      nonfinite_grad_step: last t (closest to the loss) whose ``dL/dh_t`` is
        NaN or inf, -1 if none.
    """

    loss: jax.Array
    norms: PyTree
    log10_norms: PyTree
    total_log10_norms: jax.Array
    grads: PyTree
    step_grad_log10_norms: jax.Array
    grad_share: jax.Array
    fit: PyTree
    total_fit: DecayFit
    nonfinite_step: jax.Array
    nonfinite_grad_step: jax.Array


def _log10_norm(tree, dtype):
    """log10 of the global Frobenius norm of the floating leaves of ``tree``."""
    sq = [jnp.sum(jnp.square(leaf.astype(dtype))) for leaf in _float_leaves(tree)]
    total = sum(sq) if sq else jnp.zeros((), dtype)
    return 0.5 * jnp.log10(total)


def _float_leaves(tree):
    return [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]


def _usable(log_scale):
    return jnp.isfinite(log_scale)


@jax.custom_vjp
def _tap(carry, s, d, tz, t):
    del d, tz, t
    return carry, s


def _tap_fwd(carry, s, d, tz, t):
    return _tap(carry, s, d, tz, t), t


def _tap_bwd(t, cts):
    g_carry, big_s = cts
    dtype = big_s.dtype
    d_ct = jax.tree_util.tree_map(lambda g: _log10_norm(g, dtype) + big_s / LN10, g_carry)
    log_n = _log10_norm(g_carry, dtype) * LN10
    log_n = jnp.where(_usable(log_n), log_n, 0.0)
    g_carry = jax.tree_util.tree_map(lambda g: g * jnp.exp(-log_n).astype(g.dtype), g_carry)
    # the "cotangent" of tz hands the step index to _param_tap's backward
    return g_carry, big_s + log_n, d_ct, t.astype(dtype), jnp.zeros_like(t)


_tap.defvjp(_tap_fwd, _tap_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _param_tap(with_norm, params, slots):
    """``(params, 0, 0)``; backward: params cotangent ``* exp(S)`` (S = the first
    0's cotangent). With ``with_norm``, ``slots: [T]`` gets log10 of this
    step's param-gradient norm at the step index (the second 0's cotangent).

    It reads only loop-invariant inputs, so the scan keeps the weights
    loop-invariant (no per-step copies saved for the backward pass).
    """
    del with_norm
    zero = jnp.zeros((), slots.dtype)
    return params, zero, zero


def _param_tap_fwd(with_norm, params, slots):
    return _param_tap(with_norm, params, slots), slots.shape[0]


def _param_tap_bwd(with_norm, n_slots, cts):
    g_params, big_s, t = cts
    slot_ct = jnp.zeros((n_slots,), big_s.dtype)
    if with_norm:
        log10 = _log10_norm(g_params, big_s.dtype) + big_s / LN10
        slot_ct = jnp.where(jnp.arange(n_slots) == t, log10, slot_ct)
    g_params = jax.tree_util.tree_map(lambda g: g * jnp.exp(big_s).astype(g.dtype), g_params)
    return g_params, slot_ct


_param_tap.defvjp(_param_tap_fwd, _param_tap_bwd)


@jax.custom_vjp
def _inject(carry, y, s):
    return carry, y, s


def _inject_fwd(carry, y, s):
    return _inject(carry, y, s), None


def _inject_bwd(_, cts):
    g_carry, g_y, big_s = cts
    log_y = _log10_norm(g_y, big_s.dtype) * LN10
    new_s = jnp.where(_usable(log_y), jnp.maximum(big_s, log_y), big_s)
    to_carry = jnp.exp(big_s - new_s)
    to_y = jnp.where(_usable(log_y), jnp.exp(-new_s), 0.0)
    g_carry = jax.tree_util.tree_map(lambda g: g * to_carry.astype(g.dtype), g_carry)
    g_y = jax.tree_util.tree_map(lambda g: g * to_y.astype(g.dtype), g_y)
    return g_carry, g_y, new_s


_inject.defvjp(_inject_fwd, _inject_bwd)


def _all_finite(tree):
    leaves = _float_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def _scan(body, init, xs, length, remat):
    if not remat:
        return jax.lax.scan(body, init, xs, length=length)
    seg = max(1, round(math.sqrt(length))) if remat is True or remat == "sqrt" else int(remat)
    n_seg, rest = divmod(length, seg)

    @jax.checkpoint
    def segment(carry, xs_seg):
        return jax.lax.scan(body, carry, xs_seg)

    head = jax.tree_util.tree_map(lambda a: a[: n_seg * seg].reshape((n_seg, seg, *a.shape[1:])), xs)
    carry, ys = jax.lax.scan(segment, init, head, length=n_seg)
    ys = jax.tree_util.tree_map(lambda a: a.reshape((n_seg * seg, *a.shape[2:])), ys)
    if rest:
        tail = jax.tree_util.tree_map(lambda a: a[n_seg * seg :], xs)
        carry, ys_tail = jax.lax.scan(body, carry, tail, length=rest)
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
    return carry, ys


def _flow(step, params, carry0, xs, loss_fn, fit_window, remat, per_step, length, step_shares, loss_params):
    dtype = jnp.result_type(*_float_leaves(carry0))
    d0 = jax.tree_util.tree_map(lambda _: jnp.zeros((length + 1,), dtype), carry0)
    w0 = jnp.zeros((length if step_shares else 1,), dtype)
    with_lp = loss_params is not None

    def objective(params, d, w, lp):
        def body(state, inp):
            carry, s = state
            p, x, d_t, t = inp
            p, s_p, tz = _param_tap(step_shares, params if p is None else p, w)
            carry, s = _tap(carry, s, d_t, tz, t)
            carry, y = step(p, carry, x)
            carry, y, s = _inject(carry, y, s + s_p)
            return (carry, s), (y, _all_finite(carry))

        d_steps = jax.tree_util.tree_map(lambda a: a[:length], d)
        inputs = (params if per_step else None, xs, d_steps, jnp.arange(length, dtype=dtype))
        (carry, s), (ys, finite) = _scan(body, (carry0, jnp.zeros((), dtype)), inputs, length, remat)
        zero = jnp.zeros((), dtype)
        carry, s = _tap(carry, s, jax.tree_util.tree_map(lambda a: a[length], d), zero, zero)
        loss = loss_fn(ys, carry, lp) if with_lp else loss_fn(ys, carry)
        # `0 * s` keeps the cotangents non-symbolic, so _tap's backward always runs
        # (also when the loss ignores the final carry).
        return loss + 0 * s.astype(loss.dtype), finite

    (loss, finite), (grads, log10_norms, step_log10, lp_grads) = jax.value_and_grad(
        objective, argnums=(0, 1, 2, 3), has_aux=True
    )(params, d0, w0, loss_params if with_lp else jnp.zeros((), dtype))
    if with_lp:
        grads = (grads, lp_grads)

    finite = jnp.concatenate([_all_finite(carry0)[None], finite])
    return _result(loss, grads, log10_norms, step_log10 if step_shares else None, finite, fit_window)


def _result(loss, grads, log10_norms, step_log10, finite, fit_window) -> GradientFlow:
    """A ``GradientFlow`` from the backward pass's outputs; ``finite: [T+1]`` says h_t is finite."""
    length = finite.shape[0] - 1
    leaves = jax.tree_util.tree_leaves(log10_norms)
    total = 0.5 * jax.scipy.special.logsumexp(2.0 * LN10 * jnp.stack(leaves), axis=0) / LN10
    t = jnp.arange(length + 1)
    nonfinite_step = jnp.min(jnp.where(finite, length + 1, t))
    bad_grad = jnp.isnan(total) | (total == jnp.inf)
    share = None
    if step_log10 is not None:
        share = jnp.exp((step_log10 - jnp.max(step_log10)) * LN10)
        share = share / jnp.sum(share)
    return GradientFlow(
        loss=loss,
        norms=jax.tree_util.tree_map(lambda a: jnp.power(10.0, a).astype(a.dtype), log10_norms),
        log10_norms=log10_norms,
        total_log10_norms=total,
        grads=grads,
        step_grad_log10_norms=step_log10,
        grad_share=share,
        fit=jax.tree_util.tree_map(lambda a: decay_fit(a, fit_window), log10_norms),
        total_fit=decay_fit(total, fit_window),
        nonfinite_step=jnp.where(nonfinite_step > length, -1, nonfinite_step),
        nonfinite_grad_step=jnp.max(jnp.where(bad_grad, t, -1)),
    )


_flow_jit = jax.jit(_flow, static_argnums=(0, 4, 5, 6, 7, 8, 9))  # loss_params: traced


def gradient_flow(
    step: Cell | Callable,
    params: PyTree,
    carry0: PyTree,
    xs: PyTree,
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    *,
    fit_window: tuple[int, int] | None = None,
    remat: bool | int | str | None = None,
    params_per_step: bool | None = None,
    step_shares: bool = True,
    loss_params: PyTree = None,
) -> GradientFlow:
    """Per-step gradient norms ``||dL/dh_t||``, t = 0..T, and ``dL/dparams`` in one backward pass.

    Args:
      step: ``step(params, carry, x) -> (carry, y)`` or a ``Cell``.
      params: pytree of parameters.
      carry0: initial carry ``h_0``, a pytree of floating ``[B, ...]`` arrays.
      xs: inputs with a leading time axis, leaves ``[T, B, ...]`` (``None`` for a
        depth stack, whose length is the number of layers).
      loss_fn: ``loss_fn(ys, final_carry) -> scalar`` with ``ys`` leaves ``[T, B, ...]``.
      fit_window: ``(k_min, k_max)`` steps back from the loss for the decay fit.
      remat: ``True``/``'sqrt'`` or a segment length: checkpoint the scan in
        segments (``jax.checkpoint``) so memory grows like sqrt(T).
      params_per_step: params carry a leading ``[T]`` axis sliced per step
        (depth stacks); taken from the ``Cell`` when one is given.
      step_shares: also compute each step's share of ``grads``
        (``step_grad_log10_norms``, ``grad_share``); it adds an O(T) vector
        update per step, so ``False`` (both fields ``None``) saves a little
        at very large T.
      loss_params: parameters the loss reads outside the scan (a readout);
        then ``loss_fn(ys, final_carry, loss_params)`` and ``grads`` is the
        pair ``(dL/dparams, dL/dloss_params)``, still one backward pass.

    Returns:
      ``GradientFlow``; ``norms[t]`` is the norm of the gradient with respect to
      a perturbation added to the carry after ``t`` steps, each carry leaf an
      independent state coordinate (LSTM: ``c`` and ``h`` separately).

    Example::

        res = gradient_flow(cell, params, cell.initial_carry(8), xs,
                            lambda ys, h: jnp.sum(h ** 2))
        res.log10_norms, res.fit.rate
    """
    step, per_step = as_step(step, params_per_step)
    length = _validate(step, params, carry0, xs, loss_fn, per_step, loss_params)
    if fit_window is not None:
        fit_window = tuple(int(k) for k in fit_window)
        if len(fit_window) != 2 or not 0 <= fit_window[0] < fit_window[1] <= length:
            raise ValueError(
                f"fit_window = {fit_window}: expected (k_min, k_max) steps back with "
                f"0 <= k_min < k_max <= T = {length}"
            )
    bad_length = isinstance(remat, bool) or not isinstance(remat, int) or remat < 1
    if remat is not None and remat is not True and remat != "sqrt" and bad_length:
        raise ValueError(f"remat must be True, 'sqrt' or a positive segment length, got {remat!r}")
    remat = remat or None
    return _flow_jit(
        step, params, carry0, xs, loss_fn, fit_window, remat, per_step, length, bool(step_shares), loss_params
    )


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree)


def _validate(step, params, carry0, xs, loss_fn, per_step, loss_params=None) -> int:
    """Check shapes once, with abstract evaluation; return T."""
    carry_leaves = jax.tree_util.tree_leaves(carry0)
    if not carry_leaves:
        raise ValueError("carry0 is empty; expected a pytree of [B, ...] arrays")
    for leaf in carry_leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"carry0 leaves must be floating arrays, got {_shapes(carry0)}")
    lengths = {a.shape[0] for a in jax.tree_util.tree_leaves(xs) if jnp.ndim(a) >= 1}
    if any(jnp.ndim(a) == 0 for a in jax.tree_util.tree_leaves(xs)):
        raise ValueError(f"xs has a scalar leaf; expected a leading time axis [T, B, ...], got {_shapes(xs)}")
    if per_step:
        lengths |= {a.shape[0] for a in jax.tree_util.tree_leaves(params)}
    if len(lengths) != 1:
        if per_step:
            layers = sorted({a.shape[0] for a in jax.tree_util.tree_leaves(params)})
            raise ValueError(
                f"xs must have one entry per layer: the stack has L = {layers} layers, xs is {_shapes(xs)} "
                "(pass xs=None for a depth stack without inputs)"
            )
        raise ValueError(f"xs must share one leading time axis [T, ...]; got {_shapes(xs)}")
    (length,) = lengths
    if length < 1:
        raise ValueError("xs has T = 0 steps; expected at least one")
    batch = carry_leaves[0].shape[0] if carry_leaves[0].ndim else None
    for a in jax.tree_util.tree_leaves(xs):
        if jnp.ndim(a) >= 2 and batch is not None and a.shape[1] != batch:
            raise ValueError(
                f"xs has shape {list(a.shape)} but the carry has batch {batch}; "
                f"expected xs as [T, {batch}, ...] (time axis first)"
            )
    first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)  # noqa: E731
    p0 = first(params) if per_step else params
    try:
        carry1, y = jax.eval_shape(step, p0, carry0, first(xs))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"step(params, carry0, xs[0]) failed: {str(err).splitlines()[0]}") from None
    if jax.tree_util.tree_structure(carry1) != jax.tree_util.tree_structure(carry0) or any(
        jnp.shape(a) != b.shape or jnp.result_type(a) != b.dtype
        for a, b in zip(carry_leaves, jax.tree_util.tree_leaves(carry1), strict=True)
    ):
        raise ValueError(
            f"carry0 does not match the carry that step returns: carry0 is {_shapes(carry0)}, "
            f"step returns {_shapes(carry1)} (for a dtype change: give params, carry0 and xs one dtype)"
        )
    ys = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((length, *a.shape), a.dtype), y)
    extra = () if loss_params is None else (loss_params,)
    out = jax.eval_shape(loss_fn, ys, carry1, *extra)
    if not hasattr(out, "shape") or out.shape != ():
        args = "ys, final_carry" + (", loss_params" if extra else "")
        raise ValueError(f"loss_fn({args}) must return a scalar, got {_shapes(out)}")
    return length
