"""The tutorial notebooks run top to bottom, and are stored without outputs."""

import json
import math
import pathlib
import re

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_quickstart():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path-migration warning
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    text = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    if path.name == "01_quickstart.ipynb":
        found = re.findall(r"g = ([\d.]+): rate ([-+][\d.]+) per step: the gradient (\w+)", text)
        rates = {float(g): float(r) for g, r, _ in found}
        assert set(rates) == {0.5, 1.0, 2.0}
        assert rates[0.5] < rates[1.0] < rates[2.0] and rates[0.5] < -0.3  # ordered -> chaotic
        for _, r, word in found:  # the printed word is the sign of the printed rate
            assert word == ("vanishes" if float(r) < 0 else "grows"), (r, word)
        edge = float(re.search(r"the rate crosses 0 at g = ([\d.]+)", text).group(1))
        assert 1.0 < edge < 2.0 and rates[1.0] < 0 < rates[2.0]  # between the g values of opposite sign
        assert "grows, halves" not in text and "vanishes, doubles" not in text
        assert "18 runs, 6 compilations" in text
        images = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if "image/png" in o.get("data", {})
        ]
        assert len(images) == 2  # the decay plot of your cell and the config's figure
    if path.name == "02_watch_your_model.ipynb":
        check_watch_your_model(text, nb)


def check_watch_your_model(text, nb):
    """The monitor notebook's printed words match its printed numbers, and training worked."""
    rate, word = re.search(r"RNN_0: rate ([-+][\d.]+) per step, the gradient (\w+)", text).groups()
    assert word == ("vanishes" if float(rate) < 0 else "grows")
    final = float(re.search(r"final loss ([\d.]+) \(chance: ln 4", text).group(1))
    assert final < 0.5 * 1.386  # it learned the task
    for life, steps, reach in re.findall(
        r"halves every ([\d.]+) steps; an error (\d+) steps back reaches the weights at ([\d.e-]+) of its",
        text,
    ):
        assert (
            abs(-int(steps) / float(life) * 0.30103 - math.log10(float(reach))) < 0.05
        )  # reach = 2^(-T/half-life)
    a, b, w1, w2 = re.search(
        r"flow rate at update 0: ([-+][\d.]+), at update \d+: ([-+][\d.]+): the gradient (\w+).* -> (\w+)",
        text,
    ).groups()
    assert w1 == ("vanishes" if float(a) < 0 else "grows") and w2 == ("vanishes" if float(b) < 0 else "grows")
    # every=10 over 600 updates; the summary line (a detector sentence may say "... 20 logged updates")
    assert re.search(r"^(\d+) logged updates, \d+ with a finding$", text, re.M).group(1) == "60"
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1  # the TensorBoard log, read back and plotted
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r'\("(RNN_0: the gradient halves.*?)"; thresholds', readme, re.S)
    assert " ".join(quoted.group(1).split()) in text  # the README quotes this notebook's detector
