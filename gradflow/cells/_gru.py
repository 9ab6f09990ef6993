"""GRU and MGU cells (reset applied after the recurrent matmul, as Flax/PyTorch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.cells import _common as c
from gradflow.seam import Cell


def _gated_init(key, input_size, H, n_gates, recurrent_init, weight_scale, input_scale, dt):
    k_u, k_w = jax.random.split(key)
    return {
        "w_ih": c.input_matrix(k_u, input_size, n_gates * H, input_scale, dt),
        "w_hh": c.recurrent_matrix(k_w, H, recurrent_init, weight_scale, dt, blocks=n_gates),
    }


def gru(
    hidden_size: int,
    *,
    update_bias: float = 0.0,
    recurrent_init: str = "orthogonal",
    weight_scale: float = 1.0,
    input_scale: float = 1.0,
    dtype="float32",
) -> Cell:
    """GRU, reset after the recurrent matmul (Flax ``GRUCell``, PyTorch ``nn.GRU``)::

        r = sigmoid(x U_r + b_r + h W_r)
        z = sigmoid(x U_z + b_z + h W_z)
        n = tanh(x U_n + b_n + r * (h W_n + b_hn))
        h' = (1 - z) * n + z * h

    Params ``w_ih: [I, 3H]``, ``w_hh: [H, 3H]`` (order r, z, n), ``b_ih: [3H]``,
    ``b_hn: [H]``: ``3(IH + H^2) + 4H`` scalars (Flax convention; PyTorch
    stores ``3(IH + H^2 + 2H)``). ``b_z`` starts at ``update_bias`` (larger
    keeps more of ``h``), the rest at 0. Carry ``h: [B, H]``.
    """
    c.positive_int("hidden_size", hidden_size)
    c.choose("recurrent_init", recurrent_init, c.RECURRENT_INITS)
    dt = c.dtype_of(dtype)
    H = hidden_size

    def init(key, input_size):
        params = _gated_init(key, input_size, H, 3, recurrent_init, weight_scale, input_scale, dt)
        params["b_ih"] = jnp.zeros((3 * H,), dt).at[H : 2 * H].set(update_bias)
        params["b_hn"] = jnp.zeros((H,), dt)
        return params

    def initial_carry(batch_size):
        return jnp.zeros((batch_size, H), dt)

    def forward(params, h, x):
        c.check_input("gru", x, params["w_ih"])
        c.check_state("gru", "h", h, H)
        xi = x @ params["w_ih"] + params["b_ih"]
        hh = h @ params["w_hh"]
        r = jax.nn.sigmoid(xi[..., :H] + hh[..., :H])
        z = jax.nn.sigmoid(xi[..., H : 2 * H] + hh[..., H : 2 * H])
        n = jnp.tanh(xi[..., 2 * H :] + r * (hh[..., 2 * H :] + params["b_hn"]))
        h = (1.0 - z) * n + z * h
        return h, h, {"r": r, "z": z}

    return c.gated_cell(init, initial_carry, forward, "input biases + b_hn (Flax GRUCell)")


def mgu(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    reset_gate: bool = True,
    recurrent_init: str = "orthogonal",
    weight_scale: float = 1.0,
    input_scale: float = 1.0,
    dtype="float32",
) -> Cell:
    """Minimal gated unit (Zhou et al. 2016), as Flax ``MGUCell``::

        f = sigmoid(x U_f + b_f + h W_f)
        n = tanh(x U_n + b_n + f * (h W_n + b_hn))     # reset_gate=True
        n = tanh(x U_n + b_n + h W_n)                  # reset_gate=False
        h' = (1 - f) * n + f * h

    Params ``w_ih: [I, 2H]``, ``w_hh: [H, 2H]`` (order f, n), ``b_ih: [2H]``
    (``b_f`` starts at ``forget_bias``, default 1.0 as Flax), ``b_hn: [H]``
    when ``reset_gate``. Carry ``h: [B, H]``.
    """
    c.positive_int("hidden_size", hidden_size)
    c.choose("recurrent_init", recurrent_init, c.RECURRENT_INITS)
    dt = c.dtype_of(dtype)
    H = hidden_size

    def init(key, input_size):
        params = _gated_init(key, input_size, H, 2, recurrent_init, weight_scale, input_scale, dt)
        params["b_ih"] = jnp.zeros((2 * H,), dt).at[:H].set(forget_bias)
        if reset_gate:
            params["b_hn"] = jnp.zeros((H,), dt)
        return params

    def initial_carry(batch_size):
        return jnp.zeros((batch_size, H), dt)

    def forward(params, h, x):
        c.check_input("mgu", x, params["w_ih"])
        c.check_state("mgu", "h", h, H)
        xi = x @ params["w_ih"] + params["b_ih"]
        hh = h @ params["w_hh"]
        f = jax.nn.sigmoid(xi[..., :H] + hh[..., :H])
        rec = hh[..., H:]
        if reset_gate:
            rec = f * (rec + params["b_hn"])
        n = jnp.tanh(xi[..., H:] + rec)
        h = (1.0 - f) * n + f * h
        return h, h, {"f": f}

    return c.gated_cell(init, initial_carry, forward, "input biases + b_hn (Flax MGUCell)")
