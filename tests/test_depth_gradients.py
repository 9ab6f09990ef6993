"""Depth stacks measured at init (``gradflow.measure.depth``), their linear reference score
(``gradflow.learn.least_squares_ratio``) and their figures (``gradflow.figures.depth``).

References: the padded stack (loss on the layer-L output, residual branch scale folded into the
weights) against the genuine depth-L cell through ``jax.jacrev``; a linear plain stack with
orthogonal weights against its closed form; the vmapped grid of ``stack_gradients`` against one
genuine depth-L stack per (variant, L, seed); least squares against the normal equations on the
teacher's set redrawn with numpy.
"""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiered

from gradflow import cells, gradient_flow, tasks, unroll
from gradflow.figures import depth as figures
from gradflow.figures import plots
from gradflow.learn import least_squares_ratio
from gradflow.learn.batches import Batch
from gradflow.measure import depth


def _input_gradient_log10(cell, params, x0, r):
    """``log10 ||d<x_L, r>/dx_0||`` of the genuine stack, from ``jax.jacrev`` (float64 einsum)."""
    jac = jax.jacrev(lambda x: unroll(cell, params, x, None)[0])(x0)  # [B, D, B, D]
    g0 = np.einsum("bd,bdce->ce", np.asarray(r, np.float64), np.asarray(jac, np.float64))
    return np.log10(np.linalg.norm(g0))


@pytest.mark.parametrize("norm", tiered([None, "batch"], {"batch"}))
def test_padded_stack_equals_the_depth_L_residual_cell(norm):
    width, batch, lmax, L = 6, 4, 9, 5
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
    r = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
    cell = depth.padded_stack("residual", width, lmax, norm)
    base = depth.shared_params(width, lmax, depth.rbg_key(3))
    log10 = np.asarray(
        depth.layer_log10_norms(cell, depth.padded_params(cell, "residual", 1.0, L, base), x0, r, L)
    )
    genuine = cells.get("residual", width=width, depth=L, norm=norm)  # alpha = 1/sqrt(L)
    params = jax.tree_util.tree_map(lambda a: a[:L], dict(cell.init(depth.rbg_key(0), width), **base))
    assert log10[0] == pytest.approx(_input_gradient_log10(genuine, params, x0, r), abs=1e-5)
    flow = gradient_flow(genuine, params, x0, None, lambda ys, h: jnp.sum(h * r))
    np.testing.assert_allclose(log10[: L + 1], np.asarray(flow.total_log10_norms), atol=1e-5)
    assert log10[L] == pytest.approx(np.log10(np.linalg.norm(np.asarray(r))), abs=1e-6)
    assert np.isnan(log10[L + 1 :]).all()


def test_linear_orthogonal_plain_stack_matches_the_closed_form():
    width, batch, lmax, L, rho = 8, 3, 12, 7, 0.8
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.standard_normal((lmax, width, width)))[0]
    params = {"w": jnp.asarray(rho * q), "b": jnp.zeros((lmax, width))}
    cell = cells.get("plain", width=width, depth=lmax, activation="linear", dtype="float64")
    r = rng.standard_normal((batch, width))
    x0 = jnp.asarray(rng.standard_normal((batch, width)))
    log10 = np.asarray(depth.layer_log10_norms(cell, params, x0, r, L))
    expected = np.log10(np.linalg.norm(r)) + (L - np.arange(L + 1)) * np.log10(rho)
    np.testing.assert_allclose(log10[: L + 1], expected, atol=1e-10)
    assert np.isnan(log10[L + 1 :]).all()


@pytest.mark.slow
def test_stack_gradients_grid_equals_one_genuine_stack_per_point():
    width, batch, seeds, depths = 5, 3, 2, (2, 4)
    variants = {
        "res": ("residual", None, 1.0),
        "plain/2": ("plain", None, 0.5),
        "plain": ("plain", None, 1.0),
    }
    with jax.enable_x64(False):
        layers = depth.stack_gradients(width, batch, seeds, depths, variants, seed=7)
        keys = jax.random.split(depth.rbg_key(7), seeds)
        bases = jax.vmap(lambda k: depth.shared_params(width, max(depths), k))(keys)
        rng = np.random.default_rng(7)  # the documented draws: x_0, then r
        x0 = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
        r = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
        for label, (kind, norm, sigma_w) in variants.items():
            assert layers[label].shape == (len(depths), seeds, max(depths) + 1)
            for i, L in enumerate(depths):
                for s in range(seeds):
                    base = jax.tree_util.tree_map(lambda a, s=s: a[s], bases)
                    w = base["w"][:L] * sigma_w
                    genuine = cells.get(kind, width=width, depth=L, norm=norm)  # residual: 1/sqrt(L)
                    want = _input_gradient_log10(genuine, {"w": w, "b": base["b"][:L]}, x0, r)
                    got = layers[label][i, s]
                    assert got[0] == pytest.approx(want, abs=1e-4), (label, L, s)
                    assert got[L] == pytest.approx(np.log10(np.linalg.norm(np.asarray(r))), abs=1e-6)
                    assert np.isfinite(got[: L + 1]).all() and np.isnan(got[L + 1 :]).all()
    ratios = depth.input_output_log10_ratios(layers, depths)
    assert ratios["plain/2"][1].max() < ratios["plain"][1].min()  # the ordered init vanishes faster


def test_input_output_ratios_by_hand():
    a = np.array([[[1.0, 2.0, 3.0, np.nan], [0.0, 1.0, 5.0, np.nan]], [[-4.0, 0.0, 1.0, 2.0], [3, 2, 1, 0]]])
    ratios = depth.input_output_log10_ratios({"x": a}, (2, 3))
    np.testing.assert_array_equal(ratios["x"], [[1.0 - 3.0, 0.0 - 5.0], [-4.0 - 2.0, 3.0 - 0.0]])


def test_least_squares_ratio_equals_the_normal_equations_on_the_teacher_set():
    inputs, hidden, examples, seed = 4, 6, 40, 11
    task = tasks.get("teacher", inputs=inputs, hidden=hidden, examples=examples, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed)  # the teacher's documented draws
    x = rng.standard_normal((examples, inputs))
    u = 2.0 * rng.standard_normal((inputs, hidden)) / inputs**0.5
    y = np.tanh(x @ u) @ rng.standard_normal(hidden)
    y = (y - y.mean()) / y.std()
    x1 = np.c_[x, np.ones(examples)]
    coef = np.linalg.solve(x1.T @ x1, x1.T @ y)
    expected = np.mean((x1 @ coef - y) ** 2) / np.var(y)
    assert 0.05 < expected < 0.95
    assert least_squares_ratio(task, examples) == pytest.approx(expected, rel=1e-9)


def test_least_squares_ratio_of_an_affine_target_is_zero_and_of_noise_about_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 3))

    def fake(y):
        batch = Batch(jnp.asarray(x[None]), jnp.asarray(y[None, :, None]), jnp.ones((1, 200), bool))
        return SimpleNamespace(sample=lambda key, n: batch)

    assert least_squares_ratio(fake(2.0 * x[:, 0] - x[:, 2] + 3.0), 200) < 1e-20
    noise = least_squares_ratio(fake(rng.standard_normal(200)), 200)
    assert 0.9 < noise < 1.0  # 4 fitted coefficients of 200 explain ~2% of pure noise


def test_loss_ratio_curves_reads_the_run_files(tmp_path):
    train = np.array([[4.0, 2.0], [8.0, 4.0], [1.0, 1.0]])
    evals = np.array([[3.0, 1.0], [5.0, 2.0], [0.5, 0.25]])
    np.savez(
        tmp_path / "results.npz",
        train_loss=train,
        eval_loss=evals,
        baseline=np.array([2.0, 4.0, 1.0]),
        label=np.array(["b", "b", "a"]),
    )
    curves = figures.loss_ratio_curves(tmp_path)
    assert list(curves) == ["b", "a"]
    np.testing.assert_array_equal(curves["b"], [[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]])
    np.testing.assert_array_equal(curves["a"], [[1.0, 1.0, 0.25]])


def test_depth_panels_draw_the_numbers_given():
    ratios = {"res": np.array([[0.1, 0.3], [0.2, 0.2]]), "plain": np.array([[-1.0, -3.0], [-2.0, -2.0]])}
    _, (a, b) = plots.figure(1, 2)
    mean_field = {"plain": (np.array([10, 20]), np.array([-1.5, -2.5]))}
    figures.ratio_vs_depth(a, ratios, (10, 50), mean_field=mean_field, keep_decades=1.0)
    lines = {ln.get_label(): ln for ln in a.get_lines()}
    np.testing.assert_allclose(lines["res"].get_ydata(), 10.0 ** np.array([0.2, 0.2]))
    np.testing.assert_allclose(lines["plain"].get_ydata(), 10.0 ** np.array([-2.0, -2.0]))
    assert any(np.allclose(ln.get_ydata(), 10.0 ** np.array([-1.5, -2.5])) for ln in a.get_lines())
    curves = {"res": np.array([[1.0, 0.5, 0.1], [1.0, 0.3, 0.3]])}
    figures.training_ratio_plot(b, curves, linear=0.2, threshold=0.1, title="t")
    np.testing.assert_allclose(b.get_lines()[0].get_ydata(), [1.0, 0.4, 0.2])


def test_figures_write_pngs(tmp_path):
    layers = {"res": np.zeros((2, 2, 6)), "plain": -np.arange(6.0)[None, None].repeat(2, 0).repeat(2, 1)}
    ratios = depth.input_output_log10_ratios(layers, (2, 5))
    curves = {"res": np.array([[1.0, 0.5, 0.1], [1.0, 0.3, 0.3]])}

    def mean_field(label, d):
        return None if label == "res" else -0.1 * np.asarray(d)

    sizes = {"width": 4, "train_depth": 8, "train_width": 4}
    (png,) = figures.residual_vs_plain(
        tmp_path / "c",
        layers,
        ratios,
        (2, 5),
        curves,
        0.2,
        mean_field=mean_field,
        keep_decades=1.0,
        train_ratio=0.1,
        sizes=sizes,
    )
    (png2,) = figures.variant_curves(
        tmp_path / "v", [0, 10], np.array([[1.0, 0.5], [0.9, 0.4]]), ["a", "b"], title="t", ylabel="y"
    )
    for path in (png, png2):
        assert path.suffix == ".png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
