"""Test setup: float64 available everywhere (tests pick dtypes explicitly); no compile cache."""

import os
import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


# The slow tier (``pytest -m slow``; plain ``pytest`` leaves it out, see pyproject): besides tests
# marked by hand (end-to-end runs in fresh processes, killed and resumed; the claims' quick runs) and
# the parts of parametrized sweeps that ``tiered`` leaves out of the fast tier, every test that needs a
# shipped config run or the claims report (minutes each) and the notebooks (each runs in a fresh kernel).
SLOW_FIXTURES = {
    "report",
    "config_run",
    "c06_quick",
    "c14_quick",
    "trained_run",
}  # claims at --quick, a training run
SLOW_FILES = {"test_notebooks.py", "test_architecture_runs.py"}  # fresh kernels; per-seed claim runs


def tiered(values, fast, ids=None):
    """Parametrize values with all but ``fast`` in the slow tier: the fast tier keeps a
    representative subset of a sweep, ``pytest -m slow`` runs the rest."""
    out = []
    for i, value in enumerate(values):
        is_fast = any(value is f or (type(value) is type(f) and value == f) for f in fast)  # True != 1
        marks = () if is_fast else (pytest.mark.slow,)
        out.append(
            pytest.param(
                *value if isinstance(value, tuple) else (value,), marks=marks, id=ids[i] if ids else None
            )
        )
    return out


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _no_compile_cache(tmp_path_factory):
    """The suite compiles afresh and never writes ``~/.cache``: the persistent compile cache is off
    (``GRADFLOW_COMPILE_CACHE=0``, inherited by subprocesses, so compile counts stay exact), and a
    test that turns it on without naming a directory gets a scratch one."""
    names = ("GRADFLOW_COMPILE_CACHE", "GRADFLOW_COMPILE_CACHE_DIR")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["GRADFLOW_COMPILE_CACHE"] = "0"
    os.environ["GRADFLOW_COMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("compile-cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def tree_allclose(a, b, *, rtol, atol=0.0):
    """Assert two pytrees have the same structure and close leaves."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, f"tree structures differ: {ta} vs {tb}"
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def write_config(folder, text, name="cfg.yaml"):
    """Write a config's text to ``folder/name``; return the path."""
    path = folder / name
    path.write_text(text)
    return path


def cli_argv(*argv):
    """``gradflow ARGV`` as a fresh-process command line."""
    import sys

    return [sys.executable, "-m", "gradflow.cli", *argv]


def load_run(out):
    """A run directory's ``(summary.json, results.npz arrays)``; every listed figure must be drawn."""
    import json

    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "results.npz") as data:
        arrays = {k: data[k] for k in data.files}
    for fig in summary["figures"]:
        assert (out / fig).stat().st_size > 1000, fig
    return summary, arrays


def runs_by_label(summary):
    """``{label: [runs]}`` of a summary (sweep points pooled)."""
    out = {}
    for run in summary["runs"]:
        out.setdefault(run["label"], []).append(run)
    return out


# ------------------------------------------------ runs shared by every test file (and xdist worker)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_dir(tmp_path_factory, worker_id):
    """A folder all xdist workers of this session see (the workers' base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def run_once(shared, name, argv, timeout=900):
    """``gradflow ARGV`` in a fresh process (float32 defaults, no x64), once per test session.

    The first worker that asks runs it into ``shared/name`` under a file lock; later askers
    (other files, other workers) wait for it and reuse the directory. Returns that directory.
    """
    import fcntl
    import subprocess

    out = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.done").is_file():
            proc = subprocess.run(
                cli_argv(*argv, "-o", str(out), "--force"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            (shared / f"{name}.done").write_text("")
    return out


@pytest.fixture(scope="session")
def config_run(tmp_path_factory, worker_id):
    """``config_run(name, quick=True)``: the run directory of ``configs/<name>.yaml``, run once."""
    shared = _shared_dir(tmp_path_factory, worker_id)

    def get(name, quick=True):
        argv = ["run", str(ROOT / "configs" / f"{name}.yaml"), *(["--quick"] if quick else [])]
        return run_once(shared, f"{name}_{'quick' if quick else 'full'}", argv)

    return get


@pytest.fixture(scope="session")
def report(tmp_path_factory, worker_id):
    """``gradflow claims --quick`` as a user runs it (a fresh process), once per session (~170 s).

    Its ``runs/<name>_quick`` folders are the shipped training configs at ``--quick``
    (adding, clipping, bidirectional, lstm_variants)."""
    import json

    out = run_once(_shared_dir(tmp_path_factory, worker_id), "claims_report", ["claims", "--quick"])
    return out, json.loads((out / "claims.json").read_text())
