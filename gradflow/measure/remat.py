"""Scanning ``gradient_flow``'s tapped step in segments, and when to checkpoint them (remat).

With ``remat`` the scan runs as an outer scan over segments of ``seg`` steps, each segment a
``jax.checkpoint``-ed inner scan: the backward pass keeps one carry per segment and recomputes a
segment's residuals when it gets there, so memory grows like ``T / seg + seg`` per-step residuals
(about ``2 sqrt(T)`` at ``seg = sqrt(T)``) for one more forward pass. Inputs are sliced per segment
from the caller's ``xs`` (no copy of ``xs`` is stored), and per-step slots stay per segment, so
nothing O(T) is touched per step.

``remat=None`` (the default) decides from shapes alone: when the residuals the backward pass would
keep (``residual_bytes``) exceed ``REMAT_MEMORY_FRACTION`` of the device's memory
(``device_memory_bytes``), it checkpoints in segments of ``sqrt(T)`` and says so with a
``RematWarning``.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from functools import partial

import jax
import jax.numpy as jnp

REMAT_MEMORY_FRACTION = 0.25  # auto remat above this share of the device's memory
CHUNK_ABOVE = 4096  # without remat, longer scans with per-step shares run in chunks (slot updates O(sqrt T))

_tree_map = jax.tree_util.tree_map


class RematWarning(UserWarning):
    """``gradient_flow`` turned on remat by itself (``remat=None``): the message gives the estimate
    and the segment length; pass ``remat=False`` to keep every step, or a segment length."""


def sqrt_segment(length: int) -> int:
    """The sqrt-remat segment length for ``length`` steps."""
    return max(1, round(math.sqrt(length)))


def device_memory_bytes() -> int:
    """Memory of the first local device: ``memory_stats()["bytes_limit"]`` where the backend
    reports it (GPU, TPU), else the host's physical RAM (CPU)."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError, AttributeError):
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _nbytes(tree) -> int:
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(tree))


def residual_bytes(step, params, carry0, xs, per_step: bool, length: int) -> int:
    """Bytes a plain (not checkpointed) backward pass over ``length`` steps keeps: the residuals of
    ``jax.vjp`` of the scanned step, per step (residuals of 3 steps minus those of 2, so the
    loop-invariant ones such as the weights drop out), times ``length``. Shapes only: nothing runs;
    cached per step function and shapes."""
    specs = tuple(_spec(tree) for tree in (params, carry0, xs))
    try:
        per = _per_step_bytes(step, per_step, specs)
    except TypeError:  # an unhashable step: no cache
        per = _per_step_bytes.__wrapped__(step, per_step, specs)
    return per * length


def residual_bound(step, params, carry0, xs, per_step: bool, length: int) -> int:
    """A cheap upper bound of ``residual_bytes``: ``length`` times everything ``jax.vjp`` of one
    step keeps, the step's weights included (a scan keeps those once, not per step). Traces one
    step, not a scan, so deciding that a short run needs no remat costs milliseconds."""
    first = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)  # noqa: E731
    p0 = _tree_map(first, params) if per_step else params
    x0 = _tree_map(first, xs)
    keep = jax.eval_shape(lambda p, c, x: jax.vjp(lambda *a: step(*a), p, c, x)[1], p0, carry0, x0)
    return _nbytes(keep) * length


def _spec(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    # the dtype itself, not its name: a PRNG key's dtype (key<fry>) has no numpy name
    dtypes = (a.dtype if hasattr(a, "dtype") else jnp.result_type(a) for a in leaves)
    return treedef, tuple((tuple(jnp.shape(a)), d) for a, d in zip(leaves, dtypes, strict=True))


@functools.lru_cache(maxsize=128)
def _per_step_bytes(step, per_step: bool, specs) -> int:
    params, carry0, xs = (
        jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
        for treedef, leaves in specs
    )

    def saved(n):
        cut = lambda a: jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype)  # noqa: E731

        def run(p):
            def one(c, inp):
                p_t, x = inp
                return step(p if p_t is None else p_t, c, x)

            return jax.lax.scan(one, carry0, (p if per_step else None, _tree_map(cut, xs)), length=n)

        p_n = _tree_map(cut, params) if per_step else params
        return _nbytes(jax.eval_shape(lambda p: jax.vjp(run, p)[1], p_n))

    return max(0, saved(3) - saved(2))


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def choose_segment(remat, length: int, estimate, bound=None) -> int | None:
    """The segment length (``None``: one plain scan) for ``remat`` (``None``: decide from
    ``estimate()``, the residual bytes, unless the cheaper upper bound ``bound()`` already fits;
    ``False``: off; ``True``/``'sqrt'``; an int)."""
    if remat is False:
        return None
    if remat is True or remat == "sqrt":
        return sqrt_segment(length)
    if remat is not None:
        return min(int(remat), length)
    have = device_memory_bytes()
    if bound is not None and bound() <= REMAT_MEMORY_FRACTION * have:
        return None
    need = estimate()
    if need <= REMAT_MEMORY_FRACTION * have:
        return None
    seg = sqrt_segment(length)
    warnings.warn(
        f"gradient_flow: the backward pass would keep ~{_size(need)} of residuals for "
        f"T = {length} steps, over {REMAT_MEMORY_FRACTION:.0%} of the device's {_size(have)}; "
        f"checkpointing in segments of {seg} steps (remat={seg}; remat=False keeps every step)",
        RematWarning,
        stacklevel=3,
    )
    return seg


def scan_steps(body, init, slots, xs, dxs, length: int, seg: int | None, checkpoint: bool):
    """``lax.scan`` of ``body(slots, state, (x, dx, k)) -> (state, out)`` over ``length`` steps.

    ``xs``: inputs not differentiated (leaves ``[T, ...]``, or None); ``dxs``: per-step arrays
    that are (their cotangents are stacked per step); ``slots: [T]`` per-step slots (or ``[1]``,
    shared); ``k`` the step's index into the ``slots`` its body gets. With ``seg``, an outer scan
    over segments of ``seg`` steps (``jax.checkpoint``-ed with ``checkpoint``), each getting its
    own ``[seg]`` slice of the slots, then a plain scan over the ``length % seg`` rest.
    """
    per_slot = slots.shape[0] == length and length > 1
    if seg is None or seg >= length:
        k = jnp.arange(length, dtype=slots.dtype)
        return jax.lax.scan(partial(body, slots), init, (xs, dxs, k), length=length)
    n_seg, rest = divmod(length, seg)
    k_seg = jnp.arange(seg, dtype=slots.dtype)
    head = lambda a: a[: n_seg * seg].reshape((n_seg, seg, *a.shape[1:]))  # noqa: E731

    def segment(state, inp):
        i, sl, dx = inp
        x = _tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * seg, seg), xs)
        return jax.lax.scan(partial(body, sl if per_slot else slots), state, (x, dx, k_seg))

    if checkpoint:
        segment = jax.checkpoint(segment)
    seg_slots = head(slots) if per_slot else None
    state, outs = jax.lax.scan(segment, init, (jnp.arange(n_seg), seg_slots, _tree_map(head, dxs)))
    outs = _tree_map(lambda a: a.reshape((n_seg * seg, *a.shape[2:])), outs)
    if rest:
        tail = lambda a: a[n_seg * seg :]  # noqa: E731
        k_tail = jnp.arange(rest, dtype=slots.dtype)
        state, outs_tail = jax.lax.scan(
            partial(body, tail(slots) if per_slot else slots),
            state,
            (_tree_map(tail, xs), _tree_map(tail, dxs), k_tail),
        )
        outs = _tree_map(lambda a, b: jnp.concatenate([a, b]), outs, outs_tail)
    return state, outs
