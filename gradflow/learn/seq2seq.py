"""Encoder-decoder (seq2seq) on the ``Cell`` seam: the encoder's final carry starts the decoder.

Sutskever et al. 2014: an encoder cell reads the source, its final carry (the "deep vector") is the
decoder's initial carry, the decoder reads the previous target token (teacher forcing, a GO token
first) and a linear readout of its outputs predicts each target token::

    carry_S = encoder over x_enc [S, B, K]            (from encoder.initial_carry(B))
    ys      = decoder over x_dec [S', B, K + 1] from carry_S
    logits  = ys @ w + b                               [S', B, K]

Encoder and decoder must have the same carry structure (e.g. two LSTMs of one hidden size). The
copy task (``copy_batch``) reads the source in normal or reversed order; the targets stay in order,
so reversal moves the token target ``j`` needs from encoder step ``j`` to ``S - 1 - j``.

Example::

    model = Seq2Seq(cells.get("lstm", hidden_size=64), cells.get("lstm", hidden_size=64), symbols=8)
    params = model.init(jax.random.key(0))
    loss, acc = model.losses(params, *copy_batch(src, 8, reverse=True))   # src: [B, S] ints
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradflow.measure.flow import GradientFlow, gradient_flow
from gradflow.seam import Cell


def _scan(cell: Cell, params, carry, xs):
    return jax.lax.scan(lambda c, x: cell.step(params, c, x), carry, xs)


def _dtype(cell: Cell):
    return jax.tree_util.tree_leaves(jax.eval_shape(lambda: cell.initial_carry(1)))[0].dtype


class Seq2Seq(NamedTuple):
    """An encoder cell, a decoder cell and a linear readout over ``symbols`` classes.

    Params: ``{'enc': encoder params (input K), 'dec': decoder params (input K + 1: the symbols and
    GO), 'out': {'w': [Y, K] ~ N(0, 1/Y), 'b': [K] zeros}}`` (``Y``: the decoder's output width).
    """

    encoder: Cell
    decoder: Cell
    symbols: int

    def init(self, key: jax.Array) -> dict:
        """Encoder, decoder and readout params (keys: ``split(key, 3)`` in that order)."""
        k_enc, k_dec, k_out = jax.random.split(key, 3)
        dec = self.decoder.init(k_dec, self.symbols + 1)
        carry = jax.eval_shape(lambda: self.decoder.initial_carry(1))
        x = jax.ShapeDtypeStruct((1, self.symbols + 1), _dtype(self.decoder))
        width = jax.eval_shape(self.decoder.step, dec, carry, x)[1].shape[-1]
        dtype = _dtype(self.decoder)
        return {
            "enc": self.encoder.init(k_enc, self.symbols),
            "dec": dec,
            "out": {
                "w": jax.random.normal(k_out, (width, self.symbols), dtype) / np.sqrt(width),
                "b": jnp.zeros((self.symbols,), dtype),
            },
        }

    def encode(self, params: dict, x_enc: jax.Array):
        """The encoder's final carry (the "deep vector") after ``x_enc [S, B, K]``."""
        carry, _ = _scan(self.encoder, params["enc"], self.encoder.initial_carry(x_enc.shape[1]), x_enc)
        return carry

    def decode(self, params: dict, carry, x_dec: jax.Array) -> jax.Array:
        """Decoder from ``carry`` over ``x_dec [S', B, K + 1]`` -> logits ``[S', B, K]``."""
        _, ys = _scan(self.decoder, params["dec"], carry, x_dec)
        return ys @ params["out"]["w"] + params["out"]["b"]

    def logits(self, params: dict, x_enc: jax.Array, x_dec: jax.Array) -> jax.Array:
        """``[S', B, K]``: encoder over ``x_enc``, decoder from its final carry over ``x_dec``."""
        return self.decode(params, self.encode(params, x_enc), x_dec)

    def losses(self, params: dict, x_enc, x_dec, targets) -> tuple[jax.Array, jax.Array]:
        """``(cross-entropy per target position [S'] (batch mean, nats), accuracy per position [S'])``;
        ``targets [S', B]`` ints."""
        logits = self.logits(params, x_enc, x_dec)
        loss = position_cross_entropy(logits, jax.nn.one_hot(targets, self.symbols, dtype=logits.dtype))
        return loss, jnp.mean(jnp.argmax(logits, -1) == targets, axis=1)

    def position_log10_grads(self, params: dict, x_enc, x_dec, targets) -> tuple[jax.Array, jax.Array]:
        """``([S', S], [S'])``: ``log10 ||dL_j / dx_t||`` (norm over batch and symbols; ``L_j`` the
        loss at target ``j``, ``x_t`` the encoder input at step ``t``) and ``log10 ||dL_j /
        dlogits_j||`` (the error signal at target ``j``)."""
        jac = jax.jacrev(lambda xe: self.losses(params, xe, x_dec, targets)[0])(x_enc)  # [S', S, B, K]
        logits = self.logits(params, x_enc, x_dec)
        onehot = jax.nn.one_hot(targets, self.symbols, dtype=logits.dtype)
        err = (jax.nn.softmax(logits) - onehot) / x_enc.shape[1]
        return (
            0.5 * jnp.log10(jnp.sum(jnp.square(jac), axis=(2, 3))),
            0.5 * jnp.log10(jnp.sum(jnp.square(err), axis=(1, 2))),
        )

    def encoder_flow(self, params: dict, x_enc, x_dec, targets, **flow_options) -> GradientFlow:
        """``gradient_flow`` of the mean decoder loss through the encoder: ``total_log10_norms [S+1]``
        is ``log10 ||dL/dcarry_t||``, t = 0..S (t = S: the "deep vector")."""
        onehot = jax.nn.one_hot(targets, self.symbols, dtype=x_enc.dtype)  # loss_params: floating

        def loss_fn(ys, carry, lp):
            del ys
            dec, out, x_dec, onehot = lp
            logits = self.decode({"dec": dec, "out": out}, carry, x_dec)
            return jnp.mean(position_cross_entropy(logits, onehot))

        return gradient_flow(
            self.encoder,
            params["enc"],
            self.encoder.initial_carry(x_enc.shape[1]),
            x_enc,
            loss_fn,
            loss_params=(params["dec"], params["out"], x_dec, onehot),
            **{"step_shares": False, **flow_options},
        )


def position_cross_entropy(logits: jax.Array, onehot: jax.Array) -> jax.Array:
    """Batch-mean cross-entropy per position ``[S]`` of ``logits, onehot: [S, B, K]``."""
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, axis=-1), axis=1)


def copy_batch(src, symbols: int, reverse=False):
    """The copy task: ``src [B, S]`` ints -> ``(x_enc [S, B, K], x_dec [S, B, K+1], targets [S, B])``.

    The encoder reads ``src`` one-hot, reversed where ``reverse`` (a bool, may be traced); the
    decoder reads GO (symbol ``K``) then the targets shifted by one; the targets are ``src`` in order.
    """
    src = jnp.asarray(src)
    n, length = src.shape
    order = jnp.where(reverse, jnp.arange(length)[::-1], jnp.arange(length))
    x_enc = jax.nn.one_hot(src[:, order].T, symbols, dtype=jnp.float32)
    prev = jnp.concatenate([jnp.full((n, 1), symbols, src.dtype), src[:, :-1]], axis=1)
    x_dec = jax.nn.one_hot(prev.T, symbols + 1, dtype=jnp.float32)
    return x_enc, x_dec, src.T


def needed_position(length: int, reverse: bool) -> np.ndarray:
    """``[S]``: the encoder step holding the token target ``j`` needs: ``j``, or ``S - 1 - j`` reversed."""
    j = np.arange(length)
    return length - 1 - j if reverse else j


def random_tokens(seed: int, shape, symbols: int) -> np.ndarray:
    """Uniform source tokens ``0..symbols-1``, int32 ``shape`` (numpy, seeded)."""
    return np.random.default_rng(seed).integers(0, symbols, shape).astype(np.int32)


def fit_copy(model: Seq2Seq, params: dict, src, reverse, learning_rate: float):
    """Adam on the copy task, one step per batch of ``src [steps, B, S]`` (one ``lax.scan``).

    Loss: the mean over target positions of ``losses``. Returns ``(params, loss per step [steps])``
    (each entry before that step's update).
    """
    opt = optax.adam(learning_rate)

    def step(state, src_i):
        p, opt_state = state
        batch = copy_batch(src_i, model.symbols, reverse)
        loss, g = jax.value_and_grad(lambda p: model.losses(p, *batch)[0].mean())(p)
        updates, opt_state = opt.update(g, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), curve = jax.lax.scan(step, (params, opt.init(params)), src)
    return params, curve


__all__ = [
    "Seq2Seq",
    "copy_batch",
    "fit_copy",
    "needed_position",
    "position_cross_entropy",
    "random_tokens",
]
