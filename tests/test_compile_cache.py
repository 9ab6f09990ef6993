"""The persistent compile cache: a fresh process hits it, it turns off, unsafe directories are
refused, and a cache that rejects every entry is reported once.

The suite runs with the cache off (conftest); these tests turn it on in fresh processes, each with
its own scratch directory, because JAX opens its cache once per process.
"""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from conftest import cli_argv, write_config

from gradflow import compile_cache
from gradflow.cli import build_parser, main

TINY = """\
name: tiny
cells:
  - {label: LSTM, cell: lstm, options: {hidden_size: 8}}
  - {label: GRU, cell: gru, options: {hidden_size: 8}}
inputs: {size: 4, steps: 10, batch: 4}
sweep:
  seeds: [0, 1]
"""


def run_fresh(config, out, cache, *argv, switch="1"):
    """``gradflow run CONFIG -o OUT`` in a fresh process with the cache in ``cache``; the process,
    the summary.json it wrote and its closing line."""
    env = {**os.environ, compile_cache.ENV_SWITCH: switch, compile_cache.ENV_DIR: str(cache)}
    cmd = cli_argv(*argv, "run", str(config), "-o", str(out))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    closing = " ".join(proc.stdout.split()[-40:])
    return proc, summary, closing


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold run: an empty cache filled by a fresh process."""
    root = tmp_path_factory.mktemp("cold")
    config = write_config(root, TINY)
    _, summary, closing = run_fresh(config, root / "out", root / "cache")
    return config, root / "cache", summary, closing


@pytest.mark.slow
def test_a_second_fresh_process_hits_the_cache(cold, tmp_path):
    config, cache, first, closing = cold
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    c1 = first["compile_cache"]
    assert c1["dir"] == str(cache) and c1["requests"] > 0 and c1["hits"] == 0
    assert c1["misses"] == c1["requests"]
    assert f"0/{c1['requests']} from the compile cache" in closing
    assert any(cache.glob("*-cache")), "nothing was written to the cache"

    proc, second, closing = run_fresh(config, tmp_path / "out", cache)
    c2 = second["compile_cache"]
    assert c2["requests"] == c1["requests"] and c2["hits"] == c2["requests"] and c2["misses"] == 0
    assert f"{c2['hits']}/{c2['requests']} from the compile cache" in closing
    assert second["compile_time_s"] < first["compile_time_s"]
    assert "never hits" not in proc.stderr and not (cache / compile_cache.NEVER_HITS_MARKER).exists()


@pytest.mark.slow
def test_a_cache_that_rejects_every_entry_is_reported_once(tmp_path):
    config = write_config(tmp_path, TINY)
    cache = tmp_path / "cache"  # its own: the cache key holds the directory's path, so no copy
    run_fresh(config, tmp_path / "out0", cache)
    for entry in cache.glob("*-cache"):  # what a loader that rejects every entry sees
        entry.write_bytes(b"not an executable")
    proc, summary, _ = run_fresh(config, tmp_path / "out1", cache)
    said = [line for line in proc.stderr.splitlines() if "never hits" in line]
    assert len(said) == 1, proc.stderr
    assert said[0].startswith("gradflow: ") and str(cache) in said[0] and "--no-compile-cache" in said[0]
    assert summary["compile_cache"]["hits"] == 0 and summary["compile_cache"]["requests"] > 0
    assert (cache / compile_cache.NEVER_HITS_MARKER).exists()

    proc, _, _ = run_fresh(config, tmp_path / "out2", cache)
    assert "never hits" not in proc.stderr  # once per cache directory


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-compile-cache", "run", "C"],
        ["run", "C", "--no-compile-cache"],
        ["--compile-cache", "D", "run", "C"],
        ["run", "C", "--compile-cache", "D"],
        ["measure", "rnn", "--no-compile-cache"],
        ["plot", "R", "--compile-cache", "D"],
        ["list", "--no-compile-cache"],
    ],
)
def test_cache_flags_go_before_or_after_the_verb(argv):
    args = build_parser().parse_args(argv)
    assert args.no_compile_cache == ("--no-compile-cache" in argv)
    assert args.compile_cache == ("D" if "D" in argv else None)


@pytest.mark.parametrize(
    ("argv", "switch"),
    [
        (["--no-compile-cache"], "1"),
        pytest.param([], "0", marks=pytest.mark.slow),
        pytest.param([], "off", marks=pytest.mark.slow),
    ],
    ids=["flag", "env-0", "env-off"],
)
def test_turned_off_no_directory_and_no_requests(tmp_path, monkeypatch, capsys, argv, switch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(compile_cache.ENV_SWITCH, switch)
    monkeypatch.setenv(compile_cache.ENV_DIR, str(cache))
    config = write_config(tmp_path, TINY)
    assert main([*argv, "run", str(config), "-o", str(tmp_path / "out")]) == 0
    assert "compile cache off" in " ".join(capsys.readouterr().out.split())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["compile_cache"]["dir"] is None and summary["compile_cache"]["requests"] == 0
    assert not cache.exists()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_may_write_is_refused_in_one_line(tmp_path, capsys, mode):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(mode)
    config = write_config(tmp_path, TINY)
    assert main(["--compile-cache", str(cache), "run", str(config), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gradflow: error: compile cache ") and str(cache) in err
    assert "chmod 700" in err and "--no-compile-cache" in err
    assert not (tmp_path / "out").exists() and not any(cache.iterdir())


def test_a_folder_of_yours_is_refused_and_left_as_it_was(tmp_path, capsys):
    """The size bound deletes ``*-cache``/``*-atime`` files: a folder with other files is not a cache."""
    mine = tmp_path / "papers"
    mine.mkdir(mode=0o700)
    (mine / "thesis.tex").write_text("mine")
    (mine / "draft-cache").write_text("also mine")
    config = write_config(tmp_path, TINY)
    assert main(["--compile-cache", str(mine), "run", str(config), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "thesis.tex" in err and "empty or new folder" in err
    assert sorted(p.name for p in mine.iterdir()) == ["draft-cache", "thesis.tex"]
    assert not (tmp_path / "out").exists()
    compile_cache.check_private(tmp_path / "fresh")  # a new folder, and one holding only entries, pass
    (tmp_path / "fresh" / "k1-cache").write_bytes(b"")
    (tmp_path / "fresh" / "k1-atime").write_bytes(b"")
    compile_cache.check_private(tmp_path / "fresh")


def test_a_directory_of_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_cache.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(compile_cache.CacheDirError, match="another user"):
        compile_cache.check_private(tmp_path)


def test_a_new_directory_is_private_and_the_default_follows_xdg(tmp_path, monkeypatch):
    compile_cache.check_private(tmp_path / "a" / "b")
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "gradflow" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir() == compile_cache.Path.home() / ".cache" / "gradflow" / "jax"


def test_a_bad_switch_value_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(compile_cache.ENV_SWITCH, "maybe")
    assert main(["run", str(write_config(tmp_path, TINY)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "GRADFLOW_COMPILE_CACHE" in err, err


def test_the_suite_itself_runs_without_the_cache():
    assert os.environ[compile_cache.ENV_SWITCH] == "0"
    assert compile_cache.resolve() is None
    home_cache = compile_cache.Path.home() / ".cache" / "gradflow"
    assert not os.environ[compile_cache.ENV_DIR].startswith(str(home_cache))


def fake_cache(tmp_path, monkeypatch, *, hits=0, writes=1, read_again=True, new_entry=False):
    """A cache directory holding one entry from before ``enable()``, and this process's counts."""
    started = time.time_ns()
    (tmp_path / "k1-cache").write_bytes(b"x")
    stamp = started + 1 if read_again else started - 1
    (tmp_path / "k1-atime").write_bytes(stamp.to_bytes(8, "little"))
    if new_entry:
        (tmp_path / "k2-cache").write_bytes(b"y")
    monkeypatch.setattr(compile_cache._State, "directory", tmp_path)
    monkeypatch.setattr(compile_cache._State, "started_ns", started)
    monkeypatch.setattr(compile_cache._State, "entries_at_start", frozenset({"k1"}))
    counts = {"requests": 1, "hits": hits, "writes": writes, "saved_s": 0.0}
    monkeypatch.setattr(compile_cache._State, "counts", counts)


@pytest.mark.parametrize(
    ("case", "rejected"),
    [
        ({}, 1),  # read again, no hit, the write added no file: rejected
        ({"hits": 1}, 0),  # something hit: a working cache
        ({"read_again": False}, 0),  # the old entry was not asked for
        ({"new_entry": True}, 0),  # the write was a new program; another process read the old one
    ],
)
def test_rejected_entries_needs_a_read_no_hit_and_no_new_file(tmp_path, monkeypatch, case, rejected):
    fake_cache(tmp_path, monkeypatch, **case)
    assert compile_cache.rejected_entries() == rejected


def test_never_hits_is_said_once_per_directory(tmp_path, monkeypatch):
    import io

    fake_cache(tmp_path, monkeypatch)
    first, second = io.StringIO(), io.StringIO()
    assert compile_cache.warn_if_never_hits(first) and not compile_cache.warn_if_never_hits(second)
    assert len(first.getvalue().splitlines()) == 1 and "never hits" in first.getvalue()
    assert second.getvalue() == ""


def test_import_gradflow_changes_nothing(tmp_path):
    env = {**os.environ, compile_cache.ENV_SWITCH: "1", "XDG_CACHE_HOME": str(tmp_path)}
    env.pop(compile_cache.ENV_DIR)
    code = "import gradflow, jax; assert jax.config.jax_compilation_cache_dir is None"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "gradflow").exists()
