"""`gradflow run` and `gradflow plot` at the command line: bad input, signals, re-plotting."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import cli_argv, write_config

from gradflow import figures
from gradflow.cli import main

GOOD = """\
name: small
cells:
  - {label: tanh RNN, cell: rnn, options: {hidden_size: 8}}
inputs: {size: 4, steps: 10, batch: 4}
sweep:
  grid: {cells.0.options.weight_scale: [0.5, 1.5]}
  seeds: [0, 1]
"""


BAD_CONFIGS = [  # (config text or None for a missing file, extra argv, fragments of the one-line message)
    (None, [], ["no such file"]),
    ("name: [unclosed\n", [], ["line", "YAML"]),
    (GOOD + "colour: blue\n", [], ["colour"]),
    (GOOD.replace("cell: rnn", "cell: rnm"), [], ["cells.0.cell", "'rnm'", "rnn"]),
    (GOOD.replace("hidden_size: 8", "hidden_size: 8, forget_bias: 2"), [], ["forget_bias", "rnn"]),
    (GOOD.replace("steps: 10", "steps: many"), [], ["inputs.steps", "many", "integer"]),
    (GOOD.replace("steps: 10", "steps: -5"), [], ["inputs.steps", "-5", ">= 1"]),
    (GOOD.replace("steps: 10", "steps: 0"), [], ["inputs.steps", "0", ">= 1"]),
    (GOOD.replace("[0.5, 1.5]", "[]"), [], ["weight_scale", "[]"]),
    (GOOD.replace("seeds: [0, 1]", "seeds: []"), [], ["sweep.seeds", "[]"]),
    (GOOD + "measures: [jacobian_magic]\n", [], ["measures", "jacobian_magic", "gradient_norms"]),
    (GOOD + "loss: everything\n", [], ["loss", "everything", "final"]),
    (GOOD.replace("hidden_size: 8", "hidden_size: 8, activation: swish"), [], ["swish"]),
    (GOOD, ["--set", "inputs.batch"], ["inputs.batch", "KEY=VALUE"]),
    (GOOD, ["--set", "inputs.colour=3"], ["colour"]),
    (GOOD, ["--set", "inputs.batch=abc"], ["inputs.batch", "abc", "integer"]),
    (GOOD + "fit: {window: [20, 5]}\n", [], ["fit.window", "[20, 5]"]),
    (
        GOOD + "fit: {window: [2, 12]}\n",
        [],
        ["fit.window = [2, 12]", "k_max 12 is beyond T = 10 (inputs.steps)"],
    ),
    (GOOD + "fit: {window: [2, 8]}\n", ["--set", "inputs.steps=5"], ["k_max 8 is beyond T = 5"]),
    ("", [], ["empty"]),
    (GOOD.replace("name: small\n", ""), [], ["name"]),
]


@pytest.mark.parametrize(("text", "extra", "fragments"), BAD_CONFIGS)
def test_bad_config_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, text, extra, fragments):
    path = tmp_path / "missing.yaml" if text is None else write_config(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(path), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gradflow: error: ") and (path.name in err or "--set" in err), err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), (fragment, err)
    assert not out.exists()


def test_bad_output_directories(tmp_path, capsys):
    cfg = write_config(tmp_path, GOOD)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = [
        (a_file, "exists and is not a directory"),
        (a_file / "sub", "cannot write there"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "run", "cannot write there"))
    for out, fragment in cases:
        assert main(["run", str(cfg), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and str(out) in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "mine"


def test_errors_in_a_fresh_process_have_no_traceback(tmp_path):
    cfg = write_config(tmp_path, GOOD.replace("cell: rnn", "cell: rnm"))
    proc = subprocess.run(
        cli_argv("run", str(cfg), "-o", str(tmp_path / "out")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "'rnm'" in proc.stderr


# several groups of runs (one compile each) so that a signal can land between them
MANY_GROUPS = """\
name: groups
cells:
  - {label: a, cell: rnn, options: {hidden_size: 5}}
  - {label: b, cell: rnn, options: {hidden_size: 6}}
  - {label: c, cell: gru, options: {hidden_size: 7}}
  - {label: d, cell: lstm, options: {hidden_size: 9}}
inputs: {size: 3, steps: 15, batch: 2}
sweep: {seeds: [0, 1]}
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``(config path, run directory)`` of MANY_GROUPS run without interruption."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cfg = write_config(tmp, MANY_GROUPS)
    assert main(["run", str(cfg), "-o", str(tmp / "full")]) == 0
    return cfg, tmp / "full"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_midway_then_the_same_command_resumes_to_the_same_results(tmp_path, uninterrupted, signum):
    cfg, full = uninterrupted
    part = tmp_path / "part"
    proc = subprocess.Popen(cli_argv("run", str(cfg), "-o", str(part)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (part / ".parts" / "0.npz").exists():  # wait for the first finished group
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a group finished"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert not (part / "summary.json").exists(), "the signal came too late to interrupt"
    kept = sorted(p.name for p in (part / ".parts").glob("*.npz"))
    assert kept and not list((part / ".parts").glob("*.tmp"))  # no temp files left behind
    resumed = subprocess.run(
        cli_argv("run", str(cfg), "-o", str(part)), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((part / "summary.json").read_text())
    first, second = summary["attempts"]  # both attempts are kept, and their totals
    assert summary["resumed"] and second["compiles"] == 4 - len(kept)  # finished groups are not rerun
    assert first["compiles"] == len(kept) and summary["compiles"] == 4
    for key in ("compile_time_s", "wall_time_s"):
        assert summary[key] == pytest.approx(first[key] + second[key]) and first[key] > 0
    with np.load(full / "results.npz") as a, np.load(part / "results.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_plot_redraws_in_place_and_overlays(tmp_path, capsys):
    cfg = write_config(tmp_path, GOOD)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(cfg), "-o", str(run_a)]) == 0
    other = GOOD.replace("name: small", "name: other").replace("cell: rnn", "cell: gru")
    assert main(["run", str(write_config(tmp_path, other, "other.yaml")), "-o", str(run_b)]) == 0
    capsys.readouterr()
    # one run: its own figures are redrawn in place, no --force needed
    (run_a / "decay.png").unlink()
    assert main(["plot", str(run_a)]) == 0
    assert (run_a / "decay.png").is_file()
    # several: overlaid into -o, labels prefixed with the run directories' names
    assert main(["plot", str(run_a), str(run_b)]) == 2
    assert "needs -o DIR" in capsys.readouterr().err
    both = tmp_path / "both"
    assert main(["plot", str(run_a), str(run_b), "-o", str(both), "--format", "svg"]) == 0
    svg = (both / "decay.svg").read_text()
    assert "a: tanh RNN" in svg and "b: tanh RNN" in svg and "small: " not in svg
    assert not (both / "decay.png").exists()
    # figures a user already has are not overwritten without --force
    assert main(["plot", str(run_a), str(run_b), "-o", str(both), "--format", "svg"]) == 2
    assert "would overwrite decay.svg" in capsys.readouterr().err
    assert main(["plot", str(run_a), str(run_b), "-o", str(both), "--format", "svg", "--force"]) == 0
    # not a run directory
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no summary.json" in err and len(err.strip().splitlines()) == 1


def test_plot_figures_match_the_data(tmp_path):
    cfg = write_config(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "-o", str(out)]) == 0
    run = figures.load(out)
    found = figures.curves(run.runs, run.arrays)
    assert [c["label"] for c in found] == ["tanh RNN (weight_scale=0.5)", "tanh RNN (weight_scale=1.5)"]
    for curve in found:
        assert curve["log10_norms"].shape == (2, 11) and curve["seeds"] == 2
        rates = [run.runs[i]["fit"]["total"]["rate"] for i in curve["rows"]]
        assert curve["rate"] == pytest.approx(np.median(rates))


def test_zero_crossing_interpolates_the_edge():
    values = np.array([[-0.4, -0.2, 0.2, 0.4], [-0.3, -0.1, -0.05, 0.15], [-1.0, -0.9, -0.8, -0.7]])
    cx, rows = figures.zero_crossing(values, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(cx, [2.5, 3.25])
    np.testing.assert_array_equal(rows, [0, 1])  # row 2 never crosses
