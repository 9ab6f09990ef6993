"""Shared pieces of the built-in cells: activations, initializers, checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.seam import Cell

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda a: a,
}
RECURRENT_INITS = ("normal", "orthogonal", "identity")
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def choose(kind: str, value, allowed):
    """Return ``value`` if it is in ``allowed``, else raise a one-line error."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; choose from {sorted(allowed, key=str)}")
    return value


def activation(name: str):
    return ACTIVATIONS[choose("activation", name, ACTIVATIONS)]


def dtype_of(dtype):
    """Accept 'float32'/'float64' or a numpy/jax dtype."""
    name = dtype if isinstance(dtype, str) else getattr(jnp.dtype(dtype), "name", str(dtype))
    dtype = DTYPES[choose("dtype", name, DTYPES)]
    if jnp.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"dtype {jnp.dtype(dtype).name} needs 64-bit JAX: call "
            "jax.config.update('jax_enable_x64', True) first"
        )
    return jnp.dtype(dtype)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


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


def defaults(factory) -> dict[str, object]:
    """``{argument: default}`` of a registry factory, ``None`` for required arguments (``options()``)."""
    import inspect

    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(factory).parameters.values()
    }


def _is_number(value) -> bool:
    """A real number: a Python/numpy scalar or a numeric array or tracer (a sweep traces options)."""
    import numbers

    if value is None or isinstance(value, bool | str | bytes):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.number) and not jnp.issubdtype(dtype, jnp.bool_)


def check_options(cell: str, factory, opts: dict) -> None:
    """Raise a one-line ``TypeError`` for an option whose value has the wrong type for its default.

    float default: a number; bool default: true or false. Sizes and counts are checked where they
    are used (``positive_int``), string options by name (``choose``), ``None`` defaults by their
    cell. Example: ``lstm option forget_bias: expected a number, got 'abc'``.
    """
    known = defaults(factory)
    for key, value in opts.items():
        default = known.get(key)
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, float):
            ok, expected = _is_number(value), "a number"
        else:
            continue
        if not ok:
            raise TypeError(f"{cell} option {key}: expected {expected}, got {value!r}")


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
