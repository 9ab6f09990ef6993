"""C6 (slide A8): residual vs plain gradient per layer and 128-layer training; the verdict is measured.

References: the per-layer machinery of the experiment (one padded stack, loss on the layer-L
output, residual branch scale folded into the weights) against the genuine depth-L residual
cell (``jax.jacrev`` and ``gradient_flow``), and against the closed form of a linear plain stack
with orthogonal weights; the quick ratios against infinite-width mean field.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells, claims, gradient_flow, unroll


@pytest.fixture(scope="module")
def c06():
    return claims.load_experiment("c06_residual")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return claims.run_claim(claims.get("C6"), tmp_path_factory.mktemp("c06"), quick=True)


def test_quick_verdict_numbers_and_figure(quick):
    assert quick.verdict == "reproduced", quick.measured
    g = {label: v["log10_ratio"] for label, v in quick.numbers["gradient"].items()}
    assert quick.numbers["gradient"]["residual"]["L"] == [10, 50, 100, 200]
    assert max(abs(v) for v in g["residual"] + g["residual + BN"]) < 0.3  # within 2x at every depth
    assert g["plain"][-1] < -1.0  # the same init without the shortcut loses more than 10x at L = 200
    assert g["plain, sigma_w^2 = 0.5"][-1] < -25.0
    assert g["plain + BN"][-1] > 5.0 and g["plain + LN"][-1] > 3.0  # normalized plain stacks explode
    models = quick.numbers["training"]["models"]
    assert models["residual"]["median_final_ratio"] < 0.01
    assert models["plain"]["median_final_ratio"] > 0.3 and models["plain + BN"]["median_final_ratio"] > 0.3
    assert Path(quick.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((Path(quick.runs[0]) / "numbers.json").read_text())
    assert saved == quick.numbers


def test_quick_ratios_follow_mean_field(quick):
    g = quick.numbers["gradient"]
    assert g["plain + BN"]["mean_field"] is None
    np.testing.assert_allclose(g["residual"]["log10_ratio"], g["residual"]["mean_field"], atol=0.03)
    ordered = g["plain, sigma_w^2 = 0.5"]
    np.testing.assert_allclose(ordered["log10_ratio"], ordered["mean_field"], rtol=0.08)
    # critical plain stack: mean field while L << width (32); at L = 200 finite width loses more
    np.testing.assert_allclose(g["plain"]["log10_ratio"][:2], g["plain"]["mean_field"][:2], atol=0.15)
    assert g["plain"]["log10_ratio"][-1] < g["plain"]["mean_field"][-1]


def test_verdict_flips_when_a_criterion_is_tightened(quick, c06):
    numbers, criteria = quick.numbers, quick.criteria
    assert c06.verdict(numbers, criteria)[0] == "reproduced"
    kept = abs(numbers["gradient"]["residual"]["log10_ratio"][-1])
    assert c06.verdict(numbers, {**criteria, "keep_decades": kept / 2})[0] == "not reproduced"
    trained = numbers["training"]["models"]["residual"]["median_final_ratio"]
    assert c06.verdict(numbers, {**criteria, "train_ratio": trained / 2})[0] == "not reproduced"
    # loosened until the critical plain stack counts as keeping its gradient: named, under conditions
    plain = abs(numbers["gradient"]["plain"]["log10_ratio"][-1])
    verdict, text = c06.verdict(numbers, {**criteria, "keep_decades": plain + 0.01})
    assert verdict == "reproduced under conditions"
    assert "plain keeps the gradient" in text


@pytest.mark.parametrize("norm", [None, "batch"])
def test_padded_stack_equals_the_depth_L_residual_cell(c06, norm):
    width, batch, lmax, depth = 6, 4, 9, 5
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
    r = jnp.asarray(rng.standard_normal((batch, width)), jnp.float32)
    cell = c06.padded_cell("residual", width, lmax, norm)
    base = c06.base_params(width, lmax, c06._key(3))
    log10 = np.asarray(
        c06.layer_log10(cell, c06.padded_params(cell, "residual", 1.0, depth, base), x0, r, depth)
    )
    genuine = cells.get("residual", width=width, depth=depth, norm=norm)  # alpha = 1/sqrt(depth)
    params = jax.tree_util.tree_map(lambda a: a[:depth], dict(cell.init(c06._key(0), width), **base))
    jac = jax.jacrev(lambda x: unroll(genuine, params, x, None)[0])(x0)  # [B, D, B, D]
    g0 = np.einsum("bd,bdce->ce", np.asarray(r, np.float64), np.asarray(jac, np.float64))
    assert log10[0] == pytest.approx(np.log10(np.linalg.norm(g0)), abs=1e-5)
    flow = gradient_flow(genuine, params, x0, None, lambda ys, h: jnp.sum(h * r))
    np.testing.assert_allclose(log10[: depth + 1], np.asarray(flow.total_log10_norms), atol=1e-5)
    assert log10[depth] == pytest.approx(np.log10(np.linalg.norm(np.asarray(r))), abs=1e-6)
    assert np.isnan(log10[depth + 1 :]).all()


def test_linear_orthogonal_plain_stack_matches_the_closed_form(c06):
    width, batch, lmax, depth, rho = 8, 3, 12, 7, 0.8
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.standard_normal((lmax, width, width)))[0]
    params = {"w": jnp.asarray(rho * q), "b": jnp.zeros((lmax, width))}
    cell = cells.get("plain", width=width, depth=lmax, activation="linear", dtype="float64")
    r = rng.standard_normal((batch, width))
    log10 = np.asarray(
        c06.layer_log10(cell, params, jnp.asarray(rng.standard_normal((batch, width))), r, depth)
    )
    expected = np.log10(np.linalg.norm(r)) + (depth - np.arange(depth + 1)) * np.log10(rho)
    np.testing.assert_allclose(log10[: depth + 1], expected, atol=1e-10)
    assert np.isnan(log10[depth + 1 :]).all()
