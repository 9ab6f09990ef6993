"""Per-step gradient norms ``||dL/dh_t||`` of a scanned cell, in one backward pass.

How it works: the scan body is wrapped in identity ops with custom VJPs (``taps.py``).
``probe`` sits on the carry before each step. On the way back it reads the carry
cotangent (its per-leaf norms are returned as the "gradient" of a zero dummy input,
so the norms of all steps come out of the single ``jax.grad``) and hands on the log
of its norm; ``rescale`` (or ``join`` where the loss reads the step outputs) sits
after each step and, right before the step's own VJP, scales the cotangent to unit
norm in the same multiply that brings the step output's cotangent (unit norm, from
``ys_tap``, which reads all steps' output norms at once) into one scale. The log of
that scale is the cotangent ``S`` of a scalar ``s`` threaded through the carry, so
the backward vector never under- or overflows; its true size is ``exp(S)``.
``param_tap`` sits on the params the step reads and turns their cotangent back into
true units (``* exp(S)``), so ``grads`` are the ordinary gradient; it depends on the
params alone, so the scan still treats them as loop-invariant (no per-step copies
of the weights are saved). With ``remat``, ``remat.py`` scans in checkpointed
segments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow.measure import remat as _remat
from gradflow.measure.fit import LN10, DecayFit, decay_fit
from gradflow.measure.taps import all_finite, finite_flag, join, param_tap, probe, rescale, ys_tap
from gradflow.measure.taps import float_leaves as _float_leaves
from gradflow.seam import Cell, as_step

PyTree = Any
RematWarning = _remat.RematWarning


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


def _reads(loss_fn, ys, carry, extra) -> bool:
    """Whether ``loss_fn(ys, carry, *extra)`` reads any leaf of ``ys`` (traced once, from shapes)."""
    closed = jax.make_jaxpr(loss_fn)(ys, carry, *extra)
    n_ys = len(jax.tree_util.tree_leaves(ys))
    used = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars} | {id(v) for v in closed.jaxpr.outvars}
    return any(id(v) in used for v in closed.jaxpr.invars[:n_ys])


def _flow(step, params, carry0, xs, loss_fn, fit_window, seg, per_step, length, shares, loss_params, ckpt):
    dtype = jnp.result_type(*_float_leaves(carry0))
    d0 = jax.tree_util.tree_map(lambda _: jnp.zeros((length + 1,), dtype), carry0)
    w0 = jnp.zeros((length if shares else 1,), dtype)
    extra = () if loss_params is None else (loss_params,)
    first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)  # noqa: E731
    _, y_spec = jax.eval_shape(step, first(params) if per_step else params, carry0, first(xs))
    ys_spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((length, *a.shape), a.dtype), y_spec)
    with_ys = _reads(loss_fn, ys_spec, carry0, extra)

    def objective(params, d, w, lp):
        def body(slots, state, inp):
            carry, s, r = state
            x, (p_t, d_t), k = inp
            p, s_p, tz = param_tap(shares, params if p_t is None else p_t, slots)
            carry, s, r = probe(carry, s, r, d_t, tz, k)
            carry, y = step(p, carry, x)
            flag = finite_flag(carry, dtype)
            if not with_ys:
                return rescale(carry, s + s_p, r), (None, None, flag)
            carry, y, s, r, z = join(carry, y, s + s_p, r, jnp.zeros((), dtype))
            return (carry, s, r), (y, z, flag)

        zero = jnp.zeros((), dtype)
        d_steps = jax.tree_util.tree_map(lambda a: a[:length], d)
        dxs = (params if per_step else None, d_steps)
        state, (ys, z, flags) = _remat.scan_steps(body, (carry0, zero, zero), w, xs, dxs, length, seg, ckpt)
        carry, s, _ = probe(*state, jax.tree_util.tree_map(lambda a: a[length], d), zero, zero)
        if with_ys:
            ys = ys_tap(ys, z)
        else:  # the loss does not read them: no per-step outputs are kept
            ys = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), ys_spec)
        loss = loss_fn(ys, carry, *lp) if lp else loss_fn(ys, carry)
        # `0 * s` keeps the cotangents non-symbolic, so probe's backward always runs
        # (also when the loss ignores the final carry).
        return loss + 0 * s.astype(loss.dtype), flags

    lp = extra if extra else ()
    (loss, flags), (grads, log10_norms, step_log10, lp_grads) = jax.value_and_grad(
        objective, argnums=(0, 1, 2, 3), has_aux=True
    )(params, d0, w0, lp)
    if extra:
        grads = (grads, lp_grads[0])
    finite = jnp.concatenate([all_finite(carry0)[None], flags == 0])
    return _result(loss, grads, log10_norms, step_log10 if shares else None, finite, fit_window)


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


_flow_jit = jax.jit(_flow, static_argnums=(0, 4, 5, 6, 7, 8, 9, 11))  # loss_params: traced


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
        segments (``jax.checkpoint``) so memory grows like sqrt(T), for one more
        forward pass. ``None`` (default): on, with segments of sqrt(T) steps and a
        ``RematWarning``, when the residuals a plain backward pass keeps would
        exceed ``remat.REMAT_MEMORY_FRACTION`` (1/4) of the device's memory
        (GPU/TPU ``bytes_limit``, CPU physical RAM); ``False``: off.
      params_per_step: params carry a leading ``[T]`` axis sliced per step
        (depth stacks); taken from the ``Cell`` when one is given.
      step_shares: also compute each step's share of ``grads``
        (``step_grad_log10_norms``, ``grad_share``): a param-gradient norm per
        step; ``False`` (both fields ``None``) saves that.
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
    if remat is not None and not isinstance(remat, bool) and remat != "sqrt" and bad_length:
        raise ValueError(f"remat must be True, False, 'sqrt' or a positive segment length, got {remat!r}")
    shapes = (step, params, carry0, xs, per_step, length)
    seg = _remat.choose_segment(
        remat, length, lambda: _remat.residual_bytes(*shapes), lambda: _remat.residual_bound(*shapes)
    )
    ckpt = seg is not None
    if seg is None and step_shares and length > _remat.CHUNK_ABOVE:
        seg = _remat.sqrt_segment(length)  # chunks, not checkpointed: per-step slot updates stay O(sqrt T)
    return _flow_jit(
        step,
        params,
        carry0,
        xs,
        loss_fn,
        fit_window,
        seg,
        per_step,
        length,
        bool(step_shares),
        loss_params,
        ckpt,
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
