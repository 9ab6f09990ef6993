"""CNN-LSTM on the ``Cell`` seam: a convolutional encoder per frame, a recurrent cell over the frames.

Donahue et al. 2015 (LRCN): every frame goes through the same CNN (one call on all ``T * B``
frames), the features feed a cell, a linear readout of the last ``h`` classifies the sequence::

    x_t    = cnn(frame_t)                  frames [T, B, H, W, C] -> xs [T, B, F]
    carry  = cell over xs                  (from cell.initial_carry(B))
    logits = h_T @ w + b                   [B, classes]   (h: the carry, or an LSTM's (c, h)[1])

With ``encoder=None`` the cell reads the flattened pixels (the "no CNN" control). The frame
gradient crosses the CNN once, not once per step, so its decay over frames is the cell's.

Example::

    model = CNNLSTM(FrameEncoder(16), cells.get("lstm", hidden_size=64), classes=2)
    params = model.init(jax.random.key(0), frame_shape=(8, 8, 1))
    loss = model.loss(params, frames, labels)    # frames: [T, B, 8, 8, 1], labels: [B] ints
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradflow.measure.flow import GradientFlow, gradient_flow
from gradflow.seam import Cell


class FrameEncoder(nn.Module):
    """Per-frame encoder ``[N, H, W, C] -> [N, features]``: conv 3x3 (8) -> relu -> conv 3x3 stride 2
    (16) -> relu -> dense -> tanh (float32)."""

    features: int = 16

    @nn.compact
    def __call__(self, frames):
        f32 = jnp.float32
        x = nn.relu(nn.Conv(8, (3, 3), dtype=f32, param_dtype=f32)(frames))
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), dtype=f32, param_dtype=f32)(x))
        x = x.reshape((x.shape[0], -1))
        return jnp.tanh(nn.Dense(self.features, dtype=f32, param_dtype=f32)(x))


def _hidden(carry):
    """What the readout reads: ``h`` of an LSTM's ``(c, h)``, else the carry itself."""
    return carry[1] if isinstance(carry, tuple) else carry


class CNNLSTM(NamedTuple):
    """A frame encoder (a Flax module, or None: flattened pixels), a cell and a linear readout.

    Params: ``{'cnn': encoder variables (absent without encoder), 'lstm': cell params, 'out': {'w':
    [H, classes] ~ N(0, 1/H), 'b': [classes] zeros}}``.
    """

    encoder: nn.Module | None
    cell: Cell
    classes: int = 2

    def init(self, key: jax.Array, frame_shape) -> dict:
        """Params for frames of ``frame_shape`` ``(H, W, C)`` (keys: ``split(key, 3)`` for the
        encoder, the cell and the readout)."""
        k_cnn, k_cell, k_out = jax.random.split(key, 3)
        frame_shape = tuple(frame_shape)
        size = math.prod(frame_shape) if self.encoder is None else self.encoder.features
        hidden = _hidden(jax.eval_shape(lambda: self.cell.initial_carry(1))).shape[-1]
        params = {
            "lstm": self.cell.init(k_cell, size),
            "out": {
                "w": jax.random.normal(k_out, (hidden, self.classes), jnp.float32) / np.sqrt(hidden),
                "b": jnp.zeros((self.classes,), jnp.float32),
            },
        }
        if self.encoder is not None:
            params["cnn"] = self.encoder.init(k_cnn, jnp.zeros((1, *frame_shape), jnp.float32))
        return params

    def inputs(self, params: dict, frames: jax.Array) -> jax.Array:
        """``[T, B, F]``: encoder features of every frame (one call for all frames), or the pixels."""
        T, B = frames.shape[:2]
        flat = frames.reshape((T * B, *frames.shape[2:]))
        if self.encoder is not None:
            return self.encoder.apply(params["cnn"], flat).reshape((T, B, -1))
        return flat.reshape((T, B, -1))

    def readout_loss(self, carry, out: dict, onehot: jax.Array) -> jax.Array:
        """Mean cross-entropy of the readout of the final carry; ``onehot [B, classes]``."""
        logits = _hidden(carry) @ out["w"] + out["b"]
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, axis=-1))

    def cell_loss(self, params: dict, xs: jax.Array, labels: jax.Array) -> jax.Array:
        """The cell part fed ``xs [T, B, F]`` directly; ``labels [B]`` ints."""
        carry0 = self.cell.initial_carry(xs.shape[1])
        carry, _ = jax.lax.scan(lambda c, x: self.cell.step(params["lstm"], c, x), carry0, xs)
        return self.readout_loss(carry, params["out"], jax.nn.one_hot(labels, self.classes, dtype=xs.dtype))

    def loss(self, params: dict, frames: jax.Array, labels: jax.Array) -> jax.Array:
        """Cross-entropy of the whole model on ``frames [T, B, H, W, C]``, ``labels [B]``."""
        return self.cell_loss(params, self.inputs(params, frames), labels)

    def input_log10_grads(self, params: dict, frames, labels) -> tuple[jax.Array, jax.Array]:
        """``([T], [T])``: ``log10 ||dL/dframe_t||`` and ``log10 ||dL/dx_t||`` (``x_t`` the cell's
        input: features or pixels), one backward pass."""
        xs, pull = jax.vjp(lambda f: self.inputs(params, f), frames)
        g_x = jax.grad(self.cell_loss, argnums=1)(params, xs, labels)
        (g_f,) = pull(g_x)
        return _log10_per_step(g_f), _log10_per_step(g_x)

    def carry_flow(self, params: dict, frames, labels, **flow_options) -> GradientFlow:
        """``gradient_flow`` over the cell part: ``total_log10_norms [T+1]`` is ``log10
        ||dL/dcarry_t||`` (t = 0: before the first frame)."""
        xs = self.inputs(params, frames)
        onehot = jax.nn.one_hot(labels, self.classes, dtype=xs.dtype)
        return gradient_flow(
            self.cell,
            params["lstm"],
            self.cell.initial_carry(xs.shape[1]),
            xs,
            lambda ys, carry, lp: self.readout_loss(carry, *lp),
            loss_params=(params["out"], onehot),
            **{"step_shares": False, **flow_options},
        )


def _log10_per_step(g: jax.Array) -> jax.Array:
    """Per step (axis 0): log10 of the norm over everything else."""
    return 0.5 * jnp.log10(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def blob_frames(seed: int, frames: int, n: int, frame_shape=(8, 8, 1)):
    """``(frames [T, n, H, W, C] float32, labels [n] int32)`` (numpy, seeded): noise of std 0.1, a
    3x3 blob of ones in each frame with probability 1/2; label: a blob in frame 0."""
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((frames, n, *frame_shape))
    on = rng.random((frames, n)) < 0.5
    pos = rng.integers(0, frame_shape[0] - 2, (frames, n, 2))
    for t, b in zip(*np.nonzero(on), strict=True):
        r, c = pos[t, b]
        x[t, b, r : r + 3, c : c + 3, 0] += 1.0
    return x.astype(np.float32), on[0].astype(np.int32)


__all__ = ["CNNLSTM", "FrameEncoder", "blob_frames"]
