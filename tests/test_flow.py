"""gradient_flow against independent references: closed forms and brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CELLS, LOSSES, brute_force_log10_norms, make
from conftest import tiered, tree_allclose

import gradflow
from gradflow import cells

CELL_LOSS = [(name, loss) for name in sorted(CELLS) for loss in sorted(LOSSES)]
FAST_FLOW_CELLS = (
    "rnn-tanh", "rnn-relu", "lstm", "lstm-peephole", "lstm-cifg", "gru", "mgu",
    "residual", "plain-batchnorm", "stacked-gru-lstm", "bidirectional-lstm",
)  # fmt: skip
FAST_CELL_LOSS = {(name, "mixed") for name in FAST_FLOW_CELLS} | {("lstm", "final")}  # the rest: slow tier


@pytest.mark.parametrize(
    ("name", "loss"), tiered(CELL_LOSS, FAST_CELL_LOSS, ids=[f"{n}-{l}" for n, l in CELL_LOSS])
)
def test_norms_equal_brute_force(name, loss):
    cell, params, carry0, xs = make(name)
    res = gradflow.gradient_flow(cell, params, carry0, xs, LOSSES[loss])
    expected = brute_force_log10_norms(cell, params, carry0, xs, LOSSES[loss])
    tree_allclose(res.log10_norms, expected, rtol=1e-10, atol=1e-10)
    tree_allclose(res.norms, jax.tree_util.tree_map(lambda a: 10.0**a, expected), rtol=1e-9)


@pytest.mark.parametrize(
    "name", tiered(["lstm", "gru", "rnn-tanh", "residual", "bidirectional-lstm"], {"lstm"})
)
def test_norms_equal_brute_force_float32(name):
    cell, params, carry0, xs = make(name, dtype="float32")
    res = gradflow.gradient_flow(cell, params, carry0, xs, LOSSES["mixed"])
    expected = brute_force_log10_norms(cell, params, carry0, xs, LOSSES["mixed"])
    tree_allclose(res.log10_norms, expected, rtol=0, atol=5e-6)


@pytest.mark.parametrize("name", tiered(sorted(CELLS), {"lstm", "residual"}))
def test_param_grads_and_per_step_shares_equal_brute_force(name):
    cell, params, carry0, xs = make(name)
    loss_fn = LOSSES["mixed"]
    res = gradflow.gradient_flow(cell, params, carry0, xs, loss_fn)

    def plain_loss(params):
        carry, ys = gradflow.unroll(cell, params, carry0, xs)
        return loss_fn(ys, carry)

    tree_allclose(res.grads, jax.grad(plain_loss)(params), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.loss, plain_loss(params), rtol=1e-12)

    # Per-step contributions: the gradient w.r.t. a per-step copy of the params.
    length = res.step_grad_log10_norms.shape[0]

    def per_step_loss(deltas):
        def body(carry, inp):
            delta, p_t, x = inp
            p = jax.tree_util.tree_map(jnp.add, params if p_t is None else p_t, delta)
            return cell.step(p, carry, x)

        stacked = params if cell.params_per_step else None
        carry, ys = jax.lax.scan(body, carry0, (deltas, stacked, xs))
        return loss_fn(ys, carry)

    template = jax.tree_util.tree_map(lambda a: a[0], params) if cell.params_per_step else params
    deltas = jax.tree_util.tree_map(lambda a: jnp.zeros((length, *a.shape), a.dtype), template)
    g = jax.grad(per_step_loss)(deltas)
    sq = sum(jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim))) for a in jax.tree_util.tree_leaves(g))
    np.testing.assert_allclose(res.step_grad_log10_norms, 0.5 * np.log10(sq), rtol=1e-10)
    np.testing.assert_allclose(res.grad_share, np.sqrt(sq) / np.sum(np.sqrt(sq)), rtol=1e-10)
    np.testing.assert_allclose(np.sum(res.grad_share), 1.0, rtol=1e-12)


def _linear_rnn(rho, dtype, hidden=16, input_size=3):
    cell = cells.get(
        "rnn",
        hidden_size=hidden,
        activation="linear",
        recurrent_init="orthogonal",
        weight_scale=rho,
        dtype=dtype,
    )
    return cell, cell.init(jax.random.key(0), input_size)


@pytest.mark.parametrize("rho", [0.5, 1.0, 1.1])
def test_linear_rnn_norms_are_rho_to_the_k(rho):
    T = 60
    cell, params = _linear_rnn(rho, "float64")
    xs = jax.random.normal(jax.random.key(1), (T, 4, 3), jnp.float64)
    carry0 = jax.random.normal(jax.random.key(2), (4, 16), jnp.float64)
    res = gradflow.gradient_flow(cell, params, carry0, xs, lambda ys, h: jnp.sum(jnp.sin(h)))
    k = T - np.arange(T + 1)
    np.testing.assert_allclose(res.norms / res.norms[-1], rho**k, rtol=1e-5)
    np.testing.assert_allclose(res.fit.rate, np.log(rho), atol=1e-10)
    if rho != 1.0:
        np.testing.assert_allclose(res.fit.half_life, np.log(2) / abs(np.log(rho)), rtol=1e-8)
        np.testing.assert_allclose(res.fit.r2, 1.0, rtol=1e-10)


@pytest.mark.parametrize("rho", [0.5, 1.5])
def test_log10_norms_stay_finite_where_float32_underflows(rho):
    T = 2000
    cell, params = _linear_rnn(rho, "float32")
    xs = jnp.zeros((T, 4, 3), jnp.float32)
    v = jax.random.normal(jax.random.key(3), (4, 16), jnp.float32)
    v = v / jnp.linalg.norm(v)
    res = gradflow.gradient_flow(cell, params, cell.initial_carry(4), xs, lambda ys, h: jnp.sum(h * v))
    expected = np.log10(np.linalg.norm(v)) + (T - np.arange(T + 1)) * np.log10(rho)
    assert np.all(np.isfinite(res.log10_norms))
    np.testing.assert_allclose(res.log10_norms, expected, atol=0.02)
    assert abs(float(res.log10_norms[0]) - T * np.log10(rho)) < 0.5  # about -602 or +352
    # the float32 norms themselves under/overflow: that is what log10_norms is for
    assert res.norms[0] == (0.0 if rho < 1 else np.inf)
    np.testing.assert_allclose(res.fit.rate, np.log(rho), rtol=1e-4)
    assert int(res.nonfinite_step) == -1


def test_under_jit_and_vmap_over_seeds_and_scales():
    T, B = 30, 2
    xs = jax.random.normal(jax.random.key(1), (T, B, 3), jnp.float32)
    scales = jnp.array([0.5, 1.0, 2.0], jnp.float32)
    loss = lambda ys, h: jnp.sum(jnp.sin(h)) + jnp.mean(ys[0] ** 2)  # noqa: E731

    def one(seed, scale):
        cell = cells.get("rnn", hidden_size=8)
        params = cell.init(jax.random.key(seed), 3)
        params["w_hh"] = params["w_hh"] * scale
        return gradflow.gradient_flow(cell, params, cell.initial_carry(B), xs, loss)

    batched = jax.jit(jax.vmap(one))(jnp.arange(3), scales)
    for i in range(3):
        single = one(i, scales[i])
        row = jax.tree_util.tree_map(lambda a, i=i: a[i], batched)
        # half-lives near rate 0 are ill-conditioned; compare the rates instead. float32 under
        # jit(vmap) vs eager: entries of grads (up to ~5) differ by up to 3e-6 on some CPUs
        no_fit = lambda r: r._replace(fit=None, total_fit=None)  # noqa: E731
        tree_allclose(no_fit(row), no_fit(single), rtol=2e-5, atol=1e-5)
        np.testing.assert_allclose(row.fit.rate, single.fit.rate, rtol=1e-4, atol=1e-6)
    # larger sigma_w: slower decay
    assert batched.fit.rate[0] < batched.fit.rate[1] < batched.fit.rate[2]


@pytest.mark.parametrize("remat", tiered([True, 7, 1, 60], {True}))
def test_remat_gives_the_same_numbers(remat):
    cell, params, carry0, _ = make("lstm")
    xs = jax.random.normal(jax.random.key(4), (60, 3, 4), jnp.float64)
    loss = LOSSES["mixed"]
    ref = gradflow.gradient_flow(cell, params, carry0, xs, loss)
    res = gradflow.gradient_flow(cell, params, carry0, xs, loss, remat=remat)
    tree_allclose(res, ref, rtol=1e-10, atol=1e-12)


def test_exploding_run_reports_where_it_became_nonfinite():
    cell, params = _linear_rnn(3.0, "float32")
    xs = jnp.ones((200, 2, 3), jnp.float32)
    h0 = cell.initial_carry(2)
    res = gradflow.gradient_flow(cell, params, h0, xs, lambda ys, h: jnp.sum(h))
    # |h_t| ~ 3^t overflows float32 (3.4e38) near t = 81 ...
    assert 75 <= int(res.nonfinite_step) <= 85
    assert not np.isfinite(res.loss)
    # ... but a linear loss has a finite gradient, which log10_norms still measures
    assert int(res.nonfinite_grad_step) == -1
    np.testing.assert_allclose(res.log10_norms[0] - res.log10_norms[-1], 200 * np.log10(3.0), rtol=1e-4)
    # a quadratic loss: dL/dh_T = 2 h_T is already inf at the loss
    res = gradflow.gradient_flow(cell, params, h0, xs, lambda ys, h: jnp.sum(h**2))
    assert int(res.nonfinite_grad_step) == 200
    clean = gradflow.gradient_flow(cell, params, h0, xs[:20], lambda ys, h: jnp.sum(h**2))
    assert int(clean.nonfinite_step) == -1 and int(clean.nonfinite_grad_step) == -1


def test_fit_window_and_decay_fit_closed_form():
    k = np.arange(50, -1, -1.0)
    log10 = np.where(k <= 20, -0.1 * k, -2.0 - 0.3 * (k - 20)) / np.log(10)
    full = gradflow.decay_fit(log10)
    near = gradflow.decay_fit(log10, window=(0, 20))
    far = gradflow.decay_fit(log10, window=(20, 50))
    np.testing.assert_allclose([near.rate, far.rate], [-0.1, -0.3], rtol=1e-10)
    np.testing.assert_allclose(near.half_life, np.log(2) / 0.1, rtol=1e-10)
    np.testing.assert_allclose([near.r2, far.r2], [1.0, 1.0], rtol=1e-10)
    assert full.r2 < 0.99
    # -inf entries (exactly zero gradient) are left out, not propagated
    holes = gradflow.decay_fit(np.where(k == 10, -np.inf, -0.1 * k / np.log(10)))
    np.testing.assert_allclose(holes.rate, -0.1, rtol=1e-10)
    assert np.isnan(gradflow.decay_fit(np.array([1.0, -np.inf])).rate)


def test_lstm_carousel_keeps_the_cell_gradient_while_tanh_rnn_decays():
    T, B, H, I = 100, 8, 64, 16
    on_c = lambda ys, carry: jnp.sum(carry[0])  # noqa: E731  (a loss on c_T)
    c_ratios = {}
    for forget_bias in (3.0, 5.0):
        lstm = cells.get("lstm", hidden_size=H, forget_bias=forget_bias)
        for seed in range(3):
            xs = jax.random.normal(jax.random.key(5 + seed), (T, B, I), jnp.float32)
            p = lstm.init(jax.random.key(seed), I)
            res = gradflow.gradient_flow(lstm, p, lstm.initial_carry(B), xs, on_c)
            c_ratios[forget_bias, seed] = float(res.log10_norms[0][0] - res.log10_norms[0][-1])
    # forget bias 3: ||dL/dc_0|| within 10x of ||dL/dc_T|| over 100 steps, every seed
    assert all(abs(c_ratios[3.0, s]) < 1.0 for s in range(3)), c_ratios
    # forget bias 5 (f = 0.993): nothing vanishes; through the c -> h -> g loop the
    # gradient even grows, 10-25x at this (default, orthogonal gain 1) init
    assert all(0.0 < c_ratios[5.0, s] < 1.5 for s in range(3)), c_ratios

    xs = jax.random.normal(jax.random.key(5), (T, B, I), jnp.float32)
    rnn = cells.get("rnn", hidden_size=H, weight_scale=1.0)
    p = rnn.init(jax.random.key(0), I)
    res = gradflow.gradient_flow(rnn, p, rnn.initial_carry(B), xs, lambda ys, h: jnp.sum(h))
    assert float(res.log10_norms[-1] - res.log10_norms[0]) > 3.0  # decays by more than 1e3


def test_residual_stack_keeps_gradient_through_100_layers_plain_does_not():
    x0 = jax.random.normal(jax.random.key(1), (32, 128), jnp.float32)
    v = jax.random.normal(jax.random.key(2), (32, 128), jnp.float32)
    ratios = {}
    for kind in ("residual", "plain"):
        cell = cells.get(kind, width=128, depth=100)
        p = cell.init(jax.random.key(0), 128)
        res = gradflow.gradient_flow(cell, p, x0, None, lambda ys, x: jnp.sum(x * v))
        ratios[kind] = 10.0 ** float(res.log10_norms[0] - res.log10_norms[-1])
    assert 0.1 <= ratios["residual"] <= 10.0, ratios
    assert not 0.1 <= ratios["plain"] <= 10.0, ratios
    # SCIENCE.md: a plain tanh stack at sigma_w^2 = 0.5 falls far below (ordered phase)
    cell = cells.get("plain", width=128, depth=100, weight_scale=0.5**0.5)
    res = gradflow.gradient_flow(
        cell, cell.init(jax.random.key(0), 128), x0, None, lambda ys, x: jnp.sum(x * v)
    )
    assert float(res.log10_norms[0] - res.log10_norms[-1]) < -12


def test_fit_window_beyond_the_sequence_is_an_error():
    cell = cells.get("rnn", hidden_size=4)
    params, h0 = cell.init(jax.random.key(0), 2), cell.initial_carry(3)
    xs = jnp.ones((10, 3, 2), jnp.float32)
    loss = lambda ys, h: jnp.sum(h)  # noqa: E731
    full = gradflow.gradient_flow(cell, params, h0, xs, loss, fit_window=(0, 10))  # k_max = T is fine
    np.testing.assert_allclose(
        full.total_fit.rate, gradflow.gradient_flow(cell, params, h0, xs, loss).total_fit.rate
    )
    for window in [(0, 11), (5, 5), (-1, 3), (1, 2, 3)]:
        with pytest.raises(
            ValueError,
            match=r"fit_window = .*: expected \(k_min, k_max\) steps back with 0 <= k_min < k_max <= T = 10",
        ):
            gradflow.gradient_flow(cell, params, h0, xs, loss, fit_window=window)


def test_finite_ends_leave_out_exact_zeros_and_padding():
    assert gradflow.finite_ends([-np.inf, 2.0, np.nan, 1.0, -np.inf, np.nan]) == (2.0, 1.0)
    assert gradflow.finite_ends(np.array([3.5])) == (3.5, 3.5)
    assert all(np.isnan(gradflow.finite_ends([-np.inf, np.nan])))


def test_a_loss_that_reads_only_ys_gives_a_zero_last_norm_for_c_and_h():
    """The README's loss reads ys[-1] (= h_T as an output), not the final carry: dL/d(c_T, h_T) = 0
    through the carry, so log10_norms[T] = -inf for both parts; a loss on h_T alone leaves c_T's 0.
    Entry T - 1 equals the LSTM's closed-form chain: finite."""
    cell = cells.get("lstm", hidden_size=8)
    params, h0 = cell.init(jax.random.key(0), 3), cell.initial_carry(2)
    xs = jax.random.normal(jax.random.key(1), (6, 2, 3), jnp.float32)
    on_ys = gradflow.gradient_flow(cell, params, h0, xs, lambda ys, carry: jnp.mean((ys[-1] - 1.0) ** 2))
    on_h = gradflow.gradient_flow(cell, params, h0, xs, lambda ys, carry: jnp.mean((carry[1] - 1.0) ** 2))
    (c_ys, h_ys), (c_h, h_h) = on_ys.log10_norms, on_h.log10_norms
    assert c_ys[-1] == h_ys[-1] == c_h[-1] == -np.inf and np.isfinite(h_h[-1])
    assert np.all(np.isfinite(c_ys[:-1])) and np.all(np.isfinite(h_ys[:-1]))
    # h_T as the output and h_T as the carry are the same number: the same loss from there back
    np.testing.assert_allclose(c_ys[:-1], c_h[:-1], rtol=1e-5)
    first, last = gradflow.finite_ends(on_ys.total_log10_norms)
    assert (first, last) == (float(on_ys.total_log10_norms[0]), float(on_ys.total_log10_norms[-2]))
