"""Shared pieces of the built-in cells: activations, initializers, checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.cells.checks import choose, dtype_of, positive_int  # noqa: F401 (the cells call c.dtype_of)
from gradflow.seam import Cell

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda a: a,
}
RECURRENT_INITS = ("normal", "orthogonal", "identity")


def activation(name: str):
    return ACTIVATIONS[choose("activation", name, ACTIVATIONS)]


def normal(key, shape, std, dtype):
    """``N(0, std^2)`` entries."""
    return std * jax.random.normal(key, shape, dtype)


def recurrent_matrix(key, n, init, scale, dtype, blocks=1):
    """``[n, blocks * n]`` recurrent kernel, each ``[n, n]`` block drawn by ``init``.

    normal: ``W_ij ~ N(0, scale^2 / n)``; orthogonal: ``scale * Q`` (Haar);
    identity: ``scale * I``.
    """
    choose("recurrent_init", init, RECURRENT_INITS)
    keys = jax.random.split(key, blocks)
    # one draw per block, not a vmap over the keys: with the vmapped draw inside a lax.map the
    # seq2seq programs of claim C14 never completed on XLA:CPU (jaxlib 0.10.2)
    if init == "normal":
        mats = [normal(k, (n, n), scale / jnp.sqrt(n), dtype) for k in keys]
    elif init == "orthogonal":
        ortho = jax.nn.initializers.orthogonal(scale=scale)
        mats = [ortho(k, (n, n), dtype) for k in keys]
    else:
        mats = [scale * jnp.eye(n, dtype=dtype) for _ in keys]
    return jnp.concatenate(mats, axis=1)


def input_matrix(key, input_size, width, scale, dtype):
    """``[I, width]`` input kernel with entries ``N(0, scale^2 / I)``."""
    positive_int("input_size", input_size)
    return normal(key, (input_size, width), scale / jnp.sqrt(input_size), dtype)


def check_input(cell: str, x, w_ih):
    """Raise if ``x: [B, I]`` does not match the ``[I, ...]`` input kernel."""
    expected = w_ih.shape[0]
    if x.ndim < 2 or x.shape[-1] != expected:
        raise ValueError(
            f"{cell}: input x has shape {tuple(x.shape)}, expected [B, {expected}] "
            f"(input_size={expected} at init; xs must be [T, B, {expected}])"
        )


def check_state(cell: str, name: str, h, hidden_size: int):
    if not hasattr(h, "ndim"):
        raise ValueError(
            f"{cell}: carry {name} is a {type(h).__name__}, expected one [B, {hidden_size}] array"
        )
    if h.ndim < 2 or h.shape[-1] != hidden_size:
        raise ValueError(f"{cell}: carry {name} has shape {tuple(h.shape)}, expected [B, {hidden_size}]")


def gated_cell(init, initial_carry, forward, bias_convention: str) -> Cell:
    """A ``Cell`` whose ``step`` and ``gates`` both come from one
    ``forward(params, carry, x) -> (carry, y, {gate: [B, H]})`` (unused outputs are dropped by XLA)."""

    def step(params, carry, x):
        carry, y, _ = forward(params, carry, x)
        return carry, y

    return Cell(
        init,
        initial_carry,
        step,
        bias_convention=bias_convention,
        gates=lambda p, carry, x: forward(p, carry, x)[2],
    )
