"""The README's Python example runs as written (so it cannot rot)."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 12
    # a fresh interpreter: default JAX settings, as a user has them
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rate, half_life = out.stdout.split()[:2]
    assert float(rate) < 0 and float(half_life) > 0
