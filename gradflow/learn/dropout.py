"""A stack of LSTMs with dropout on chosen edges: upward (between layers), ``h_{t-1}``, ``c_{t-1}``.

Zaremba et al. (2014) put dropout only on the non-recurrent (upward) edges of a stacked LSTM, as
``cells.stacked(..., dropout=p)`` does; this cell also places it on the recurrent edges, with a
fresh mask per step or one mask per sequence for ``h_{t-1}`` (variational, Gal & Ghahramani 2016),
so the placements can be compared in one compiled training group (the rates may be traced).

Example::

    cell = dropout_lstm_stack(32, 2, p_up=0.0, p_h=0.25, p_c=0.0, variational=1.0)
    model = gradflow.Model(cell, 1, "last", dropout=True)    # training pairs xs with dropout keys
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow import cells
from gradflow.seam import Cell


def _keep(key, rate, shape):
    """Inverted dropout mask: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    return jax.random.bernoulli(key, 1.0 - rate, shape) / (1.0 - rate)


def dropout_lstm_stack(hidden: int, layers: int, p_up, p_h, p_c, variational) -> Cell:
    """``layers`` LSTMs (``cells.get("lstm", hidden_size=hidden)``, stacked) with dropout ``p_up`` on
    the upward edges (into layers 1.., not the stack's input), ``p_h`` on each layer's ``h_{t-1}``
    (a fresh mask per step, or one per sequence when ``variational`` > 0.5) and ``p_c`` on its
    ``c_{t-1}`` (fresh per step). Rates and ``variational`` may be traced scalars.

    Params: those of ``cells.stacked``. Carry: ``(per-layer (c, h) [B, hidden], h masks [layers, B,
    hidden])``; the masks are 0 until the first step with a key draws them (no gradient flows
    through them). ``x: [B, I]``; dropout is active only when ``x`` is an ``(x, key)`` pair
    (``cells.dropout_inputs``, ``Model(dropout=True)`` in training); plain ``x`` runs the stack
    without dropout. Output ``y: [B, hidden]``, the top layer's ``h``.
    """
    base = cells.get("lstm", hidden_size=hidden)
    stack = cells.stacked([base] * layers)

    def initial_carry(batch_size):
        return stack.initial_carry(batch_size), jnp.zeros((layers, batch_size, hidden), jnp.float32)

    def step(params, carry, x):
        layer_carries, masks = carry
        key = None
        if isinstance(x, tuple):
            x, key = x
        if key is not None:
            fresh = _keep(jax.random.fold_in(key, 0), p_h, masks.shape)
            unset = jnp.all(masks == 0.0, axis=(1, 2), keepdims=True)
            masks = jax.lax.stop_gradient(jnp.where((variational > 0.5) & ~unset, masks, fresh))
        new = []  # per step, masks from fold_in(key, .): h 0, upward l (l >= 1), c 100 + l
        for layer, (p, (c, h)) in enumerate(zip(params, layer_carries, strict=True)):
            if key is not None:
                h = h * masks[layer]
                c = c * _keep(jax.random.fold_in(key, 100 + layer), p_c, c.shape)
                if layer > 0:
                    x = x * _keep(jax.random.fold_in(key, layer), p_up, x.shape)
            (c, h), x = base.step(p, (c, h), x)
            new.append((c, h))
        return (tuple(new), masks), x

    return Cell(stack.init, initial_carry, step, bias_convention=base.bias_convention)
