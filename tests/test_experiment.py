"""`gradflow run`: a config's sweep into a run directory, resumable, deterministic."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gradflow import experiment
from gradflow.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWEEP = """\
name: scales
cells:
  - {label: tanh RNN, cell: rnn, options: {hidden_size: 16}}
inputs: {size: 4, steps: 30, batch: 4}
sweep:
  grid: {cells.0.options.weight_scale: [0.5, 1.0, 1.5]}
  seeds: [0, 1]
"""


def _config(tmp_path, text=SWEEP):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_sweep_compiles_once_and_rates_match_the_norms(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compiles"] == 1  # 3 scales x 2 seeds share one shape
    with np.load(out / "results.npz") as data:
        log10 = data["total_log10_norms"]
    for i, run in enumerate(summary["runs"]):
        assert run["point"] == {"cells.0.options.weight_scale": [0.5, 0.5, 1.0, 1.0, 1.5, 1.5][i]}
        assert run["fit"]["log10_first_last_ratio"] == pytest.approx(log10[i, 0] - log10[i, -1], abs=1e-5)
    small = [r for r in summary["runs"] if r["point"]["cells.0.options.weight_scale"] == 0.5]
    for run in small:  # sigma_w = 0.5: vanishing, rate ~ the per-step log ratio
        rate = run["fit"]["total"]["rate"]
        assert rate < 0
        assert rate == pytest.approx(np.log(10) * run["fit"]["log10_first_last_ratio"] / 30, rel=0.1)
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 31 * 2  # runs x (total, carry part 'h') x (T + 1)
    assert {"run_id", "label", "seed", "t", "steps_back", "log10_norm"} <= set(rows[0])


def test_an_exactly_zero_last_norm_is_left_out_of_the_first_last_ratio(tmp_path):
    """loss: readout reads ys[-1], never the final carry, so ||dL/dh_T|| is exactly 0 (log10 -inf):
    the ratio is taken between the first and last nonzero norms, as the decay fit does."""
    out = tmp_path / "run"
    text = SWEEP.replace("steps: 30", "steps: 12") + "loss: readout\n"
    assert main(["run", str(_config(tmp_path, text)), "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "results.npz") as data:
        log10 = data["total_log10_norms"]
    assert np.all(log10[:, 12] == -np.inf) and np.all(np.isfinite(log10[:, :12]))
    for i, run in enumerate(summary["runs"]):
        ratio = run["fit"]["log10_first_last_ratio"]
        assert ratio == pytest.approx(float(log10[i, 0]) - float(log10[i, 11]), abs=1e-5)
        # the decay fit over the same finite points: least squares on k = T - t = 12..1 steps back
        slope = np.polyfit(12.0 - np.arange(12.0), log10[i, :12].astype(np.float64) * np.log(10), 1)[0]
        assert run["fit"]["total"]["rate"] == pytest.approx(slope, rel=1e-4)


@pytest.mark.slow
def test_a_directory_with_a_foreign_file_is_refused_even_with_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "gradflow.cli", "run", str(_config(tmp_path)), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "holds mine.txt, which gradflow did not write" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (out / "mine.txt").read_text() == "keep me"
    assert main(["run", str(_config(tmp_path)), "-o", str(out), "--force"]) == 2  # --force too
    assert (out / "mine.txt").read_text() == "keep me"


def test_bad_config_leaves_no_run_directory(tmp_path):
    out = tmp_path / "run"
    bad = _config(tmp_path, SWEEP.replace("steps: 30", "steps: 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "gradflow.cli", "run", str(bad), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "inputs.steps = 0: expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_the_same_results(tmp_path):
    text = SWEEP.replace("cells:\n", "cells:\n  - {label: GRU, cell: gru, options: {hidden_size: 8}}\n")
    cfg = experiment.load_config(_config(tmp_path, text))
    full = tmp_path / "full"
    experiment.run_experiment(cfg, full)

    def stop_after_first(i, n, label, skipped):
        if i == 0 and not skipped:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, part, progress=stop_after_first)
    assert not (part / "summary.json").exists() and len(list((part / experiment.PARTS).glob("*.npz"))) == 1
    summary = experiment.run_experiment(cfg, part)  # the same command again
    assert summary["resumed"] and summary["attempts"][-1]["compiles"] == 1  # only the second group ran
    assert [a["compiles"] for a in summary["attempts"]] == [1, 1] and summary["compiles"] == 2
    with np.load(full / "results.npz") as a, np.load(part / "results.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_same_config_and_seed_give_identical_results(tmp_path):
    cfg = experiment.load_config(_config(tmp_path))
    experiment.run_experiment(cfg, tmp_path / "a")
    experiment.run_experiment(cfg, tmp_path / "b")
    with np.load(tmp_path / "a/results.npz") as a, np.load(tmp_path / "b/results.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_compile_seconds_count_overlapping_compiles_once(monkeypatch):
    """XLA compiles on a background thread while the next program is traced: the run's compile time
    is the wall time during which any compile event ran (the union of their spans), not their sum."""
    from gradflow.runs import experiment as exp

    clock = exp._CompileClock()
    now = iter([1.0, 2.0, 4.0, 4.5, 9.0])
    monkeypatch.setattr(exp.time, "perf_counter", lambda: next(now))
    for duration in (1.0, 1.5, 2.0, 0.2):  # spans (0, 1), (0.5, 2), (2, 4), (4.3, 4.5)
        clock("/jax/core/compile/backend_compile_duration", duration)
    clock("/jax/some/other_event", 8.0)  # not a compile event
    assert clock.seconds == pytest.approx(4.2)
