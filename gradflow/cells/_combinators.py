"""Combinators: stacked (deep) RNNs and bidirectional RNNs built from cells."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gradflow.seam import Cell


def _output_size(cell: Cell, params, input_size: int) -> int:
    carry = jax.eval_shape(lambda: cell.initial_carry(1))
    x = jax.ShapeDtypeStruct((1, input_size), jax.tree_util.tree_leaves(carry)[0].dtype)
    _, y = jax.eval_shape(cell.step, params, carry, x)
    return y.shape[-1]


def dropout_inputs(xs, key):
    """Pair ``xs: [T, B, I]`` with one dropout key per step, for ``stacked`` training.

    Returns ``(xs, keys)``; pass it as ``xs`` to ``unroll``/``gradient_flow``.
    Passing plain ``xs`` runs the stack without dropout (evaluation).
    """
    length = jax.tree_util.tree_leaves(xs)[0].shape[0]
    return xs, jax.random.split(key, length)


def stacked(cells: Sequence[Cell], *, dropout: float = 0.0) -> Cell:
    """Deep RNN: layer ``l`` reads layer ``l-1``'s output at the same step.

    Carry: a tuple of the layers' carries. Params: a tuple of the layers'
    params. Output: the top layer's ``y``. Dropout (rate ``dropout``) is applied
    only between layers, to the ``y`` passed upward, never to a carry (the
    recurrent edge), as Zaremba et al. 2014; it is active only when ``x`` is a
    ``(x, key)`` pair from ``dropout_inputs``.
    """
    cells = tuple(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise ValueError("stacked: expected a non-empty sequence of gradflow.Cell")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"stacked: dropout must be in [0, 1), got {dropout!r}")

    def init(key, input_size):
        params = []
        for cell, k in zip(cells, jax.random.split(key, len(cells)), strict=True):
            p = cell.init(k, input_size)
            params.append(p)
            input_size = _output_size(cell, p, input_size)
        return tuple(params)

    def initial_carry(batch_size):
        return tuple(cell.initial_carry(batch_size) for cell in cells)

    def step(params, carry, x):
        key = None
        if isinstance(x, tuple):
            x, key = x
        if len(carry) != len(cells):
            raise ValueError(f"stacked: carry has {len(carry)} layers, expected {len(cells)}")
        new_carry = []
        for layer, (cell, p, c) in enumerate(zip(cells, params, carry, strict=True)):
            if layer > 0 and key is not None and dropout > 0.0:
                keep = jax.random.bernoulli(jax.random.fold_in(key, layer), 1.0 - dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - dropout), jnp.zeros((), x.dtype))
            c, x = cell.step(p, c, x)
            new_carry.append(c)
        return tuple(new_carry), x

    return Cell(init, initial_carry, step, bias_convention=cells[0].bias_convention)


def bidirectional_xs(xs):
    """``xs: [T, B, I]`` -> ``(xs, xs reversed in time)``, the input of a bidirectional cell."""
    return xs, jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), xs)


def bidirectional_ys(ys):
    """``(ys_fwd, ys_bwd)`` from the scan -> ``[T, B, Hf + Hb]`` aligned in time."""
    fwd, bwd = ys
    return jnp.concatenate([fwd, jnp.flip(bwd, 0)], axis=-1)


def bidirectional(forward: Cell, backward: Cell | None = None) -> Cell:
    """Bidirectional RNN as one scan: step ``t`` advances the forward cell on
    ``x_t`` and the backward cell on ``x_{T-1-t}``.

    ``x`` must be the pair from ``bidirectional_xs(xs)``; ``y`` is the pair
    ``(y_fwd_t, y_bwd_{T-1-t})``, re-aligned by ``bidirectional_ys``. Carry
    ``(carry_fwd, carry_bwd)``, params ``{'fwd': ..., 'bwd': ...}``; so
    ``gradient_flow`` reports the backward direction's norms per step of *its*
    scan (entry t = after reading the last t inputs).
    """
    backward = forward if backward is None else backward

    def init(key, input_size):
        kf, kb = jax.random.split(key)
        return {"fwd": forward.init(kf, input_size), "bwd": backward.init(kb, input_size)}

    def initial_carry(batch_size):
        return (forward.initial_carry(batch_size), backward.initial_carry(batch_size))

    def step(params, carry, x):
        if not (isinstance(x, tuple) and len(x) == 2):
            raise ValueError(
                "bidirectional: x must be the pair (x_t, x_{T-1-t}); "
                "pass xs = gradflow.cells.bidirectional_xs(xs)"
            )
        cf, yf = forward.step(params["fwd"], carry[0], x[0])
        cb, yb = backward.step(params["bwd"], carry[1], x[1])
        return (cf, cb), (yf, yb)

    return Cell(init, initial_carry, step, bias_convention=forward.bias_convention)
