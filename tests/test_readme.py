"""The README's Python example runs as written (so it cannot rot)."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs():
    blocks = _blocks()
    assert len(blocks) == 3
    assert len(blocks[0].strip().splitlines()) <= 12
    # a fresh interpreter: default JAX settings, as a user has them
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rate, half_life = out.stdout.split()[:2]
    assert float(rate) < 0 and float(half_life) > 0


@pytest.mark.slow
def test_readme_training_example_runs():
    """The training example: GRU on the adding problem at T = 100 gets far below the baseline."""
    block = _blocks()[1]
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "[" in out.stdout and "solved" not in out.stderr


@pytest.mark.slow
def test_readme_model_flow_example_runs():
    """The unmodified Flax model's flow: the printed words are the printed rate's."""
    block = _blocks()[2]
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rate, half_life, *words = out.stdout.split()
    assert float(half_life) > 0 and abs(float(half_life) - 0.6931 / abs(float(rate))) < 1e-3 * float(
        half_life
    )
    assert words[0] == ("vanishes," if float(rate) < 0 else "grows,")


def test_readme_theory_numbers_are_what_the_calls_return():
    """The numbers in the README's comments next to the theory calls are those calls' results."""
    import gradflow

    text = README.read_text()
    mf_line = re.search(
        r"^(gradflow\.theory\.mean_field\(.*?\))\s+# q\* (\S+), chi_1 (\S+), rate (\S+) per step$", text, re.M
    )
    mf = eval(mf_line.group(1), {"gradflow": gradflow})
    assert mf_line.groups()[1:] == (f"{mf.q_star:.3f}", f"{mf.chi_1:.3f}", f"{mf.rate:+.3f}")
    edge = re.search(
        r"^(gradflow\.theory\.critical_sigma_w\(.*?\) \*\* 2)\s+# (\S+): the edge of chaos$", text, re.M
    )
    assert edge.group(2) == f"{eval(edge.group(1), {'gradflow': gradflow}):.3f}"
