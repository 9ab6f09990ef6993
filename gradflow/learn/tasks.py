"""Long-range dependency tasks generated on the fly from a key, each with its "learned nothing" baseline.

The generators (``adding``, ``copy``, ``temporal_order``, ``lookahead``) are jit-compiled functions of
``key`` with static sizes; ``get(name, **options)`` builds a ``Task`` around one of them (or ``from_npz``).

Every generator returns a time-major ``Batch`` (the ``xs`` that ``gradient_flow`` and ``unroll`` take):

* ``xs: [T, B, I]`` floating inputs,
* ``ys``: ``[T, B, O]`` float targets (``kind='mse'``) or ``[T, B]`` int32 class labels (``kind='xent'``),
* ``mask: [T, B]`` bool, the steps that count (targets elsewhere are placeholders).

A ``Task`` (made by ``get``) bundles a sampler with its loss and its baseline: the loss of the best
predictor that has learned nothing about the dependency (see ``../shared/SCIENCE.md``), so "solved" is
defined relative to it. Losses are means over the masked steps (MSE: also over outputs; cross-entropy in
nats with ``outputs`` as logits).

Example::

    task = gradflow.tasks.get("adding", steps=100)
    batch = jax.jit(task.sample, static_argnums=1)(jax.random.key(0), 32)  # xs: [100, 32, 2]
    task.loss(task.baseline_outputs(batch), batch)                        # about 1/6
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gradflow.cells.checks import defaults, dtype_of, lookup, positive_int, reject_unknown
from gradflow.learn.batches import _NEG, _last_step_mask, _one_hot
from gradflow.learn.batches import Batch as Batch
from gradflow.learn.batches import Task as Task
from gradflow.learn.batches import accuracy as accuracy
from gradflow.learn.batches import cross_entropy as cross_entropy
from gradflow.learn.batches import mse as mse
from gradflow.learn.npz_task import from_npz as from_npz


# ---------------------------------------------------------------------------------------------- adding
@functools.partial(jax.jit, static_argnames=("batch", "steps", "dtype"))
def adding(key: jax.Array, batch: int, steps: int, *, dtype="float32") -> Batch:
    """The adding problem: add the two marked values; answer at the last step.

    ``xs[t, b] = (value, marker)`` with values ``U[0, 1)``; exactly two markers, one uniform in the first
    half (``t < steps // 2``) and one uniform in the second half. Target ``x1 + x2`` (``ys: [T, B, 1]``,
    the same at every step), ``mask`` only at ``t = T - 1``. Predicting the constant 1 scores MSE
    ``Var(x1 + x2) = 1/6`` (not Hochreiter's ``0.5 + (x1 + x2)/4`` variant, baseline 1/24).

    Example::

        b = adding(jax.random.key(0), 32, 100)   # xs: [100, 32, 2], ys: [100, 32, 1]
    """
    steps, dtype = _at_least("steps", steps, 2), dtype_of(dtype)
    k_val, k1, k2 = jax.random.split(key, 3)
    values = jax.random.uniform(k_val, (steps, batch), dtype)
    first = jax.random.randint(k1, (batch,), 0, steps // 2, dtype=jnp.int32)
    second = jax.random.randint(k2, (batch,), steps // 2, steps, dtype=jnp.int32)
    t = jnp.arange(steps)[:, None]
    marker = ((t == first) | (t == second)).astype(dtype)
    target = jnp.sum(values * marker, axis=0)
    ys = jnp.broadcast_to(target[None, :, None], (steps, batch, 1))
    return Batch(jnp.stack([values, marker], axis=-1), ys, _last_step_mask(steps, batch))


def _adding_task(steps: int = 100, *, dtype="float32") -> Task:
    def sample(key, batch):
        return adding(key, batch, steps, dtype=dtype)

    def baseline_outputs(b):
        return jnp.ones_like(b.ys, dtype=b.xs.dtype)

    note = "predict 1: MSE Var(x1 + x2) = 1/6"
    return Task("adding", sample, baseline_outputs, "mse", 1 / 6, note, steps, 2, 1)


# ------------------------------------------------------------------------------------------------ copy
@functools.partial(jax.jit, static_argnames=("batch", "lag", "symbols", "length", "dtype"))
def copy(
    key: jax.Array, batch: int, lag: int, *, symbols: int = 8, length: int = 10, dtype="float32"
) -> Batch:
    """The copy (memory) task of Arjovsky et al. 2016: recall ``length`` symbols after ``lag`` steps.

    Tokens: 0 blank, ``1..symbols`` data, ``symbols + 1`` the delimiter. Input: ``length`` data symbols,
    ``lag - 1`` blanks, the delimiter, ``length`` blanks; target: blank for the first ``lag + length``
    steps, then the data symbols. So ``T = lag + 2 * length`` (``lag + 20``: their ``T`` is ``lag``,
    the blanks and delimiter between the last data symbol and the start of the recall). Inputs one-hot
    ``[T, B, symbols + 2]``; ``ys [T, B]`` in ``0..symbols`` (classes ``symbols + 1``); every step counts.
    Baseline: blank until the delimiter, then uniform over the symbols (knows the phase, remembers
    nothing): ``length * ln(symbols) / T`` nats per step, ``10 ln 8 / (lag + 20)``.

    Example::

        b = copy(jax.random.key(0), 16, 100)   # xs: [120, 16, 10], ys: [120, 16]
    """
    lag, dtype = positive_int("lag", lag), dtype_of(dtype)
    symbols, length = _at_least("symbols", symbols, 2), positive_int("length", length)
    data = jax.random.randint(key, (length, batch), 1, symbols + 1, dtype=jnp.int32)
    blanks = jnp.zeros((lag - 1, batch), data.dtype)
    delim = jnp.full((1, batch), symbols + 1, data.dtype)
    tokens = jnp.concatenate([data, blanks, delim, jnp.zeros_like(data)])
    ys = jnp.concatenate([jnp.zeros((lag + length, batch), jnp.int32), data.astype(jnp.int32)])
    steps = lag + 2 * length
    return Batch(_one_hot(tokens, symbols + 2, dtype), ys, jnp.ones((steps, batch), bool))


def _copy_task(lag: int = 100, *, symbols: int = 8, length: int = 10, dtype="float32") -> Task:
    steps = positive_int("lag", lag) + 2 * positive_int("length", length)

    def baseline_outputs(b):
        recall = (jnp.arange(steps) >= lag + length)[:, None, None]
        blank = jnp.arange(symbols + 1) == 0
        logits = jnp.where(recall, jnp.where(blank, _NEG, 0.0), jnp.where(blank, 0.0, _NEG))
        return jnp.broadcast_to(logits, (*b.ys.shape, symbols + 1)).astype(b.xs.dtype)

    def sample(key, batch):
        return copy(key, batch, lag, symbols=symbols, length=length, dtype=dtype)

    base = length * math.log(symbols) / steps
    note = (
        f"blank, then uniform over {symbols} symbols: {length} ln {symbols} / (lag + {2 * length}) nats/step"
    )
    return Task("copy", sample, baseline_outputs, "xent", base, note, steps, symbols + 2, symbols + 1)


# -------------------------------------------------------------------------------------- temporal order
TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")


@functools.partial(jax.jit, static_argnames=("batch", "steps", "dtype"))
def temporal_order(key: jax.Array, batch: int, steps: int, *, dtype="float32") -> Batch:
    """Temporal order (Hochreiter & Schmidhuber 1997, task 6a): classify the order of X/Y at two places.

    Tokens ``TEMPORAL_ORDER_SYMBOLS``: distractors ``a b c d`` (0-3), relevant ``X Y`` (4, 5), start ``E``
    (6) at ``t = 0`` and end ``B`` (7) at ``t = T - 1``. The relevant symbols sit at ``t1`` uniform in
    ``[round(0.1 T), round(0.2 T)]`` and ``t2`` uniform in ``[round(0.5 T), round(0.6 T)]`` (10-20 and
    50-60 for ``T = 100``, as in the paper, whose ``T`` varies in 100-110; here it is fixed), the rest
    uniform distractors. Class ``2 * [first is Y] + [second is Y]`` (XX, XY, YX, YY = 0..3), labelled at
    every step, ``mask`` only at ``T - 1``. Inputs one-hot ``[T, B, 8]``. Baseline: uniform over the 4
    classes, cross-entropy ``ln 4``, 75% error.

    Example::

        b = temporal_order(jax.random.key(0), 16, 100)   # xs: [100, 16, 8], ys: [100, 16]
    """
    steps, dtype = _at_least("steps", steps, 10), dtype_of(dtype)
    k_dis, k_t1, k_t2, k_sym = jax.random.split(key, 4)
    tokens = jax.random.randint(k_dis, (steps, batch), 0, 4, dtype=jnp.int32)
    t1 = jax.random.randint(k_t1, (batch,), round(0.1 * steps), round(0.2 * steps) + 1, dtype=jnp.int32)
    t2 = jax.random.randint(k_t2, (batch,), round(0.5 * steps), round(0.6 * steps) + 1, dtype=jnp.int32)
    is_y = jax.random.bernoulli(k_sym, jnp.float32(0.5), (2, batch)).astype(tokens.dtype)
    t = jnp.arange(steps)[:, None]
    tokens = jnp.where(t == t1, 4 + is_y[0], jnp.where(t == t2, 4 + is_y[1], tokens))
    tokens = jnp.where(t == 0, 6, jnp.where(t == steps - 1, 7, tokens))
    label = (2 * is_y[0] + is_y[1]).astype(jnp.int32)
    ys = jnp.broadcast_to(label, (steps, batch))
    return Batch(_one_hot(tokens, 8, dtype), ys, _last_step_mask(steps, batch))


def _temporal_order_task(steps: int = 100, *, dtype="float32") -> Task:
    def sample(key, batch):
        return temporal_order(key, batch, steps, dtype=dtype)

    def baseline_outputs(b):
        return jnp.zeros((*b.ys.shape, 4), b.xs.dtype)

    note = "uniform over 4 orders: ln 4 nats, 75% error"
    return Task("temporal_order", sample, baseline_outputs, "xent", math.log(4), note, steps, 8, 4)


# ------------------------------------------------------------------------------------------- lookahead
@functools.partial(jax.jit, static_argnames=("batch", "steps", "delay", "symbols", "dtype"))
def lookahead(key: jax.Array, batch: int, steps: int, *, delay: int = 5, symbols: int = 8, dtype="float32"):
    """A bidirectional task: at step ``t`` output the symbol that arrives ``delay`` steps *later*.

    ``xs``: i.i.d. uniform symbols, one-hot ``[T, B, symbols]``; ``ys[t] = token[t + delay]`` for
    ``t < T - delay`` (``mask``), 0 on the last ``delay`` steps (masked out). The future is independent of
    the past, so a causal (forward-only) model can do no better than the baseline, uniform over the
    symbols: cross-entropy ``ln(symbols)``, accuracy ``1 / symbols``; a bidirectional model can reach 0.

    Example::

        b = lookahead(jax.random.key(0), 16, 50, delay=5)   # xs: [50, 16, 8], ys: [50, 16]
    """
    steps, dtype = positive_int("steps", steps), dtype_of(dtype)
    delay, symbols = positive_int("delay", delay), _at_least("symbols", symbols, 2)
    if delay >= steps:
        raise ValueError(f"lookahead: delay={delay} must be < steps={steps}")
    tokens = jax.random.randint(key, (steps, batch), 0, symbols, dtype=jnp.int32)
    ys = jnp.concatenate([tokens[delay:], jnp.zeros((delay, batch), tokens.dtype)]).astype(jnp.int32)
    mask = jnp.broadcast_to((jnp.arange(steps) < steps - delay)[:, None], (steps, batch))
    return Batch(_one_hot(tokens, symbols, dtype), ys, mask)


def _lookahead_task(steps: int = 50, *, delay: int = 5, symbols: int = 8, dtype="float32") -> Task:
    def sample(key, batch):
        return lookahead(key, batch, steps, delay=delay, symbols=symbols, dtype=dtype)

    def baseline_outputs(b):
        return jnp.zeros((*b.ys.shape, symbols), b.xs.dtype)

    note = f"uniform over {symbols} symbols (the best a causal model can do): ln {symbols} nats"
    return Task(
        "lookahead", sample, baseline_outputs, "xent", math.log(symbols), note, steps, symbols, symbols
    )


# --------------------------------------------------------------------------------------------- teacher
def _teacher_task(
    inputs: int = 8, hidden: int = 16, examples: int = 128, seed: int = 1000, *, dtype="float32"
) -> Task:
    """Feed-forward regression on a fixed set: a random one-hidden-layer tanh teacher (``T = 1``).

    Drawn with numpy from ``seed``, in this order: ``x [N, I] ~ N(0, 1)``, ``u [I, H] ~ N(0, 4/I)``,
    ``v [H] ~ N(0, 1)``; ``y = tanh(x u) v``, standardized over the set (mean 0, variance 1). So the
    baseline, predicting the mean, scores MSE ``var(y) = 1``. ``sample(key, B)`` returns ``B <= N``
    distinct examples (a random permutation's first ``B``; ``B = N``: the whole set, full-batch
    training); the held-out batch comes from the same set (the training error is what is scored).
    ``xs [1, B, I]``, ``ys [1, B, 1]``; for ``gradflow.Model`` around a depth stack.
    """
    for name, value in (("inputs", inputs), ("hidden", hidden), ("examples", examples)):
        _at_least(name, value, 1)
    _at_least("seed", seed, 0)
    dtype = dtype_of(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((examples, inputs))
    u = 2.0 * rng.standard_normal((inputs, hidden)) / inputs**0.5
    y = np.tanh(x @ u) @ rng.standard_normal(hidden)
    y = (y - y.mean()) / y.std()
    data = (jnp.asarray(x, dtype), jnp.asarray(y[:, None], dtype))

    def sample(key, batch):
        if batch > examples:
            raise ValueError(
                f"teacher: batch {batch} > examples {examples}; draw at most examples={examples}"
            )
        rows = jax.random.permutation(key, examples)[:batch]
        return Batch(data[0][rows][None], data[1][rows][None], jnp.ones((1, batch), bool))

    def baseline_outputs(b):
        return jnp.zeros(b.ys.shape, b.xs.dtype)

    note = "the mean target (0): its variance, 1"
    return Task("teacher", sample, baseline_outputs, "mse", 1.0, note, 1, inputs, 1)


# -------------------------------------------------------------------------------------------- registry
def _at_least(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


_REGISTRY = {
    "adding": _adding_task,
    "copy": _copy_task,
    "temporal_order": _temporal_order_task,
    "lookahead": _lookahead_task,
    "teacher": _teacher_task,
    "npz": from_npz,
}


def names() -> list[str]:
    """Names accepted by ``get``, sorted."""
    return sorted(_REGISTRY)


def options(name: str) -> dict[str, object]:
    """``{option: default}`` of task ``name`` (``None`` where required, e.g. ``npz``'s ``path``)."""
    return defaults(lookup("task", _REGISTRY, name))


def get(name: str, **opts) -> Task:
    """Build the task ``name`` with ``opts`` (T or lag, dtype, ...); see ``options(name)``.

    Raises ``ValueError`` naming the unknown task or option and the choices.

    Example::

        task = get("copy", lag=100)        # T = 120, baseline 10 ln 8 / 120
        task = get("npz", path="mine.npz")
    """
    reject_unknown("task", name, opts, options(name))
    if name == "npz" and "path" not in opts:
        raise ValueError("task 'npz' needs path=<file.npz>")
    task = _REGISTRY[name](**opts)
    jax.eval_shape(
        lambda key: task.sample(key, 1), jax.random.key(0)
    )  # bad sizes fail here, not at the first sample
    return task
