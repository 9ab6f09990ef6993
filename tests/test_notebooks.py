"""The tutorial notebooks run top to bottom, and are stored without outputs."""

import json
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
