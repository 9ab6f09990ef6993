"""Task generators: baselines (Monte Carlo), oracles reading only the inputs, shapes, keys, jit, npz."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiered

from gradflow import tasks

KEY = jax.random.key(0)


def draw(task, key, batch):
    """One jit-compiled sample (eager dispatch of the many small ops is slower on CPU)."""
    return jax.jit(task.sample, static_argnums=1)(key, batch)


BIG = 40_000  # Monte Carlo batch: standard errors well under 1% of each baseline

TASKS = {  # name -> (options, T, I, O, stated baseline)
    "adding": ({"steps": 60}, 60, 2, 1, 1 / 6),
    "copy": ({"lag": 30}, 50, 10, 9, 10 * math.log(8) / (30 + 20)),
    "temporal_order": ({"steps": 40}, 40, 8, 4, math.log(4)),
    "lookahead": ({"steps": 30, "delay": 4}, 30, 8, 8, math.log(8)),
}


# ------------------------------------------------------------------ oracles: numpy, reading only xs
def adding_oracle(xs):
    total = np.sum(xs[..., 0] * xs[..., 1], axis=0)
    return np.broadcast_to(total[None, :, None], (*xs.shape[:2], 1))


def one_hot_logits(labels, classes):
    return 100.0 * np.eye(classes)[labels]


def copy_oracle(xs, symbols=8, length=10):
    tokens = np.argmax(xs, axis=-1)  # [T, B]
    start = np.argmax(tokens == symbols + 1, axis=0) + 1  # recall starts after the delimiter
    labels = np.zeros(tokens.shape, int)
    for b in range(tokens.shape[1]):
        labels[start[b] : start[b] + length, b] = tokens[:length, b]
    return one_hot_logits(labels, symbols + 1)


def temporal_order_oracle(xs):
    tokens = np.argmax(xs, axis=-1)
    relevant = [tokens[(tokens[:, b] == 4) | (tokens[:, b] == 5), b] - 4 for b in range(tokens.shape[1])]
    labels = np.array([2 * r[0] + r[1] for r in relevant])
    return one_hot_logits(np.broadcast_to(labels, tokens.shape), 4)


def lookahead_oracle(xs, delay=4):
    tokens = np.argmax(xs, axis=-1)
    labels = np.concatenate([tokens[delay:], np.zeros_like(tokens[:delay])])
    return one_hot_logits(labels, xs.shape[-1])


ORACLES = {
    "adding": adding_oracle,
    "copy": copy_oracle,
    "temporal_order": temporal_order_oracle,
    "lookahead": lookahead_oracle,
}


@pytest.mark.parametrize("name", tiered(sorted(TASKS), {"adding", "temporal_order"}))
def test_baseline_predictor_scores_stated_baseline(name):
    opts, _, _, _, stated = TASKS[name]
    task = tasks.get(name, **opts, dtype="float64")
    assert task.baseline == pytest.approx(stated, rel=1e-12)
    batch = draw(task, KEY, BIG)
    measured = float(jax.jit(task.loss)(task.baseline_outputs(batch), batch))
    assert abs(measured - stated) < 0.02 * stated, (name, measured, stated)


def test_adding_baseline_is_a_monte_carlo_estimate():
    """Predicting 1 has MSE Var(x1 + x2) = 1/6; the estimate is near it but not exact (values are random)."""
    task = tasks.get("adding", steps=20, dtype="float64")
    batch = draw(task, KEY, BIG)
    measured = float(jax.jit(task.loss)(task.baseline_outputs(batch), batch))
    assert measured != 1 / 6 and abs(measured - 1 / 6) < 0.01 / 6
    assert float(jax.jit(task.loss)(jnp.zeros_like(batch.ys), batch)) == pytest.approx(
        7 / 6, rel=0.02
    )  # E[s^2]


@pytest.mark.parametrize("name", ["temporal_order", "lookahead"])
def test_classification_baselines_have_chance_accuracy(name):
    opts, *_ = TASKS[name]
    task = tasks.get(name, **opts)
    batch = draw(task, KEY, BIG)
    acc = float(tasks.accuracy(task.baseline_outputs(batch), batch))  # argmax of uniform logits: class 0
    chance = 1 / task.output_size
    assert abs(acc - chance) < 0.02 * chance
    if name == "temporal_order":
        freq = np.bincount(np.asarray(batch.ys[-1]), minlength=4) / BIG
        np.testing.assert_allclose(freq, 0.25, atol=0.01)  # the 4 orders are equally likely: 75% error


def test_copy_baseline_is_exact_per_step():
    task = tasks.get("copy", lag=100)
    batch = draw(task, KEY, 64)
    assert task.steps == 120
    assert float(jax.jit(task.loss)(task.baseline_outputs(batch), batch)) == pytest.approx(
        10 * math.log(8) / 120, rel=1e-6
    )
    uniform = float(jax.jit(task.loss)(jnp.zeros_like(task.baseline_outputs(batch)), batch))  # knows no phase
    assert uniform == pytest.approx(math.log(9), rel=1e-6)


@pytest.mark.parametrize("name", tiered(sorted(TASKS), {"adding", "temporal_order"}))
def test_oracle_reading_inputs_scores_zero(name):
    opts, *_ = TASKS[name]
    task = tasks.get(name, **opts, dtype="float64")
    batch = draw(task, jax.random.key(3), 256)
    outputs = jnp.asarray(ORACLES[name](np.asarray(batch.xs)))
    metrics = jax.jit(task.metrics)(outputs, batch)
    assert float(metrics["loss"]) < 1e-12
    if task.kind == "xent":
        assert float(metrics["accuracy"]) == 1.0
    # and it is the answer, not luck: shuffling the batch breaks it
    wrong = jnp.roll(outputs, 1, axis=1)
    assert float(jax.jit(task.loss)(wrong, batch)) > 0.1 * task.baseline


@pytest.mark.parametrize("name", tiered(sorted(TASKS), {"adding", "temporal_order"}))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_shapes_and_dtypes(name, dtype):
    opts, steps, inputs, outputs, _ = TASKS[name]
    task = tasks.get(name, **opts, dtype=dtype)
    batch = draw(task, KEY, 5)
    assert (task.steps, task.input_size, task.output_size) == (steps, inputs, outputs)
    assert batch.xs.shape == (steps, 5, inputs) and batch.xs.dtype == dtype
    assert batch.mask.shape == (steps, 5) and batch.mask.dtype == jnp.bool_
    if task.kind == "mse":
        assert batch.ys.shape == (steps, 5, outputs) and batch.ys.dtype == dtype
    else:
        assert batch.ys.shape == (steps, 5) and batch.ys.dtype == jnp.int32
        assert int(batch.ys.min()) >= 0 and int(batch.ys.max()) < outputs
        np.testing.assert_array_equal(np.asarray(batch.xs).sum(-1), 1.0)  # one-hot
    assert task.baseline_outputs(batch).shape == (steps, 5, outputs)


def test_task_layouts():
    add = tasks.adding(KEY, 2000, 50)
    marker = np.asarray(add.xs[..., 1])
    assert (marker.sum(0) == 2).all()
    assert (marker[:25].sum(0) == 1).all() and (marker[25:].sum(0) == 1).all()
    assert np.asarray(add.mask).sum(0).tolist() == [1] * 2000 and bool(add.mask[-1].all())
    cp = tasks.copy(KEY, 50, 7, symbols=5, length=3)
    tokens = np.argmax(np.asarray(cp.xs), -1)
    assert tokens.shape == (7 + 6, 50)
    assert (tokens[9] == 6).all() and (tokens[3:9] == 0).all() and (tokens[10:] == 0).all()
    assert ((tokens[:3] >= 1) & (tokens[:3] <= 5)).all()
    np.testing.assert_array_equal(np.asarray(cp.ys[10:]), tokens[:3])
    to = np.argmax(np.asarray(tasks.temporal_order(KEY, 500, 100).xs), -1)
    rel = [np.flatnonzero(to[:, b] >= 4) for b in range(500)]
    assert all(r[0] == 0 and r[-1] == 99 and 10 <= r[1] <= 20 and 50 <= r[2] <= 60 for r in rel)
    la = tasks.lookahead(KEY, 3, 10, delay=3)
    assert np.asarray(la.mask[:, 0]).tolist() == [True] * 7 + [False] * 3


@pytest.mark.parametrize("name", tiered(sorted(TASKS), {"adding", "temporal_order"}))
def test_same_key_same_arrays_and_jit_matches(name):
    opts, *_ = TASKS[name]
    task = tasks.get(name, **opts)
    a, b = task.sample(KEY, 8), task.sample(KEY, 8)
    jitted = jax.jit(task.sample, static_argnums=1)
    c = jitted(KEY, 8)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
    assert not np.array_equal(np.asarray(jitted(jax.random.key(1), 8).xs), np.asarray(a.xs))
    assert jitted._cache_size() == 1  # a new key does not recompile


def test_module_level_generators_jit():
    gen = jax.jit(tasks.copy, static_argnums=(1, 2), static_argnames=("symbols", "length", "dtype"))
    out = gen(KEY, 4, 12, symbols=3, length=2, dtype="float64")
    assert out.xs.shape == (16, 4, 5) and out.xs.dtype == jnp.float64


def test_registry_errors_list_choices():
    assert tasks.names() == ["adding", "copy", "lookahead", "npz", "teacher", "temporal_order"]
    with pytest.raises(ValueError, match=r"unknown task 'adds'; choose from \['adding'"):
        tasks.get("adds")
    with pytest.raises(
        ValueError, match=r"unknown option 'T' for task 'adding'; options: \['dtype', 'steps'\]"
    ):
        tasks.get("adding", T=10)
    with pytest.raises(ValueError, match="needs path"):
        tasks.get("npz")
    with pytest.raises(ValueError, match="steps must be an integer >= 2, got 1"):
        tasks.get("adding", steps=1)
    with pytest.raises(ValueError, match="lag must be a positive integer, got 0"):
        tasks.get("copy", lag=0)
    with pytest.raises(ValueError, match="delay=9 must be < steps=9"):
        tasks.lookahead(KEY, 2, 9, delay=9)
    with pytest.raises(ValueError, match="steps must be an integer >= 10"):
        tasks.temporal_order(KEY, 2, 9)
    with pytest.raises(ValueError, match="unknown dtype"):
        tasks.adding(KEY, 2, 9, dtype="int8")


# ---------------------------------------------------------------------------------------------- npz
def test_npz_classes_happy_path(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(6, 5, 3)).astype(np.float32)
    ys = np.tile(np.array([0, 1, 1, 2, 2, 2]), (5, 1)).T.astype(np.int64)  # class freqs 1/6, 2/6, 3/6
    path = tmp_path / "mine.npz"
    np.savez(path, xs=xs, ys=ys)
    task = tasks.get("npz", path=path)
    assert (task.kind, task.steps, task.input_size, task.output_size) == ("xent", 5, 3, 3)
    freq = np.array([1, 2, 3]) / 6
    assert task.baseline == pytest.approx(-np.sum(freq * np.log(freq)), rel=1e-12)
    batch = jax.jit(task.sample, static_argnums=1)(KEY, 50)
    assert batch.xs.shape == (5, 50, 3) and batch.ys.shape == (5, 50) and batch.ys.dtype == jnp.int32
    for b in range(50):  # each sampled sequence is a row of the file, time-major
        row = np.flatnonzero((xs == np.asarray(batch.xs[:, b])).all(axis=(1, 2)))
        assert len(row) == 1 and (ys[row[0]] == np.asarray(batch.ys[:, b])).all()
    full = tasks.Batch(jnp.swapaxes(xs, 0, 1), jnp.asarray(ys.T, jnp.int32), jnp.ones((5, 6), bool))
    assert float(jax.jit(task.loss)(task.baseline_outputs(full), full)) == pytest.approx(
        task.baseline, rel=1e-6
    )


def test_npz_regression_with_mask(tmp_path):
    xs = np.zeros((4, 3, 2))
    ys = np.arange(24, dtype=np.float64).reshape(4, 3, 2)
    mask = np.zeros((4, 3), bool)
    mask[:, -1] = True
    np.savez(tmp_path / "reg.npz", xs=xs, ys=ys, mask=mask)
    task = tasks.from_npz(tmp_path / "reg.npz", dtype="float64")
    assert task.kind == "mse" and task.output_size == 2
    last = ys[:, -1]
    assert task.baseline == pytest.approx(np.mean((last - last.mean(0)) ** 2), rel=1e-12)
    batch = draw(task, KEY, 7)
    assert batch.ys.dtype == jnp.float64 and batch.mask.dtype == jnp.bool_
    assert np.asarray(batch.mask[-1]).all() and not np.asarray(batch.mask[:-1]).any()


GOOD = {"xs": np.zeros((4, 5, 2), np.float32), "ys": np.zeros((4, 5), np.int32)}
BAD_FILES = {  # name -> (arrays, substrings the one-line message must contain)
    "missing_ys": ({"xs": GOOD["xs"]}, ["missing array 'ys'", "found ['xs']"]),
    "wrong_ndim": ({**GOOD, "xs": np.zeros((4, 5))}, ["'xs'", "(4, 5)", "2-D", "3-D [N, T, I]"]),
    "mismatched_n": ({**GOOD, "ys": np.zeros((3, 5), np.int32)}, ["'ys'", "(3, 5)", "(4, 5)"]),
    "int_xs": ({**GOOD, "xs": np.zeros((4, 5, 2), np.int64)}, ["'xs'", "dtype int64", "floating"]),
    "nan_xs": ({**GOOD, "xs": np.full((4, 5, 2), np.nan, np.float32)}, ["'xs'", "non-finite", "(0, 0, 0)"]),
    "inf_ys": ({**GOOD, "ys": np.full((4, 5, 1), np.inf)}, ["'ys'", "non-finite", "finite"]),
    "pickled": ({**GOOD, "ys": np.array([[{"a": 1}] * 5] * 4, dtype=object)}, ["'ys'", "pickle"]),
    "unknown_key": ({**GOOD, "mask_": np.ones((4, 5), bool)}, ["unknown array 'mask_'", "allowed"]),
    "bad_mask": ({**GOOD, "mask": np.ones((4, 6), bool)}, ["'mask'", "(4, 6)", "(4, 5)"]),
    "negative_label": ({**GOOD, "ys": -np.ones((4, 5), np.int32)}, ["'ys'", "negative label -1"]),
    "string_ys": ({**GOOD, "ys": np.full((4, 5), "a")}, ["'ys'", "dtype <U1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_npz_bad_files_one_line_errors(tmp_path, case):
    arrays, parts = BAD_FILES[case]
    path = tmp_path / f"{case}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as err:
        tasks.from_npz(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path) + ":"), msg
    for part in parts:
        assert part in msg, (part, msg)


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: cannot read as \.npz") as err:
        tasks.from_npz(tmp_path / "junk.npz")
    assert "\n" not in str(err.value)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"one\.npy: a single \.npy array"):
        tasks.from_npz(tmp_path / "one.npy")
