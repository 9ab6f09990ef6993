"""The identity ops with custom VJPs that read a scan's cotangents in log space (see ``flow.py``).

Convention of the fast taps (``probe``, ``rescale``, ``join``, ``ys_tap``): the scan threads two
scalars ``s`` and ``r`` next to the carry. Their cotangents ``S`` and ``R`` say what the carry
cotangent ``g`` means: the true ``dL/dh`` is ``g * exp(S - R)``. ``probe`` (before each step) reads
``||g||``, writes the per-leaf log10 norms to the cotangent of ``d`` and, instead of multiplying
``g`` by ``1/||g||`` itself, hands ``R = ln ||g||`` on; ``rescale``/``join`` (after the step, so
right before the step's own VJP in the backward pass) apply it in the one multiply that also
brings a per-step output cotangent into the same scale. So each step costs one reduction per
carry leaf and one multiply, and the backward vector never under- or overflows.

``param_tap`` sits on the params the step reads and turns their cotangent back into true units
(``* exp(S)``, fused with the scan's accumulation), so ``grads`` are the ordinary gradient; it
reads loop-invariant inputs only, so the scan keeps the weights loop-invariant (no per-step
copies saved). ``gradient_flow`` (``flow.py``) and ``model_flow`` (``model.py``) use the same taps.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gradflow.measure.fit import LN10

_tree_map = jax.tree_util.tree_map


def float_leaves(tree):
    """The floating-point leaves of ``tree``."""
    return [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]


def sumsq(x, dtype):
    """``sum(x ** 2)`` in ``dtype``. For a matrix, as the matrix-vector product ``(x * x) @ 1`` and a
    sum over its rows: inside a scan on CPU that costs a fraction of a full reduction's kernels."""
    x = x.astype(dtype)
    if x.ndim < 2:
        return jnp.sum(x * x)
    return jnp.sum((x * x).reshape(-1, x.shape[-1]) @ jnp.ones((x.shape[-1],), dtype))


_LANES = 128


def log10_norm(tree, dtype):
    """log10 of the global Frobenius norm of the floating leaves of ``tree``.

    Every leaf goes into one zero-padded ``[n, 128]`` buffer summed by ``sumsq``: inside a scan on
    CPU that is 3 kernels for the whole tree instead of 2-3 per leaf (the per-step
    parameter-gradient norm of ``step_shares``)."""
    leaves = [leaf.astype(dtype).reshape(-1) for leaf in float_leaves(tree)]
    if not leaves:
        return 0.5 * jnp.log10(jnp.zeros((), dtype))
    size = sum(leaf.shape[0] for leaf in leaves)
    flat = jnp.concatenate([*leaves, jnp.zeros(((-size) % _LANES,), dtype)])
    return 0.5 * jnp.log10(sumsq(flat.reshape(-1, _LANES), dtype))


def all_finite(tree):
    """Scalar bool: every floating leaf of ``tree`` is finite."""
    leaves = float_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def _zero_sum(x, dtype):
    if x.ndim < 2:
        return jnp.sum(x * 0).astype(dtype)
    return jnp.sum(x.reshape(-1, x.shape[-1]) @ jnp.zeros((x.shape[-1],), x.dtype)).astype(dtype)


def finite_flag(tree, dtype):
    """Scalar ``0`` if every floating leaf of ``tree`` is finite, else NaN (``inf * 0`` and ``NaN * 0``
    are NaN): a matrix-vector product with zeros per leaf, cheaper in a scan than ``isfinite`` and
    a reduction."""
    return sum((_zero_sum(x, dtype) for x in float_leaves(tree)), jnp.zeros((), dtype))


def _log_scale(total):
    """``ln sqrt(total)``, 0 where that is not finite (a zero, inf or NaN cotangent)."""
    log_n = 0.5 * jnp.log(total)
    return jnp.where(jnp.isfinite(log_n), log_n, 0.0)


# -- the fast taps --------------------------------------------------------------------------------


@jax.custom_vjp
def probe(carry, s, r, d, tz, k):
    """``(carry, s, r)``; backward: ``d``'s cotangent gets each carry leaf's log10 norm (true
    units), ``r``'s the pending ``ln ||g||``, ``tz``'s the slot index ``k`` for ``param_tap``."""
    del d, tz, k
    return carry, s, r


def _probe_fwd(carry, s, r, d, tz, k):
    return probe(carry, s, r, d, tz, k), k


def _probe_bwd(k, cts):
    g_carry, big_s, big_r = cts
    dtype = big_s.dtype
    sq = _tree_map(lambda g: sumsq(g, dtype), g_carry)
    shift = big_s - big_r  # true = g * exp(shift)
    d_ct = _tree_map(lambda q: 0.5 * jnp.log10(q) + shift / LN10, sq)
    log_n = _log_scale(sum(jax.tree_util.tree_leaves(sq)))
    return g_carry, shift + log_n, log_n, d_ct, k.astype(dtype), jnp.zeros_like(k)


probe.defvjp(_probe_fwd, _probe_bwd)


@jax.custom_vjp
def rescale(carry, s, r):
    """``(carry, s, r)``; backward: the carry cotangent ``* exp(-R)`` (the pending scale)."""
    return carry, s, r


def _rescale_fwd(carry, s, r):
    return (carry, s, r), None


def _rescale_bwd(_, cts):
    g_carry, big_s, big_r = cts
    factor = jnp.exp(-big_r)
    return _tree_map(lambda g: g * factor.astype(g.dtype), g_carry), big_s, jnp.zeros_like(big_r)


rescale.defvjp(_rescale_fwd, _rescale_bwd)


@jax.custom_vjp
def join(carry, y, s, r, z):
    """``(carry, y, s, r, z)``; backward: brings ``y``'s cotangent (unit norm, its log norm ``L``
    the cotangent of ``z``, from ``ys_tap``) and the carry's into one scale ``S' = max(S, L)``."""
    return carry, y, s, r, z


def _join_fwd(carry, y, s, r, z):
    return (carry, y, s, r, z), None


def _join_bwd(_, cts):
    g_carry, g_y, big_s, big_r, log_y = cts
    new_s = jnp.maximum(big_s, log_y)  # log_y is -inf where the step's output has no cotangent
    to_carry = jnp.exp(big_s - big_r - new_s)
    to_y = jnp.exp(log_y - new_s)
    g_carry = _tree_map(lambda g: g * to_carry.astype(g.dtype), g_carry)
    g_y = _tree_map(lambda g: g * to_y.astype(g.dtype), g_y)
    return g_carry, g_y, new_s, jnp.zeros_like(big_r), jnp.zeros_like(log_y)


join.defvjp(_join_fwd, _join_bwd)


@jax.custom_vjp
def ys_tap(ys, z):
    """``ys`` (leaves ``[T, ...]``); backward: each step's cotangent scaled to unit norm, ``z: [T]``'s
    cotangent its log norm (-inf where zero or not finite; such a step's cotangent becomes ``0 *``
    itself, so a NaN still shows)."""
    del z
    return ys


def _ys_tap_fwd(ys, z):
    return ys, z


def _ys_tap_bwd(z, g_ys):
    dtype = z.dtype
    q = sum(jnp.sum(jnp.square(g.astype(dtype)).reshape(g.shape[0], -1), axis=1) for g in float_leaves(g_ys))
    log_y = 0.5 * jnp.log(q)
    usable = jnp.isfinite(log_y)
    scale = jnp.where(usable, jnp.exp(-log_y), 0.0)
    g_ys = _tree_map(lambda g: g * scale.reshape(-1, *[1] * (g.ndim - 1)).astype(g.dtype), g_ys)
    return g_ys, jnp.where(usable, log_y, -jnp.inf)


ys_tap.defvjp(_ys_tap_fwd, _ys_tap_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def param_tap(with_norm, params, slots):
    """``(params, 0, 0)``; backward: params cotangent ``* exp(S)`` (S = the first 0's cotangent).
    With ``with_norm``, ``slots: [K]`` gets log10 of this step's param-gradient norm at the slot
    index (the second 0's cotangent).

    It reads only loop-invariant inputs, so the scan keeps the weights loop-invariant (no per-step
    copies saved for the backward pass).
    """
    del with_norm
    zero = jnp.zeros((), slots.dtype)
    return params, zero, zero


def _param_tap_fwd(with_norm, params, slots):
    return param_tap(with_norm, params, slots), slots.shape[0]


def _param_tap_bwd(with_norm, n_slots, cts):
    g_params, big_s, k = cts
    slot_ct = jnp.zeros((n_slots,), big_s.dtype)
    if with_norm:
        log10 = log10_norm(g_params, big_s.dtype) + big_s / LN10
        slot_ct = jnp.where(jnp.arange(n_slots) == k, log10, slot_ct)
    g_params = _tree_map(lambda g: g * jnp.exp(big_s).astype(g.dtype), g_params)
    return g_params, slot_ct


param_tap.defvjp(_param_tap_fwd, _param_tap_bwd)
