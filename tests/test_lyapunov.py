"""lyapunov_spectrum against closed forms, explicit Jacobian products, mean field and gradient_flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow
from gradflow import cells
from gradflow.measure.lyapunov import MAX_REORTHO_EVERY, auto_reortho_every, lyapunov_spectrum


def autonomous_tanh(g):
    """``h' = tanh(g W h)`` as a step function (``x`` unused), carry ``h: [B, N]``."""

    def step(w, h, x):
        h = jnp.tanh(g * h @ w.T)
        return h, h

    return step


def random_w(n, seed):
    return np.random.default_rng(seed).normal(size=(n, n)) / np.sqrt(n)  # W_ij ~ N(0, 1/N)


def normal(shape, seed, dtype=np.float64, scale=1.0):
    """Inputs and carries from numpy (keeps jax.random compiles to the cells' init)."""
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), dtype)


def mean_field_rate(g, nodes=200):
    """``0.5 ln(g^2 E[tanh'(sqrt(D) z)^2])`` with ``D = g^2 E[tanh(sqrt(D) z)^2]`` (Gauss-Hermite)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    d = 1.0
    for _ in range(500):
        d = g**2 * np.sum(w * np.tanh(np.sqrt(d) * z) ** 2)
    return 0.5 * np.log(g**2 * np.sum(w * (1.0 - np.tanh(np.sqrt(d) * z) ** 2) ** 2))


def flat_jacobian(fn, carry):
    """``[B, D, D]``: d flat(fn(carry)) / d flat(carry) per example, leaves in tree_leaves order."""
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    sizes = np.cumsum([int(np.prod(a.shape[1:])) for a in leaves])[:-1]

    def flat_fn(flat):  # [B, D] -> [B, D]
        parts = jnp.split(flat, sizes, axis=1)
        out = fn(treedef.unflatten([p.reshape(a.shape) for p, a in zip(parts, leaves, strict=True)]))
        return jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree_util.tree_leaves(out)], axis=1)

    full = jax.jacfwd(flat_fn)(jnp.concatenate([a.reshape(a.shape[0], -1) for a in leaves], axis=1))
    return jnp.stack([full[b, :, b, :] for b in range(full.shape[0])])  # [B, D, B, D] -> blocks


@pytest.mark.parametrize("rho", [0.9, 1.3])
def test_linear_orthogonal_rnn_every_exponent_is_ln_rho(rho):
    cell = cells.get(
        "rnn", hidden_size=8, activation="linear", recurrent_init="orthogonal", weight_scale=rho,
        input_scale=1.0, dtype="float64",
    )  # fmt: skip
    params = cell.init(jax.random.key(0), 2)
    xs = normal((200, 2, 2), seed=1)
    res = lyapunov_spectrum(cell, params, cell.initial_carry(2), xs, init="identity")
    assert res.exponents.shape == (8,) and res.per_example.shape == (2, 8)
    assert res.running.shape == (200, 8) and int(res.steps) == 200
    np.testing.assert_allclose(res.per_example, np.log(rho), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.running, np.log(rho), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.drift, 0.0, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "name, opts, input_size",
    [
        ("lstm", {"hidden_size": 3, "forget_bias": 0.5}, 2),  # carry (c, h): D = 6, c first
        pytest.param(
            "residual", {"width": 4, "depth": 25, "alpha": 0.5}, 4, marks=pytest.mark.slow
        ),  # xs None
    ],
)
def test_spectrum_equals_python_loop_over_explicit_jacobians(name, opts, input_size):
    """Reference: a Python loop over t with J_t from jax.jacfwd and numpy QR; plus two exact identities of
    the product P = J_T ... J_1: sum of all exponents = mean ln|det J_t|, top (Q0 = I) = ln ||P e_1|| / T."""
    cell = cells.get(name, dtype="float64", **opts)
    params = cell.init(jax.random.key(2), input_size)
    carry = jax.tree_util.tree_map(lambda a: normal(a.shape, 3, scale=0.5), cell.initial_carry(2))
    per_step = cell.params_per_step
    steps = 25 if per_step else 30
    xs = None if per_step else normal((steps, 2, input_size), seed=4)
    res = lyapunov_spectrum(cell, params, carry, xs, init="identity")

    step_and_jacobian = jax.jit(
        lambda p, c, x: (cell.step(p, c, x)[0], flat_jacobian(lambda c: cell.step(p, c, x)[0], c))
    )
    carry0 = carry
    frame, logs, log_dets = None, 0.0, 0.0
    for t in range(steps):
        p_t = jax.tree_util.tree_map(lambda a, t=t: a[t], params) if per_step else params
        carry, jac = step_and_jacobian(p_t, carry, None if per_step else xs[t])
        jac = np.asarray(jac)
        frame = np.broadcast_to(np.eye(jac.shape[-1]), jac.shape) if frame is None else frame
        frame, r = np.linalg.qr(jac @ frame)
        logs = logs + np.log(np.abs(np.diagonal(r, axis1=1, axis2=2)))
        log_dets = log_dets + np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(res.per_example, logs / steps, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.sum(res.per_example, axis=1), log_dets / steps, rtol=0, atol=1e-10)
    prod = np.asarray(flat_jacobian(lambda c: gradflow.unroll(cell, params, c, xs)[0], carry0))
    top = np.log(np.linalg.norm(prod[:, :, 0], axis=1)) / steps
    np.testing.assert_allclose(res.per_example[:, 0], top, rtol=0, atol=1e-10)


def test_top_k_equals_full_spectrum_and_reortho_and_transient_are_exact():
    cell = cells.get("rnn", hidden_size=8, weight_scale=1.8, dtype="float64")
    params = cell.init(jax.random.key(0), 2)
    xs = normal((120, 3, 2), seed=1)
    carry0 = cell.initial_carry(3)
    full = lyapunov_spectrum(cell, params, carry0, xs, key=jax.random.key(7), reortho_every=1)
    top = lyapunov_spectrum(cell, params, carry0, xs, k=4, key=jax.random.key(7), reortho_every=1)
    np.testing.assert_allclose(top.per_example, full.per_example[:, :4], rtol=0, atol=1e-10)
    assert np.all(np.diff(np.asarray(full.exponents)) < 0)
    # QR of J2 J1 Q = Q2 (R2 R1): QR every m = 5 steps adds up the same logs; the transient drops the
    # first 20 steps' R factors (and orthonormalizes at its end)
    burn = lyapunov_spectrum(
        cell, params, carry0, xs, k=4, key=jax.random.key(7), transient=20, reortho_every=5
    )
    sums = np.asarray(top.running) * np.arange(1, 121)[:, None]  # sum of ln |diag R| after t+1 steps
    measured = (sums[20:] - sums[19]) / np.arange(1, 101)[:, None]
    np.testing.assert_allclose(burn.exponents, measured[-1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(burn.running[4::5], measured[4::5], rtol=0, atol=1e-10)
    np.testing.assert_allclose(burn.running[5:9], np.broadcast_to(measured[4], (4, 4)), atol=1e-10)
    assert int(burn.steps) == 100 and burn.running.shape == (100, 4)
    np.testing.assert_allclose(burn.drift, measured[-1] - measured[-11], rtol=0, atol=1e-10)


def test_auto_interval_is_the_largest_m_within_the_condition_bound():
    """m = largest with exp(spread m) <= 1/sqrt(eps) and exp(|lambda| m) <= max**(1/4), clipped to [1, 64]."""
    for dtype, eps, big in [
        (jnp.float64, 2.0**-52, 1.7976931348623157e308),
        (jnp.float32, 2.0**-23, 3.4028235e38),
    ]:
        for exps in ([0.13, -5.62], [0.5, -1.0, -2.5], [0.3, 0.2], [-0.69, -0.69], [0.0, 0.0], [1.0, -99.0]):
            m = int(auto_reortho_every(jnp.asarray(exps), dtype))
            spread, size = max(exps) - min(exps), max(abs(e) for e in exps)

            def fits(m, spread=spread, size=size, eps=eps, big=big):
                return spread * m <= 0.5 * np.log(1 / eps) and size * m <= 0.25 * np.log(big)

            assert 1 <= m <= MAX_REORTHO_EVERY
            assert m == 1 or fits(m)
            assert m == MAX_REORTHO_EVERY or not fits(m + 1)
    assert int(auto_reortho_every(jnp.asarray([0.13, -5.62]), jnp.float64)) == 3  # the docstring's example
    assert int(auto_reortho_every(jnp.asarray([0.13, -5.62]), jnp.float32)) == 1
    assert int(auto_reortho_every(jnp.asarray([[0.1, -1.0], [0.0, -2.0]]), jnp.float64)) == 8  # over all


def test_auto_schedule_matches_qr_every_step_where_a_fixed_large_m_fails():
    """Chaotic tanh(2 W h), full spectrum, float64: 'auto' (m ~ 18 / spread) stays within 1e-6 of QR at
    every step on the same trajectory; a fixed m = 12 (kappa ~ exp(12 spread) >> 1/eps) loses the lowest."""
    n, g, steps = 24, 2.0, 1500
    w = jnp.asarray(random_w(n, seed=8))
    h0 = jnp.asarray(np.random.default_rng(9).normal(size=(1, n)))
    run = lambda m: lyapunov_spectrum(autonomous_tanh(g), w, h0, None, length=steps, reortho_every=m)  # noqa: E731
    ref, auto, coarse = run(1), run("auto"), run(12)
    spread = float(ref.exponents[0] - ref.exponents[-1])
    m = int(auto_reortho_every(ref.exponents, jnp.float64))
    assert spread > 2.0 and m == int(18.02 / spread) and m >= 2
    # the pilot (32 steps) at every step, then about every m steps
    assert 32 + (steps - 32) / (m + 1) < int(auto.reorthos) < 32 + (steps - 32) / (m - 1)
    assert int(ref.reorthos) == steps and int(coarse.reorthos) == -(-steps // 12)
    np.testing.assert_allclose(auto.exponents, ref.exponents, rtol=0, atol=1e-6)
    np.testing.assert_allclose(auto.running[-1], ref.running[-1], rtol=0, atol=1e-6)
    assert np.max(np.abs(np.asarray(coarse.exponents - ref.exponents))) > 0.1


def test_auto_schedule_under_vmap_equals_separate_runs():
    """The QR blocks depend on the data ('auto'); vmapped over weight scales they match one run each."""
    cell = cells.get("rnn", hidden_size=8, weight_scale=1.5, dtype="float64")
    params = cell.init(jax.random.key(0), 2)
    xs, carry0 = normal((300, 2, 2), seed=1), cell.initial_carry(2)
    scales = (0.5, 2.0)

    def run(s):
        return lyapunov_spectrum(cell, {**params, "w_hh": s * params["w_hh"]}, carry0, xs)

    many = jax.vmap(run)(jnp.asarray(scales))
    reorthos = []
    for i, s in enumerate(scales):
        one = run(s)
        reorthos.append(int(one.reorthos))
        assert int(many.reorthos[i]) == reorthos[-1]
        np.testing.assert_allclose(many.per_example[i], one.per_example, rtol=0, atol=1e-12)
        np.testing.assert_allclose(many.running[i], one.running, rtol=0, atol=1e-12)
    assert reorthos[0] != reorthos[1]  # different schedules in one vmapped loop


def test_auto_schedule_equals_python_loop_with_qr_every_step():
    """Contracting driven tanh RNN (trajectories do not part ways), spread ~ 4 so m > 1: 'auto' against
    a Python loop over explicit Jacobians with numpy QR at every step, float64."""
    cell = cells.get("rnn", hidden_size=12, weight_scale=0.9, dtype="float64")
    params = cell.init(jax.random.key(3), 3)
    steps = 400
    xs = normal((steps, 1, 3), seed=5)
    carry = cell.initial_carry(1)
    res = lyapunov_spectrum(cell, params, carry, xs, init="identity")
    assert int(res.reorthos) < 32 + (steps - 32) / 2  # m >= 2 after the pilot
    step_and_jacobian = jax.jit(
        lambda c, x: (cell.step(params, c, x)[0], flat_jacobian(lambda c: cell.step(params, c, x)[0], c))
    )
    frame, logs = np.eye(12), 0.0
    for t in range(steps):
        carry, jac = step_and_jacobian(carry, xs[t])
        frame, r = np.linalg.qr(np.asarray(jac[0]) @ frame)
        logs = logs + np.log(np.abs(np.diagonal(r)))
    assert logs[0] - logs[-1] > 2.0 * steps
    # the stated error of 'auto' in float64 (QR at every step: 1e-14 here)
    np.testing.assert_allclose(res.exponents, logs / steps, rtol=0, atol=1e-5)


@pytest.mark.parametrize("g", [0.5, 0.8])
def test_autonomous_tanh_ordered_top_exponent_is_ln_g_rho(g):
    n = 256
    w = random_w(n, seed=1)
    rho = np.max(np.abs(np.linalg.eigvals(w)))
    h0 = jnp.asarray(np.random.default_rng(2).normal(size=(1, n)))
    res = lyapunov_spectrum(
        autonomous_tanh(g), jnp.asarray(w), h0, None, k=2, length=800, transient=200, init="identity"
    )
    assert abs(float(res.exponents[0]) - np.log(g * rho)) < 0.02


def test_autonomous_tanh_chaotic_top_exponent_is_mean_field():
    n, g = 256, 2.0
    w = jnp.asarray(random_w(n, seed=3))
    h0 = jnp.asarray(np.random.default_rng(4).normal(size=(1, n)))
    res = lyapunov_spectrum(autonomous_tanh(g), w, h0, None, k=4, length=1500, transient=200, init="identity")
    theory = mean_field_rate(g)
    assert theory == pytest.approx(0.1547, abs=1e-3)
    assert abs(float(res.exponents[0]) - theory) < 0.03
    assert abs(float(res.drift[0])) < 0.01


@pytest.mark.parametrize("g", [0.5, 2.0])
def test_top_exponent_equals_gradient_log_rate(g):
    n, steps, window = 512, 1000, (100, 900)
    w = jnp.asarray(random_w(n, seed=5))
    rng = np.random.default_rng(6)
    h0, v = (jnp.asarray(rng.normal(size=(1, n))) for _ in range(2))
    xs = jnp.zeros((steps, 1, 0), jnp.float64)
    step = autonomous_tanh(g)
    res = lyapunov_spectrum(step, w, h0, xs, k=1, transient=window[0], init="identity")
    flow = gradflow.gradient_flow(step, w, h0, xs, lambda ys, h: jnp.sum(h * v), fit_window=window)
    assert abs(float(res.exponents[0]) - float(flow.fit.rate)) < 0.01


@pytest.mark.slow
def test_jit_and_float32():
    cell = cells.get("rnn", hidden_size=8, weight_scale=0.8, dtype="float32")  # contracting: fp32 ~ fp64
    params = cell.init(jax.random.key(0), 2)
    xs = normal((300, 2, 2), seed=1, dtype=jnp.float32)
    carry0 = cell.initial_carry(2)
    jitted = jax.jit(lambda p, c, x: lyapunov_spectrum(cell, p, c, x, k=3, reortho_every=1))(
        params, carry0, xs
    )
    assert jitted.exponents.dtype == jnp.float32 and jitted.running.shape == (300, 3)
    # the random frame is drawn in float32 for every dtype, so a float64 run starts from the same frame
    as64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (params, carry0, xs))
    ref = lyapunov_spectrum(cell, *as64, k=3, reortho_every=1)
    assert ref.exponents.dtype == jnp.float64
    np.testing.assert_allclose(jitted.per_example, ref.per_example, rtol=0, atol=1e-5)
    # log space: rho^T = 0.5^1000 underflows float32, the exponents stay exact
    lin = cells.get("rnn", hidden_size=8, activation="linear", recurrent_init="orthogonal", weight_scale=0.5)
    xs = jnp.zeros((1000, 1, 2), jnp.float32)
    res = lyapunov_spectrum(lin, lin.init(jax.random.key(0), 2), lin.initial_carry(1), xs, init="identity")
    np.testing.assert_allclose(res.exponents, np.log(0.5), rtol=1e-5)


def test_bad_input_raises_one_line_errors():
    cell = cells.get("rnn", hidden_size=4, dtype="float64")
    params = {"w_ih": jnp.zeros((2, 4)), "w_hh": jnp.zeros((4, 4)), "b": jnp.zeros(4)}
    xs = jnp.zeros((10, 1, 2))
    carry0 = cell.initial_carry(1)
    cases = [
        ({"k": 5}, "k must be an int in \\[1, D=4\\]"),
        ({"k": 0}, "k must be"),
        ({"transient": 10}, "transient must be an int in \\[0, T-1\\] = \\[0, 9\\], got 10"),
        ({"reortho_every": 0}, "reortho_every must be a positive int or 'auto', got 0"),
        ({"reortho_every": "fast"}, "reortho_every must be a positive int or 'auto'"),
        ({"init": "eye"}, "init must be one of"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            lyapunov_spectrum(cell, params, carry0, xs, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="pass length=T"):
        lyapunov_spectrum(cell, params, carry0, None)
    with pytest.raises(ValueError, match="but the carry has batch 1"):
        lyapunov_spectrum(cell, params, carry0, jnp.zeros((10, 3, 2)))
    with pytest.raises(ValueError, match="agree on one T"):
        lyapunov_spectrum(cell, params, carry0, xs, length=5)
