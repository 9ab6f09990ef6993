"""``gradflow.learn.dropout_lstm_stack``: a stacked LSTM with dropout on chosen edges.

References: without keys (evaluation) or at rate 0 it is ``cells.stacked`` of the same LSTMs; one
step with every edge dropped equals the LSTM steps written out by hand with the documented masks
(``fold_in(key, .)``: h 0, upward l, c 100 + l); variational masks stay fixed over a sequence, fresh
ones change; a scan of the cell equals a Python loop over its steps, gradients included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells, unroll
from gradflow.learn import dropout_lstm_stack

HIDDEN, LAYERS, B, I, T = 5, 2, 4, 3, 6


def _setup(*rates):
    cell = dropout_lstm_stack(HIDDEN, LAYERS, *rates)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    return cell, params, xs


def _stacked_ys(params, xs):
    stack = cells.stacked([cells.get("lstm", hidden_size=HIDDEN)] * LAYERS)
    return unroll(stack, params, stack.initial_carry(B), xs)[1]


@pytest.mark.parametrize("with_keys", [False, True])
def test_without_keys_or_at_rate_zero_it_is_the_plain_stack(with_keys):
    rates = (0.0, 0.0, 0.0, 0.0) if with_keys else (0.5, 0.5, 0.5, 1.0)
    cell, params, xs = _setup(*rates)
    inputs = cells.dropout_inputs(xs, jax.random.key(2)) if with_keys else xs
    ys = unroll(cell, params, cell.initial_carry(B), inputs)[1]
    np.testing.assert_allclose(np.asarray(ys), np.asarray(_stacked_ys(params, xs)), rtol=1e-6, atol=1e-7)


def test_one_step_equals_the_hand_written_masks():
    p_up, p_h, p_c = 0.3, 0.4, 0.5
    cell, params, xs = _setup(p_up, p_h, p_c, 0.0)
    lstm = cells.get("lstm", hidden_size=HIDDEN)
    rng = np.random.default_rng(3)
    layer_carries = tuple(
        (jnp.asarray(rng.standard_normal((B, HIDDEN)), jnp.float32),) * 2 for _ in range(LAYERS)
    )
    key = jax.random.key(4)
    (new, masks), y = cell.step(
        params, (layer_carries, jnp.zeros((LAYERS, B, HIDDEN), jnp.float32)), (xs[0], key)
    )

    def keep(k, rate, shape):
        return np.asarray(jax.random.bernoulli(k, 1.0 - rate, shape), np.float32) / (1.0 - rate)

    h_masks = keep(jax.random.fold_in(key, 0), p_h, (LAYERS, B, HIDDEN))
    np.testing.assert_array_equal(np.asarray(masks), h_masks)
    x = xs[0]
    for layer in range(LAYERS):
        c, h = layer_carries[layer]
        c = c * keep(jax.random.fold_in(key, 100 + layer), p_c, c.shape)
        if layer > 0:
            x = x * keep(jax.random.fold_in(key, layer), p_up, x.shape)
        (c, h), x = lstm.step(params[layer], (c, h * h_masks[layer]), x)
        np.testing.assert_allclose(np.asarray(new[layer][0]), np.asarray(c), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(new[layer][1]), np.asarray(h), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variational", [0.0, 1.0])
def test_variational_masks_stay_fixed_and_fresh_ones_change(variational):
    rate = 0.25
    cell, params, _ = _setup(0.0, rate, 0.0, variational)
    big = 64
    xs = jnp.zeros((T, big, I), jnp.float32)
    keys = jax.random.split(jax.random.key(5), T)

    def step(carry, x_key):
        carry, _ = cell.step(params, carry, x_key)
        return carry, carry[1]

    _, masks = jax.lax.scan(step, cell.initial_carry(big), (xs, keys))  # [T, layers, big, hidden]
    masks = np.asarray(masks)
    np.testing.assert_allclose(np.unique(masks), [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
    assert abs((masks > 0).mean() - (1.0 - rate)) < 0.02  # 3840 draws: ~0.007 standard deviation
    same = [np.array_equal(masks[0], masks[t]) for t in range(1, T)]
    assert all(same) if variational else not any(same)


@pytest.mark.slow
def test_scan_equals_a_python_loop_including_the_gradient():
    cell, params, xs = _setup(0.2, 0.3, 0.1, 1.0)
    keys = jax.random.split(jax.random.key(6), T)

    def scanned(p):
        return jnp.sum(unroll(cell, p, cell.initial_carry(B), (xs, keys))[1] ** 2)

    def looped(p):
        carry, total = cell.initial_carry(B), 0.0
        for t in range(T):
            carry, y = cell.step(p, carry, (xs[t], keys[t]))
            total = total + jnp.sum(y**2)
        return total

    np.testing.assert_allclose(scanned(params), looped(params), rtol=1e-5)
    g_scan, g_loop = jax.grad(scanned)(params), jax.grad(looped)(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_scan), jax.tree_util.tree_leaves(g_loop), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree_util.tree_leaves(g_scan))
