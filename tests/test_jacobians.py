"""Local Jacobians, Jacobian products and path decomposition against jax.jacrev and closed forms."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiered

from gradflow import cells, unroll
from gradflow.measure.jacobians import (
    carry_layout,
    local_jacobians,
    pascanu_bound,
    pascanu_bounds,
    product_norms,
)
from gradflow.measure.paths import path_decomposition

F64 = jnp.float64


@functools.cache
def get_cell(name, **options):
    """One Cell object per configuration, so jit caches compiled functions across tests."""
    return cells.get(name, **options)


def rnn_setup(n=32, T=50, B=2, activation="tanh", scale=1.0, dtype=F64, init="normal", seed=0):
    cell = get_cell("rnn", hidden_size=n, activation=activation, recurrent_init=init, dtype=dtype.__name__)
    params = cell.init(jax.random.key(seed), 3)
    params = {**params, "w_hh": scale * params["w_hh"]}
    xs = jax.random.normal(jax.random.key(seed + 1), (T, B, 3), dtype)
    h0 = 0.5 * jax.random.normal(jax.random.key(seed + 2), (B, n), dtype)
    return cell, params, h0, xs


def lstm_setup(n=8, T=20, B=2):
    cell = get_cell("lstm", hidden_size=n, dtype="float64")
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (T, B, 3), F64)
    c0 = 0.5 * jax.random.normal(jax.random.key(2), (B, n), F64)
    h0 = 0.5 * jax.random.normal(jax.random.key(3), (B, n), F64)
    return cell, params, (c0, h0), xs


def flat(carry):
    """Per-example flattening in tree_leaves order: [B, D]."""
    leaves = jax.tree_util.tree_leaves(carry)
    return jnp.concatenate([a.reshape(a.shape[0], -1) for a in leaves], axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def jacrev_full(cell, params, carry0, xs, t):
    """jax.jacrev of h_T w.r.t. h_t over the whole batch, [B, D, B, D] (one compile for every t)."""
    layout = carry_layout(carry0)
    steps = jnp.arange(xs.shape[0])

    def run(carry, active):  # the unroll, with step s applied only where active[s]
        def body(carry, inp):
            x, on = inp
            new = cell.step(params, carry, x)[0]
            return jax.tree_util.tree_map(lambda n, o: jnp.where(on, n, o), new, carry), None

        return jax.lax.scan(body, carry, (xs, active))[0]

    def from_flat(v):
        leaves = [v[:, s.start : s.stop].reshape((-1, *s.shape)) for s in layout.slices]
        return jax.tree_util.tree_unflatten(layout.treedef, leaves)

    carry_t = run(carry0, steps < t)
    return jax.jacrev(lambda v: flat(run(from_flat(v), steps >= t)))(flat(carry_t))


def jacrev_blocks(cell, params, carry0, xs, t):
    """Per-example dh_T/dh_t, [B, D, D], from jacrev_full; checks the off-diagonal blocks vanish."""
    full = jacrev_full(cell, params, carry0, xs, t)
    B = full.shape[0]
    off = full * (1 - jnp.eye(B))[:, None, :, None]
    np.testing.assert_array_equal(np.asarray(off), 0.0)
    return jnp.stack([full[b, :, b, :] for b in range(B)])


def chain(jacobians):
    """J_{T-1} ... J_0 per example from [T, B, D, D]."""
    out = jnp.broadcast_to(jnp.eye(jacobians.shape[-1]), jacobians.shape[1:])
    for j in jacobians:
        out = j @ out
    return out


@pytest.mark.slow
def test_layout_follows_tree_leaves_order():
    cell, params, carry0, xs = lstm_setup(n=8, T=30)
    layout = carry_layout(carry0)
    assert [(s.path, s.start, s.stop, s.shape) for s in layout.slices] == [
        ("[0]", 0, 8, (8,)),
        ("[1]", 8, 16, (8,)),
    ]
    assert layout.size == 16
    res = local_jacobians(cell, params, carry0, xs)
    assert res.layout == layout
    # dc_1/dc_0 sits in the top-left block and equals the forget gate (diagonal)
    pre = xs[0] @ params["w_ih"] + carry0[1] @ params["w_hh"] + params["b"]
    forget = jax.nn.sigmoid(jnp.split(pre, 4, axis=-1)[1])
    for b in range(2):
        np.testing.assert_allclose(res.jacobians[0, b, :8, :8], jnp.diag(forget[b]), rtol=1e-12, atol=1e-14)


def test_local_jacobian_closed_form_rnn():
    cell, params, h0, xs = rnn_setup(n=16, T=5)
    res = local_jacobians(cell, params, h0, xs)
    h = h0
    for t in range(5):
        a = h @ params["w_hh"] + xs[t] @ params["w_ih"] + params["b"]
        expected = (1 - jnp.tanh(a) ** 2)[:, :, None] * params["w_hh"].T[None]  # diag(phi') W
        np.testing.assert_allclose(res.jacobians[t], expected, rtol=1e-12, atol=1e-14)
        h = jnp.tanh(a)
    sv = np.linalg.svd(np.asarray(res.jacobians), compute_uv=False)
    np.testing.assert_allclose(res.singular_values, sv, rtol=1e-10)
    np.testing.assert_allclose(res.spectral_norms, sv[..., 0], rtol=1e-10)
    assert local_jacobians(cell, params, h0, xs, k=3).singular_values.shape == (5, 2, 3)


@pytest.mark.parametrize("case", tiered(["rnn", "lstm"], {"lstm"}))
def test_jacrev_equals_product_of_local_jacobians_and_product_norms(case):
    cell, params, carry0, xs = rnn_setup(n=32, T=50, scale=1.3) if case == "rnn" else lstm_setup(n=8, T=30)
    T = xs.shape[0]
    reference = jacrev_blocks(cell, params, carry0, xs, 0)
    scale = float(jnp.max(jnp.abs(reference)))
    assert scale > 1e-6  # not a vacuous comparison of (near) zeros
    product = chain(local_jacobians(cell, params, carry0, xs).jacobians)
    np.testing.assert_allclose(product, reference, rtol=1e-10, atol=1e-10 * scale)

    res = product_norms(cell, params, carry0, xs, method="eigh")
    assert res.log_spectral.shape == res.log_frobenius.shape == (T + 1, 2)
    for t in (0, 7, T - 1):
        blocks = reference if t == 0 else jacrev_blocks(cell, params, carry0, xs, t)
        spectral = jnp.log(jnp.linalg.norm(blocks, 2, axis=(1, 2)))
        np.testing.assert_allclose(res.log_spectral[t], spectral, rtol=1e-10)
        np.testing.assert_allclose(
            res.log_frobenius[t], jnp.log(jnp.linalg.norm(blocks, axis=(1, 2))), rtol=1e-10
        )
    D = flat(carry0).shape[1]
    np.testing.assert_allclose(res.log_spectral[T], 0.0, atol=1e-12)
    np.testing.assert_allclose(res.log_frobenius[T], 0.5 * math.log(D), rtol=1e-12)
    # the default: power iteration, the norm within relative tol = 1e-3 of the eigen-solve's
    power = product_norms(cell, params, carry0, xs)
    np.testing.assert_allclose(power.log_frobenius, res.log_frobenius, rtol=1e-12)
    assert np.all(np.abs(np.asarray(power.log_spectral - res.log_spectral)) <= 1e-3)


@pytest.mark.parametrize(
    ("dtype", "rho", "T", "rtol"), [(F64, 0.9, 60, 1e-10), (jnp.float32, 0.5, 300, 1e-4)]
)
def test_linear_rnn_products_are_powers_of_rho(dtype, rho, T, rtol):
    cell, params, h0, xs = rnn_setup(
        n=16, T=T, activation="linear", scale=rho, dtype=dtype, init="orthogonal"
    )
    if dtype == jnp.float32:
        assert np.float32(rho) ** T == 0.0  # the plain product underflows float32
    local = local_jacobians(cell, params, h0, xs)
    np.testing.assert_allclose(local.singular_values, rho, rtol=10 * rtol)
    res = product_norms(cell, params, h0, xs)
    expected = (T - np.arange(T + 1))[:, None] * math.log(rho) * np.ones((1, 2))
    assert np.all(np.isfinite(np.asarray(res.log_spectral)))
    np.testing.assert_allclose(res.log_spectral, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(res.log_frobenius - 0.5 * math.log(16), expected, rtol=rtol, atol=rtol)


def test_log_space_survives_ten_thousand_float32_steps():
    cell, params, h0, xs = rnn_setup(
        n=4, T=10_000, B=1, activation="linear", scale=0.9, dtype=jnp.float32, init="orthogonal"
    )
    res = product_norms(cell, params, h0, xs)
    np.testing.assert_allclose(res.log_spectral[0, 0], 10_000 * math.log(0.9), rtol=1e-4)  # 10^-457


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_pascanu_bound_holds_every_step_rnn(activation):
    for scale in (0.5, 1.0, 3.0):
        check_pascanu_rnn(activation, scale)


def check_pascanu_rnn(activation, scale):
    cell, params, h0, xs = rnn_setup(n=16, T=25, B=3, activation=activation, scale=scale)
    norms = local_jacobians(cell, params, h0, xs).spectral_norms
    bound = pascanu_bounds("rnn", params, activation=activation)
    s = np.linalg.norm(np.asarray(params["w_hh"]), 2)
    np.testing.assert_allclose(bound, s * {"sigmoid": 0.25}.get(activation, 1.0), rtol=1e-12)
    assert np.all(np.asarray(norms) <= float(bound) * (1 + 1e-6))
    if activation == "linear":  # the bound is attained: J_t = W
        np.testing.assert_allclose(norms, bound, rtol=1e-10)
    else:
        assert float(jnp.max(norms)) > 0.3 * float(bound)  # and not vacuous


@pytest.mark.parametrize("name", ["plain", "residual"])
def test_pascanu_bound_holds_every_layer_stacks(name):
    cell = cells.get(name, width=16, depth=12, activation="tanh", weight_scale=1.5, dtype="float64")
    params = cell.init(jax.random.key(0), 16)
    x0 = jax.random.normal(jax.random.key(1), (3, 16), F64)
    norms = local_jacobians(cell, params, x0, None).spectral_norms  # [L, B]
    bounds = pascanu_bounds(name, params, activation="tanh")
    assert bounds.shape == (12,)
    np.testing.assert_allclose(
        pascanu_bound(params["w"], "tanh"),
        np.linalg.norm(np.asarray(params["w"]), 2, axis=(1, 2)),
        rtol=1e-12,
    )
    assert np.all(np.asarray(norms) <= np.asarray(bounds)[:, None] * (1 + 1e-6))


@pytest.mark.slow
def test_estimate_matches_exact_within_stated_error():
    """D = 64, k = 16: rel. std of the squared Frobenius norm <= sqrt(2/k) = 0.35; spectral: a lower bound."""
    cell, params, h0, xs = rnn_setup(n=64, T=12, B=16, scale=1.5)
    exact = product_norms(cell, params, h0, xs, method="eigh")
    est = product_norms(cell, params, h0, xs, method="estimate", probes=16, key=jax.random.key(7))
    assert est.probes == 16 and exact.probes == 64
    rel = np.exp(2 * np.asarray(est.log_frobenius - exact.log_frobenius)) - 1  # [T+1, B]
    bound = math.sqrt(2 / 16)
    for t in (0, 6, 11):
        assert abs(rel[t].mean()) < 3 * bound / math.sqrt(16)  # unbiased
        assert rel[t].std() < 1.3 * bound
    np.testing.assert_allclose(rel[-1], 0.0, atol=1e-12)  # t = T: P = I, any orthonormal probes are exact
    assert np.all(np.asarray(est.log_spectral) <= np.asarray(exact.log_spectral) + 1e-10)
    # near rank one at t = 0: the lower bound is ||P|| ||Q u||, E ||Q u||^2 = k / D
    ratio2 = np.exp(2 * np.asarray(est.log_spectral[0] - exact.log_spectral[0]))
    assert 0.5 * 16 / 64 < ratio2.mean() < 2.0 * 16 / 64
    full = product_norms(cell, params, h0, xs, method="estimate", probes=64, key=jax.random.key(7))
    np.testing.assert_allclose(full.log_frobenius, exact.log_frobenius, rtol=1e-10, atol=1e-10)
    # the spectral norm of the probe rows by power iteration: within its tol = 1e-3 (and below)
    assert np.all(np.abs(np.asarray(full.log_spectral - exact.log_spectral)) <= 1e-3)
    assert np.all(np.asarray(full.log_spectral) <= np.asarray(exact.log_spectral) + 1e-10)


@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_power_iteration_within_tol_of_the_eigen_solve(tol):
    """Chaotic and contracting tanh RNNs (D = 48, T = 120, float64): every t and example within relative
    tol (|d ln| <= tol) of the eigen-solve; the warm start converges without falling back in most steps."""
    for scale in (0.8, 2.0):
        cell, params, h0, xs = rnn_setup(n=48, T=120, B=3, scale=scale)
        ref = product_norms(cell, params, h0, xs, method="eigh")
        res = product_norms(cell, params, h0, xs, tol=tol)
        err = np.abs(np.asarray(res.log_spectral - ref.log_spectral))
        assert np.max(err) <= tol
        assert int(res.fallbacks) <= (12 if tol >= 1e-3 else 30) and int(ref.fallbacks) == 0
        np.testing.assert_allclose(res.log_frobenius, ref.log_frobenius, rtol=1e-12)
    # a tolerance below rounding is never met: every step falls back to the eigen-solve
    cell, params, h0, xs = rnn_setup(n=16, T=20, scale=1.5)
    forced = product_norms(cell, params, h0, xs, tol=1e-17)
    assert int(forced.fallbacks) == 20
    ref = product_norms(cell, params, h0, xs, method="eigh")
    np.testing.assert_allclose(forced.log_spectral, ref.log_spectral, rtol=1e-12)


def jacfwd_log_norms(cell, params, carry0, xs, t):
    """Brute force: ln ||dh_T/dh_t||_2 and _F per example ``[B]``, jax.jacfwd of the unrolled map
    from h_t (one example at a time) and np.linalg.norm(ord=2)."""
    layout = carry_layout(carry0)
    carry_t = unroll(cell, params, carry0, xs[:t])[0] if t else carry0

    def from_flat(v):
        leaves = [v[None, s.start : s.stop].reshape((1, *s.shape)) for s in layout.slices]
        return jax.tree_util.tree_unflatten(layout.treedef, leaves)

    spec, frob = [], []
    for b, h in enumerate(flat(carry_t)):
        xs_b = xs[t:, b : b + 1]
        jac = np.asarray(
            jax.jacfwd(lambda v, xs_b=xs_b: flat(unroll(cell, params, from_flat(v), xs_b)[0])[0])(h)
        )
        spec.append(math.log(np.linalg.norm(jac, ord=2)))
        frob.append(math.log(np.linalg.norm(jac)))
    return np.array(spec), np.array(frob)


LOWRANK_CASES = [
    (name, g, dt)
    for name, g in [("rnn", 0.5), ("rnn", 0.9), ("rnn", 1.0), ("rnn", 2.0), ("lstm", None)]
    for dt in (F64, jnp.float32)
]


@pytest.mark.parametrize(
    ("name", "g", "dtype"),
    tiered(
        LOWRANK_CASES, {("rnn", 0.5, F64), ("rnn", 2.0, F64), ("rnn", 1.0, jnp.float32), ("lstm", None, F64)}
    ),
)
def test_lowrank_within_tol_of_the_eigen_solve(name, g, dtype):
    """Vanishing (0.5, 0.9), edge (1.0), chaotic (2.0) tanh RNNs (D = 32) and an LSTM (D = 16), T = 120:
    every t and example within |d ln| <= tol = 1e-3 of the eigen-solve, below it up to rounding, after
    narrowing to fewer rows; each truncation discards at most tol^2 of the squared norm."""
    if name == "rnn":
        cell, params, carry0, xs = rnn_setup(n=32, T=120, scale=g, dtype=dtype)
    else:
        cell, params, carry0, xs = lstm_setup(n=8, T=120)
        params, carry0, xs = jax.tree.map(lambda a: a.astype(dtype), (params, carry0, xs))
    D = flat(carry0).shape[1]
    ref = product_norms(cell, params, carry0, xs, method="eigh")
    res = product_norms(cell, params, carry0, xs, method="lowrank")
    assert res.log_spectral.dtype == dtype and res.probes == D and res.rows.shape == (121,)
    rows = np.asarray(res.rows)
    assert rows[-1] == D and rows[0] == 4 and np.all(np.diff(rows) >= 0)  # narrowed in tiers to 4 rows
    tiers = math.log2(D // 4)
    assert np.all(np.asarray(res.discarded) <= tiers * 1e-6 * (1 + 1e-3))
    rounding = 1e-10 if dtype == F64 else 1e-4
    for got, want in [(res.log_spectral, ref.log_spectral), (res.log_frobenius, ref.log_frobenius)]:
        diff = np.asarray(got - want)
        assert np.all(np.abs(diff) <= 1e-3)
        assert np.all(diff <= rounding)  # a lower bound
    if dtype == F64:
        assert int(res.fallbacks) <= 12


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_lowrank_against_jacfwd(name):
    """Brute force at steps carried with D, fewer and the fewest rows (float64)."""
    if name == "rnn":
        cell, params, carry0, xs = rnn_setup(n=16, T=60, scale=0.9)
    else:
        cell, params, carry0, xs = lstm_setup(n=8, T=60)
    res = product_norms(cell, params, carry0, xs, method="lowrank")
    rows = np.asarray(res.rows)
    D = flat(carry0).shape[1]
    steps = [int(np.argmax(rows == k)) for k in (4, 8)] + [0, 58]
    assert rows[steps[-1]] == D and rows[0] == 4
    for t in steps:
        spec, frob = jacfwd_log_norms(cell, params, carry0, xs, t)
        np.testing.assert_allclose(res.log_spectral[t], spec, atol=1e-3)
        np.testing.assert_allclose(res.log_frobenius[t], frob, atol=1e-3)


def test_lowrank_keeps_every_row_of_a_flat_spectrum():
    """Linear orthogonal RNN: all singular values of dh_T/dh_t equal rho^(T-t), none is dropped."""
    cell, params, h0, xs = rnn_setup(n=16, T=40, activation="linear", scale=0.9, init="orthogonal")
    res = product_norms(cell, params, h0, xs, method="lowrank")
    np.testing.assert_array_equal(res.rows, 16)
    expected = (40 - np.arange(41))[:, None] * math.log(0.9) * np.ones((1, 2))
    np.testing.assert_allclose(res.log_spectral, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.log_frobenius - 0.5 * math.log(16), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(res.discarded, 0.0)


def test_lowrank_compiles_once():
    """One program for every t and tier: new values of the same shapes reuse it."""
    cell, params, h0, xs = rnn_setup(n=16, T=30, scale=0.7)
    jitted = jax.jit(lambda p, xs: product_norms(cell, p, h0, xs, method="lowrank"))
    first = jitted(params, xs)
    res = jitted({**params, "w_hh": 2.0 * params["w_hh"]}, 0.5 * xs)
    assert jitted._cache_size() == 1
    assert int(first.rows[0]) == 4 and np.all(np.isfinite(np.asarray(res.log_spectral)))


def test_product_norms_under_jit_and_vmap():
    cell, params, h0, xs = rnn_setup(n=16, T=5)
    eager = product_norms(cell, params, h0, xs)
    jitted = jax.jit(lambda p: product_norms(cell, p, h0, xs))(params)
    np.testing.assert_allclose(jitted.log_spectral, eager.log_spectral, rtol=1e-12)
    scales = jnp.array([0.5, 2.0], F64)
    many = jax.vmap(lambda s: local_jacobians(cell, {**params, "w_hh": s * params["w_hh"]}, h0, xs))(scales)
    one = local_jacobians(cell, {**params, "w_hh": 2.0 * params["w_hh"]}, h0, xs)
    np.testing.assert_allclose(many.spectral_norms[1], one.spectral_norms, rtol=1e-12)


def residual_setup(L, D=8, B=3, activation="tanh", alpha=0.5, tied=False):
    cell = cells.get(
        "residual", width=D, depth=L, activation=activation, alpha=alpha, bias_scale=0.3, dtype="float64"
    )
    params = cell.init(jax.random.key(0), D)
    if tied:
        params = {**params, "w": jnp.broadcast_to(params["w"][0], params["w"].shape)}
    x0 = jax.random.normal(jax.random.key(1), (B, D), F64)
    g = jax.random.normal(jax.random.key(2), (B, D), F64)
    return cell, params, x0, g


@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_paths_sum_to_the_gradient(activation):
    cell, params, x0, g = residual_setup(L=20, activation=activation)
    res = path_decomposition(cell, params, x0, g)
    grad = jax.grad(lambda x: jnp.sum(g * unroll(cell, params, x, None)[0]))(x0)
    assert res.contributions.shape == (21, 3, 8) and res.norms.shape == (21,)
    np.testing.assert_allclose(res.contributions.sum(0), grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.grad, grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.contributions[0], g, rtol=1e-14)  # the identity path
    np.testing.assert_allclose(
        res.norms, jnp.linalg.norm(res.contributions.reshape(21, -1), axis=1), rtol=1e-12
    )


def test_linear_paths_are_elementary_symmetric_sums():
    """x' = x + alpha x @ w_l: the k-path term is sum over |S| = k of g (prod_{l in S} alpha w_l)^T."""
    L, alpha = 6, 0.5
    cell, params, x0, g = residual_setup(L=L, activation="linear", alpha=alpha)
    params = {**params, "b": jnp.zeros_like(params["b"])}
    res = path_decomposition(cell, params, x0, g)
    w = np.asarray(params["w"]) * alpha
    for k in range(L + 1):
        total = np.zeros_like(np.asarray(g))
        for subset in itertools.combinations(range(L), k):
            m = np.eye(8)
            for l in subset:  # forward order: x_L = x_0 (... w_l ...)
                m = m @ w[l]
            total += np.asarray(g) @ m.T
        np.testing.assert_allclose(res.contributions[k], total, rtol=1e-10, atol=1e-12)


def test_tied_linear_paths_are_binomial():
    L, alpha = 10, 0.3
    cell, params, x0, g = residual_setup(L=L, activation="linear", alpha=alpha, tied=True)
    res = path_decomposition(cell, params, x0, g)
    a_t = alpha * np.asarray(params["w"][0]).T
    for k in range(L + 1):
        expected = math.comb(L, k) * np.asarray(g) @ np.linalg.matrix_power(a_t, k)
        np.testing.assert_allclose(res.contributions[k], expected, rtol=1e-10, atol=1e-12)


def test_short_paths_carry_the_gradient_at_init():
    """Veit et al. 2016: 100 blocks, width 64, at init; the norm peaks far below L/2."""
    x0 = jax.random.normal(jax.random.key(1), (4, 64), F64)
    peaks = {}
    for alpha in (None, 1.0):  # depth-scaled 1/sqrt(L) (the default), and the unscaled ResNet
        cell = cells.get("residual", width=64, depth=100, alpha=alpha, dtype="float64")
        params = cell.init(jax.random.key(0), 64)
        res = path_decomposition(cell, params, x0)
        grad = jax.grad(lambda x, c=cell, p=params: jnp.sum(unroll(c, p, x, None)[0]))(x0)
        np.testing.assert_allclose(res.grad, grad, rtol=1e-10, atol=1e-10)
        share = np.asarray(res.norms) ** 2 / np.sum(np.asarray(res.norms) ** 2)
        peaks[alpha] = int(np.argmax(share))
        if alpha is None:
            assert share[:11].sum() > 0.999
    assert peaks[None] <= 1
    assert 3 <= peaks[1.0] <= 20  # measured 10 of 100


def test_bad_input_errors():
    cell, params, h0, xs = rnn_setup(n=4, T=3)
    with pytest.raises(ValueError, match="method"):
        product_norms(cell, params, h0, xs, method="power")
    with pytest.raises(ValueError, match="tol must be a number in \\(0, 1\\), got 0"):
        product_norms(cell, params, h0, xs, tol=0)
    with pytest.raises(ValueError, match="key is required"):
        product_norms(cell, params, h0, xs, method="estimate")
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        product_norms(cell, params, h0, xs, method="estimate", probes=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="pascanu_bounds: unknown or unbounded cell 'lstm'"):
        pascanu_bounds("lstm", params)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        pascanu_bound(params["w_hh"], "gelu")
    with pytest.raises(ValueError, match="cotangent must be shaped like carry0"):
        path_decomposition(cell, params, h0, jnp.ones((2, 5), F64), xs=xs)
    batch_norm = cells.get("plain", width=4, depth=3, norm="batch", dtype="float64")
    with pytest.raises(ValueError, match="couples the examples"):
        local_jacobians(batch_norm, batch_norm.init(jax.random.key(0), 4), h0, None)
    layer_norm = cells.get("plain", width=4, depth=3, norm="layer", dtype="float64")
    assert local_jacobians(layer_norm, layer_norm.init(jax.random.key(0), 4), h0, None).jacobians.shape == (
        3,
        2,
        4,
        4,
    )
