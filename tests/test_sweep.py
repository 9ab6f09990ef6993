"""Sweeps: one compile per shape, the same numbers as single runs, sharded or not."""

import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow
from gradflow import cells
from gradflow.engine import devices, sweep


@pytest.mark.slow
def test_scales_by_seeds_compile_once_and_match_single_runs():
    sweep._compiled.cache_clear()
    scales = [0.5, 0.8, 1.0, 1.2, 1.5, 2.0]
    options = [{"hidden_size": 32, "weight_scale": s} for s in scales for _ in range(3)]
    seeds = [0, 1, 2] * len(scales)
    inputs = sweep.Inputs(size=4, steps=60, batch=8)
    res, n_compiles = sweep.measure_runs("rnn", options, seeds, inputs)
    assert n_compiles == 1 and sweep._compiled.cache_info().misses == 1
    assert res.total_log10_norms.shape == (18, 61)

    # run 4 (weight_scale 0.8, seed 1) by hand with the library
    cell = cells.get("rnn", hidden_size=32, weight_scale=0.8)
    k_init, k_x, _ = jax.random.split(jax.random.key(1), 3)
    params = cell.init(k_init, 4)
    xs = jax.random.normal(k_x, (60, 8, 4), jnp.float32)
    one = gradflow.gradient_flow(cell, params, cell.initial_carry(8), xs, lambda ys, h: jnp.sum(h) / 8)
    np.testing.assert_allclose(res.log10_norms["h"][4], one.log10_norms, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.rate["h"][4], one.fit.rate, rtol=1e-4)

    # sigma_w = 0.5: vanishing, and the fitted rate is the mean per-step log ratio
    lead = res.log10_norms["h"][:3]
    per_step = np.log(10) * (lead[:, 0] - lead[:, -1]) / 60
    assert np.all(res.rate["h"][:3] < -0.3)
    np.testing.assert_allclose(res.rate["h"][:3], per_step, rtol=0.05)
    # rates increase with sigma_w (median over seeds)
    medians = np.median(res.rate["h"].reshape(len(scales), 3), axis=1)
    assert np.all(np.diff(medians) > 0)


def test_shapes_split_into_one_compile_each():
    sweep._compiled.cache_clear()
    options = [{"hidden_size": h, "forget_bias": b} for h in (8, 16) for b in (0.0, 1.0, 3.0)]
    res, n_compiles = sweep.measure_runs("lstm", options, [0] * 6, sweep.Inputs(steps=30, batch=4))
    assert n_compiles == 2
    assert set(res.log10_norms) == {"c", "h"}
    # a larger forget bias keeps the cell-state gradient longer (SCIENCE.md: -0.44, -0.19, -0.01)
    for h in range(2):
        rates = res.rate["c"][3 * h : 3 * h + 3]
        assert rates[0] < rates[1] < rates[2]


def test_sharded_over_8_fake_devices_equals_one_device():
    code = (
        "import json, jax, numpy as np\n"
        "from gradflow.engine import sweep\n"
        "opts = [{'hidden_size': 16, 'weight_scale': s} for s in (0.5, 1.0, 1.5)] * 4\n"
        "res, n = sweep.measure_runs('rnn', opts, list(range(12)), sweep.Inputs(steps=20, batch=4))\n"
        "print(json.dumps({'devices': jax.device_count(), 'n': n, 'x': res.total_log10_norms.tolist()}))\n"
    )
    outs = []
    for flags in ("--xla_force_host_platform_device_count=8", ""):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(__import__("json").loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0]["devices"] == 8 and outs[1]["devices"] == 1
    assert outs[0]["n"] == outs[1]["n"] == 1
    np.testing.assert_allclose(outs[0]["x"], outs[1]["x"], rtol=1e-5, atol=1e-5)


def test_cheap_groups_compile_at_level_0_with_the_same_numbers(monkeypatch):
    """Under CHEAP_FLOPS a group compiles at XLA:CPU level 0: same numbers as level 2 to float32
    rounding; the estimate is 6 FLOPs per parameter, example and step."""
    inputs = sweep.Inputs(size=4, steps=30, batch=8)
    options = [{"hidden_size": 16, "weight_scale": s} for s in (0.8, 1.5)]
    n_params = 4 * 16 + 16 * 16 + 16
    assert sweep._group_flops("rnn", options[0], inputs, 2) == 6.0 * n_params * 8 * 30 * 2
    assert sweep._group_flops("plain", {"width": 8, "depth": 5}, inputs, 1) == 6.0 * (5 * 8 * 8 + 5 * 8) * 8
    assert sweep.compiler_options(sweep.CHEAP_FLOPS / 2) == {"xla_backend_optimization_level": 0}
    assert sweep.compiler_options(sweep.CHEAP_FLOPS * 2) == {}
    cheap, _ = sweep.measure_runs("rnn", options, [0, 1], inputs)
    monkeypatch.setattr(sweep, "CHEAP_FLOPS", 0.0)
    full, _ = sweep.measure_runs("rnn", options, [0, 1], inputs)
    np.testing.assert_allclose(cheap.log10_norms["h"], full.log10_norms["h"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(cheap.rate["h"], full.rate["h"], rtol=1e-5)


def test_host_fits_equal_the_traced_fit():
    """The sweep's host fit (float64, rows at once) matches decay_fit traced in float32, row by row,
    including a window, -inf holes and a row with too few finite points (NaN)."""
    rng = np.random.default_rng(0)
    k = np.arange(40, -1, -1)
    rows = (-0.05 * k[None, :] * (1 + rng.random((4, 1)))) / np.log(10) + 0.01 * rng.standard_normal((4, 41))
    rows[1, 7] = -np.inf
    rows[3, :-1] = np.nan
    for window in (None, (2, 30)):
        host = gradflow.decay_fit(rows, window, xp=np)
        assert host.rate.dtype == np.float64 and host.rate.shape == (4,)
        for i, row in enumerate(rows.astype(np.float32)):
            traced = jax.jit(lambda r, w=window: gradflow.decay_fit(r, w))(row)
            for got, want in zip(host, traced, strict=True):
                np.testing.assert_allclose(got[i], want, rtol=2e-5, equal_nan=True)
    assert np.isnan(host.rate[3]) and np.isnan(host.r2[3])


def test_prepared_groups_compile_on_a_background_thread_once_to_the_same_numbers():
    """``prepare`` traces and lowers now and hands XLA's compile to a background thread; the later
    ``measure_runs`` waits for that program (no second compile) and gives the numbers of the plain
    jitted call."""
    sweep._compiled.cache_clear()
    inputs = sweep.Inputs(size=4, steps=25, batch=4)
    options = [{"hidden_size": 8, "weight_scale": s} for s in (0.7, 1.3)] + [{"hidden_size": 12}]
    seeds = [3, 4, 5]
    compiles = []

    def listen(event, secs, **kw):
        if event.endswith("backend_compile_duration"):
            compiles.append((kw.get("fun_name", ""), threading.current_thread().name))

    cache = jax.config.jax_enable_compilation_cache  # a persistent cache hit would not compile
    jax.config.update("jax_enable_compilation_cache", False)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        sweep.prepare("rnn", options, seeds, inputs)
        plan = sweep._plan("rnn", options, seeds, inputs, "final", None)
        for fn, _, _, dyn in plan:
            sweep._program(fn, *dyn.shape).result()
        measured = [c for c in compiles if "measure_rnn" in c[0]]
        assert len(measured) == 2 and all(name.startswith("gradflow-compile") for _, name in measured)
        res, n = sweep.measure_runs("rnn", options, seeds, inputs)
        assert n == 2 and len([c for c in compiles if "measure_rnn" in c[0]]) == 2  # nothing recompiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
        jax.config.update("jax_enable_compilation_cache", cache)
    for fn, runs, seed_arr, dyn in plan:  # the same programs, jitted and called the ordinary way
        _, total, _ = devices.call(fn, seed_arr, dyn)
        np.testing.assert_array_equal(res.total_log10_norms[runs], total)


def test_prepare_leaves_errors_to_measure_runs():
    sweep.prepare("rnn", [{"hidden_size": 8}], [0, 1])  # one seed too many: nothing raised here
    with pytest.raises(ValueError, match="need one seed per run"):
        sweep.measure_runs("rnn", [{"hidden_size": 8}], [0, 1])
    future = devices.compile_ahead(jax.jit(lambda s: s + "x"), np.zeros(2, np.uint32))  # fails to trace
    with pytest.raises(TypeError):
        future.result()
