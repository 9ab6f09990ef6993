"""gradflow never harms a user's files: every case through the real CLI, in a fresh process, in a
scratch folder with a fake HOME. The files gradflow did not write are hashed before and after."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from gradflow import experiment, rundir

TINY = """name: tiny
cells:
  - {label: tanh, cell: rnn, options: {hidden_size: 4}}
inputs: {size: 2, steps: 6, batch: 2}
sweep: {seeds: [0]}
"""


@pytest.fixture(scope="module")
def mpl_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mplconfig")  # matplotlib's font cache, outside the user's tree


@pytest.fixture
def scratch(tmp_path, mpl_cache, monkeypatch):
    """A folder with a user's files, a fake home and a config; the cwd of every command."""
    (tmp_path / "home" / "papers").mkdir(parents=True)
    (tmp_path / "home" / "papers" / "draft.tex").write_text("my draft")
    (tmp_path / "thesis.tex").write_text("\\chapter{Gradients}")
    (tmp_path / "my_config.yaml").write_text(TINY)
    monkeypatch.setenv("MPLCONFIGDIR", str(mpl_cache))
    return tmp_path


def gradflow(scratch: Path, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(scratch / "home")}
    cmd = [sys.executable, "-m", "gradflow.cli", *argv]
    return subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=300)


def user_files(root: Path) -> dict:
    """``{path: sha256}`` of every file and symlink under ``root`` that no manifest lists."""
    listed = set()
    for manifest in root.rglob(rundir.MANIFEST):
        entries = json.loads(manifest.read_text())["entries"]
        listed |= {(manifest.parent / rel).as_posix() for rel in entries}
        listed.add(manifest.as_posix())
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            if path.as_posix() in listed:
                continue
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return found


def refused(proc: subprocess.CompletedProcess, *words) -> None:
    """Exit 2, one line on stderr, no traceback, naming what it should."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def finished_run(scratch: Path, name="run") -> Path:
    proc = gradflow(scratch, "run", "my_config.yaml", "-o", name)
    assert proc.returncode == 0, proc.stderr
    return scratch / name


def test_run_into_the_current_directory_is_refused(scratch):
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "--quick", "-o", ".", "--force"), "current directory")
    assert user_files(scratch) == before and not (scratch / rundir.MANIFEST).exists()


def test_run_into_home_or_an_ancestor_or_the_root_is_refused(scratch):
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", str(scratch / "home"), "--force"), "home")
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", str(scratch.parent), "--force"), "contains")
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "/", "--force"), "root")
    assert user_files(scratch) == before


def test_a_directory_holding_the_config_is_refused(scratch):
    (scratch / "exp").mkdir()
    (scratch / "exp" / "cfg.yaml").write_text(TINY)
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "exp/cfg.yaml", "-o", "exp", "--force"), "the config being run")
    assert user_files(scratch) == before


def test_a_non_empty_foreign_directory_is_refused_even_with_force(scratch):
    (scratch / "existing" / "sub").mkdir(parents=True)
    (scratch / "existing" / "notes.txt").write_text("notes")
    (scratch / "existing" / "sub" / "data.txt").write_text("data")
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "existing", "--force"), "did not write")
    assert user_files(scratch) == before


def test_a_file_as_the_output_is_refused(scratch):
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "thesis.tex", "--force"), "not a directory")
    assert user_files(scratch) == before


def test_a_run_directory_with_an_extra_user_file_is_refused(scratch):
    run = finished_run(scratch)
    (run / "notes.md").write_text("what I saw")
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "run", "--force"), "notes.md", "did not write")
    assert user_files(scratch) == before and (run / "summary.json").exists()


@pytest.mark.slow
def test_a_symlink_inside_a_run_directory_is_never_followed(scratch):
    run = finished_run(scratch)
    (run / "link").symlink_to(scratch / "thesis.tex")  # a link gradflow did not make: refused
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "run", "--force"), "link")
    assert user_files(scratch) == before
    (run / "link").unlink()
    (run / "results.npz").unlink()  # a file gradflow wrote, now a link out of the directory
    (run / "results.npz").symlink_to(scratch / "thesis.tex")
    before = {k: v for k, v in user_files(scratch).items() if k != "run/results.npz"}
    proc = gradflow(scratch, "run", "my_config.yaml", "-o", "run", "--force")
    assert proc.returncode == 0, proc.stderr
    assert user_files(scratch) == before  # the link was replaced, its target untouched
    assert not (run / "results.npz").is_symlink() and np.load(run / "results.npz")["seed"].tolist() == [0]


@pytest.mark.slow
def test_nested_run_directories_keep_each_other(scratch):
    outer = finished_run(scratch, "outer")
    inner = finished_run(scratch, "outer/inner")
    before = user_files(scratch)
    inner_files = sorted(p.name for p in inner.iterdir())
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "outer", "--force"), "inner/")
    assert user_files(scratch) == before and sorted(p.name for p in inner.iterdir()) == inner_files
    assert (outer / "summary.json").exists()


@pytest.mark.slow
def test_plot_into_a_foreign_or_the_current_directory_is_refused(scratch):
    run = finished_run(scratch)
    (scratch / "figs").mkdir()
    (scratch / "figs" / "decay.png").write_bytes(b"my own figure")
    before = user_files(scratch)
    refused(gradflow(scratch, "plot", "run", "-o", "figs", "--force"), "did not write")
    refused(gradflow(scratch, "plot", "run", "-o", ".", "--force"), "current directory")
    refused(gradflow(scratch, "plot", "run", "-o", str(scratch.parent)), "contains")
    assert user_files(scratch) == before
    proc = gradflow(scratch, "plot", "run", "-o", "figs_new")  # a new directory: made and listed
    assert proc.returncode == 0, proc.stderr
    listed = json.loads((scratch / "figs_new" / rundir.MANIFEST).read_text())["entries"]
    assert sorted(listed) == sorted(p.name for p in (scratch / "figs_new").iterdir() if p.name[0] != ".")
    assert (run / "decay.png").exists()


def test_plot_in_place_never_overwrites_a_user_file_named_like_a_figure(scratch):
    run = finished_run(scratch)
    (run / "phase.svg").write_text("<svg>mine</svg>")  # a name gradflow could draw, but did not
    before = user_files(scratch)
    refused(gradflow(scratch, "plot", "run", "--format", "svg", "--force"), "phase.svg")
    assert user_files(scratch) == before


def test_claims_into_a_foreign_or_the_current_directory_is_refused(scratch):
    (scratch / "report").mkdir()
    (scratch / "report" / "report.md").write_text("my notes on the slides")
    before = user_files(scratch)
    refused(gradflow(scratch, "claims", "--only", "C1", "--quick", "-o", "report", "--force"), "report.md")
    refused(gradflow(scratch, "claims", "--only", "C1", "--quick", "-o", ".", "--force"), "current directory")
    refused(gradflow(scratch, "claims", "--quick", "-o", str(scratch / "home"), "--force"), "home")
    assert user_files(scratch) == before


@pytest.mark.slow
def test_a_finished_run_is_replaced_with_force_and_the_new_run_is_complete(scratch):
    run = finished_run(scratch)
    (run / "paths.png").write_bytes(b"")  # pretend an older run of another config drew paths
    manifest = rundir.Manifest.read(run)
    manifest.record("paths.png")
    before = user_files(scratch)
    refused(gradflow(scratch, "run", "my_config.yaml", "-o", "run"), "finished run", "--force")
    proc = gradflow(scratch, "run", "my_config.yaml", "-o", "run", "--force", "--set", "sweep.seeds=[3,4]")
    assert proc.returncode == 0, proc.stderr
    assert user_files(scratch) == before
    summary = json.loads((run / "summary.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [3, 4]
    assert list(experiment.load_config(run / "config.yaml").sweep.seeds) == [3, 4]
    listed = json.loads((run / rundir.MANIFEST).read_text())["entries"]
    on_disk = sorted(p.name for p in run.iterdir() if p.name != rundir.MANIFEST)
    assert sorted(listed) == on_disk and "paths.png" not in on_disk  # the stale figure is gone
    assert set(on_disk) == {*experiment.RESULT_FILES, *summary["figures"]}


@pytest.mark.slow
def test_a_replaced_run_keeps_its_old_results_until_the_new_run_finishes(scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    run = finished_run(scratch)
    old = {name: (run / name).read_bytes() for name in ("summary.json", "results.npz", "config.yaml")}
    two_cells = (
        "  - {label: gru, cell: gru, options: {hidden_size: 4}}\n"
        "  - {label: lstm, cell: lstm, options: {hidden_size: 4}}"
    )
    text = TINY.replace("  - {label: tanh, cell: rnn, options: {hidden_size: 4}}", two_cells)
    cfg = experiment.load_config(write_config(scratch, text, "new.yaml"))

    def stop_after_first(i, n, label, skipped):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, run, force=True, progress=stop_after_first)
    assert {name: (run / name).read_bytes() for name in old} == old  # still the old, complete run
    summary = experiment.run_experiment(cfg, run)  # the same (new) run again resumes
    assert summary["resumed"] and [a["compiles"] for a in summary["attempts"]] == [1, 1]
    assert {r["label"] for r in summary["runs"]} == {"gru", "lstm"} and not (run / rundir.PARTS).exists()


def test_run_config_from_python_follows_the_same_rules(scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("HOME", str(scratch / "home"))
    before = user_files(scratch)
    for out in (scratch, scratch / "home", scratch.parent):
        with pytest.raises(rundir.RunDirError):
            experiment.run_config(scratch / "my_config.yaml", out, force=True)
    (scratch / "mine").mkdir()
    (scratch / "mine" / "a.txt").write_text("a")
    with pytest.raises(rundir.RunDirError, match=r"a\.txt, which gradflow did not write"):
        experiment.run_config(scratch / "my_config.yaml", scratch / "mine", force=True)
    assert user_files(scratch) == {**before, "mine/a.txt": user_files(scratch)["mine/a.txt"]}


def test_the_checker_finds_every_kind_of_foreign_entry(tmp_path):
    """The manifest check itself: files, folders, links and temp files, listed or not."""
    m = rundir.Manifest(tmp_path, "run", {"a.txt": "file", "params/0.msgpack": "file", ".parts": "scratch"})
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "0.msgpack").write_bytes(b"x")
    (tmp_path / ".parts").mkdir()
    (tmp_path / ".parts" / "anything").write_bytes(b"x")
    (tmp_path / ".a.txt.123.tmp").write_bytes(b"x")  # an interrupted atomic write of a.txt
    assert m.foreign() is None
    for make, name in [
        (lambda p: p.write_text("x"), "b.txt"),
        (lambda p: p.mkdir(), "empty_dir/"),
        (lambda p: p.symlink_to(tmp_path.parent), "outside"),
        (lambda p: p.write_text("x"), ".b.txt.123.tmp"),
    ]:
        path = tmp_path / name.rstrip("/")
        make(path)
        assert m.foreign() == name
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    (tmp_path / "params" / "user.txt").write_text("x")
    assert m.foreign() == "params/user.txt"


def test_a_settled_scratch_folder_is_listed_entry_by_entry(tmp_path):
    """A writer's scratch folder (TensorBoard, W&B) after it closes: its files, links and folders are
    gradflow's, a user's file put there later is foreign and survives removing gradflow's files."""
    m = rundir.Manifest(tmp_path, "monitor")
    m.record("tb", kind="scratch")
    (tmp_path / "tb" / "run" / "empty").mkdir(parents=True)
    (tmp_path / "tb" / "run" / "events.1").write_bytes(b"e")
    (tmp_path / "tb" / "latest").symlink_to(tmp_path / "tb" / "run")  # a writer's link to its folder
    (tmp_path / "tb" / "debug.log").symlink_to(tmp_path / "tb" / "run" / "events.1")
    (tmp_path / "tb" / "user.txt").write_text("anything goes while the writer owns the folder")
    assert m.foreign() is None
    (tmp_path / "tb" / "user.txt").unlink()
    m.settle("tb")
    assert rundir.Manifest.read(tmp_path).entries == {
        "tb": "folder",
        "tb/run": "folder",
        "tb/run/empty": "folder",
        "tb/run/events.1": "file",
        "tb/latest": "file",
        "tb/debug.log": "file",
    }
    assert m.foreign() is None
    for name in ("tb/user.txt", "tb/run/user.txt", "tb/run/empty/user.txt"):
        (tmp_path / name).write_text("a user's file")
        assert m.foreign() == name
        (tmp_path / name).unlink()
    (tmp_path / "tb" / "run" / "mine").mkdir()
    assert m.foreign() == "tb/run/mine/"
    (tmp_path / "tb" / "run" / "mine" / "keep.txt").write_text("a user's file")
    m.remove()
    assert (tmp_path / "tb" / "run" / "mine" / "keep.txt").read_text() == "a user's file"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        ".gradflow-manifest.json",
        "tb",
        "tb/run",
        "tb/run/mine",
        "tb/run/mine/keep.txt",
    ]
