"""``gradflow.learn.Seq2Seq`` against independent references: ``jax.grad`` of losses written as
Python loops over time steps (no scan), a hand-built copy batch, a hand-computed Adam step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells
from gradflow.learn import Seq2Seq, copy_batch, fit_copy, needed_position

K, H, S, B = 3, 5, 4, 2  # symbols, hidden, source length, batch
CELL = cells.get("lstm", hidden_size=H, forget_bias=1.0, dtype="float64")
MODEL = Seq2Seq(CELL, CELL, K)
SRC = np.array([[0, 1, 2, 1], [2, 2, 0, 1]], np.int32)


def _loop(params, carry, xs):
    ys = []
    for t in range(xs.shape[0]):
        carry, y = CELL.step(params, carry, xs[t])
        ys.append(y)
    return carry, (jnp.stack(ys) if ys else None)


def _losses(params, x_enc, x_dec, targets, carry_at=None, carry=None):
    """Cross-entropy per target; with ``carry_at = t`` the encoder starts from ``carry`` after t steps."""
    start = 0 if carry_at is None else carry_at
    carry = CELL.initial_carry(B) if carry is None else carry
    carry, _ = _loop(params["enc"], carry, x_enc[start:])
    _, ys = _loop(params["dec"], carry, x_dec)
    logp = jax.nn.log_softmax(ys @ params["out"]["w"] + params["out"]["b"])
    return jnp.stack([-jnp.mean(logp[j, jnp.arange(B), targets[j]]) for j in range(S)])


def _batch(reverse):
    x_enc, x_dec, targets = copy_batch(SRC, K, reverse)
    return x_enc.astype(jnp.float64), x_dec.astype(jnp.float64), targets


def test_copy_batch_by_hand():
    x_enc, x_dec, targets = copy_batch(SRC[:1, :3], K, reverse=True)
    assert np.argmax(x_enc, -1)[:, 0].tolist() == [2, 1, 0]  # reversed source
    assert np.argmax(x_dec, -1)[:, 0].tolist() == [3, 0, 1]  # GO, then the targets shifted
    assert targets[:, 0].tolist() == [0, 1, 2] and x_dec.shape == (3, 1, K + 1)
    assert needed_position(4, True).tolist() == [3, 2, 1, 0] and needed_position(4, False).tolist() == [
        0,
        1,
        2,
        3,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
def test_losses_and_position_gradients_equal_loop_autodiff(reverse):
    params = MODEL.init(jax.random.key(0))
    batch = _batch(reverse)
    loss, acc = MODEL.losses(params, *batch)
    np.testing.assert_allclose(loss, _losses(params, *batch), rtol=1e-12)
    assert acc.shape == (S,) and ((acc >= 0) & (acc <= 1)).all()
    grads, err = MODEL.position_log10_grads(params, *batch)
    for j in range(S):
        g = jax.grad(lambda xe, j=j: _losses(params, xe, *batch[1:])[j])(batch[0])  # [S, B, K]
        np.testing.assert_allclose(grads[j], np.log10(np.linalg.norm(g.reshape(S, -1), axis=1)), atol=1e-10)
        logits = MODEL.logits(params, *batch[:2])[j]
        e = (jax.nn.softmax(logits) - jax.nn.one_hot(batch[2][j], K)) / B  # dL_j/dlogits_j by hand
        assert err[j] == pytest.approx(np.log10(np.linalg.norm(e)), abs=1e-10)


@pytest.mark.slow
def test_encoder_flow_equals_brute_force_per_encoder_step():
    params = MODEL.init(jax.random.key(1))
    x_enc, x_dec, targets = _batch(False)
    flow = MODEL.encoder_flow(params, x_enc, x_dec, targets)
    carry = CELL.initial_carry(B)
    for t in range(S + 1):
        g = jax.grad(lambda c, t=t: jnp.mean(_losses(params, x_enc, x_dec, targets, t, c)))(carry)
        norm = np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree_util.tree_leaves(g)))
        assert flow.total_log10_norms[t] == pytest.approx(np.log10(norm), abs=1e-10), t
        if t < S:
            carry, _ = CELL.step(params["enc"], carry, x_enc[t])


def test_fit_copy_first_step_is_the_hand_computed_adam_update():
    params = MODEL.init(jax.random.key(2))
    src = SRC[None]  # one step, batch SRC
    lr, eps = 1e-2, 1e-8
    got, curve = fit_copy(MODEL, params, src, True, lr)
    batch = _batch(True)
    grads = jax.grad(lambda p: jnp.mean(_losses(p, *batch)))(params)
    want = jax.tree_util.tree_map(lambda p, g: p - lr * g / (jnp.abs(g) + eps), params, grads)
    # atol: where |g| ~ eps, g / (|g| + eps) magnifies the gradient's last digits
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8), got, want)
    assert curve[0] == pytest.approx(float(jnp.mean(_losses(params, *batch))), rel=1e-12)
