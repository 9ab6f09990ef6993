"""summary.json says which code made the numbers: the commit (and dirty state) of the checkout that
holds the config, else of the current directory, else null."""

import json
import subprocess

import pytest
from conftest import write_config

from gradflow import experiment, rundir

TINY = """name: tiny
cells:
  - {label: tanh, cell: rnn, options: {hidden_size: 4}}
inputs: {size: 2, steps: 5, batch: 2}
sweep: {seeds: [0]}
"""


def git(repo, *args) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, check=True)
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git checkout with a committed config."""
    repo = tmp_path / "study"
    repo.mkdir()
    git(repo, "init", "-q")
    write_config(repo, TINY, "cfg.yaml")
    git(repo, "add", "cfg.yaml")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-qm", "config")
    return repo


def test_the_commit_of_the_checkout_holding_the_config(repo, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not a checkout: the config's checkout counts
    summary = experiment.run_config(repo / "cfg.yaml", elsewhere / "run")
    assert summary["git_commit"] == git(repo, "rev-parse", "HEAD") and summary["git_dirty"] is False
    assert json.loads((elsewhere / "run" / "summary.json").read_text())["git_commit"] == summary["git_commit"]
    (repo / "cfg.yaml").write_text(TINY.replace("seeds: [0]", "seeds: [1]"))  # an uncommitted change
    assert rundir.git_state(repo / "cfg.yaml") == {
        "git_commit": git(repo, "rev-parse", "HEAD"),
        "git_dirty": True,
        "git_root": str(repo.resolve()),
    }


def test_the_current_directory_then_null(repo, tmp_path, monkeypatch):
    loose = write_config(tmp_path, TINY, "loose.yaml")  # a config outside any checkout
    monkeypatch.chdir(repo)
    assert rundir.git_state(loose)["git_commit"] == git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    assert rundir.git_state(loose) == {"git_commit": None, "git_dirty": None, "git_root": None}
