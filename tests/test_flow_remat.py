"""gradient_flow's remat: automatic choice from a memory estimate, segmented scans, long sequences.

References: the same call without remat (identical numbers to float rounding), the compiled
program's own memory analysis, and brute-force per-step gradients.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import LOSSES, brute_force_log10_norms, make
from conftest import tiered, tree_allclose

import gradflow
from gradflow import cells
from gradflow.measure import remat
from gradflow.measure.flow import RematWarning


def _lstm(T, B=4, H=8, I=3, seed=0):
    cell = cells.get("lstm", hidden_size=H)
    params = cell.init(jax.random.key(seed), I)
    xs = jax.random.normal(jax.random.key(seed + 1), (T, B, I), jnp.float32)
    return cell, params, cell.initial_carry(B), xs


def _on_h(ys, carry):
    return jnp.mean(carry[1] ** 2)


def _on_ys(ys, carry):
    return jnp.mean(jnp.sin(ys) * jnp.arange(ys.shape[0])[:, None, None]) + jnp.mean(carry[0] ** 2)


@pytest.mark.parametrize("loss", tiered([_on_h, _on_ys], fast=[_on_h]))
def test_auto_remat_turns_on_above_the_memory_fraction_and_changes_no_number(monkeypatch, loss):
    cell, params, carry0, xs = _lstm(T=300)
    ref = gradflow.gradient_flow(cell, params, carry0, xs, loss, remat=False)
    need = remat.residual_bytes(cell.step, params, carry0, xs, False, 300)
    # a device with 3x the residuals: under the 1/4 fraction -> remat on, said once, sqrt(300) = 17
    monkeypatch.setattr(remat, "device_memory_bytes", lambda: 3 * need)
    said = r"~\d+\.\d MiB of residuals for T = 300 steps, over 25% of the device's .*segments of 17 steps"
    with pytest.warns(RematWarning, match=said):
        auto = gradflow.gradient_flow(cell, params, carry0, xs, loss)
    tree_allclose(auto, ref, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(auto.log10_norms, ref.log10_norms, rtol=0, atol=2e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradflow.gradient_flow(cell, params, carry0, xs, loss, remat=False)  # forced off: silent
        monkeypatch.setattr(remat, "device_memory_bytes", lambda: 5 * need)  # over 4x: plain scan
        assert remat.choose_segment(None, 300, lambda: need) is None
        gradflow.gradient_flow(cell, params, carry0, xs, loss)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "plain"])
def test_the_cheap_residual_bound_is_above_the_estimate_and_decides_when_it_fits(name):
    """residual_bound (one step's vjp, weights counted per step) >= residual_bytes (the scan's), so
    when the bound fits the scan surely does and the estimate is never traced."""
    cell = cells.get(name, **({"width": 16, "depth": 12} if name == "plain" else {"hidden_size": 24}))
    per_step = cell.params_per_step
    params = cell.init(jax.random.key(0), None if per_step else 5)
    carry0 = jnp.ones((4, 16), jnp.float32) if per_step else cell.initial_carry(4)
    xs = None if per_step else jnp.ones((50, 4, 5), jnp.float32)
    T = 12 if per_step else 50
    bound = remat.residual_bound(cell.step, params, carry0, xs, per_step, T)
    need = remat.residual_bytes(cell.step, params, carry0, xs, per_step, T)
    assert need <= bound <= 4 * need + 4 * 24 * 24 * 4 * T, (need, bound)

    def never():
        raise AssertionError("the estimate was traced although the bound fits")

    assert remat.choose_segment(None, T, never, lambda: bound) is None  # any real device fits a few KiB


def test_the_residual_estimate_matches_the_compiled_programs_memory():
    cell, params, carry0, xs = _lstm(T=2000, B=8, H=32)

    def plain(p):
        carry, ys = gradflow.unroll(cell, p, carry0, xs)
        return _on_h(ys, carry)

    temp = jax.jit(jax.grad(plain)).lower(params).compile().memory_analysis().temp_size_in_bytes
    need = remat.residual_bytes(cell.step, params, carry0, xs, False, 2000)
    assert 0.5 * temp <= need <= 1.5 * temp, (need, temp)


@pytest.mark.slow
def test_remat_memory_grows_like_sqrt_T_and_keeps_no_per_step_outputs():
    """The compiled temporaries with sqrt remat: far below the plain scan's, and below the size of
    the outputs ys (the loss reads the final carry only) and of a copy of xs."""
    temps = {}
    for T in (2500, 10_000):
        cell, params, carry0, xs = _lstm(T=T, B=8, H=32, I=16)
        for mode in (False, "sqrt"):
            fn = jax.jit(lambda p, xs, mode=mode, cell=cell, c0=carry0: gradflow.gradient_flow(
                cell, p, c0, xs, _on_h, remat=mode
            ))  # fmt: skip
            temps[T, mode] = fn.lower(params, xs).compile().memory_analysis().temp_size_in_bytes
    ys_bytes = 10_000 * 8 * 32 * 4
    assert temps[10_000, "sqrt"] < 0.1 * temps[10_000, False]
    assert temps[10_000, "sqrt"] < 0.5 * min(ys_bytes, 10_000 * 8 * 16 * 4)
    assert temps[10_000, "sqrt"] < 3 * temps[2500, "sqrt"]  # 4x the steps, ~2x the memory


@pytest.mark.parametrize(("T", "seg"), tiered([(1000, "sqrt"), (997, 50), (12, 5)], fast=[(12, 5)]))
def test_segmented_scans_give_the_same_numbers_float32(T, seg):
    """float32, log space over underflow (T=1000 reaches about 1e-80): remat == no remat; a chunked
    scan without checkpoints (long sequences with per-step shares) too."""
    cell, params, carry0, xs = _lstm(T=T)
    for loss in (_on_h, _on_ys):
        ref = gradflow.gradient_flow(cell, params, carry0, xs, loss, remat=False)
        res = gradflow.gradient_flow(cell, params, carry0, xs, loss, remat=seg)
        np.testing.assert_allclose(res.log10_norms, ref.log10_norms, rtol=0, atol=2e-5)
        tree_allclose(res.grads, ref.grads, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(res.step_grad_log10_norms, ref.step_grad_log10_norms, rtol=0, atol=2e-5)
        assert int(res.nonfinite_step) == int(ref.nonfinite_step) == -1


@pytest.mark.slow
def test_chunked_scan_without_remat_gives_the_same_numbers(monkeypatch):
    cell, params, carry0, xs = make("lstm")
    xs = jax.random.normal(jax.random.key(4), (50, 3, 4), jnp.float64)
    loss = LOSSES["mixed"]
    ref = gradflow.gradient_flow(cell, params, carry0, xs, loss)
    monkeypatch.setattr(remat, "CHUNK_ABOVE", 10)  # T = 50 > 10: chunks of 7, not checkpointed
    res = gradflow.gradient_flow(cell, params, carry0, xs, loss)
    tree_allclose(res, ref, rtol=1e-10, atol=1e-12)
    expected = brute_force_log10_norms(cell, params, carry0, xs, loss)
    tree_allclose(res.log10_norms, expected, rtol=1e-10, atol=1e-10)


def test_remat_false_is_accepted_and_bad_values_are_not():
    cell, params, carry0, xs = _lstm(T=10)
    gradflow.gradient_flow(cell, params, carry0, xs, _on_h, remat=False)
    for bad in (0, -3, "half", 2.5):
        with pytest.raises(ValueError, match="remat must be True, False, 'sqrt' or a positive segment"):
            gradflow.gradient_flow(cell, params, carry0, xs, _on_h, remat=bad)


@pytest.mark.slow
def test_remat_of_a_depth_stack_gives_the_same_numbers():
    """Per-step params (a residual stack, T = layers): segments slice the params too."""
    cell, params, x0, _ = make("residual")
    cell = cells.get("residual", width=5, depth=30, dtype="float64")
    params = cell.init(jax.random.key(0), 5)
    ref = gradflow.gradient_flow(cell, params, x0, None, LOSSES["final"], remat=False)
    for seg in (True, 7):
        res = gradflow.gradient_flow(cell, params, x0, None, LOSSES["final"], remat=seg)
        tree_allclose(res, ref, rtol=1e-10, atol=1e-12)
