"""Vanilla (Elman) RNN cell."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.cells import _common as c
from gradflow.seam import Cell


def rnn(
    hidden_size: int,
    *,
    activation: str = "tanh",
    recurrent_init: str = "normal",
    weight_scale: float = 1.0,
    bias_scale: float = 0.0,
    input_scale: float = 1.0,
    dtype="float32",
) -> Cell:
    """Vanilla RNN: ``h' = phi(W h + U x + b)``.

    Stored row-major as in Flax: ``h' = phi(h @ w_hh + x @ w_ih + b)`` with
    ``w_hh: [H, H]`` (``= W^T``), ``w_ih: [I, H]``, ``b: [H]``. Carry ``h: [B, H]``,
    output ``y = h'``.

    Init: ``recurrent_init='normal'`` draws ``W_ij ~ N(0, weight_scale^2 / H)``
    (``weight_scale`` is sigma_w, a standard deviation); ``'orthogonal'`` gives
    ``weight_scale * Q`` (Q Haar orthogonal; ``weight_scale`` = rho, every
    singular value); ``'identity'`` gives ``weight_scale * I`` (IRNN with relu).
    ``U_ij ~ N(0, input_scale^2 / I)``, ``b_i ~ N(0, bias_scale^2)`` (sigma_b).

    Parameters: ``I*H + H*H + H`` (one bias, as Flax ``SimpleCell``; PyTorch's
    ``nn.RNN`` has two).
    """
    c.positive_int("hidden_size", hidden_size)
    phi = c.activation(activation)
    c.choose("recurrent_init", recurrent_init, c.RECURRENT_INITS)
    dt = c.dtype_of(dtype)

    def init(key, input_size):
        k_w, k_u, k_b = jax.random.split(key, 3)
        return {
            "w_ih": c.input_matrix(k_u, input_size, hidden_size, input_scale, dt),
            "w_hh": c.recurrent_matrix(k_w, hidden_size, recurrent_init, weight_scale, dt),
            "b": c.normal(k_b, (hidden_size,), bias_scale, dt),
        }

    def initial_carry(batch_size):
        return jnp.zeros((batch_size, hidden_size), dt)

    def step(params, h, x):
        c.check_input("rnn", x, params["w_ih"])
        c.check_state("rnn", "h", h, hidden_size)
        h = phi(h @ params["w_hh"] + x @ params["w_ih"] + params["b"])
        return h, h

    return Cell(init, initial_carry, step, bias_convention="one bias per unit (Flax SimpleCell)")
