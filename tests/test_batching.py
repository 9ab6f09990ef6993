"""The two ways of batching runs in one compiled call (lax.map on CPU by default, vmap on GPU/TPU)
give the same numbers; the choice is explicit (batching(), GRADFLOW_RUN_BATCHING, --batching)."""

import jax
import numpy as np
import pytest
from test_run_cli import GOOD  # a small measurement config

from gradflow import cells, tasks
from gradflow.cli import main
from gradflow.engine import sweep
from gradflow.engine.training import Settings, train_runs
from gradflow.learn.models import Model


def test_auto_is_map_on_cpu_and_explicit_choices_win(monkeypatch):
    assert jax.default_backend() == "cpu" and sweep.run_batching() == "map"
    monkeypatch.setenv("GRADFLOW_RUN_BATCHING", "vmap")
    assert sweep.run_batching() == "vmap"
    with sweep.batching("map"):
        assert sweep.run_batching() == "map"
    assert sweep.run_batching() == "vmap"
    monkeypatch.setenv("GRADFLOW_RUN_BATCHING", "pmap")
    with pytest.raises(ValueError, match="expected one of auto, map, vmap"):
        sweep.run_batching()
    with pytest.raises(ValueError, match="expected one of auto, map, vmap"):
        sweep.batching("loop").__enter__()


def test_sweep_vmap_equals_map():
    opts = [
        {"hidden_size": 16, "weight_scale": s, "forget_bias": b} for s in (0.5, 1.0, 1.5) for b in (0.0, 1.0)
    ]
    seeds = list(range(len(opts)))
    out = {}
    for mode in ("map", "vmap"):
        with sweep.batching(mode):
            out[mode], n = sweep.measure_runs("lstm", opts, seeds, sweep.Inputs(steps=25, batch=4))
        assert n == 1
    np.testing.assert_allclose(
        out["vmap"].total_log10_norms, out["map"].total_log10_norms, rtol=1e-5, atol=1e-5
    )
    for part in ("c", "h"):
        np.testing.assert_allclose(out["vmap"].rate[part], out["map"].rate[part], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_training_group_vmap_equals_map():
    task = tasks.get("adding", steps=15)
    model = Model(cells.get("gru", hidden_size=8), 1, readout="last")
    settings = Settings(steps=40, batch=16, eval_every=20, eval_batch=64)
    runs = [{"seed": 0, "learning_rate": 1e-2}, {"seed": 1, "learning_rate": 3e-3, "clip": 0.5}]
    out = {}
    for mode in ("map", "vmap"):
        with sweep.batching(mode):
            out[mode] = train_runs(lambda _: model, task, settings, runs)
    np.testing.assert_allclose(out["vmap"].train_loss, out["map"].train_loss, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(out["vmap"].eval_loss, out["map"].eval_loss, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(
        out["vmap"].flow_total_log10, out["map"].flow_total_log10, rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_cli_batching_flag_same_results_and_a_bad_value_is_one_line(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(GOOD)
    arrays = {}
    for mode in ("map", "vmap"):
        assert main(["run", str(cfg), "-o", str(tmp_path / mode), "--batching", mode]) == 0
        with np.load(tmp_path / mode / "results.npz") as data:
            arrays[mode] = data["total_log10_norms"]
    np.testing.assert_allclose(arrays["vmap"], arrays["map"], rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    monkeypatch.setenv("GRADFLOW_RUN_BATCHING", "pmap")
    assert main(["run", str(cfg), "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "GRADFLOW_RUN_BATCHING='pmap'" in err
    assert not (tmp_path / "bad").exists()


def test_vmap_takes_as_many_runs_at_once_as_fit_in_device_memory(monkeypatch):
    """A device that reports its memory (GPU/TPU): vmap batches the runs so that those computed at
    once fit in MEMORY_FRACTION of it (one run's need from XLA's memory analysis); same numbers."""
    opts = [{"hidden_size": 16, "weight_scale": s} for s in np.linspace(0.5, 2.0, 7)]
    inputs = sweep.Inputs(steps=20, batch=4)
    sweep._compiled.cache_clear()
    with sweep.batching("vmap"):
        whole, _ = sweep.measure_runs("rnn", opts, list(range(7)), inputs)
    needs, chosen = [], []
    real_bytes, real_fit = sweep.run_bytes, sweep.runs_at_once
    monkeypatch.setattr(sweep, "run_bytes", lambda one, args: needs.append(real_bytes(one, args)) or 1000)
    monkeypatch.setattr(
        sweep, "runs_at_once", lambda one, args: chosen.append(real_fit(one, args)) or chosen[-1]
    )
    monkeypatch.setattr(sweep, "device_memory", lambda: 2500 / sweep.MEMORY_FRACTION)  # 2.5 runs of 1000 B
    sweep._compiled.cache_clear()
    with sweep.batching("vmap"):
        batched, _ = sweep.measure_runs("rnn", opts, list(range(7)), inputs)
    sweep._compiled.cache_clear()
    assert chosen == [2] and needs[0] > 4 * 20 * 16  # XLA's analysis: at least the [T, B, H] states
    np.testing.assert_allclose(batched.total_log10_norms, whole.total_log10_norms, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(sweep, "device_memory", lambda: None)  # CPU: JAX does not say, all at once
    assert real_fit(lambda a: a, (np.zeros((7, 3)),)) == 7
