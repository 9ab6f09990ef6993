"""The gradflow command: listing, measuring, and one-line errors."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow
from gradflow import cells
from gradflow.cli import main


def test_help_and_list(capsys):
    assert main([]) == 0
    assert "measure" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in cells.names():
        assert name in out
    assert "forget_bias=1.0" in out and "recurrent_init='orthogonal'" in out
    for name in ("adding", "copy", "temporal_order", "lookahead", "npz", "adam", "sgd", "cosine_decay"):
        assert name in out


def test_measure_json_matches_the_library(capsys):
    assert (
        main(["measure", "rnn", "-T", "40", "--set", "hidden_size=32", "--set", "weight_scale=0.8", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    # the same measurement, by hand
    cell = cells.get("rnn", hidden_size=32, weight_scale=0.8)
    k_init, k_x, _ = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_init, 8)
    xs = jax.random.normal(k_x, (40, 16, 8), jnp.float32)
    res = gradflow.gradient_flow(cell, params, cell.initial_carry(16), xs, lambda ys, h: jnp.sum(h) / 16)
    (row,) = summary["carry"]
    np.testing.assert_allclose(row["log10_norm_first"], res.log10_norms[0], rtol=1e-6)
    np.testing.assert_allclose(row["rate_per_step"], res.fit.rate, rtol=1e-6)
    assert summary["steps"] == 40 and summary["nonfinite_step"] == -1
    assert row["rate_per_step"] < 0  # sigma_w = 0.8 with inputs: ordered, vanishing


def test_measure_table_names_lstm_paths(capsys):
    assert main(["measure", "lstm", "-T", "20", "--set", "hidden_size=8"]) == 0
    out = capsys.readouterr().out
    assert " c " in out and " h " in out and "halves every" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["measure", "lsmt"], "unknown cell 'lsmt'; choose from"),
        (["measure", "lstm", "--set", "forget_bais=2"], "unknown option 'forget_bais' for cell 'lstm'"),
        (["measure", "lstm", "--set", "nokey"], "expected KEY=VALUE"),
        (["measure", "rnn", "--set", "activation=swish"], "unknown activation 'swish'"),
        (["measure", "rnn", "-T", "0"], "--steps must be >= 1"),
        (
            ["measure", "lstm", "--set", "forget_bias=abc"],
            "lstm option forget_bias: expected a number, got 'abc'",
        ),
        (["measure", "lstm", "--set", "peephole=3"], "lstm option peephole: expected true or false, got 3"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message):
    proc = subprocess.run(
        [sys.executable, "-m", "gradflow.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_command_exits_quickly_after_the_exit_handlers_and_with_main_s_code(tmp_path):
    """exit_quickly (the end of the gradflow command): exit handlers run (JAX's clean-up among them),
    buffered streams and files left open reach the disk, the code is main's."""
    script = f"""
import atexit, pathlib, sys
import jax.numpy as jnp
from gradflow.cli import exit_quickly
jnp.ones(3).block_until_ready()
atexit.register(lambda: pathlib.Path({str(tmp_path / "handler")!r}).write_text("ran"))
left_open = open({str(tmp_path / "open.txt")!r}, "w")
left_open.write("buffered, never closed")
print("buffered stdout", end="")
exit_quickly(3)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered stdout"
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "open.txt").read_text() == "buffered, never closed"
