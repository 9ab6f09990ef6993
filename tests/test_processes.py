"""Several processes as one run (jax.distributed, gloo on CPU): 2 local processes x 2 CPU devices.

The same results as one process, only process 0 writes, a refused directory and a killed worker
end every process with one line in bounded time, and a killed run resumes across processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

PHASE = """
name: small_phase
cells:
  - {label: plain tanh stack, cell: plain, options: {width: 16, depth: 10, activation: tanh}}
inputs: {batch: 8}
sweep:
  grid:
    cells.0.options.weight_scale: [0.5, 1.0, 2.0]
    cells.0.options.bias_scale: [0.0, 0.3]
  seeds: [0, 1]
output: {dir: runs/small_phase}
"""

TRAIN = """
name: small_training
task: {name: adding, options: {steps: 12}}
cells:
  - {label: tanh RNN, cell: rnn, options: {hidden_size: 8}}
  - {label: LSTM, cell: lstm, options: {hidden_size: 8, forget_bias: 1.0}}
train: {steps: %d, batch: 8, learning_rate: 1e-2, eval_every: 10, eval_batch: 32}
sweep: {seeds: [0, 1, 2]}
output: {dir: runs/small_training}
"""

TIMEOUT = 240  # seconds: every scenario here ends well inside it (two processes on 2 cores)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    return env | {"JAX_NUM_CPU_DEVICES": str(devices), "GRADFLOW_COMPILE_CACHE": "0", "JAX_PLATFORMS": "cpu"}


def _gradflow(*args) -> list[str]:
    return [sys.executable, "-m", "gradflow.cli", *map(str, args)]


def _start(config, outs, cwd, extra=(), timeout_s=60):
    """Two processes of ``gradflow run config``, process i writing to ``outs[i]``."""
    port = _port()
    return [
        subprocess.Popen(
            _gradflow(
                "run", config, "-o", outs[i], "--coordinator", f"localhost:{port}",
                "--num-processes", 2, "--process-id", i, "--process-timeout", timeout_s, *extra,
            ),
            cwd=cwd, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in (0, 1)
    ]  # fmt: skip


def _finish(procs, timeout=TIMEOUT):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a process was still running after {timeout} s")
        outs.append((p.returncode, out, err))
    return outs


def _errors(stderr: str) -> list[str]:
    """gradflow's own lines (JAX's runtime logs and gloo's connection notes are left out)."""
    return [line for line in stderr.splitlines() if line.startswith("gradflow:")]


def _single(config, out, cwd, devices=1):
    done = subprocess.run(
        _gradflow("run", config, "-o", out), cwd=cwd, env=_env(devices), capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.load(out / "results.npz")


def _same(a, b, skip=("compile_s", "step_time_s")):
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        if k in skip:
            continue
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_two_processes_give_one_process_results_and_only_process_0_writes(tmp_path):
    """A phase-diagram sweep; training is checked the same way after a kill and a resume (below)."""
    config = tmp_path / "phase.yaml"
    config.write_text(PHASE)
    reference = _single(config, tmp_path / "one", tmp_path)  # one process, one device
    outs = [tmp_path / "two", tmp_path / "never_written"]
    results = _finish(_start(config, outs, tmp_path))
    for i, (code, _out, err) in enumerate(results):
        assert code == 0, f"process {i}: {err[-2000:]}"
    assert "process 1 of 2: computed its share of" in results[1][1]
    assert not outs[1].exists()  # process 1 wrote nothing: its -o is never touched
    _same(reference, np.load(outs[0] / "results.npz"))
    assert '"process_count": 2' in (outs[0] / "summary.json").read_text()


@pytest.mark.slow
def test_a_refused_directory_ends_every_process_with_one_line(tmp_path):
    config = tmp_path / "phase.yaml"
    config.write_text(PHASE)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    results = _finish(_start(config, [out, out], tmp_path))
    for i, (code, _out, err) in enumerate(results):
        assert code == 2, f"process {i}: {err[-2000:]}"
        lines = _errors(err)
        assert len(lines) == 1 and "notes.txt" in lines[0], err[-2000:]
    assert "process 0 refused" in _errors(results[1][2])[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_killed_worker_ends_process_0_with_one_line_and_the_run_resumes(tmp_path):
    config = tmp_path / "training.yaml"
    config.write_text(TRAIN % 1000)  # long enough to be killed while training
    out = tmp_path / "run"
    procs = _start(config, [out, tmp_path / "p1"], tmp_path, timeout_s=20)
    deadline = time.monotonic() + TIMEOUT
    while not (out / ".parts" / "0.ckpt").exists():  # process 1 is training: kill it
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-2000:]
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    (code, _out, err), _ = _finish(procs)
    assert time.monotonic() - killed < 60  # not a hang: the next collective fails at once
    assert code == 3, err[-2000:]
    lines = _errors(err)
    assert len(lines) == 1 and "lost contact with another process" in lines[0], err[-2000:]
    assert "Traceback" not in err

    # every process started again resumes from process 0's checkpoint, to the same numbers
    config.write_text(TRAIN % 1000)
    results = _finish(_start(config, [out, tmp_path / "p1"], tmp_path))
    assert [r[0] for r in results] == [0, 0], results[0][2][-2000:]
    assert "(resumed)" in results[0][1]
    assert not (tmp_path / "p1").exists()  # process 1 never wrote, before or after the kill
    _same(_single(config, tmp_path / "one", tmp_path), np.load(out / "results.npz"))


def test_process_options_are_checked_before_anything_starts(tmp_path):
    for args, expected in (
        (["--coordinator", "localhost:1"], "needs all of coordinator"),
        (["--num-processes", "2", "--process-id", "2", "--coordinator", "localhost:1"], "process_id 2"),
        (["--distributed", "--process-id", "0"], "--distributed detects"),
        (["--distributed", "--process-timeout", "0"], "--process-timeout 0"),
    ):
        done = subprocess.run(
            _gradflow("run", "compare_cells", "-o", tmp_path / "x", *args),
            cwd=tmp_path, env=_env(1), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr, done.stderr
        assert not (tmp_path / "x").exists()


def test_run_axis_split_over_devices_matches_one_device():
    """In-process check that the sharded program splits the runs (no collective inside) and that
    a run count that is not a multiple of the devices is padded and sliced back."""
    code = (
        "import json, numpy as np, jax\n"
        "from gradflow.engine import sweep, devices\n"
        "from gradflow.config import Inputs\n"
        "opts = [{'hidden_size': 16, 'weight_scale': s} for s in (0.5, 1.0, 1.5, 2.0, 2.5)]\n"
        "res, _ = sweep.measure_runs('rnn', opts, [0, 1, 2, 3, 4], Inputs(steps=30))\n"
        "fn = sweep._compiled('rnn', (('hidden_size', 16),), ('weight_scale',), Inputs(steps=30),\n"
        "                     'final', None, sweep.run_batching())\n"
        "args = devices.place(devices.pad((np.arange(5, dtype=np.uint32), np.ones((5, 1), np.float32)), 8))\n"
        "hlo = fn.lower(*args).compile().as_text()\n"
        "print(json.dumps({'n': jax.device_count(), 'x': res.total_log10_norms.tolist(),\n"
        "                  'collectives': sum(hlo.count(k) for k in ('all-gather', 'all-reduce'))}))\n"
    )
    runs = {}
    for n in (1, 4):
        done = subprocess.run(
            [sys.executable, "-c", code], env=_env(n), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        runs[n] = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert runs[4]["n"] == 4 and runs[4]["collectives"] == 0
    np.testing.assert_allclose(np.array(runs[4]["x"]), np.array(runs[1]["x"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_split_over_devices_matches_one_device(tmp_path):
    config = tmp_path / "training.yaml"
    config.write_text(TRAIN % 20)
    _same(_single(config, tmp_path / "one", tmp_path), _single(config, tmp_path / "four", tmp_path, 4))


def test_share_and_any_process_with_one_process():
    from gradflow.engine import processes

    assert processes.share(b"abc") == b"abc" and processes.share(None) == b""
    assert processes.any_process(True) and not processes.any_process(False)
    assert processes.is_writer() and processes.count() == 1
    assert not processes.start(None) and not processes.start(False)
    with pytest.raises(processes.ProcessError, match="needs all of"):
        processes.start({"coordinator": "localhost:1"})


def test_cost_model_numbers_in_readme_and_config_follow_from_the_config():
    """The README's and the config header's per-run FLOPs and memory are the cost model's formulas
    applied to configs/phase_diagram_large.yaml."""
    import re

    from gradflow.runs.configs import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "phase_diagram_large.yaml")
    opts, grid = cfg.cells[0].options, cfg.sweep.grid
    L, N, B = opts["depth"], opts["width"], cfg.inputs.batch
    runs = np.prod([len(v) for v in grid.values()]) * len(cfg.sweep.seeds)
    flops, mib = 6 * L * B * N**2, (4 * L * N**2 + 8 * L * B * N) / 2**20
    readme = " ".join((root / "README.md").read_text().split())
    expected = (
        f"({len(grid[next(iter(grid))])} x {len(grid[list(grid)[1]])} grid x {len(cfg.sweep.seeds)} "
        f"seeds = {runs:,} runs, N = {N}, L = {L}, B = {B}) is {flops / 1e9:.3g} GFLOP and {mib:.1f} MiB "
        f"per run, {runs * flops / 1e12:.0f} TFLOP in all"
    )
    assert expected in readme
    header = " ".join(re.sub(r"^#\s*", "", line) for line in (root / "configs" / "phase_diagram_large.yaml")
                      .read_text().splitlines() if line.startswith("#"))  # fmt: skip
    assert f"{runs:,} runs" in header and f"{flops / 1e9:.3g} GFLOP and {mib:.1f} MiB per run" in header
