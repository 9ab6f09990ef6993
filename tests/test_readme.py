"""The README's Python example runs as written (so it cannot rot)."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs():
    blocks = _blocks()
    assert len(blocks) == 2
    assert len(blocks[0].strip().splitlines()) <= 12
    # a fresh interpreter: default JAX settings, as a user has them
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rate, half_life = out.stdout.split()[:2]
    assert float(rate) < 0 and float(half_life) > 0


def test_readme_training_example_runs():
    """The training example: GRU on the adding problem at T = 100 gets far below the baseline."""
    block = _blocks()[1]
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "[" in out.stdout and "solved" not in out.stderr
