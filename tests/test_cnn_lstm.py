"""``gradflow.learn.CNNLSTM`` against independent references: ``jax.grad`` of a loss written with the
encoder vmapped over time and a Python loop over frames, the last carry's gradient by hand, the
blob frames' labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells
from gradflow.learn import CNNLSTM, FrameEncoder, blob_frames

T, B, H = 6, 4, 8


def _loop_loss(model, params, frames, labels):
    if model.encoder is None:
        xs = frames.reshape((T, B, -1))
    else:
        xs = jax.vmap(lambda f: model.encoder.apply(params["cnn"], f))(frames)
    carry = model.cell.initial_carry(B)
    for t in range(T):
        carry, _ = model.cell.step(params["lstm"], carry, xs[t])
    logits = carry[1] @ params["out"]["w"] + params["out"]["b"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(B), labels])


def test_blob_frames_label_is_a_blob_in_frame_zero():
    frames, labels = blob_frames(0, T, 32)
    assert frames.shape == (T, 32, 8, 8, 1) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0].max(axis=(1, 2, 3)) > 0.6, labels.astype(bool))
    assert 0 < labels.sum() < 32


@pytest.mark.parametrize(
    ("encoder", "dtype", "tol"),
    [pytest.param(FrameEncoder(6), "float32", 1e-4, marks=pytest.mark.slow), (None, "float64", 1e-10)],
)
def test_frame_gradients_and_loss_equal_loop_autodiff(encoder, dtype, tol):
    model = CNNLSTM(encoder, cells.get("lstm", hidden_size=H, forget_bias=1.0, dtype=dtype))
    params = model.init(jax.random.key(0), (8, 8, 1))
    if encoder is None:  # all float64: the readout too
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    frames, labels = blob_frames(1, T, B)
    frames = jnp.asarray(frames, dtype)
    assert model.loss(params, frames, labels) == pytest.approx(
        float(_loop_loss(model, params, frames, labels)), rel=tol
    )
    g = jax.grad(lambda f: _loop_loss(model, params, f, labels))(frames)
    g_frames, g_inputs = model.input_log10_grads(params, frames, labels)
    want = np.log10(np.linalg.norm(np.asarray(g, np.float64).reshape(T, -1), axis=1))
    np.testing.assert_allclose(g_frames, want, atol=tol)
    assert g_inputs.shape == (T,) and np.isfinite(g_inputs).all()


def test_carry_flow_last_entry_by_hand():
    cell = cells.get("lstm", hidden_size=H, forget_bias=1.0, dtype="float64")
    model = CNNLSTM(None, cell)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(3), (8, 8, 1)))
    frames, labels = blob_frames(2, T, B)
    frames = jnp.asarray(frames, jnp.float64)
    flow = model.carry_flow(params, frames, labels)
    assert flow.total_log10_norms.shape == (T + 1,)
    xs = frames.reshape((T, B, -1))
    carry = cell.initial_carry(B)
    for t in range(T):
        carry, _ = cell.step(params["lstm"], carry, xs[t])
    # dL/dc_T = 0, dL/dh_T = (softmax - onehot) W^T / B
    p = jax.nn.softmax(carry[1] @ params["out"]["w"] + params["out"]["b"])
    dh = (p - jax.nn.one_hot(labels, 2)) @ params["out"]["w"].T / B
    assert flow.total_log10_norms[-1] == pytest.approx(np.log10(np.linalg.norm(dh)), abs=1e-10)
    assert flow.loss == pytest.approx(float(_loop_loss(model, params, frames, labels)), rel=1e-12)
