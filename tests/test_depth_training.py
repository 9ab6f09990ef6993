"""``gradflow.Model`` around a depth stack, trained by ``gradflow.train`` on the teacher task: one
update against ``jax.grad`` of a loss written as a Python loop over layers (float64), the per-layer
flow against brute force, the teacher task's data, the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import Model, cells, tasks, train

I, D, L, N = 3, 5, 4, 6  # inputs, width, layers, examples


def _loop_outputs(kind, params, xs, projection, norm=None):
    """Python loop over layers, written from the stacks' docstrings."""
    x = xs @ projection
    alpha = 1.0 / np.sqrt(L)
    for layer in range(L):
        a = x
        if norm == "batch":
            mean, var = a.mean(0, keepdims=True), a.var(0, keepdims=True)
            a = (a - mean) / jnp.sqrt(var + 1e-5) * params["cell"]["scale"][layer] + params["cell"]["shift"][
                layer
            ]
        f = jnp.tanh(a) @ params["cell"]["w"][layer] + params["cell"]["b"][layer]
        x = x + alpha * f if kind == "residual" else f
    return x @ params["readout"]["w"] + params["readout"]["b"]


def _fixed_projection():
    return jax.random.normal(jax.random.key(0), (I, D), jnp.float64) / np.sqrt(I)


def _setup(kind, norm, projection):
    task = tasks.get("teacher", inputs=I, examples=N, dtype="float64")
    cell = cells.get(kind, width=D, depth=L, norm=norm, bias_scale=0.3, dtype="float64")
    model = Model(cell, 1, projection=projection)
    params0 = model.init(jax.random.fold_in(jax.random.key(0), 0), I)  # what train_runs draws for seed 0
    batch = task.sample(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), 0), N)  # step 0
    return task, model, params0, batch


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "norm"), [("residual", None), ("plain", "batch")])
def test_one_sgd_step_equals_jax_grad_of_a_loop_written_loss(kind, norm):
    task, model, params0, batch = _setup(kind, norm, "fixed")
    proj = _fixed_projection()

    def loss(p):
        return jnp.mean((_loop_outputs(kind, p, batch.xs[0], proj, norm) - batch.ys[0]) ** 2)

    lr = 0.05
    expected = jax.tree_util.tree_map(lambda p, g: p - lr * g, params0, jax.grad(loss)(params0))
    res = train(model, task, steps=1, batch=N, eval_batch=N, eval_every=1, optimizer="sgd",
                learning_rate=lr, early_stop=False)  # fmt: skip
    got = jax.tree_util.tree_map(lambda a: a[0], res.params)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, expected
    )
    np.testing.assert_allclose(res.train_loss[0, 0], loss(params0), rtol=1e-6)  # histories: float32
    # the held-out set is the whole training set, so the final score is the full-set loss after the step
    np.testing.assert_allclose(res.eval_loss[0, -1], loss(expected), rtol=1e-6)


def test_one_adam_step_with_a_learned_projection_is_minus_lr_sign_like():
    task, model, params0, batch = _setup("residual", None, "learned")
    assert params0["projection"]["w"].shape == (I, D)

    def loss(p):
        outputs = _loop_outputs("residual", p, batch.xs[0], p["projection"]["w"])
        return jnp.mean((outputs - batch.ys[0]) ** 2)

    # atol: where |g| ~ eps, g / (|g| + eps) magnifies the gradient's last digits
    lr, eps = 1e-2, 1e-8  # Adam's first step: m_hat = g, v_hat = g^2 -> -lr g / (|g| + eps)
    grads = jax.grad(loss)(params0)
    expected = jax.tree_util.tree_map(lambda p, g: p - lr * g / (jnp.abs(g) + eps), params0, grads)
    res = train(model, task, steps=1, batch=N, eval_batch=N, eval_every=1, learning_rate=lr, early_stop=False)
    got = jax.tree_util.tree_map(lambda a: a[0], res.params)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8), got, expected
    )


def test_per_layer_flow_equals_brute_force():
    task, model, params0, batch = _setup("residual", None, "fixed")
    res = train(
        model, task, steps=1, batch=N, eval_batch=N, eval_every=1, learning_rate=1e-3, early_stop=False
    )
    assert res.flow_total_log10.shape == (1, 2, L + 1)
    alpha, p = 1.0 / np.sqrt(L), params0["cell"]
    x = batch.xs[0] @ _fixed_projection()

    def rest(x, start):  # the loss as a function of the layer-`start` activations
        for layer in range(start, L):
            x = x + alpha * (jnp.tanh(x) @ p["w"][layer] + p["b"][layer])
        out = x @ params0["readout"]["w"] + params0["readout"]["b"]
        return jnp.mean((out - batch.ys[0]) ** 2)

    brute = []
    for layer in range(L + 1):
        brute.append(np.log10(np.linalg.norm(jax.grad(rest)(x, layer))))
        if layer < L:
            x = x + alpha * (jnp.tanh(x) @ p["w"][layer] + p["b"][layer])
    np.testing.assert_allclose(res.flow_total_log10[0, 0], brute, atol=1e-6)  # histories: float32
    np.testing.assert_allclose(res.flow_log10["h"][0, 0], brute, atol=1e-6)


def test_model_apply_equals_the_loop():
    _, model, params0, batch = _setup("plain", "batch", "fixed")
    got = model.apply(params0, batch.xs)
    want = _loop_outputs("plain", params0, batch.xs[0], _fixed_projection(), "batch")[None]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_teacher_task_is_standardized_and_full_batch_is_the_whole_set():
    task = tasks.get("teacher", inputs=8, hidden=16, examples=64, dtype="float64")
    assert (task.steps, task.input_size, task.output_size, task.kind, task.baseline) == (1, 8, 1, "mse", 1.0)
    a, b = task.sample(jax.random.key(1), 64), task.sample(jax.random.key(2), 64)
    y = np.asarray(a.ys[0, :, 0])
    assert abs(y.mean()) < 1e-12 and abs(y.var() - 1.0) < 1e-12
    np.testing.assert_allclose(np.sort(y), np.sort(np.asarray(b.ys[0, :, 0])))  # the same set, permuted
    assert task.loss(task.baseline_outputs(a), a) == pytest.approx(1.0, rel=1e-12)
    # independent numpy draw: x, u, v in that order from default_rng(seed)
    rng = np.random.default_rng(1000)
    x = rng.standard_normal((64, 8))
    t = np.tanh(x @ (2.0 * rng.standard_normal((8, 16)) / np.sqrt(8))) @ rng.standard_normal(16)
    t = (t - t.mean()) / t.std()
    rows = [int(np.argmin(np.abs(x - xi).sum(1))) for xi in np.asarray(a.xs[0])]
    np.testing.assert_allclose(y, t[rows], rtol=1e-12)


def test_errors_are_one_line():
    task = tasks.get("teacher", examples=8)
    with pytest.raises(ValueError, match=r"teacher: batch 9 > examples 8"):
        task.sample(jax.random.key(0), 9)
    with pytest.raises(ValueError, match=r"unknown projection 'random'; choose from \['fixed', 'learned'\]"):
        Model(cells.get("plain", width=4, depth=2), 1, projection="random").init(jax.random.key(0), 8)
    with pytest.raises(ValueError, match="examples must be an integer >= 1, got 0"):
        tasks.get("teacher", examples=0)
