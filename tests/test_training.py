"""Training (issue 5): the train step against jax.grad, clipping, determinism, grouping, divergence,
early stop, checkpoints and resume, gate statistics, parameter counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiered

import gradflow
from gradflow import cells, tasks, training
from gradflow.engine.training import Model, Settings, train, train_runs


def _nan_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------------ the model
def test_model_apply_is_scan_plus_readout():
    cell = cells.get("gru", hidden_size=8, dtype="float64")
    model = Model(cell, 3)
    params = model.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (7, 4, 2), jnp.float64)
    _, ys = gradflow.unroll(cell, params["cell"], cell.initial_carry(4), xs)
    want = ys @ params["readout"]["w"] + params["readout"]["b"]
    np.testing.assert_allclose(model.apply(params, xs), want, rtol=1e-12)
    last = Model(cell, 3, readout="last").apply(params, xs)
    np.testing.assert_allclose(last[-1], want[-1], rtol=1e-12)
    assert np.all(np.asarray(last[:-1]) == 0.0)


@pytest.mark.slow
def test_bidirectional_model_sees_the_future():
    """Output at t=0 depends on the last input only for the bidirectional model."""
    xs = jax.random.normal(jax.random.key(1), (6, 2, 3), jnp.float64)
    for cell_name, bidi in (("lstm", False), ("bidirectional", True)):
        cell = cells.get(
            cell_name,
            hidden_size=5,
            **({"cell_options": {"dtype": "float64"}} if bidi else {"dtype": "float64"}),
        )
        model = Model(cell, 1, bidirectional=bidi)
        params = model.init(jax.random.key(0), 3)
        out = model.apply(params, xs)
        assert out.shape == (6, 2, 1)
        g = jax.grad(lambda x, params=params, model=model: model.apply(params, x)[0].sum())(xs)
        assert (np.abs(np.asarray(g[-1])).max() > 1e-8) == bidi
    assert params["readout"]["w"].shape == (10, 1)  # both directions read out


def test_gradient_flow_loss_params_equals_jax_grad():
    cell = cells.get("lstm", hidden_size=6, dtype="float64")
    model = Model(cell, 2)
    params = model.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (9, 4, 3), jnp.float64)
    target = jax.random.normal(jax.random.key(2), (9, 4, 2), jnp.float64)

    def full(p):
        return jnp.mean((model.apply(p, xs) - target) ** 2)

    def loss_fn(ys, carry, readout):
        return jnp.mean((model.outputs(readout, ys) - target) ** 2)

    res = gradflow.gradient_flow(
        cell.step, params["cell"], cell.initial_carry(4), xs, loss_fn, loss_params=params["readout"]
    )
    want = jax.grad(full)(params)
    np.testing.assert_allclose(res.loss, full(params), rtol=1e-12)
    for got, ref in ((res.grads[0], want["cell"]), (res.grads[1], want["readout"])):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)


# ----------------------------------------------------------------------------------- one train step
def _one_step_reference(model, task, settings_batch, seed, lr, clip=None):
    """Params after one SGD step computed independently: Model.init, task.sample, jax.grad."""
    params = model.init(jax.random.fold_in(jax.random.key(seed), 0), task.input_size)
    batch = task.sample(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), 0), settings_batch)
    grads = jax.grad(lambda p: task.loss(model.apply(p, batch.xs), batch))(params)
    norm = optax.tree.norm(grads)
    scale = 1.0 if clip is None or norm <= clip else clip / norm
    return params, jax.tree_util.tree_map(lambda p, g: p - lr * scale * g, params, grads), float(norm)


@pytest.mark.parametrize("clip", tiered([None, 0.01], {0.01}))
def test_one_sgd_step_matches_jax_grad(clip):
    task = tasks.get("adding", steps=12, dtype="float64")
    model = Model(cells.get("rnn", hidden_size=8, dtype="float64"), 1, readout="last")
    res = train(
        model, task, seeds=[3], steps=1, batch=16, optimizer="sgd", learning_rate=0.5, eval_every=1,
        eval_batch=8, clip=clip,
    )  # fmt: skip
    _, want, norm = _one_step_reference(model, task, 16, 3, 0.5, clip)
    got = jax.tree_util.tree_map(lambda a: a[0], res.params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.grad_norm[0, 0], norm, rtol=1e-6)  # histories are float32
    assert bool(res.clipped[0, 0]) == (clip is not None and norm > clip)
    assert norm > 0.01  # the clipped case really clips


@pytest.mark.slow
def test_stacked_dropout_step_matches_jax_grad_with_the_same_masks():
    """Training pairs the inputs with per-step dropout keys (upward edges only); evaluation has none."""
    task = tasks.get("adding", steps=6, dtype="float64")
    cell = cells.get("stacked", hidden_size=8, cell="lstm", num_layers=2, dropout=0.5,
                     cell_options={"dtype": "float64"})  # fmt: skip
    model = Model(cell, 1, readout="last", dropout=True)
    res = train(model, task, seeds=[0], steps=1, batch=8, optimizer="sgd", learning_rate=0.5, eval_every=1,
                eval_batch=8)  # fmt: skip
    params = model.init(jax.random.fold_in(jax.random.key(0), 0), task.input_size)
    k_step = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), 0)
    batch = task.sample(k_step, 8)
    xs = cells.dropout_inputs(batch.xs, jax.random.fold_in(k_step, 1))

    def loss(p):
        _, ys = gradflow.unroll(cell, p["cell"], cell.initial_carry(8), xs)
        return task.loss(model.outputs(p["readout"], ys), batch)

    g = jax.grad(loss)(params)
    want = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, g)
    got = jax.tree_util.tree_map(lambda a: a[0], res.params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    no_drop = jax.grad(lambda p: task.loss(model.apply(p, batch.xs), batch))(params)
    assert not np.allclose(no_drop["readout"]["w"], g["readout"]["w"])  # the masks did something


def test_schedule_multiplies_the_learning_rate():
    settings = Settings(steps=10, eval_every=10, optimizer="sgd", schedule="linear",
                        schedule_options={"end_value": 0.0, "transition_steps": 4})  # fmt: skip
    tx = training.optimizer(settings, 0.5, jnp.inf)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    g = {"w": jnp.array([1.0, -2.0, 0.5])}
    for k in range(5):
        updates, state = tx.update(g, state, params)
        np.testing.assert_allclose(updates["w"], -0.5 * (1 - k / 4) * g["w"], rtol=1e-6)


def test_bad_settings_name_the_problem():
    """``gradflow.train``/``train_runs`` check the one settings type (a config's ``train`` section)."""
    cases = [
        (Settings(optimizer="adamm"), "unknown optimizer 'adamm'"),
        (
            Settings(optimizer="sgd", optimizer_options={"momentun": 0.9}),
            "unknown option 'momentun' for optimizer 'sgd'",
        ),
        (Settings(steps=150, eval_every=100), "multiple of eval_every"),
        (Settings(schedule="cosine_decay"), "schedule 'cosine_decay' needs decay_steps"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            training.check_settings(settings)
    task = tasks.get("adding", steps=5)
    model = Model(cells.get("rnn", hidden_size=4), 1, readout="last")
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        train_runs(
            lambda _: model,
            task,
            Settings(optimizer="adamm"),
            [{"seed": 0, "learning_rate": 0.1, "clip": None}],
        )


# ------------------------------------------------------------------ a shared small training problem
@pytest.fixture(scope="module")
def adding_runs():
    """Three runs of a small LSTM on the adding problem in one group (two seeds, two learning rates)."""
    task = tasks.get("adding", steps=20)
    model = Model(cells.get("lstm", hidden_size=16), 1, readout="last")
    settings = Settings(steps=200, batch=32, eval_every=50, eval_batch=256, solved_fraction=0.1)
    runs = [
        {"seed": 0, "learning_rate": 1e-2},
        {"seed": 1, "learning_rate": 1e-2, "clip": 0.5},
        {"seed": 0, "learning_rate": 3e-3},
    ]
    res = train_runs(lambda _: model, task, settings, runs)
    return task, model, settings, runs, res


def test_result_shapes_and_records(adding_runs):
    task, _, settings, runs, res = adding_runs
    R, E, T = len(runs), settings.steps // settings.eval_every + 1, task.steps
    assert res.train_loss.shape == res.grad_norm.shape == res.clipped.shape == (R, settings.steps)
    assert res.eval_loss.shape == (R, E) and list(res.eval_step) == [0, 50, 100, 150, 200]
    assert res.flow_total_log10.shape == (R, E, T + 1) and set(res.flow_log10) == {"c", "h"}
    # the total norm combines the c and h parts: |g|^2 = |g_c|^2 + |g_h|^2
    c, h, tot = (
        np.asarray(a[:, :4, :-1], np.float64) for a in (*res.flow_log10.values(), res.flow_total_log10)
    )
    np.testing.assert_allclose(tot, 0.5 * np.log10(10 ** (2 * c) + 10 ** (2 * h)), atol=1e-4)
    for r in range(R):  # recorded at every chunk start where the run was still training
        active = res.eval_step[:-1] < res.steps_run[r]
        assert np.all(np.isfinite(res.flow_rate[r, :-1][active])) and active[0]
    assert res.clipped[1].mean() > 0 and not res.clipped[0].any()  # only run 1 clips
    assert set(res.gates) >= {"f/mean", "f/high", "f/low", "i/mean", "o/mean"}
    assert res.param_count == 4 * (2 * 16 + 16 * 16 + 16) + 16 + 1
    assert res.step_time_s > 0 and res.compile_s > 0


def test_eval_loss_matches_an_independent_evaluation(adding_runs):
    """The final held-out loss is the task loss of the returned params on the held-out batch."""
    task, model, settings, _, res = adding_runs
    batch = task.sample(jax.random.key(training.EVAL_KEY), settings.eval_batch)
    for r in range(3):
        p = jax.tree_util.tree_map(lambda a, r=r: a[r], res.params)
        last = np.flatnonzero(np.isfinite(res.eval_loss[r]))[-1]
        np.testing.assert_allclose(
            task.loss(model.apply(p, batch.xs), batch), res.eval_loss[r, last], rtol=1e-5
        )


def test_gate_statistics_match_a_recomputation(adding_runs):
    task, _, settings, _, res = adding_runs
    batch = task.sample(jax.random.key(training.EVAL_KEY), settings.eval_batch)
    p = jax.tree_util.tree_map(lambda a: a[0], res.params)["cell"]
    H = 16

    def body(carry, x):
        c, h = carry
        pre = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
        i, f, g, o = (pre[:, k * H : (k + 1) * H] for k in range(4))
        f = jax.nn.sigmoid(f)
        c = f * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return (c, jax.nn.sigmoid(o) * jnp.tanh(c)), f

    zeros = jnp.zeros((batch.xs.shape[1], H), jnp.float32)
    _, f = jax.lax.scan(body, (zeros, zeros), batch.xs)
    last = np.flatnonzero(np.isfinite(res.eval_loss[0]))[-1]
    np.testing.assert_allclose(res.gates["f/mean"][0, last], np.mean(f), rtol=1e-5)
    np.testing.assert_allclose(res.gates["f/high"][0, last], np.mean(f > 0.9), atol=1e-6)


@pytest.mark.slow
def test_runs_in_a_group_equal_runs_alone(adding_runs):
    """A run trained together with others gives the same curve as trained alone."""
    task, model, settings, runs, res = adding_runs
    alone = train_runs(lambda _: model, task, settings, [runs[2]])
    np.testing.assert_allclose(alone.train_loss[0], res.train_loss[2], rtol=1e-6)
    np.testing.assert_allclose(alone.eval_loss[0], res.eval_loss[2], rtol=1e-6)


@pytest.mark.slow
def test_same_seed_same_curve_bit_for_bit(adding_runs):
    task, model, settings, runs, res = adding_runs
    again = train_runs(lambda _: model, task, settings, runs)
    for field in ("train_loss", "grad_norm", "eval_loss", "flow_total_log10", "flow_rate"):
        _nan_equal(getattr(again, field), getattr(res, field))


@pytest.mark.slow
def test_resume_from_a_checkpoint_is_bit_for_bit(adding_runs, tmp_path):
    task, model, settings, runs, res = adding_runs
    ckpt = tmp_path / "group.ckpt"
    polls = []

    def stop_after_two():
        polls.append(1)
        return len(polls) == 2

    with pytest.raises(KeyboardInterrupt):
        train_runs(lambda _: model, task, settings, runs, checkpoint=ckpt, should_stop=stop_after_two)
    assert ckpt.exists()
    resumed = train_runs(lambda _: model, task, settings, runs, checkpoint=ckpt)
    for field in ("train_loss", "eval_loss", "flow_total_log10", "clipped", "solved_step", "steps_run"):
        _nan_equal(getattr(resumed, field), getattr(res, field))
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(res.params), strict=True
    ):
        _nan_equal(a, b)


# ------------------------------------------------------------------------- divergence and early stop
@pytest.mark.slow
def test_divergence_is_recorded_and_stops_only_that_run():
    """A huge learning rate drives one run to inf/NaN; it is marked diverged, the other run goes on."""
    task = tasks.get("adding", steps=10)
    model = Model(
        cells.get("rnn", hidden_size=8, activation="relu", recurrent_init="identity"), 1, readout="last"
    )
    settings = Settings(steps=40, batch=16, optimizer="sgd", eval_every=20, eval_batch=64)
    runs = [{"seed": 0, "learning_rate": 1e-2}, {"seed": 0, "learning_rate": 1e12}]
    res = train_runs(lambda _: model, task, settings, runs)
    d = int(res.diverged_step[1])
    assert res.diverged_step[0] == -1 and 0 <= d < 40
    assert np.all(np.isfinite(res.train_loss[0]))
    assert np.all(np.isnan(res.train_loss[1, d + 1 :])) and res.steps_run[1] == d
    assert all(np.all(np.isfinite(a[1])) for a in jax.tree_util.tree_leaves(res.params))  # last finite params
    alone = train_runs(lambda _: model, task, settings, runs[:1])
    np.testing.assert_allclose(alone.train_loss[0], res.train_loss[0], rtol=1e-6)


@pytest.mark.slow
def test_early_stop_freezes_a_solved_run():
    """solved_fraction = 1: solved as soon as the held-out loss is at or below the baseline."""
    task = tasks.get("adding", steps=8)
    model = Model(cells.get("gru", hidden_size=16), 1, readout="last")
    settings = Settings(steps=300, batch=32, eval_every=50, eval_batch=256, solved_fraction=1.0)
    res = train_runs(lambda _: model, task, settings, [{"seed": 0, "learning_rate": 1e-2}])
    s = int(res.solved_step[0])
    assert s > 0 and res.steps_run[0] == s
    e = s // 50
    assert res.eval_loss[0, e] <= task.baseline
    assert np.all(np.isnan(res.train_loss[0, s:])) and np.all(np.isfinite(res.train_loss[0, :s]))


# -------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("m,n", [(32, 64), (2, 16), (10, 128)])
def test_gru_weights_are_three_quarters_of_lstm(m, n):
    count = lambda name: gradflow.param_count(cells.get(name, hidden_size=n), m).by_leaf  # noqa: E731
    lstm, gru = count("lstm"), count("gru")
    weights = lambda c: c["['w_ih']"] + c["['w_hh']"]  # noqa: E731
    assert weights(gru) * 4 == weights(lstm) * 3 == 12 * (m * n + n * n)
    assert sum(lstm.values()) == 4 * (m * n + n * n + n)
    assert sum(gru.values()) == 3 * (m * n + n * n) + 4 * n
    if (m, n) == (32, 64):
        assert (sum(lstm.values()), sum(gru.values())) == (24_832, 18_688)  # SCIENCE.md


def test_train_rejects_depth_stacks_on_sequence_tasks():
    with pytest.raises(ValueError, match="depth stack reads one input per example; task 'adding'"):
        train(
            Model(cells.get("residual", width=4, depth=3), 1),
            tasks.get("adding", steps=4),
            steps=1,
            eval_every=1,
        )


def test_spikes_count_only_after_the_loss_came_down():
    loss = np.array([5.0, 3.0, 0.5, 0.4, 2.5, 0.3, np.nan])
    assert training.loss_spikes(loss, 1.0) == 1
    assert training.loss_spikes(np.array([5.0, 4.0]), 1.0) == 0
    assert math.isclose(training.SPIKE_FACTOR, 2.0)
