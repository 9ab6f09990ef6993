"""Depth as time: residual and plain stacks scanned over stacked layer params."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradflow.cells import _common as c
from gradflow.seam import Cell

NORMS = (None, "layer", "batch")


def _normalize(kind, x, scale, shift, eps=1e-5):
    if kind is None:
        return x
    axis = -1 if kind == "layer" else 0  # batch norm: statistics over the batch
    mean = x.mean(axis, keepdims=True)
    var = x.var(axis, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + shift


def _stack(
    kind: str,
    width: int,
    depth: int,
    activation: str,
    weight_scale: float,
    bias_scale: float,
    alpha: float | None,
    norm: str | None,
    dtype,
) -> Cell:
    c.positive_int("width", width)
    c.positive_int("depth", depth)
    phi = c.activation(activation)
    c.choose("norm", norm, NORMS)
    dt = c.dtype_of(dtype)
    residual = kind == "residual"
    branch = (1.0 / depth**0.5 if alpha is None else alpha) if residual else 1.0

    def init(key, input_size):
        if input_size not in (None, width):
            raise ValueError(
                f"{kind}: input_size={input_size} but the stack maps [B, {width}] to "
                f"[B, {width}]; pass input_size={width} (the input is the carry)"
            )
        k_w, k_b = jax.random.split(key)
        params = {
            "w": c.normal(k_w, (depth, width, width), weight_scale / width**0.5, dt),
            "b": c.normal(k_b, (depth, width), bias_scale, dt),
        }
        if norm is not None:
            params["scale"] = jnp.ones((depth, width), dt)
            params["shift"] = jnp.zeros((depth, width), dt)
        return params

    def initial_carry(batch_size):
        return jnp.zeros((batch_size, width), dt)

    def step(layer, x, _unused=None):
        if layer["w"].ndim != 2:
            raise ValueError(
                f"{kind}: step got layer weights of shape {tuple(layer['w'].shape)}, "
                f"expected [{width}, {width}]; scan over the stacked [L, ...] params "
                "(gradient_flow and unroll do this for a Cell with params_per_step)"
            )
        c.check_state(kind, "x", x, width)
        a = _normalize(norm, x, layer.get("scale"), layer.get("shift"))
        f = phi(a) @ layer["w"] + layer["b"]
        x = x + branch * f if residual else f
        return x, x

    return Cell(init, initial_carry, step, params_per_step=True, bias_convention="one bias per layer")


def residual(
    width: int,
    *,
    depth: int = 100,
    activation: str = "tanh",
    weight_scale: float = 1.0,
    bias_scale: float = 0.0,
    alpha: float | None = None,
    norm: str | None = None,
    dtype="float32",
) -> Cell:
    """Residual stack ``x_{l+1} = x_l + alpha * F_l(x_l)``, one scan step per block.

    ``F_l(x) = phi(N_l(x)) @ w_l + b_l`` is a pre-activation block (He et al.
    2016, identity mappings) with its own params per layer, stacked:
    ``w: [L, D, D]`` with ``N(0, weight_scale^2 / D)`` entries, ``b: [L, D]``
    with ``N(0, bias_scale^2)``, and with ``norm`` ('layer' or 'batch') a
    learnable ``scale, shift: [L, D]``. ``alpha`` defaults to ``1/sqrt(L)``
    (depth-scaled branches); ``alpha=1`` is the unscaled ResNet. Carry = the
    activations ``x: [B, D]``; pass the network input as ``carry0``.
    """
    return _stack("residual", width, depth, activation, weight_scale, bias_scale, alpha, norm, dtype)


def plain(
    width: int,
    *,
    depth: int = 100,
    activation: str = "tanh",
    weight_scale: float = 1.0,
    bias_scale: float = 0.0,
    norm: str | None = None,
    dtype="float32",
) -> Cell:
    """Plain stack ``x_{l+1} = F_l(x_l)``: the ``residual`` block without the shortcut.

    Same params and options as ``residual`` (no ``alpha``); compare the two at
    equal settings to isolate the shortcut.
    """
    return _stack("plain", width, depth, activation, weight_scale, bias_scale, None, norm, dtype)
