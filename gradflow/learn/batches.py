"""A task's data and scoring: the time-major ``Batch``, the ``Task`` bundle, masked losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

_NEG = -1e4  # a logit whose probability is exactly 0 after log_softmax, without infinities


class Batch(NamedTuple):
    """One batch of a task, time-major: ``xs [T, B, I]``, ``ys [T, B, O]`` or ``[T, B]``, ``mask [T, B]``."""

    xs: jax.Array
    ys: jax.Array
    mask: jax.Array


class Task(NamedTuple):
    """A task: a jit-able sampler, its loss kind and its "learned nothing" baseline.

    * ``sample(key, batch_size) -> Batch`` (``batch_size`` static under ``jit``).
    * ``baseline_outputs(batch) -> outputs``: what the learned-nothing predictor outputs
      (``[T, B, O]``; logits for ``'xent'``); its ``loss`` is ``baseline`` (up to Monte Carlo error).
    * ``kind``: ``'mse'`` or ``'xent'``; ``steps``: ``T``; ``input_size``: ``I``; ``output_size``:
      ``O`` (the number of classes for ``'xent'``); ``baseline_note`` says what the baseline is.

    Example::

        task = get("copy", lag=50)
        batch = task.sample(jax.random.key(0), 16)   # xs: [70, 16, 10], ys: [70, 16]
        task.metrics(model_outputs, batch)           # {'loss': ..., 'accuracy': ...}
    """

    name: str
    sample: Callable[[jax.Array, int], Batch]
    baseline_outputs: Callable[[Batch], jax.Array]
    kind: str
    baseline: float
    baseline_note: str
    steps: int
    input_size: int
    output_size: int

    def loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """Masked mean MSE or cross-entropy (nats) of ``outputs [T, B, O]`` against ``batch``."""
        return mse(outputs, batch) if self.kind == "mse" else cross_entropy(outputs, batch)

    def metrics(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """``{'loss'}``, plus ``'accuracy'`` (masked) for classification tasks."""
        out = {"loss": self.loss(outputs, batch)}
        if self.kind == "xent":
            out["accuracy"] = accuracy(outputs, batch)
        return out


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0)) / jnp.maximum(jnp.sum(mask), 1)


def mse(outputs: jax.Array, batch: Batch) -> jax.Array:
    """Mean squared error over masked steps and outputs; ``outputs, ys: [T, B, O]``."""
    return _masked_mean(jnp.mean((outputs - batch.ys) ** 2, axis=-1), batch.mask)


def cross_entropy(logits: jax.Array, batch: Batch) -> jax.Array:
    """Mean cross-entropy (nats) over masked steps; ``logits: [T, B, C]``, ``ys: [T, B]`` int."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch.ys[..., None], axis=-1)[..., 0]
    return _masked_mean(nll, batch.mask)


def accuracy(logits: jax.Array, batch: Batch) -> jax.Array:
    """Fraction of masked steps where ``argmax(logits) == ys``."""
    return _masked_mean((jnp.argmax(logits, axis=-1) == batch.ys).astype(logits.dtype), batch.mask)


def _one_hot(tokens, n, dtype):
    return jax.nn.one_hot(tokens, n, dtype=dtype)


def _last_step_mask(steps, batch):
    return jnp.broadcast_to((jnp.arange(steps) == steps - 1)[:, None], (steps, batch))
