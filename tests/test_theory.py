"""gradflow.theory against SCIENCE.md numbers, closed forms, dense grids and measurement."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow
from gradflow import theory
from gradflow.cells import _common

SQRT_2PI = math.sqrt(2.0 * math.pi)


def dense_mean(fn, q, h=1e-3):
    """E_z[fn(sqrt(q) z)] by the trapezoid rule on [-12, 0] and [0, 12] (one-sided limits at 0)."""
    z = np.linspace(0.0, 12.0, round(12.0 / h) + 1)
    pdf = np.exp(-0.5 * z * z) / SQRT_2PI
    right = np.maximum(z, 1e-300)  # the 0+ and 0- limits: relu' jumps at 0
    total = 0.0
    for side in (right, -right):
        total += np.trapezoid(fn(math.sqrt(q) * side) * pdf, z)
    return total


def length_map(activation, sw, sb, su, q):
    phi, _ = theory.ACTIVATIONS[activation]
    return sw**2 * dense_mean(lambda a: phi(a) ** 2, q) + sb**2 + su**2


# --- quadrature and activations ------------------------------------------------------------


@pytest.mark.parametrize("activation", sorted(theory.ACTIVATIONS))
def test_quadrature_matches_dense_grid(activation):
    phi, dphi = theory.ACTIVATIONS[activation]
    # the integrands of the theory; phi itself only where smooth (relu's kink is exact only squared)
    fns = [lambda a: phi(a) ** 2, lambda a: dphi(a) ** 2] + ([phi] if activation != "relu" else [])
    for q in (0.1, 0.5, 1.0, 4.0, 25.0, 400.0):  # Gauss-Hermite for q <= 1, trapezoid beyond
        for fn in fns:
            np.testing.assert_allclose(theory.gaussian_mean(fn, q), dense_mean(fn, q), rtol=0, atol=1e-8 * q)


def test_gauss_hermite_is_exact_for_polynomials():
    # E[z^2] = 1, E[z^4] = 3, E[z^6] = 15 for 200 nodes, variance q scales them by q^k
    for q in (0.3, 1.0):
        for k, moment in ((1, 1.0), (2, 3.0), (3, 15.0)):
            power = lambda a, k=k: a ** (2 * k)  # noqa: E731
            np.testing.assert_allclose(theory.gaussian_mean(power, q), moment * q**k, rtol=1e-13)
    np.testing.assert_allclose(theory.gaussian_mean(lambda a: a**4, 1.0, nodes=3), 3.0, rtol=1e-14)


@pytest.mark.parametrize("activation", sorted(theory.ACTIVATIONS))
def test_numpy_activations_match_the_cells(activation):
    phi, dphi = theory.ACTIVATIONS[activation]
    a = np.linspace(-30.0, 30.0, 1201) + 0.01  # avoid relu's kink at exactly 0
    jax_phi = _common.activation(activation)
    np.testing.assert_allclose(
        phi(a), np.asarray(jax_phi(jnp.asarray(a, jnp.float64))), rtol=1e-14, atol=1e-300
    )
    grad = jax.vmap(jax.grad(jax_phi))(jnp.asarray(a, jnp.float64))
    np.testing.assert_allclose(dphi(a), np.asarray(grad), rtol=1e-12, atol=2e-15)  # jax: 1 - tanh^2


# --- mean field: SCIENCE.md numbers and closed forms -----------------------------------------


def test_tanh_chaotic_point_numbers():
    mf = theory.mean_field("tanh", 1.5, 0.0)
    assert abs(mf.q_star - 0.793) < 0.002
    assert abs(mf.chi_1 - 1.139) < 0.002
    assert abs(mf.rate - 0.065) < 0.001
    np.testing.assert_allclose(mf.rate, 0.5 * math.log(mf.chi_1), rtol=1e-14)
    np.testing.assert_allclose(mf.depth_scale, -1.0 / math.log(mf.chi_1), rtol=1e-14)
    assert mf.depth_scale < 0  # chaotic: the gradient grows going back
    assert mf[4:] == ("tanh", 1.5, 0.0, 0.0)


@pytest.mark.parametrize("sigma_w", [0.3, 0.8, 0.99])
def test_tanh_ordered_without_bias_has_zero_fixed_point(sigma_w):
    mf = theory.mean_field("tanh", sigma_w, 0.0)
    assert mf.q_star < 1e-6
    np.testing.assert_allclose(mf.chi_1, sigma_w**2, rtol=1e-6)
    np.testing.assert_allclose(mf.rate, math.log(sigma_w), rtol=1e-6)
    np.testing.assert_allclose(theory.autonomous_tanh_rate(sigma_w), math.log(sigma_w), rtol=1e-6)
    assert mf.depth_scale > 0


@pytest.mark.parametrize(
    ("activation", "sw", "sb", "su"),
    [
        ("tanh", 1.5, 0.0, 0.0),
        ("tanh", 2.0, 0.3, 0.0),
        ("tanh", 0.6, 0.3, 0.0),
        ("tanh", 0.6, 0.0, 1.0),
        ("tanh", 4.0, 0.1, 0.5),
        ("sigmoid", 1.0, 0.2, 0.0),
        ("sigmoid", 12.0, 0.0, 0.5),
        ("relu", 1.2, 0.3, 0.2),
        ("linear", 0.7, 0.5, 0.0),
    ],
)
def test_fixed_point_solves_the_length_map_and_attracts_iteration(activation, sw, sb, su):
    _, dphi = theory.ACTIVATIONS[activation]
    mf = theory.mean_field(activation, sw, sb, su)
    np.testing.assert_allclose(length_map(activation, sw, sb, su, mf.q_star), mf.q_star, rtol=1e-9)
    for q in (1e-3, 1.0, 30.0):  # the fixed point is reached from any start
        for _ in range(300):
            q = length_map(activation, sw, sb, su, q)
        np.testing.assert_allclose(q, mf.q_star, rtol=1e-7)
    np.testing.assert_allclose(mf.chi_1, sw**2 * dense_mean(lambda a: dphi(a) ** 2, mf.q_star), rtol=1e-9)


def test_relu_and_linear_closed_forms():
    for sw in (0.5, 1.0, 1.3, 2.0, 3.0):
        for sb in (0.0, 0.5):
            np.testing.assert_allclose(theory.mean_field("relu", sw, sb).chi_1, sw**2 / 2, rtol=1e-9)
            np.testing.assert_allclose(theory.mean_field("linear", sw, sb).chi_1, sw**2, rtol=1e-9)
    np.testing.assert_allclose(theory.mean_field("relu", 1.2, 0.5).q_star, 0.25 / (1 - 0.72), rtol=1e-12)
    np.testing.assert_allclose(theory.mean_field("linear", 0.5, 0.0, 1.0).q_star, 1 / 0.75, rtol=1e-12)
    assert theory.mean_field("relu", 1.0, 0.0).q_star == 0.0
    assert theory.mean_field("relu", 1.5, 0.1).q_star == math.inf  # activity grows without bound
    assert math.isnan(theory.mean_field("linear", 1.0, 0.0).q_star)  # every q is a fixed point
    mf = theory.mean_field("linear", 1.0, 0.0)
    assert (mf.chi_1, mf.rate, mf.depth_scale) == (1.0, 0.0, math.inf)
    assert theory.mean_field("tanh", 0.0, 0.4).q_star == pytest.approx(0.16)
    assert (theory.mean_field("tanh", 0.0).rate, theory.mean_field("tanh", 0.0).depth_scale) == (
        -math.inf,
        0.0,
    )


def test_autonomous_tanh_rate_above_one_solves_its_own_fixed_point():
    _, dtanh = theory.ACTIVATIONS["tanh"]
    g, d = 2.0, 1.0
    for _ in range(500):  # D = g^2 E[tanh(sqrt(D) z)^2], by plain iteration on the dense grid
        d = g**2 * dense_mean(lambda a: np.tanh(a) ** 2, d)
    expected = 0.5 * math.log(g**2 * dense_mean(lambda a: dtanh(a) ** 2, d))
    np.testing.assert_allclose(theory.autonomous_tanh_rate(g), expected, rtol=1e-9)
    assert theory.autonomous_tanh_rate(g) == theory.mean_field("tanh", g).rate


# --- the order-to-chaos boundary ---------------------------------------------------------------


def test_critical_sigma_w():
    assert abs(theory.critical_sigma_w("tanh", sigma_b=0.05**0.5) ** 2 - 1.761) < 0.005
    np.testing.assert_allclose(theory.critical_sigma_w("tanh"), 1.0, rtol=1e-9)
    for sb in (0.0, 0.5):
        np.testing.assert_allclose(theory.critical_sigma_w("relu", sb) ** 2, 2.0, rtol=1e-9)
        np.testing.assert_allclose(theory.critical_sigma_w("linear", sb), 1.0, rtol=1e-9)
    for activation, sb, su in (("tanh", 0.3, 0.0), ("tanh", 0.0, 1.0), ("sigmoid", 0.2, 0.0)):
        sw = theory.critical_sigma_w(activation, sb, su)
        np.testing.assert_allclose(theory.mean_field(activation, sw, sb, su).chi_1, 1.0, rtol=1e-9)
        assert (
            theory.mean_field(activation, 0.99 * sw, sb, su).rate
            < 0
            < theory.mean_field(activation, 1.01 * sw, sb, su).rate
        )


def test_critical_line():
    sigma_b = np.array([[0.0, 0.1], [0.3, 1.0]])
    line = theory.critical_line("tanh", sigma_b)
    assert line.shape == (2, 2)
    expected = [theory.critical_sigma_w("tanh", sb) for sb in sigma_b.flat]
    np.testing.assert_allclose(line.ravel(), expected, rtol=1e-14)
    assert np.all(np.diff(line.ravel()) > 0)  # more bias: more weight needed for chaos


# --- rates of linear and residual networks -----------------------------------------------------


def test_linear_rate_equals_measured_orthogonal_linear_rnn():
    rho, n, t_steps = 0.9, 32, 50
    cell = gradflow.cells.get(
        "rnn",
        hidden_size=n,
        activation="linear",
        recurrent_init="orthogonal",
        weight_scale=rho,
        dtype="float64",
    )
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (t_steps, 3, 4), jnp.float64)
    res = gradflow.gradient_flow(cell, params, cell.initial_carry(3), xs, lambda ys, h: jnp.sum(h**2))
    np.testing.assert_allclose(float(res.fit.rate), theory.linear_rate(rho), rtol=1e-10)
    np.testing.assert_allclose(theory.linear_rate(rho), math.log(0.9), rtol=1e-15)
    assert theory.linear_rate(0.0) == -math.inf


def test_residual_rate_closed_forms():
    np.testing.assert_allclose(theory.residual_rate("relu", 1.0), 0.5 * math.log(1.5), rtol=1e-15)
    np.testing.assert_allclose(theory.residual_rate("relu", 2.0, alpha=0.5), 0.5 * math.log(1.5), rtol=1e-15)
    np.testing.assert_allclose(
        theory.residual_rate("linear", 1.0, alpha=0.5), 0.5 * math.log(1.25), rtol=1e-15
    )
    assert math.isnan(theory.residual_rate("tanh", 1.0))  # subexponential: no per-layer rate
    assert math.isnan(theory.residual_rate("sigmoid", 1.0))


# --- measured rates at width N lie within 10% of 0.5 ln chi_1 ----------------------------------


def _plain_stack_rates(points, width=512, depth=60, batch=8):
    """Measured ``fit.rate`` of gradflow's plain stack, one vmapped call over ``points``."""
    cell = gradflow.cells.get(
        "plain", width=width, depth=depth, activation="tanh", weight_scale=1.0, bias_scale=1.0
    )
    k_p, k_x, k_v = jax.random.split(jax.random.key(0), 3)
    base = cell.init(k_p, width)
    z0 = jax.random.normal(k_x, (batch, width), jnp.float32)
    v = jax.random.normal(k_v, (batch, width), jnp.float32)
    loss = lambda ys, x: jnp.sum(x * v)  # noqa: E731  (dL/dx_L = v, a random direction)

    def rate(sw, sb, q0):
        params = {"w": base["w"] * sw, "b": base["b"] * sb}
        x0 = jnp.sqrt(q0) * z0  # start at the fixed point's length (q0 = 1 where q* = 0)
        return gradflow.gradient_flow(cell, params, x0, None, loss, fit_window=(2, depth - 10)).fit.rate

    q0 = [theory.mean_field("tanh", sw, sb).q_star or 1.0 for sw, sb in points]
    sw, sb = np.asarray(points, np.float32).T
    return np.asarray(jax.jit(jax.vmap(rate))(sw, sb, np.asarray(q0, np.float32)))


def test_plain_tanh_stack_rate_matches_mean_field():
    points = [(2.0, 0.0), (0.6, 0.3), (0.6, 0.0)]  # chaotic, ordered, ordered with q* = 0
    measured = _plain_stack_rates(points)
    predicted = np.array([theory.mean_field("tanh", sw, sb).rate for sw, sb in points])
    # predicted 0.1547, -0.6102, -0.5108; measured (N=512) 0.147, -0.611, -0.512
    np.testing.assert_allclose(measured, predicted, rtol=0.1)


def _rnn_rates(points, hidden=1024, steps=100, inputs=256, batch=8):
    cell = gradflow.cells.get("rnn", hidden_size=hidden, weight_scale=1.0, bias_scale=1.0, input_scale=1.0)
    k_p, k_x, k_v = jax.random.split(jax.random.key(0), 3)
    base = cell.init(k_p, inputs)
    xs = jax.random.normal(k_x, (steps, batch, inputs), jnp.float32)
    v = jax.random.normal(k_v, (batch, hidden), jnp.float32)
    loss = lambda ys, h: jnp.sum(h * v)  # noqa: E731

    def rate(sw, sb, su):
        params = {"w_hh": base["w_hh"] * sw, "b": base["b"] * sb, "w_ih": base["w_ih"] * su}
        h0 = cell.initial_carry(batch)
        return gradflow.gradient_flow(cell, params, h0, xs, loss, fit_window=(2, steps - 10)).fit.rate

    sw, sb, su = np.asarray(points, np.float32).T
    return np.asarray(jax.jit(jax.vmap(rate))(sw, sb, su))


def test_random_tanh_rnn_rate_matches_mean_field_with_inputs():
    """N = 1024, inputs x ~ N(0, 1) of size I = 256: q* includes input_scale^2.

    With few inputs (I = 16) the input variance ``input_scale^2 |x_t|^2 / I``
    fluctuates from step to step (chi-squared, 35% std) and the chaotic rate
    comes out about 10% above the theory, which assumes a fixed variance.
    """
    points = [(2.0, 0.0, 1.0), (0.6, 0.0, 1.0), (0.6, 0.3, 0.5)]  # chaotic, ordered, ordered
    measured = _rnn_rates(points)
    predicted = np.array([theory.mean_field("tanh", sw, sb, su).rate for sw, sb, su in points])
    # predicted 0.0460, -0.9218, -0.7494
    np.testing.assert_allclose(measured, predicted, rtol=0.1)


def test_residual_relu_stack_rate_matches_prediction():
    width, depth, batch = 256, 40, 8
    cell = gradflow.cells.get(
        "residual", width=width, depth=depth, activation="relu", alpha=1.0, bias_scale=0.1
    )
    k_p, k_x, k_v = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(k_x, (batch, width), jnp.float32)
    v = jax.random.normal(k_v, (batch, width), jnp.float32)
    res = gradflow.gradient_flow(
        cell, cell.init(k_p, width), x0, None, lambda ys, x: jnp.sum(x * v), fit_window=(0, depth)
    )
    # predicted 0.5 ln 1.5 = 0.2027 per layer
    np.testing.assert_allclose(float(res.fit.rate), theory.residual_rate("relu", 1.0, alpha=1.0), rtol=0.1)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.mean_field("gelu", 1.0), r"unknown activation 'gelu'; choose from \['linear'"),
        (lambda: theory.mean_field("tanh", -1.0), r"sigma_w must be a finite number >= 0, got -1.0"),
        (lambda: theory.mean_field("tanh", 1.0, math.nan), r"sigma_b must be a finite number >= 0, got nan"),
        (lambda: theory.mean_field("tanh", 1.0, 0.0, -0.5), r"input_scale must be .* got -0.5"),
        (lambda: theory.mean_field("tanh", True), r"sigma_w must be .* got True"),
        (lambda: theory.mean_field("tanh", "1.0"), r"sigma_w must be .* got '1.0'"),
        (lambda: theory.mean_field("tanh", 1.0, nodes=1), r"nodes must be an integer in \[2, 360\]"),
        (lambda: theory.gaussian_mean(np.tanh, 1.0, nodes=1000), r"nodes must be an integer in \[2, 360\]"),
        (lambda: theory.gaussian_mean(np.tanh, -1.0), r"variance must be a finite number >= 0"),
        (lambda: theory.critical_sigma_w("softplus"), r"unknown activation 'softplus'"),
        (lambda: theory.critical_line("tanh", [0.1, -0.2]), r"sigma_b must be .* got -0.2"),
        (lambda: theory.linear_rate(-0.5), r"rho must be a finite number >= 0, got -0.5"),
        (lambda: theory.residual_rate("relu", 1.0, alpha=-1.0), r"alpha must be a finite number >= 0"),
    ],
)
def test_bad_input_raises_one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_stack_log10_ratio_closed_forms_and_fixed_point():
    from gradflow.theory import mean_field, stack_log10_ratio

    # linear activation: chi = 1, so plain gives L log10(sigma_w), residual 0.5 L log10(1 + sigma_w^2 / L)
    assert stack_log10_ratio("plain", 7, 0.8, activation="linear") == pytest.approx(
        7 * np.log10(0.8), abs=1e-12
    )
    want = 0.5 * 9 * np.log10(1 + 1.3**2 / 9)
    assert stack_log10_ratio("residual", 9, 1.3, activation="linear") == pytest.approx(want, abs=1e-12)
    # tanh plain stack started at its fixed point q*: every layer multiplies by chi_1
    mf = mean_field("tanh", 1.5)
    got = stack_log10_ratio("plain", 20, 1.5, q0=mf.q_star)
    assert got == pytest.approx(20 * 0.5 * np.log10(mf.chi_1), rel=1e-6)
    # brute force of the recursion with an explicit alpha, by Monte Carlo-free quadrature
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    q, total = 1.0, 0.0
    for _ in range(5):
        t = np.tanh(np.sqrt(q) * z)
        total += 0.5 * np.log10(1 + 0.25 * np.sum(w * (1 - t * t) ** 2))
        q += 0.25 * np.sum(w * t * t)
    assert stack_log10_ratio("residual", 5, 1.0, alpha=0.5) == pytest.approx(total, abs=1e-6)
    with pytest.raises(ValueError, match="unknown stack kind 'dense'"):
        stack_log10_ratio("dense", 5)
