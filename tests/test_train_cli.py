"""Training configs through `gradflow run`: bad input, the run directory, kill and resume, re-plotting."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import cli_argv, write_config

from gradflow import figures
from gradflow.cli import main

TRAIN = """\
name: tiny_train
task: {name: adding, options: {steps: 10}}
cells:
  - {label: LSTM, cell: lstm, options: {hidden_size: 8}}
  - {label: GRU, cell: gru, options: {hidden_size: 8}}
train: {steps: 200, batch: 16, learning_rate: 1e-2, eval_every: 50, eval_batch: 128}
sweep:
  grid: {train.clip: [null, 0.5]}
  seeds: [0, 1]
"""


BAD = [  # (config text, extra argv, fragments of the one-line message)
    (TRAIN.replace("name: adding", "name: adder"), [], ["task.name", "adder", "adding"]),
    (TRAIN.replace("steps: 10}", "steps: 10, lag: 3}"), [], ["task.options.lag", "adding"]),
    (TRAIN.replace("steps: 10}", "steps: 1}"), [], ["task.options", "steps", ">= 2"]),
    (TRAIN.replace("learning_rate: 1e-2", "learning_rate: -1"), [], ["train.learning_rate", "-1"]),
    (TRAIN.replace("batch: 16,", "batch: 16, optimizer: adamm,"), [], ["train.optimizer", "adamm", "adam"]),
    (
        TRAIN.replace("batch: 16,", "batch: 16, optimizer: sgd, optimizer_options: {momentun: 0.9},"),
        [],
        ["train.optimizer_options", "momentun", "momentum"],
    ),
    (TRAIN.replace("batch: 16,", "batch: 16, schedule: cosine,"), [], ["train.schedule", "cosine"]),
    (
        TRAIN.replace("batch: 16,", "batch: 16, schedule: cosine_decay,"),
        [],
        ["train.schedule_options", "decay_steps"],
    ),
    (TRAIN.replace("steps: 200,", "steps: 210,"), [], ["train.steps", "210", "multiple"]),
    (TRAIN.replace("[null, 0.5]", "[null, -0.5]"), [], ["train.clip", "-0.5"]),
    (TRAIN + "inputs: {steps: 30}\n", [], ["inputs", "training config"]),
    (
        TRAIN.replace("cell: gru, options: {hidden_size: 8}", "cell: residual, options: {width: 8}"),
        [],
        ["depth stack"],
    ),
    (TRAIN.replace("batch: 16,", "batch: 16, colour: red,"), [], ["colour", "in train"]),
    (TRAIN, ["--set", "train.readout=first"], ["train.readout", "first"]),
    (TRAIN, ["--set", "task.options.steps=x"], ["task.options.steps", "x"]),
]


@pytest.mark.parametrize(("text", "extra", "fragments"), BAD)
def test_bad_training_config_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, text, extra, fragments):
    path = write_config(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(path), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gradflow: error: "), err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), (fragment, err)
    assert not out.exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = write_config(tmp, TRAIN)
    out = tmp / "run"
    assert main(["run", str(cfg), "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "results.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return out, summary, arrays


def test_run_directory_of_a_training_config(trained_run):
    out, summary, a = trained_run
    assert summary["kind"] == "train" and summary["task"]["name"] == "adding"
    runs = summary["runs"]
    assert len(runs) == 2 * 2 * 2  # cells x clip x seeds
    assert summary["compiles"] == 2  # clip on/off and the seeds of a cell share one compiled step
    assert {"learning.png", "flow_heatmap.png", "flow_rate.png", "gates.png"} <= set(summary["figures"])
    for name in summary["figures"]:
        assert (out / name).stat().st_size > 1000
    assert a["train_loss"].shape == (8, 200) and a["eval_loss"].shape == (8, 5)
    assert a["flow_total_log10"].shape == (8, 5, 11)
    for i, run in enumerate(runs):
        last = np.flatnonzero(np.isfinite(a["eval_loss"][i]))[-1]
        assert run["final_eval_loss"] == pytest.approx(float(a["eval_loss"][i, last]), rel=1e-6)
        assert run["final_ratio"] == pytest.approx(run["final_eval_loss"] / (1 / 6), rel=1e-6)
        assert run["baseline"] == pytest.approx(1 / 6)
        assert run["clipped_fraction"] == pytest.approx(a["clipped"][i].sum() / run["steps_run"])
        assert (run["clip"] is None) == (run["clipped_fraction"] == 0.0)
        assert run["solved"] == (run["solved_step"] is not None)
        assert (
            run["param_count"] == (4 * (2 * 8 + 64 + 8) if run["cell"] == "lstm" else 3 * (16 + 64) + 32) + 9
        )
        assert run["time_per_step_s"] > 0
    lstm = next(s for s in summary["settings"] if s["cell"] == "lstm")
    assert lstm["seeds"] == [0, 1] and "clip" in lstm["label"]
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("run_id,label,cell,seed") and len(csv_rows) > 8


def test_trained_params_are_saved_and_restored(trained_run):
    """load_trained gives each run's model and final params: scoring them on the held-out set
    reproduces the run's final held-out loss in summary.json."""
    import jax

    from gradflow import load_trained
    from gradflow.engine.training import EVAL_KEY

    out, summary, _ = trained_run
    loaded = load_trained(out)
    assert [t.run for t in loaded] == summary["runs"]
    assert sorted(p.name for p in (out / "params").iterdir()) == ["0.msgpack", "1.msgpack"]
    for t in loaded:
        batch = t.task.sample(jax.random.key(EVAL_KEY), 128)
        loss = float(t.task.loss(t.model.apply(t.params, batch.xs), batch))
        assert loss == pytest.approx(t.run["final_eval_loss"], rel=1e-5)
    assert not np.allclose(loaded[0].params["readout"]["w"], loaded[1].params["readout"]["w"])


def test_plot_redraws_a_training_run(trained_run, tmp_path, capsys):
    out, _, _ = trained_run
    run = figures.load(out)
    assert run.kind == "train"
    assert main(["plot", str(out), str(out), "-o", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "learning.png").stat().st_size > 1000
    before = (out / "learning.png").stat().st_mtime_ns
    assert main(["plot", str(out)]) == 0
    assert (out / "learning.png").stat().st_mtime_ns >= before


LONG = """\
name: long_train
task: {name: adding, options: {steps: 12}}
cells:
  - {label: LSTM, cell: lstm, options: {hidden_size: 8}}
train: {steps: 3000, batch: 16, learning_rate: 3e-3, eval_every: 20, eval_batch: 64, checkpoint_every: 100}
sweep: {seeds: [0, 1]}
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same command, uninterrupted, in a fresh process (as the interrupted ones run)."""
    tmp = tmp_path_factory.mktemp("long")
    cfg = write_config(tmp, LONG)
    proc = subprocess.run(cli_argv("run", str(cfg), "-o", str(tmp / "full")), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return cfg, tmp / "full"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_training_resumes_to_the_same_final_loss(tmp_path, uninterrupted, signum):
    cfg, full = uninterrupted
    part = tmp_path / "part"
    proc = subprocess.Popen(cli_argv("run", str(cfg), "-o", str(part)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (part / ".parts" / "0.ckpt").exists():  # wait for the first checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a checkpoint"
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == (130 if signum == signal.SIGTERM else -signal.SIGKILL), err
    assert "Traceback" not in err
    assert not (part / "summary.json").exists(), "the signal came too late to interrupt"
    resumed = subprocess.run(
        cli_argv("run", str(cfg), "-o", str(part)), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((part / "summary.json").read_text())
    assert summary["resumed"]
    with np.load(full / "results.npz") as a, np.load(part / "results.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    full_summary = json.loads((full / "summary.json").read_text())
    assert [r["final_eval_loss"] for r in summary["runs"]] == [
        r["final_eval_loss"] for r in full_summary["runs"]
    ]
